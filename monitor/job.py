"""The daemon's side of the job contract: :class:`Job` implements ``JobContext``.

A processor is any async callable taking a job and returning a ``BookResult``. It reports progress,
checkpoints and keeps its analyses through the job, which fences every write: once the lease is
lost, the next write raises ``LeaseLost`` and the daemon abandons the item. See
docs/architecture.md, "The job contract".
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from tenacity import stop_after_delay

from monitor.store.base import OrderStore, through_outages
from processors.contract import ItemContext, LeaseLost, Row, StepCode
from processors.queue_order import Place

T = TypeVar("T")


@dataclass
class Job:
    """One claimed order item, as a processor sees it.

    Its writes wait out a database outage for up to ``outage_patience`` seconds (the daemon gives
    the lease): a checkpoint that gets through after a restart saves an image that is already
    paid for and stored. Longer than the lease is pointless, as the heartbeat then gives the item
    up; with 0 the first StoreUnavailable is raised.
    """

    item: Row
    worker: str
    store: OrderStore
    step: str = "Starting"
    progress: int = 0
    outage_patience: float = 0.0
    #: The processor's running total of AI usage for this item (set by the processor), so the
    #: daemon can persist what was billed when the item fails or is released.
    usage_of: Callable[[], dict[str, Any]] | None = None
    #: Set once a write was refused: the item is not ours any more.
    lost: bool = False

    def __post_init__(self) -> None:
        # A resumed attempt starts from what earlier attempts reached (the row never goes back).
        self.progress = max(self.progress, int(self.item.get("progress") or 0))

    def raise_if_lost(self) -> None:
        """Call before starting paid work: a refused write elsewhere in this item means stop."""
        if self.lost:
            raise LeaseLost(self.item_id)

    @property
    def item_id(self) -> str:
        return self.item["id"]

    @property
    def queue_place(self) -> Place:
        """Where the claim statement found the item (``order by next_attempt_at, id``,
        migrations/009_queue_honesty.sql): its AI calls and picture work are served in that
        order (processors/queue_order.py). Both stores return the timestamp as the database's
        ISO text, which sorts as the time does."""
        return (str(self.item.get("next_attempt_at") or ""), self.item_id)

    @property
    def attempt(self) -> int:
        return int(self.item.get("attempts") or 0)

    async def load_context(self) -> ItemContext:
        context = await self._write(lambda: self.store.load_context(self.item_id, self.worker))
        self._accepted(context is not None)
        assert context is not None
        return context

    async def report(
        self,
        progress: int,
        step: str,
        *,
        code: StepCode | None = None,
        pages_total: int | None = None,
        usage: dict[str, int] | None = None,
    ) -> None:
        """Write progress for the app's progress bar (and usage so far, for cost tracking).

        ``code`` is written with the prose, always: without one the row's code is cleared, so
        it can never describe an earlier step than ``current_step`` does. Progress never goes
        backwards, here as in the row.
        """
        self.progress, self.step = max(self.progress, progress), step
        self._accepted(
            await self._write(
                lambda: self.store.set_progress(
                    self.item_id,
                    self.worker,
                    progress,
                    step,
                    step_code=code,
                    pages_total=pages_total,
                    usage=usage,
                )
            )
        )

    async def checkpoint(
        self,
        page_number: int,
        image_path: str,
        *,
        prompt_version: str | None = None,
        model: str | None = None,
        usage: dict[str, Any] | None = None,
        verdict: dict[str, Any] | None = None,
        needs_review: bool = False,
    ) -> None:
        """Record a finished illustration (0 = cover) so no later attempt pays for it again,
        with the item's usage so far, and the quality judge's verdict, in the same transaction."""
        self._accepted(
            await self._write(
                lambda: self.store.checkpoint_page(
                    self.item_id,
                    self.worker,
                    page_number,
                    image_path,
                    prompt_version=prompt_version,
                    model=model,
                    usage=usage,
                    verdict=verdict,
                    needs_review=needs_review,
                )
            )
        )

    async def save_draft(
        self,
        page_number: int,
        image_path: str,
        *,
        redraws: int,
        model: str | None,
        sha256: str,
        usage: dict[str, Any] | None = None,
    ) -> None:
        """Record a stored drawing waiting for its judge (``JobContext.save_draft``), fenced."""
        self._accepted(
            await self._write(
                lambda: self.store.save_page_draft(
                    self.item_id,
                    self.worker,
                    page_number,
                    image_path,
                    redraws=redraws,
                    model=model,
                    sha256=sha256,
                    usage=usage,
                )
            )
        )

    async def save_child_analysis(self, analysis: Row) -> None:
        """Keep the child analysis on the item (fenced: a refused write raises LeaseLost)."""
        self._accepted(
            await self._write(
                lambda: self.store.save_child_analysis(self.item_id, self.worker, analysis)
            )
        )

    async def get_book_analysis(self, book_id: str, prompt_version: str, model: str) -> Row | None:
        """The cached cover analysis of a book (not the item's: no lease involved)."""
        return await self._write(
            lambda: self.store.get_book_analysis(book_id, prompt_version, model)
        )

    async def put_book_analysis(
        self, book_id: str, prompt_version: str, model: str, analysis: Row
    ) -> None:
        """Cache a book's cover analysis for every order of the book. Not fenced by this item's
        lease: the analysis is paid for and true whoever owns the item now."""
        await self._write(
            lambda: self.store.put_book_analysis(book_id, prompt_version, model, analysis)
        )

    async def record_print_files(self, **files: Any) -> None:
        """The print PDFs on the row (``OrderStore.set_print_files``), before completion."""
        self._accepted(
            await self._write(
                lambda: self.store.set_print_files(self.item_id, self.worker, **files)
            )
        )

    def _accepted(self, written: bool) -> None:
        if not written:
            self.lost = True
            raise LeaseLost(self.item_id)

    async def _write(self, call: Callable[[], Awaitable[T]]) -> T:
        return await through_outages(
            call, stop=stop_after_delay(self.outage_patience), max_wait=2.0
        )
