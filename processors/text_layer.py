"""The story text as a real text layer of a PDF: selectable, searchable, in an embedded font.

The pages themselves stay img2pdf's (JPEG passthrough); this module draws each page's text with
fpdf2 into a page of the same size, in DejaVu Sans (``processors/fonts``, Bitstream Vera licence,
Latin, Greek and Cyrillic), embedded as a subset with a ToUnicode map, and lays that page over
the picture with pikepdf (``Page.add_overlay``), so the text is text, not pixels.

Text is set inside the page's ``text_box`` (fractions x, y, w, h of the page, like
``character_box``), wrapped at spaces (a word wider than the box is broken), as large as fits
from ``MAX_PT`` down to ``MIN_PT``. Import checks every template with the widest name the app
can send at ``MIN_PT`` (``TextDoesNotFit`` there fails the import); at order time the size may
go down to ``FLOOR_PT`` before it gives up, which the import check makes unreachable for names
the app accepts.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pikepdf
from fpdf import FPDF

FONT_FILE = Path(__file__).resolve().parent / "fonts" / "DejaVuSans.ttf"
FONT_NAME = "DejaVuSans"
MAX_PT, MIN_PT, FLOOR_PT = 26.0, 10.0, 7.0
LINE_HEIGHT = 1.25
_STEP = 0.5
_INK = (40, 30, 25)


class TextDoesNotFit(ValueError):
    """The text does not fit its box even at the smallest size allowed."""


Box = tuple[float, float, float, float]


@dataclass(frozen=True)
class PlacedText:
    text: str
    box: Box


def _pdf() -> FPDF:
    pdf = FPDF(unit="pt")
    pdf.set_auto_page_break(False)
    pdf.set_margins(0, 0, 0)
    pdf.add_font(FONT_NAME, fname=str(FONT_FILE))
    pdf.set_text_color(*_INK)
    return pdf


def _wrap(pdf: FPDF, text: str, width: float) -> list[str]:
    lines: list[str] = []
    for paragraph in text.split("\n"):
        line = ""
        for word in paragraph.split():
            while pdf.get_string_width(word) > width and len(word) > 1:
                cut = len(word) - 1
                while cut > 1 and pdf.get_string_width(word[:cut]) > width:
                    cut -= 1
                if line:
                    lines.append(line)
                    line = ""
                lines.append(word[:cut])
                word = word[cut:]
            candidate = f"{line} {word}" if line else word
            if pdf.get_string_width(candidate) <= width:
                line = candidate
            else:
                lines.append(line)
                line = word
        lines.append(line)
    return lines


def fit(
    pdf: FPDF, text: str, width: float, height: float, *, smallest: float = MIN_PT
) -> tuple[float, list[str]]:
    """The largest size from ``MAX_PT`` down to ``smallest`` at which ``text`` fits, and its
    lines."""
    size = MAX_PT
    while size >= smallest:
        pdf.set_font(FONT_NAME, size=size)
        lines = _wrap(pdf, text, width)
        if len(lines) * size * LINE_HEIGHT <= height:
            return size, lines
        size -= _STEP
    raise TextDoesNotFit(
        f"{len(text)} characters do not fit {width:.0f}x{height:.0f} pt at {smallest:g} pt"
    )


def check_fits(text: str, box: Box, page_size_pt: tuple[float, float]) -> None:
    """Raise ``TextDoesNotFit`` unless ``text`` fits ``box`` at ``MIN_PT`` or more."""
    pdf = _pdf()
    fit(pdf, text, box[2] * page_size_pt[0], box[3] * page_size_pt[1])


def _overlay(sizes: list[tuple[float, float]], texts: list[PlacedText | None]) -> bytes:
    pdf = _pdf()
    for (width, height), placed in zip(sizes, texts):
        pdf.add_page(format=(width, height))
        if placed is None:
            continue
        x, y, w, h = placed.box
        size, lines = fit(pdf, placed.text, w * width, h * height, smallest=FLOOR_PT)
        top = y * height + (h * height - len(lines) * size * LINE_HEIGHT) / 2
        for n, line in enumerate(lines):
            pdf.set_xy(x * width, top + n * size * LINE_HEIGHT)
            pdf.cell(w * width, size * LINE_HEIGHT, line, align="C")
    return bytes(pdf.output())


def add_text_layer(path: Path, texts: list[PlacedText | None]) -> None:
    """Lay ``texts`` (one per page, None: no text) over the pages of the PDF at ``path``.

    Written to a temporary sibling and moved into place, like ``processors.pdf``. Blocking.
    """
    if not any(texts):
        return
    with pikepdf.open(path) as pdf:
        sizes = [
            (float(p.mediabox[2] - p.mediabox[0]), float(p.mediabox[3] - p.mediabox[1]))
            for p in pdf.pages
        ]
        if len(sizes) != len(texts):
            raise ValueError(f"{len(texts)} texts for {len(sizes)} pages")
        overlay_file = Path(tempfile.mkstemp(suffix=".pdf", dir=path.parent)[1])
        try:
            overlay_file.write_bytes(_overlay(sizes, texts))
            with pikepdf.open(overlay_file) as overlay:
                for page, over, placed in zip(pdf.pages, overlay.pages, texts):
                    if placed is not None:
                        page.add_overlay(over, None)  # None: the whole page
                fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
                os.close(fd)
                pdf.save(tmp)
        finally:
            overlay_file.unlink(missing_ok=True)
    os.replace(tmp, path)
