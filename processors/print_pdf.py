"""Print files for a print-on-demand service: an interior PDF and a cover PDF (issue 13).

Print services (Lulu's book creation guide, for one) ask for pages at the trim size plus a bleed
on every edge, images of at least 300 PPI at their placed size, and the cover as a file of its
own. Each page here is trim + 2 x bleed (MediaBox = BleedBox), with the TrimBox set to the trim;
the picture fills the MediaBox as in the screen PDF. A picture with fewer pixels than the target
PPI needs is upscaled with LANCZOS (the model gave no more), and the result says so, for the row.
The screen PDF (``processors.pdf``) is left as small as it was.

Each picture is prepared on its own (``prepare_print_image``, blocking: the pipeline runs it in a
thread as soon as a drawing passed its output checks, while it is judged and other pages are
still being drawn), so the end of a book only assembles the two PDFs (``assemble_print_files``).

The cover file is the front cover alone, at the book's trim + bleed: a wrap cover with spine and
back needs the page count and paper of a specific printer, which the catalog does not hold.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import pikepdf
from PIL import Image

from processors.images import fit_consuming
from processors.pdf import build_pdf
from processors.text_layer import PlacedText, add_text_layer

PT_PER_IN = 72.0
#: The print profiles accepted (the ``PRINT_*`` settings, ``import-book --bleed-in --ppi``): bleed
#: per edge in inches, and the minimum effective PPI of the print files. Print services ask for
#: 0.125 in and 300 PPI (Lulu's book creation guide); a picture book below 150 PPI prints
#: visibly soft, and no press resolves more than 1200.
BLEED_IN_RANGE = (0.0, 0.5)
PPI_RANGE = (150, 1200)
_JPEG_QUALITY = 92


@dataclass(frozen=True)
class PrintProfile:
    trim_width_in: float
    trim_height_in: float
    bleed_in: float = 0.125
    ppi: int = 300

    @property
    def media_in(self) -> tuple[float, float]:
        return self.trim_width_in + 2 * self.bleed_in, self.trim_height_in + 2 * self.bleed_in

    @property
    def pixels(self) -> tuple[int, int]:
        """Pixels (width, height) a picture filling the media box needs to reach ``ppi``."""
        width, height = self.media_in
        return math.ceil(width * self.ppi), math.ceil(height * self.ppi)


@dataclass(frozen=True)
class PrintFiles:
    interior: Path
    cover: Path
    #: Some picture had fewer pixels than ``ppi`` needs and was upscaled.
    upscaled: bool
    #: The lowest effective PPI of a picture as the model gave it.
    source_ppi: float


def _effective_ppi(size: tuple[int, int], media_in: tuple[float, float]) -> float:
    """PPI of a picture that fills (covers) the media box, as img2pdf's fill mode places it."""
    return min(size[0] / media_in[0], size[1] / media_in[1])


@dataclass(frozen=True)
class PrintImage:
    """One picture ready for the print PDFs."""

    path: Path
    #: Its effective PPI as the model gave it.
    source_ppi: float
    upscaled: bool


def prepare_print_image(source: Path, out: Path, profile: PrintProfile) -> PrintImage:
    """``source`` itself when it has the pixels, else a LANCZOS upscale of it at ``out``.
    Blocking."""
    with Image.open(source) as image:
        ppi = _effective_ppi(image.size, profile.media_in)
        if ppi >= profile.ppi:
            return PrintImage(source, ppi, False)
        factor = profile.ppi / ppi
        size = (math.ceil(image.width * factor), math.ceil(image.height * factor))
        # Our drawn pictures are RGB already; convert() would make a full-size copy regardless.
        rgb = image if image.mode == "RGB" else image.convert("RGB")
        fit_consuming(rgb, size).save(
            out, "JPEG", quality=_JPEG_QUALITY, dpi=(profile.ppi, profile.ppi)
        )
    return PrintImage(out, ppi, True)


def _set_boxes(path: Path, profile: PrintProfile) -> None:
    bleed = profile.bleed_in * PT_PER_IN
    trim = [
        bleed,
        bleed,
        bleed + profile.trim_width_in * PT_PER_IN,
        bleed + profile.trim_height_in * PT_PER_IN,
    ]
    with pikepdf.open(path, allow_overwriting_input=True) as pdf:
        for page in pdf.pages:
            page.obj["/TrimBox"] = pikepdf.Array(trim)
            page.obj["/BleedBox"] = page.obj["/MediaBox"]
        pdf.save(path)


def _one_pdf(
    images: list[Path], out: Path, profile: PrintProfile, title: str, texts: list[PlacedText | None]
) -> Path:
    width, height = profile.media_in
    build_pdf(images[0], images[1:], out, trim_width_in=width, trim_height_in=height, title=title)
    add_text_layer(out, texts)
    _set_boxes(out, profile)
    return out


def assemble_print_files(
    cover: PrintImage,
    pages: list[PrintImage],
    texts: list[PlacedText | None],
    work: Path,
    profile: PrintProfile,
    *,
    title: str,
) -> PrintFiles:
    """The interior (pages, with their text layer) and the cover PDF in ``work``, from pictures
    ``prepare_print_image`` made for the same ``profile``. Blocking.

    ``texts`` has one entry per page of ``pages``.
    """
    interior = _one_pdf([p.path for p in pages], work / "print-interior.pdf", profile, title, texts)
    cover_pdf = _one_pdf([cover.path], work / "print-cover.pdf", profile, title, [None])
    every = [cover, *pages]
    return PrintFiles(
        interior,
        cover_pdf,
        any(p.upscaled for p in every),
        round(min(p.source_ppi for p in every), 1),
    )
