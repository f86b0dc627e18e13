"""An order's print pictures (processors/book.py ``_PrintImages``): prepared from each drawing
while it is judged, the saved drawing's kept; one at a time while pages are drawn, every
PictureWork slot once they are all saved."""

from __future__ import annotations

import io
import threading
from pathlib import Path

import pytest
from PIL import Image

import processors.book as book
from processors.picture_work import PictureWork
from processors.print_pdf import PrintImage, PrintProfile
from tests.support.waiting import eventually

PROFILE = PrintProfile(8.5, 8.5)


def jpeg(colour: str) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (64, 64), colour).save(out, "JPEG")
    return out.getvalue()


@pytest.fixture
def prepared(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """The bytes of the sources the real prepare_print_image was run on, in order."""
    sources: list[bytes] = []
    real = book.prepare_print_image

    def recording(source: Path, out: Path, profile: PrintProfile) -> PrintImage:
        sources.append(source.read_bytes())
        return real(source, out, profile)

    monkeypatch.setattr(book, "prepare_print_image", recording)
    return sources


def colour_of(image: PrintImage) -> tuple[int, ...]:
    with Image.open(image.path) as img:
        return img.convert("RGB").getpixel((img.width // 2, img.height // 2))


async def test_a_drawing_that_passes_is_printed_once_from_its_judged_bytes(
    tmp_path: Path, prepared: list[bytes]
) -> None:
    prints = book._PrintImages(PROFILE, tmp_path, PictureWork(2))
    drawing = jpeg("red")
    prints.drawn(1, drawing)
    # While the drawing is judged (no save yet), its print picture is made.
    await eventually(lambda: prepared, what="the print picture before the save")
    assert prepared == [drawing]

    prints.saved(1, bytes(drawing))  # equal bytes, another object: the same drawing
    ready = await prints.ready()

    assert prepared == [drawing]
    assert ready[1].upscaled and ready[1].path.exists()
    assert colour_of(ready[1])[0] > 200


async def test_the_saved_drawing_is_printed_not_a_rejected_one(
    tmp_path: Path, prepared: list[bytes]
) -> None:
    prints = book._PrintImages(PROFILE, tmp_path, PictureWork(1))
    rejected, redrawn = jpeg("red"), jpeg("blue")
    prints.drawn(1, rejected)
    prints.drawn(1, redrawn)  # the judge failed the first: a redraw is judged
    prints.saved(1, redrawn)

    ready = await prints.ready()

    assert colour_of(ready[1])[2] > 200
    assert prepared[-1] == redrawn


async def test_a_page_saved_from_another_source_is_prepared_from_it(
    tmp_path: Path, prepared: list[bytes]
) -> None:
    prints = book._PrintImages(PROFILE, tmp_path, PictureWork(2))
    earlier = tmp_path / "page-002.jpg"  # an earlier attempt's checkpoint, downloaded
    earlier.write_bytes(jpeg("green"))
    prints.drawn(2, jpeg("red"))
    prints.saved(2, earlier)

    ready = await prints.ready()

    assert prepared[-1] == earlier.read_bytes()
    assert colour_of(ready[2])[1] > 100 and colour_of(ready[2])[0] < 100


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
    prints = book._PrintImages(PROFILE, tmp_path, PictureWork(2))
    prints.drawn(1, jpeg("red"))
    prints.saved(2, tmp_path / "b.jpg")
    prints.saved(1, jpeg("red"))

    await prints.ready()

    assert ran == ["alone", "alone"]


async def test_once_every_page_is_saved_the_rest_take_every_slot(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ran: list[str] = []
    monkeypatch.setattr(book, "prepare_print_image", pairing(threading.Barrier(2, timeout=10), ran))
    prints = book._PrintImages(PROFILE, tmp_path, PictureWork(2))
    prints.saved(1, tmp_path / "a.jpg")
    prints.saved(2, tmp_path / "b.jpg")
    prints.all_saved()

    ready = await prints.ready()

    assert ran == ["beside another", "beside another"]
    assert sorted(ready) == [1, 2]
