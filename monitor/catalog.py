"""``run_monitor.py import-book``: how an operator adds a book to the catalog.

A directory holds ``cover.<ext>`` and numbered page images (``01.jpg``, ``page-2.png``, ...), plus
an optional ``pages.json`` mapping page numbers to ``{"text", "has_character", "character_box",
"text_box"}`` (and ``"cover"`` to ``{"character_box"}``). ``text`` may be a template with the
child's name and pronouns (processors/story.py); with a ``text_box`` it is set into the PDFs as a
text layer, and it must fit there for the widest name the app accepts, else the import fails.
Images are checked to decode, uploaded under ``catalog/{book_id}/``, and the rows are written by
one SQL function call.
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from monitor.store.base import OrderStore
from processors.child import NAME_MAX_CHARS
from processors.images import load_page_image
from processors.ports import BlobStorage
from processors.print_pdf import BLEED_IN_RANGE, PPI_RANGE
from processors.story import longest_profile, render_story, template_problems
from processors.text_layer import TextDoesNotFit, check_fits

#: The content type of every image the daemon uploads, by file suffix (catalog pages and covers,
#: and the demo's photo, which may also be HEIC/HEIF).
CONTENT_TYPES = {
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".png": "image/png",
    ".webp": "image/webp",
    ".heic": "image/heic",
    ".heif": "image/heif",
}
#: What a catalog directory's images may be.
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp"})
_PAGE_NUMBER = re.compile(r"(\d+)")


class CatalogError(ValueError):
    """The directory does not describe a book; the message says what to fix."""


def check_print_profile(bleed_in: float | None, ppi: int | None) -> None:
    """Refuse a bleed or PPI outside print practice (None: the settings' value applies)."""
    if bleed_in is not None and not BLEED_IN_RANGE[0] <= bleed_in <= BLEED_IN_RANGE[1]:
        raise CatalogError(
            f"bleed must be {BLEED_IN_RANGE[0]:g} to {BLEED_IN_RANGE[1]:g} in per edge, "
            f"got {bleed_in:g}"
        )
    if ppi is not None and not PPI_RANGE[0] <= ppi <= PPI_RANGE[1]:
        raise CatalogError(f"ppi must be {PPI_RANGE[0]} to {PPI_RANGE[1]}, got {ppi}")


@dataclass
class BookSource:
    title: str
    cover: Path
    pages: dict[int, Path]
    page_meta: dict[int, dict[str, Any]] = field(default_factory=dict)
    cover_meta: dict[str, Any] = field(default_factory=dict)


def read_book_dir(directory: Path, title: str) -> BookSource:
    if not directory.is_dir():
        raise CatalogError(f"{directory} is not a directory")
    images = [p for p in sorted(directory.iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES]
    covers = [p for p in images if p.stem.lower() == "cover"]
    if not covers:
        raise CatalogError(f"{directory} has no cover image (cover.jpg, cover.png or cover.webp)")
    pages: dict[int, Path] = {}
    for path in images:
        if path in covers:
            continue
        match = _PAGE_NUMBER.search(path.stem)
        if match is None:
            raise CatalogError(f"{path.name}: page images need a number in their name")
        number = int(match.group(1))
        if number < 1 or number in pages:
            raise CatalogError(f"{path.name}: page number {number} is invalid or used twice")
        pages[number] = path
    if not pages:
        raise CatalogError(f"{directory} has no page images")
    meta_file = directory / "pages.json"
    meta: dict[int, dict[str, Any]] = {}
    cover_meta: dict[str, Any] = {}
    if meta_file.exists():
        try:
            raw = json.loads(meta_file.read_text(encoding="utf-8"))
            cover_meta = dict(raw.pop("cover", {}))
            meta = {int(k): dict(v) for k, v in raw.items()}
        except (ValueError, TypeError, AttributeError) as exc:
            raise CatalogError(f"pages.json must map page numbers to objects: {exc}") from exc
        unknown = set(meta) - set(pages)
        if unknown:
            raise CatalogError(f"pages.json describes pages without images: {sorted(unknown)}")
    return BookSource(
        title=title, cover=covers[0], pages=pages, page_meta=meta, cover_meta=cover_meta
    )


async def import_book(
    store: OrderStore,
    storage: BlobStorage,
    source: BookSource,
    *,
    book_id: str | None = None,
    genre: str | None = None,
    age_min: int | None = None,
    age_max: int | None = None,
    trim_width_in: float = 8.5,
    trim_height_in: float = 8.5,
    print_bleed_in: float | None = None,
    print_ppi: int | None = None,
) -> str:
    check_print_profile(print_bleed_in, print_ppi)
    for number, meta in sorted(source.page_meta.items()):
        _check_text(number, meta, (trim_width_in * 72, trim_height_in * 72))
    book_id = str(uuid.UUID(book_id)) if book_id else str(uuid.uuid4())
    prefix = f"catalog/{book_id}"
    cover_path = await _upload(storage, source.cover, f"{prefix}/cover")
    pages = []
    for number, path in sorted(source.pages.items()):
        meta = source.page_meta.get(number, {})
        pages.append(
            {
                "page_number": number,
                "image_path": await _upload(storage, path, f"{prefix}/pages/{number:02d}"),
                "has_character": bool(meta.get("has_character", True)),
                "character_box": meta.get("character_box"),
                "text": meta.get("text"),
            }
        )
    book = {
        "id": book_id,
        "title": source.title,
        "genre": genre,
        "age_min": age_min,
        "age_max": age_max,
        "cover_image_path": cover_path,
        "cover_character_box": source.cover_meta.get("character_box"),
        "trim_width_in": trim_width_in,
        "trim_height_in": trim_height_in,
    }
    book_id = await store.import_book(book, pages)
    await store.set_book_layout(
        book_id,
        bleed_in=print_bleed_in,
        ppi=print_ppi,
        pages=[
            {"page_number": n, "text_box": m.get("text_box")}
            for n, m in sorted(source.page_meta.items())
        ],
    )
    return book_id


# The widest name the app can send: NAME_MAX_CHARS of the font's widest capital, as one word.
_WIDEST_NAME = "W" * NAME_MAX_CHARS


def _check_text(number: int, meta: dict[str, Any], page_pt: tuple[float, float]) -> None:
    """The page's text renders for every child and fits its text box (module docstring)."""
    text = meta.get("text")
    if text is None:
        return
    if not isinstance(text, str):
        raise CatalogError(f"page {number}: text must be a string")
    problems = template_problems(text)
    if problems:
        raise CatalogError(f"page {number}: text {'; '.join(problems)}")
    box = meta.get("text_box")
    if box is None:
        return  # the text is baked into the picture; it only gives the model context
    try:
        x, y, w, h = (float(box[k]) for k in ("x", "y", "w", "h"))
    except (KeyError, TypeError, ValueError):
        raise CatalogError(f"page {number}: text_box needs numbers x, y, w, h") from None
    fractions = (x, y, w, h)
    if not (0 <= x < 1 and 0 <= y < 1 and 0 < w <= 1 - x and 0 < h <= 1 - y):
        raise CatalogError(f"page {number}: text_box must lie within the page (fractions 0-1)")
    for gender in ("girl", "boy", "child"):
        try:
            check_fits(
                render_story(text, longest_profile(gender, _WIDEST_NAME)), fractions, page_pt
            )
        except TextDoesNotFit as exc:
            raise CatalogError(
                f"page {number}: text does not fit its text_box with the longest name: {exc}"
            ) from None


async def _upload(storage: BlobStorage, path: Path, key_stem: str) -> str:
    data = path.read_bytes()
    try:
        load_page_image(data)
    except Exception as exc:
        raise CatalogError(f"{path.name} is not a readable image") from exc
    suffix = path.suffix.lower()
    key = f"{key_stem}{'.jpg' if suffix == '.jpeg' else suffix}"
    await storage.upload(key, data, CONTENT_TYPES[suffix])
    return key
