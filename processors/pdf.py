"""Assembling the finished book: cover and pages into one print-ready PDF with img2pdf.

img2pdf embeds a JPEG file's bytes as the PDF image stream (DCTDecode) without decoding it, so
the pages are printed exactly as they were checked and uploaded, with no second generation of
JPEG loss, and building a 30-page book costs file copies rather than image encodes.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

import img2pdf
from PIL import Image

from processors.errors import RetryableError, TerminalError
from processors.files import write_atomically
from processors.images import downscale, to_jpeg

DEFAULT_TRIM_IN = 8.5
#: The screen PDF's longest picture side: what ``IMAGE_SIZE=2K`` gives, more than a phone or a
#: tablet shows. Pictures drawn larger for the print files (``IMAGE_SIZE=auto`` asks for 4K for
#: an 8.5 in book at 300 PPI) go into the screen PDF as downscaled copies (``screen_copy``), so
#: it stays small.
SCREEN_MAX_SIDE = 2048

# img2pdf's layout callback: (width px, height px, dpi) -> (page w, page h, image w, image h) in pt.
LayoutFun = Callable[[int, int, tuple[float, float]], tuple[float, float, float, float]]

# Errors img2pdf raises for an input it cannot place on a page: retrying cannot change the file.
_IMG2PDF_ERRORS: tuple[type[Exception], ...] = (
    img2pdf.ImageOpenError,
    img2pdf.UnsupportedColorspaceError,
    img2pdf.JpegColorspaceError,
    img2pdf.AlphaChannelError,
    img2pdf.ExifOrientationError,
    img2pdf.NegativeDimensionError,
    img2pdf.PdfTooLargeError,
    ValueError,
)


class PdfFailed(TerminalError):
    """img2pdf rejected an input image: the same files would fail again."""

    code = "pdf_failed"


class PdfWriteFailed(RetryableError):
    """Reading an input or writing the PDF hit the file system (disk full, file vanished).

    The next attempt starts from fresh local files, so this is worth retrying.
    """

    code = "pdf_io_error"


def build_pdf(
    cover: Path,
    pages: list[Path],
    out: Path,
    *,
    trim_width_in: float = DEFAULT_TRIM_IN,
    trim_height_in: float = DEFAULT_TRIM_IN,
    title: str,
) -> Path:
    """Write ``cover`` then ``pages``, in the order given, as a PDF at ``out``; return ``out``.

    The caller passes ``pages`` already sorted by ``page_number``. Every page's media box is the
    book's trim size. Images *fill* the page, centred: artwork whose ratio differs slightly from
    the trim loses a sliver at the edges instead of getting white bars, which would look like a
    printing fault in a full-bleed picture book (and nothing is ever stretched).

    The PDF is written to a temporary file next to ``out`` and moved over it with
    ``os.replace``, so ``out`` is either absent, the previous complete PDF, or the new one:
    never half-written. Blocking: call it in a thread from the event loop.
    """
    if trim_width_in <= 0 or trim_height_in <= 0:
        raise ValueError(f"trim size must be positive, got {trim_width_in}x{trim_height_in} in")
    layout = img2pdf.get_layout_fun(
        pagesize=(img2pdf.in_to_pt(trim_width_in), img2pdf.in_to_pt(trim_height_in)),
        fit=img2pdf.FitMode.fill,
    )
    try:
        _convert([cover, *pages], out, layout_fun=layout, title=title)
    except _IMG2PDF_ERRORS as exc:
        raise PdfFailed(f"img2pdf could not build {out.name}: {exc}") from exc
    except OSError as exc:
        raise PdfWriteFailed(f"file error while building {out.name}: {exc}") from exc
    return out


def screen_copy(source: Path, copy: Path, max_side: int = SCREEN_MAX_SIDE) -> Path:
    """``source`` when its longer side is at most ``max_side``, else a LANCZOS-downscaled copy
    of it written at ``copy``: the picture the screen PDF gets. Blocking."""
    with Image.open(source) as image:
        if max(image.size) <= max_side:
            return source
        copy.write_bytes(to_jpeg(downscale(image.convert("RGB"), max_side)))
    return copy


def _convert(images: list[Path], out: Path, *, layout_fun: LayoutFun, title: str) -> None:
    def write(stream: BinaryIO) -> None:
        # Pinned rather than left to whatever is installed: pikepdf is img2pdf's required
        # dependency, and it linearizes the file, so the app can show the first pages
        # while the rest downloads.
        img2pdf.convert(
            images,
            outputstream=stream,
            layout_fun=layout_fun,
            title=title,
            engine=img2pdf.Engine.pikepdf,
        )

    write_atomically(out, write)
