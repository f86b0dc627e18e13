"""An order's print pictures (processors/book.py ``_PrintImages``): one at a time while its pages
are drawn, every PictureWork slot once they are all saved."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

import processors.book as book
from processors.picture_work import PictureWork
from processors.print_pdf import PrintProfile


def pairing(barrier: threading.Barrier, ran: list[str]):
    """A stand-in for prepare_print_image that waits for a second one to run beside it."""

    def prepare(source: Path, out: Path, profile: PrintProfile) -> str:
        try:
            barrier.wait()
            ran.append("beside another")
        except threading.BrokenBarrierError:
            ran.append("alone")
        return out.name

    return prepare


async def test_print_pictures_run_one_at_a_time_until_every_page_is_saved(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ran: list[str] = []
    # A lone job gives up waiting for a partner after a moment: it ran alone.
    monkeypatch.setattr(
        book, "prepare_print_image", pairing(threading.Barrier(2, timeout=0.3), ran)
    )
    prints = book._PrintImages(PrintProfile(8.5, 8.5), tmp_path, PictureWork(2))
    prints.add(1, tmp_path / "a.jpg")
    prints.add(2, tmp_path / "b.jpg")

    await prints.ready()

    assert ran == ["alone", "alone"]


async def test_once_every_page_is_saved_the_rest_take_every_slot(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ran: list[str] = []
    monkeypatch.setattr(book, "prepare_print_image", pairing(threading.Barrier(2, timeout=10), ran))
    prints = book._PrintImages(PrintProfile(8.5, 8.5), tmp_path, PictureWork(2))
    prints.add(1, tmp_path / "a.jpg")
    prints.add(2, tmp_path / "b.jpg")
    prints.all_saved()

    ready = await prints.ready()

    assert ran == ["beside another", "beside another"]
    assert sorted(ready) == [1, 2]
