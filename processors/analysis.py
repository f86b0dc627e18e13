"""Cover and child analysis: structured facts the prompts are built from.

The cover analysis depends only on the book, the prompt version and the model, so it is cached in
the database and shared by every order of the book (and by concurrent orders in this process,
which wait for one call instead of each paying for their own). The child analysis is kept on the
item, so a resumed attempt does not pay for it again.
"""

from __future__ import annotations

import asyncio

from pydantic import ValidationError

from monitor.job import Job, LeaseLost
from monitor.store.base import OrderStore, Row
from processors.ai.base import ImageAI, ImagePart, Usage
from processors.analysis_models import ChildAnalysis, CoverAnalysis
from processors.errors import TerminalError
from processors.prompts import ChildProfile, PromptBook


class PhotoRejected(TerminalError):
    """The photo does not show exactly one child's face, so no likeness can be drawn."""

    code = "photo_rejected"
    parent_message = (
        "We could not find exactly one child's face in the photo. Please upload a clear photo "
        "showing only your child's face."
    )


class Analyzer:
    def __init__(self, ai: ImageAI, prompts: PromptBook, model_name: str) -> None:
        self.ai = ai
        self.prompts = prompts
        self.model_name = model_name
        self._cover_locks: dict[str, asyncio.Lock] = {}

    async def cover(self, store: OrderStore, book: Row, cover: ImagePart, usage: Usage) -> CoverAnalysis:
        """The book's cover analysis, from the cache when any order of this book made it before."""
        key = f"{book['id']}/{self.prompts.version}/{self.model_name}"
        lock = self._cover_locks.setdefault(key, asyncio.Lock())
        async with lock:
            cached = await store.get_book_analysis(book["id"], self.prompts.version, self.model_name)
            if cached is not None:
                try:
                    return CoverAnalysis.model_validate(cached)
                except ValidationError:
                    pass  # written by an older model schema: analyze again and keep the new one
            result = await self.ai.analyze(
                prompt=self.prompts.cover_analysis_prompt(book), images=[cover], schema=CoverAnalysis
            )
            usage.add(result.usage)
            await store.put_book_analysis(
                book["id"], self.prompts.version, self.model_name, result.value.model_dump()
            )
            return result.value

    async def child(self, job: Job, profile: ChildProfile, photo: ImagePart, usage: Usage) -> ChildAnalysis:
        """The child analysis, made once per item; rejects photos without exactly one face."""
        saved = job.item.get("child_analysis")
        analysis: ChildAnalysis | None = None
        if saved:
            try:
                analysis = ChildAnalysis.model_validate(saved)
            except ValidationError:
                analysis = None
        if analysis is None:
            result = await self.ai.analyze(
                prompt=self.prompts.child_analysis_prompt(profile), images=[photo], schema=ChildAnalysis
            )
            usage.add(result.usage)
            analysis = result.value
            if not await job.store.save_child_analysis(job.item_id, job.worker, analysis.model_dump()):
                raise LeaseLost(job.item_id)
        if analysis.face_count != 1:
            raise PhotoRejected(f"photo shows {analysis.face_count} faces")
        return analysis
