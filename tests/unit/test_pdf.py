"""Book PDF assembly: order, trim size, JPEG passthrough, metadata and atomic output."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest
from PIL import Image
from pypdf import PdfReader
from pypdf.generic import DictionaryObject

from processors.pdf import PdfFailed, PdfWriteFailed, build_pdf, screen_copy

COLOURS = [(200, 30, 30), (30, 160, 60), (40, 60, 200), (230, 200, 40)]
TITLE = "Lukáš and the Dragon's Garden"


@pytest.fixture
def images(tmp_path: Path) -> list[Path]:
    """Cover then three pages, each a square JPEG of its own colour."""
    paths = []
    for index, colour in enumerate(COLOURS):
        path = tmp_path / f"image-{index}.jpg"
        Image.new("RGB", (1200, 1200), colour).save(path, "JPEG", quality=90)
        paths.append(path)
    return paths


def only_image(page: DictionaryObject) -> DictionaryObject:
    xobjects = page["/Resources"]["/XObject"]
    assert len(xobjects) == 1
    return next(iter(xobjects.values())).get_object()


def test_pdf_has_cover_then_pages_with_jpegs_embedded_unchanged(
    images: list[Path], tmp_path: Path
) -> None:
    out = tmp_path / "book.pdf"
    cover, *pages = images

    assert build_pdf(cover, pages, out, title=TITLE) == out

    reader = PdfReader(out)
    assert len(reader.pages) == 1 + len(pages)
    assert reader.metadata is not None
    assert reader.metadata.title == TITLE
    for page, source in zip(reader.pages, images, strict=True):
        image = only_image(page)
        assert image["/Filter"] == "/DCTDecode"
        assert image.get_data() == source.read_bytes()  # also proves the order
        assert (float(page.mediabox.width), float(page.mediabox.height)) == (612, 612)


def test_a_picture_above_the_screen_side_gets_a_downscaled_copy(tmp_path: Path) -> None:
    big = tmp_path / "drawn-for-print.jpg"
    Image.new("RGB", (4096, 3072), (90, 90, 200)).save(big, "JPEG", quality=90)
    copy = tmp_path / "screen.jpg"

    assert screen_copy(big, copy, max_side=2048) == copy

    with Image.open(copy) as image:
        assert image.size == (2048, 1536)
    assert big.stat().st_size > 0  # the source itself is left alone


def test_a_picture_within_the_screen_side_is_its_own_screen_copy(
    images: list[Path], tmp_path: Path
) -> None:
    copy = tmp_path / "screen.jpg"

    assert screen_copy(images[0], copy, max_side=2048) == images[0]
    assert not copy.exists()


def test_non_square_trim_sets_every_media_box_and_fills_the_page(
    images: list[Path], tmp_path: Path
) -> None:
    out = tmp_path / "book.pdf"
    build_pdf(images[0], images[1:], out, trim_width_in=8, trim_height_in=10, title=TITLE)

    for page in PdfReader(out).pages:
        assert (float(page.mediabox.width), float(page.mediabox.height)) == (576, 720)
        # A square image filling an 8x10 in page is drawn 720 pt wide, centred at x = -72 pt.
        content = page.get_contents().get_data()
        matrix = re.search(rb"([-\d.]+) 0 0 ([-\d.]+) ([-\d.]+) ([-\d.]+) cm", content)
        assert matrix is not None
        assert [float(value) for value in matrix.groups()] == [720, 720, -72, 0]


def test_unreadable_page_fails_terminally_and_keeps_the_previous_pdf(
    images: list[Path], tmp_path: Path
) -> None:
    out = tmp_path / "book.pdf"
    out.write_bytes(b"previous complete book")
    broken = tmp_path / "page-2.jpg"
    broken.write_bytes(b"<!DOCTYPE html><html></html>")
    before = sorted(tmp_path.iterdir())

    with pytest.raises(PdfFailed) as caught:
        build_pdf(images[0], [images[1], broken], out, title=TITLE)

    assert caught.value.code == "pdf_failed"
    assert not caught.value.retryable
    assert "cannot read input image" in caught.value.detail
    assert out.read_bytes() == b"previous complete book"
    assert sorted(tmp_path.iterdir()) == before  # no temporary file left behind


def test_missing_page_file_is_retryable_and_leaves_no_output(
    images: list[Path], tmp_path: Path
) -> None:
    out = tmp_path / "book.pdf"
    before = sorted(tmp_path.iterdir())

    with pytest.raises(PdfWriteFailed) as caught:
        build_pdf(images[0], [tmp_path / "vanished.jpg"], out, title=TITLE)

    assert caught.value.retryable
    assert caught.value.code == "pdf_io_error"
    assert sorted(tmp_path.iterdir()) == before


def test_trim_size_must_be_positive(images: list[Path], tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        build_pdf(images[0], [], tmp_path / "book.pdf", trim_width_in=0, title=TITLE)


async def test_build_pdf_in_a_worker_thread_builds_the_same_book(
    images: list[Path], tmp_path: Path
) -> None:
    out = await asyncio.to_thread(
        build_pdf, images[0], images[1:], tmp_path / "book.pdf", trim_height_in=11, title=TITLE
    )

    reader = PdfReader(out)
    assert [only_image(page).get_data() for page in reader.pages] == [
        path.read_bytes() for path in images
    ]
    assert float(reader.pages[0].mediabox.height) == 792
