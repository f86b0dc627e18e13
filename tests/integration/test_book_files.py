"""The book files a family and a printer receive: the name in the story as a real text layer,
and the print PDFs (trim + bleed, 300 PPI, a cover file of its own). Real pipeline, fake Gemini,
real Postgres; the PDFs are read back with pypdf and the embedded font with fontTools."""

from __future__ import annotations

import io
import json
import re
from collections.abc import AsyncIterator
from pathlib import Path

import psycopg
import pytest
from fontTools.ttLib import TTFont
from PIL import Image, ImageChops, ImageStat
from pypdf import PdfReader

from monitor.catalog import CatalogError, import_book, read_book_dir
from processors.pdf import SCREEN_MAX_SIDE
from testkit.fakes.gemini_server import full_size_copy
from tests.support.factories import item_row
from tests.support.pipeline_env import PipelineEnv, draw_scene

pytestmark = pytest.mark.filterwarnings("ignore:Inheritance class AiohttpClientSession")

TEXT_BOX = {"x": 0.08, "y": 0.04, "w": 0.84, "h": 0.2}
TEMPLATES = {
    1: "${name} climbs the lighthouse stairs. ${They} can see the sea!",
    2: "The keeper gives ${name} ${their} own lantern.",
    3: "Night falls over the bay.",  # no placeholder
}


@pytest.fixture
async def env(database_url: str, tmp_path) -> AsyncIterator[PipelineEnv]:
    async with PipelineEnv.open(database_url, tmp_path) as environment:
        yield environment


def book_dir(root: Path, meta: dict[int, dict]) -> Path:
    directory = root / "story-book"
    directory.mkdir()
    (directory / "cover.jpg").write_bytes(draw_scene(0))
    for number in meta:
        (directory / f"{number:02d}.jpg").write_bytes(draw_scene(number))
    (directory / "pages.json").write_text(json.dumps({str(n): m for n, m in meta.items()}))
    return directory


async def story_book(env: PipelineEnv, text_box: dict = TEXT_BOX) -> str:
    meta = {
        n: {
            "text": t,
            "text_box": text_box,
            "has_character": n != 3,
            "character_box": {"x": 0.2, "y": 0.4, "w": 0.3, "h": 0.5},
        }
        for n, t in TEMPLATES.items()
    }
    source = read_book_dir(book_dir(env.root, meta), "The Little Lighthouse")
    return await import_book(env.setup, env.storage, source)


async def finished(env: PipelineEnv, db: psycopg.Connection, name: str, gender: str) -> dict:
    book = await story_book(env)
    item = await env.add_item(book, child_name=name, child_gender=gender)
    assert await env.run_once(await env.processor()) == 1
    row = item_row(db, item)
    assert row["generation_status"] == "completed", (row["error_code"], row["error_message"])
    return row


def embedded_font(reader: PdfReader, page: int) -> TTFont:
    fonts = reader.pages[page]["/Resources"]["/XObject"]
    for xobject in fonts.values():
        resources = xobject.get_object().get("/Resources")
        if resources and "/Font" in resources:
            (font,) = resources["/Font"].values()
            descendant = font.get_object()["/DescendantFonts"][0].get_object()
            data = descendant["/FontDescriptor"]["/FontFile2"].get_object().get_data()
            return TTFont(io.BytesIO(data))
    raise AssertionError(f"page {page} has no font")


async def test_the_childs_name_is_selectable_text_on_every_page_that_names_it(
    env: PipelineEnv, db: psycopg.Connection
) -> None:
    row = await finished(env, db, "Zoë-Anne", "girl")
    reader = PdfReader(io.BytesIO(env.stored(row["pdf_path"])))
    texts = [" ".join(page.extract_text().split()) for page in reader.pages]
    assert "Zoë-Anne climbs the lighthouse stairs. She can see the sea!" in texts[1]
    assert "The keeper gives Zoë-Anne her own lantern." in texts[2]
    assert "Night falls over the bay." in texts[3]
    assert texts[0] == ""  # the cover's title is in its picture
    for page in (1, 2, 3):  # embedded (FontFile2), the bundled DejaVu Sans
        assert embedded_font(reader, page)["name"].getDebugName(1) == "DejaVu Sans"


async def test_a_cyrillic_name_is_drawn_with_real_glyphs(
    env: PipelineEnv, db: psycopg.Connection
) -> None:
    row = await finished(env, db, "Зоя Ψ", "child")
    reader = PdfReader(io.BytesIO(env.stored(row["pdf_path"])))
    assert "Зоя Ψ climbs the lighthouse stairs. They can see the sea!" in " ".join(
        reader.pages[1].extract_text().split()
    )
    font = embedded_font(reader, 1)
    cmap = font.getBestCmap()
    for char in "ЗояΨ":
        # Mapped to a real glyph with an outline (contours, or -1: composed of other glyphs),
        # not to .notdef (the empty box) nor to an empty glyph (0 contours).
        glyph = cmap[ord(char)]
        assert glyph != ".notdef" and font["glyf"][glyph].numberOfContours != 0, char


async def test_the_print_files_have_bleed_trim_and_300_ppi(
    env: PipelineEnv, db: psycopg.Connection
) -> None:
    row = await finished(env, db, "Mia", "girl")
    interior = PdfReader(io.BytesIO(env.stored(row["print_interior_path"])))
    cover = PdfReader(io.BytesIO(env.stored(row["print_cover_path"])))
    trim, bleed = 8.5 * 72, 0.125 * 72
    assert len(interior.pages) == len(TEMPLATES) and len(cover.pages) == 1
    for page in [*interior.pages, *cover.pages]:
        assert [float(v) for v in page.mediabox] == [0, 0, trim + 2 * bleed, trim + 2 * bleed]
        assert [float(v) for v in page.trimbox] == [bleed, bleed, bleed + trim, bleed + trim]
        assert [float(v) for v in page.bleedbox] == [float(v) for v in page.mediabox]
        for image, placed_width_pt in _placed_images(page):
            assert image.image.width / (placed_width_pt / 72) >= 300
    # The model's 600 px pages had to be upscaled, and the row says so.
    assert row["print_upscaled"] is True
    assert float(row["print_source_ppi"]) < 300
    assert row["print_interior_url"].endswith("print-interior.pdf")
    assert row["print_cover_url"].endswith("print-cover.pdf")
    # The screen PDF stays small: the upscaled pixels are only in the print file.
    assert len(env.stored(row["pdf_path"])) * 4 < len(env.stored(row["print_interior_path"]))


async def test_drawings_at_4k_go_whole_into_the_print_files_and_downscaled_into_the_screen_pdf(
    env: PipelineEnv, db: psycopg.Connection
) -> None:
    # An 8.5 in book at 300 PPI is asked for 4K (tests/integration/test_print_image_size.py),
    # and the fake answers with the pixels the real model gives for it.
    env.fake.image_maker = full_size_copy
    row = await finished(env, db, "Mia", "girl")
    screen = PdfReader(io.BytesIO(env.stored(row["pdf_path"])))
    interior = PdfReader(io.BytesIO(env.stored(row["print_interior_path"])))
    cover = PdfReader(io.BytesIO(env.stored(row["print_cover_path"])))

    def sides(reader: PdfReader) -> list[tuple[int, int]]:
        return [(i.image.width, i.image.height) for page in reader.pages for i in page.images]

    print_side = 2625  # (8.5 + 2 x 0.125) in x 300 PPI
    assert sides(cover) == [(print_side, print_side)]
    assert sides(interior) == [(print_side, print_side)] * 3
    # The cover and pages 1 and 2 were drawn at 4K; page 3 has nobody to draw, so it is the
    # catalog's 600 px picture: upscaled for print only.
    assert sides(screen) == [(SCREEN_MAX_SIDE, SCREEN_MAX_SIDE)] * 3 + [(600, 600)]
    # The 4K drawings' screen copies come from their output checks' own decode of the reply
    # (images.check_output), not from the print picture: they must still be the same picture.
    printed = [i.image for i in cover.pages[0].images] + [
        i.image for page in interior.pages for i in page.images
    ]
    shown = [i.image for page in screen.pages for i in page.images]
    for big, small in zip(printed[:3], shown[:3], strict=True):
        shrunk = big.convert("RGB").resize(small.size, Image.Resampling.LANCZOS)
        difference = ImageChops.difference(shrunk, small.convert("RGB"))
        assert max(ImageStat.Stat(difference).mean) < 3


def _placed_images(page):
    """(image, placed width in pt) for each image drawn by a ``w 0 0 h x y cm`` before ``Do``."""
    content = page.get_contents().get_data().decode("latin-1")
    widths = [
        float(m.group(1)) for m in re.finditer(r"([\d.]+) 0 0 [\d.]+ [-\d.]+ [-\d.]+ cm", content)
    ]
    images = list(page.images)
    assert images and widths
    return [(image, widths[0]) for image in images]


async def test_text_that_cannot_fit_fails_the_import_not_an_order(env: PipelineEnv) -> None:
    with pytest.raises(CatalogError, match="does not fit its text_box"):
        await story_book(env, text_box={"x": 0.4, "y": 0.4, "w": 0.05, "h": 0.03})


async def test_an_unknown_placeholder_fails_the_import(env: PipelineEnv) -> None:
    meta = {1: {"text": "${nickname} waves.", "text_box": TEXT_BOX}}
    source = read_book_dir(book_dir(env.root, meta), "T")
    with pytest.raises(CatalogError, match=r"unknown placeholder \$\{nickname\}"):
        await import_book(env.setup, env.storage, source)
