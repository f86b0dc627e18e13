"""An order's finished pictures (processors/book.py ``_FinishedPictures``): each drawing's print
picture and screen copy, prepared while it is judged, the saved drawing's kept; one at a time
while pages are drawn, every PictureWork slot once they are all saved."""

from __future__ import annotations

import asyncio
import io
import threading
from pathlib import Path

import pytest
from PIL import Image

import processors.book as book
from processors.pdf import SCREEN_MAX_SIDE
from processors.picture_work import PictureWork
from processors.print_pdf import PrintImage, PrintProfile
from processors.qa import finished
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
    prepared_pictures = book._FinishedPictures(PROFILE, tmp_path, PictureWork(2))
    drawing = jpeg("red")
    prepared_pictures.drawn(1, finished(drawing))
    # While the drawing is judged (no save yet), its print picture is made.
    await eventually(lambda: prepared, what="the print picture before the save")
    assert prepared == [drawing]

    prepared_pictures.saved(1, bytes(drawing))  # equal bytes, another object: the same drawing
    ready = await prepared_pictures.ready()

    assert prepared == [drawing]
    assert ready[1].print.upscaled and ready[1].print.path.exists()
    assert colour_of(ready[1].print)[0] > 200
    # A drawing within the screen PDF's side is its own screen copy.
    assert ready[1].screen.read_bytes() == drawing


async def test_the_saved_drawing_is_printed_not_a_rejected_one(
    tmp_path: Path, prepared: list[bytes]
) -> None:
    prepared_pictures = book._FinishedPictures(PROFILE, tmp_path, PictureWork(1))
    rejected, redrawn = jpeg("red"), jpeg("blue")
    prepared_pictures.drawn(1, finished(rejected))
    prepared_pictures.drawn(1, finished(redrawn))  # the judge failed the first: a redraw is judged
    prepared_pictures.saved(1, redrawn)

    ready = await prepared_pictures.ready()

    assert colour_of(ready[1].print)[2] > 200
    assert ready[1].screen.read_bytes() == redrawn
    assert prepared[-1] == redrawn


async def test_a_page_saved_from_another_source_is_prepared_from_it(
    tmp_path: Path, prepared: list[bytes]
) -> None:
    prepared_pictures = book._FinishedPictures(PROFILE, tmp_path, PictureWork(2))
    earlier = tmp_path / "page-002.jpg"  # an earlier attempt's checkpoint, downloaded
    earlier.write_bytes(jpeg("green"))
    prepared_pictures.drawn(2, finished(jpeg("red")))
    prepared_pictures.saved(2, earlier)

    ready = await prepared_pictures.ready()

    assert prepared[-1] == earlier.read_bytes()
    assert colour_of(ready[2].print)[1] > 100 and colour_of(ready[2].print)[0] < 100
    assert ready[2].screen == earlier


def pairing(barrier: threading.Barrier, ran: list[str]):
    """A stand-in for ``book._finish`` that waits for a second one to run beside it."""

    def prepare(source: Path, name: Path, profile: PrintProfile, screen: Path | None) -> str:
        try:
            barrier.wait()
            ran.append("beside another")
        except threading.BrokenBarrierError:
            ran.append("alone")
        return name.name

    return prepare


async def test_a_drawing_larger_than_the_screen_side_gets_its_screen_copy_while_judged(
    tmp_path: Path,
) -> None:
    prepared_pictures = book._FinishedPictures(PROFILE, tmp_path, PictureWork(2))
    out = io.BytesIO()
    Image.new("RGB", (2700, 2700), "red").save(out, "JPEG")  # above 2625 px: 300 PPI
    prepared_pictures.drawn(1, finished(out.getvalue()))
    prepared_pictures.saved(1, out.getvalue())

    ready = await prepared_pictures.ready()

    with Image.open(ready[1].screen) as screen:
        assert screen.size == (SCREEN_MAX_SIDE, SCREEN_MAX_SIDE)
    assert not ready[1].print.upscaled
    assert ready[1].print.path.read_bytes() == out.getvalue()


async def test_a_screen_copy_the_output_checks_made_is_the_one_the_screen_pdf_gets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The checks of a 4K reply make the page's screen copy from their own decode
    (images.check_output): it is kept, and the page is not decoded and resampled again."""

    def no_second_copy(source: Path, copy: Path) -> Path:
        raise AssertionError("the screen copy was made again from the page")

    monkeypatch.setattr(book, "screen_copy", no_second_copy)
    prepared_pictures = book._FinishedPictures(PROFILE, tmp_path, PictureWork(2))
    page = io.BytesIO()
    Image.new("RGB", (2700, 2700), "red").save(page, "JPEG")
    screen = jpeg("blue")
    prepared_pictures.drawn(1, finished(page.getvalue()), screen)
    prepared_pictures.saved(1, page.getvalue())

    ready = await prepared_pictures.ready()

    assert ready[1].screen.read_bytes() == screen
    assert ready[1].print.path.read_bytes() == page.getvalue()


async def test_finished_pictures_run_one_at_a_time_until_every_page_is_saved(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ran: list[str] = []
    # A lone job gives up waiting for a partner after a moment: it ran alone.
    monkeypatch.setattr(book, "_finish", pairing(threading.Barrier(2, timeout=0.3), ran))
    prepared_pictures = book._FinishedPictures(PROFILE, tmp_path, PictureWork(2))
    prepared_pictures.drawn(1, finished(jpeg("red")))
    prepared_pictures.saved(2, tmp_path / "b.jpg")
    prepared_pictures.saved(1, jpeg("red"))

    await prepared_pictures.ready()

    assert ran == ["alone", "alone"]


async def test_once_every_page_is_saved_the_rest_take_every_slot(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ran: list[str] = []
    monkeypatch.setattr(book, "_finish", pairing(threading.Barrier(2, timeout=10), ran))
    prepared_pictures = book._FinishedPictures(PROFILE, tmp_path, PictureWork(2))
    prepared_pictures.saved(1, tmp_path / "a.jpg")
    prepared_pictures.saved(2, tmp_path / "b.jpg")
    prepared_pictures.all_saved()

    ready = await prepared_pictures.ready()

    assert ran == ["beside another", "beside another"]
    assert sorted(ready) == [1, 2]


async def test_a_finished_picture_waits_behind_the_orders_other_picture_work(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ran: list[str] = []
    monkeypatch.setattr(
        book, "_finish", lambda source, name, profile, screen: ran.append("finished")
    )
    work = PictureWork(1)
    prepared_pictures = book._FinishedPictures(PROFILE, tmp_path, work)
    started, holding = threading.Event(), threading.Event()

    def hold() -> None:
        started.set()
        holding.wait(10)

    busy = asyncio.ensure_future(work.run(hold))
    await eventually(started.is_set, what="the only slot taken")
    drawing = jpeg("red")
    prepared_pictures.drawn(1, finished(drawing))
    await eventually(lambda: work._free._waiters, what="the finished picture in line")
    # A page's output check asks for the core after the finished picture did.
    check = asyncio.ensure_future(work.run(ran.append, "output check"))
    holding.set()
    await asyncio.gather(busy, check)
    prepared_pictures.saved(1, drawing)
    await prepared_pictures.ready()

    assert ran == ["output check", "finished"]


async def test_a_drawing_still_being_fitted_is_prepared_once_its_jpeg_is_made(
    tmp_path: Path, prepared: list[bytes]
) -> None:
    prepared_pictures = book._FinishedPictures(PROFILE, tmp_path, PictureWork(2))
    page: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
    prepared_pictures.drawn(1, page)  # judged from the reply while the page is fitted
    await asyncio.sleep(0.05)
    assert prepared == []

    drawing = jpeg("red")
    page.set_result(drawing)
    prepared_pictures.saved(1, drawing)
    ready = await prepared_pictures.ready()

    assert prepared == [drawing]
    assert ready[1].screen.read_bytes() == drawing


async def test_a_redraw_stops_the_fit_that_was_not_made_yet(
    tmp_path: Path, prepared: list[bytes]
) -> None:
    prepared_pictures = book._FinishedPictures(PROFILE, tmp_path, PictureWork(2))
    abandoned: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
    prepared_pictures.drawn(1, abandoned)
    redrawn = jpeg("blue")
    prepared_pictures.drawn(1, finished(redrawn))
    prepared_pictures.saved(1, redrawn)

    ready = await prepared_pictures.ready()

    assert prepared == [redrawn]
    assert ready[1].screen.read_bytes() == redrawn
