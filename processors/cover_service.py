"""A personalized cover without an order: a book cover and a child's photo in, the cover the
daemon would draw as a book's first illustration out. For support and sales, the counterpart of
the Node original's ``POST /generate-cover`` (monitor/cover_endpoint.py, ``book-monitor
generate-cover``).

Nothing here is a second pipeline: the child's details go through ``validate_child``, the photo
through ``normalize_photo`` (``PhotoInvalid``), both analyses through the daemon's ``Analyzer``
(the face-count gate included: ``PhotoRejected``), and the drawing through
``BookProcessor.draw_cover``: the same prompt, the model catalog and ``LimitedAI``'s limits,
retries, pricing and spend counter, the output checks (blank, unchanged, wrong shape) and the
quality gate as ``QA_MODE`` configures it. Every check that needs no paid call runs before the
first one.

Nothing is stored: no row, no checkpoint, no object, no child analysis (``_Scratch``). A catalog
book's cover analysis goes through the daemon's own cache (``AnalysisCache``, the store), shared
with every order of the book; an uploaded cover's analysis is kept in :class:`MemoryAnalyses`,
this process's small cache keyed by the image's hash, so a sales call repeated with the same
cover does not pay for its analysis twice.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections import OrderedDict
from dataclasses import dataclass, field

from loguru import logger
from PIL import Image

from processors.ai.base import ImagePart, Usage
from processors.analysis import AnalysisCache
from processors.book import BookProcessor, Inputs
from processors.child import ChildProfile, validate_child
from processors.contract import Row
from processors.images import load_page_image

#: Uploaded covers whose analysis this process keeps.
MEMORY_ANALYSES = 64


@dataclass(frozen=True)
class Child:
    """The child as a caller hands it over: the photo's bytes and the details as typed."""

    photo: bytes
    name: str | None
    age: int | str | None
    gender: str | None


@dataclass(frozen=True)
class CoverResult:
    jpeg: bytes
    #: The image model that drew it.
    model: str
    #: Calls, images, tokens and cost of this cover (analyses, drawing, judging).
    usage: Usage
    #: The quality gate kept a drawing below its threshold (``QA_ON_FAIL=review``).
    needs_review: bool = False


class MemoryAnalyses:
    """An ``AnalysisCache`` in this process's memory, for covers that are not in the catalog.

    Bounded (least recently used goes first); a failed analysis is kept like a good one, as the
    database cache does (processors/analysis.py).
    """

    def __init__(self, size: int = MEMORY_ANALYSES) -> None:
        self.size = size
        self._kept: OrderedDict[tuple[str, str, str], Row] = OrderedDict()

    async def get_book_analysis(self, book_id: str, prompt_version: str, model: str) -> Row | None:
        key = (book_id, prompt_version, model)
        if key in self._kept:
            self._kept.move_to_end(key)
        return self._kept.get(key)

    async def put_book_analysis(
        self, book_id: str, prompt_version: str, model: str, analysis: Row
    ) -> None:
        self._kept[(book_id, prompt_version, model)] = analysis
        self._kept.move_to_end((book_id, prompt_version, model))
        while len(self._kept) > self.size:
            self._kept.popitem(last=False)


@dataclass
class _Scratch:
    """The child analysis's slot for a cover without an order: it lives for one call only,
    since the photo is private and nothing ties a second call to the same child."""

    item: Row = field(default_factory=dict)

    async def save_child_analysis(self, analysis: Row) -> None:
        self.item = {"child_analysis": analysis}


class CoverService:
    """Covers without an order, drawn by the daemon's own processor (module docstring)."""

    def __init__(self, processor: BookProcessor, uploads: MemoryAnalyses | None = None) -> None:
        self.processor = processor
        self.uploads = uploads or MemoryAnalyses()

    async def from_catalog(self, book: Row, child: Child, analyses: AnalysisCache) -> CoverResult:
        """The cover of a catalog ``book`` (a ``get_catalog_book`` row) with ``child`` as its hero;
        its analysis is cached in ``analyses`` (the daemon's store) for every order of it."""
        profile, photo = await self._child(child)
        original = await self.processor.book_cover(book)
        return await self._draw(book, original, profile, photo, analyses)

    async def from_upload(self, cover: bytes, child: Child, description: Row) -> CoverResult:
        """The cover ``cover`` (image bytes) with ``child`` as its hero. ``description`` says what
        the prompts may know of the book (``title``, ``genre``, ``age_min``, ``age_max``); a cover
        that does not decode raises ``BookImageInvalid``."""
        profile, photo = await self._child(child)
        original = await self.processor.pictures.run(load_page_image, cover)
        book = {**description, "id": f"upload-{hashlib.sha256(cover).hexdigest()[:32]}"}
        return await self._draw(book, original, profile, photo, self.uploads)

    async def _child(self, child: Child) -> tuple[ChildProfile, ImagePart]:
        """Checks that cost nothing, before any paid call: details, then the photo."""
        profile = validate_child(child.name, child.age, child.gender)
        return profile, await self.processor.photo_part(child.photo)

    async def _draw(
        self,
        book: Row,
        original: Image.Image,
        profile: ChildProfile,
        photo: ImagePart,
        analyses: AnalysisCache,
    ) -> CoverResult:
        processor, usage = self.processor, Usage()
        cover_part = await processor.model_part(original)
        cover_analysis, child_analysis = await asyncio.gather(
            processor.analyzer.cover(analyses, book, cover_part, usage),
            processor.analyzer.child(_Scratch(), profile, photo, usage),
        )
        inputs = Inputs(book, profile, photo, cover_analysis, child_analysis)
        checked = await processor.draw_cover(inputs, original, cover_part, usage)
        logger.info(
            "cover generated without an order",
            model=checked.model,
            calls=usage.calls,
            images=usage.images,
            cost_usd=usage.as_dict().get("cost_usd"),
            needs_review=checked.needs_review,
        )
        return CoverResult(checked.jpeg, checked.model, usage, checked.needs_review)
