"""Cover and child analysis: structured facts the prompts are built from.

The cover analysis depends only on the book, the prompt version and the model, so it is cached in
the database and shared by every order of the book (and by concurrent orders in this process,
which wait for one call instead of each paying for their own). The child analysis is kept on the
item, so a resumed attempt does not pay for it again.

A reply that cannot be used even with the tolerant models of ``analysis_models`` is asked for
once more (``LimitedAI``), then the item fails for good with ``ai_bad_response``: a third try
of the same prompt on the same image rarely differs, and each is paid. A cover analysis that
failed is cached as a failure too, so no later order of the book pays for it again under the
same prompt version; the operator deletes that ``book_analyses`` row (README) to try again.

Both analyses need only a small part of the job (``AnalysisCache``, ``ChildAnalysisSlot``), so a
cover made without an order (processors/cover_service.py) goes through the same code, the same
face-count gate included.
"""

from __future__ import annotations

import asyncio
from typing import Protocol

from pydantic import ValidationError

from processors.ai.base import AIBadResponse, ImageAI, ImagePart, Usage
from processors.analysis_models import ChildAnalysis, CoverAnalysis
from processors.child import ChildProfile
from processors.contract import Row
from processors.errors import TerminalError
from processors.prompts import PromptBook


class PhotoRejected(TerminalError):
    """The photo does not show exactly one child's face, so no likeness can be drawn."""

    code = "photo_rejected"
    parent_message = (
        "We could not find exactly one child's face in the photo. Please upload a clear photo "
        "showing only your child's face."
    )


class AnalysisUnusable(TerminalError):
    """The analysis model answered twice with nothing usable (see module docstring)."""

    code = "ai_bad_response"


class AnalysisCache(Protocol):
    """Where cover analyses are kept per book, prompt version and model (``JobContext`` is one)."""

    async def get_book_analysis(self, book_id: str, prompt_version: str, model: str) -> Row | None:
        """The cached analysis, or None."""

    async def put_book_analysis(
        self, book_id: str, prompt_version: str, model: str, analysis: Row
    ) -> None:
        """Keep an analysis (or its failure) for later calls."""


class ChildAnalysisSlot(Protocol):
    """Where one child's analysis is kept (``JobContext`` is one: the item's column)."""

    @property
    def item(self) -> Row:
        """The row whose ``child_analysis`` an earlier attempt saved, if any."""

    async def save_child_analysis(self, analysis: Row) -> None:
        """Keep the analysis, so a resumed attempt does not pay for it again."""


# The cached analysis of a book whose cover analysis failed carries this key.
_FAILED = "_failed"


class Analyzer:
    def __init__(self, ai: ImageAI, prompts: PromptBook, model_name: str) -> None:
        self.ai = ai
        self.prompts = prompts
        self.model_name = model_name
        self._cover_locks: dict[str, asyncio.Lock] = {}

    async def cover(
        self, job: AnalysisCache, book: Row, cover: ImagePart, usage: Usage
    ) -> CoverAnalysis:
        """The book's cover analysis, from the cache when any order of this book made it before."""
        key = f"{book['id']}/{self.prompts.version}/{self.model_name}"
        lock = self._cover_locks.setdefault(key, asyncio.Lock())
        async with lock:
            cached = await job.get_book_analysis(book["id"], self.prompts.version, self.model_name)
            if cached is not None:
                if _FAILED in cached:
                    raise AnalysisUnusable(f"cover analysis failed before: {cached[_FAILED]}")
                return CoverAnalysis.model_validate(cached)
            try:
                result = await self.ai.analyze(
                    prompt=self.prompts.cover_analysis_prompt(book),
                    images=[cover],
                    schema=CoverAnalysis,
                    usage=usage,
                )
            except AIBadResponse as exc:
                await job.put_book_analysis(
                    book["id"], self.prompts.version, self.model_name, {_FAILED: exc.detail[:300]}
                )
                raise AnalysisUnusable(f"cover analysis: {exc.detail}") from None
            await job.put_book_analysis(
                book["id"], self.prompts.version, self.model_name, result.value.model_dump()
            )
            return result.value

    async def child(
        self, job: ChildAnalysisSlot, profile: ChildProfile, photo: ImagePart, usage: Usage
    ) -> ChildAnalysis:
        """The child analysis, made once per item; rejects photos without exactly one face."""
        saved = job.item.get("child_analysis")
        analysis: ChildAnalysis | None = None
        if saved:
            try:
                analysis = ChildAnalysis.model_validate(saved)
            except ValidationError:
                analysis = None
        if analysis is None:
            try:
                result = await self.ai.analyze(
                    prompt=self.prompts.child_analysis_prompt(profile),
                    images=[photo],
                    schema=ChildAnalysis,
                    usage=usage,
                )
            except AIBadResponse as exc:
                raise AnalysisUnusable(f"child analysis: {exc.detail}") from None
            analysis = result.value
            await job.save_child_analysis(analysis.model_dump())
        if analysis.face_count != 1:
            raise PhotoRejected(f"photo shows {analysis.face_count} faces")
        return analysis
