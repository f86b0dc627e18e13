"""The contract between the daemon (when and who) and a processor (what).

A processor is any async callable taking a :class:`Job` and returning a :class:`BookResult`. It
reports progress and checkpoints through the job, which fences every write: once the lease is
lost, the next write raises :class:`LeaseLost` and the daemon abandons the item.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, Awaitable, Callable, Protocol, TypeVar

from tenacity import stop_after_delay

from monitor.store.base import ItemContext, OrderStore, Row, through_outages

T = TypeVar("T")


class StepCode(StrEnum):
    """``order_items.current_step_code`` while the pipeline works: stable, so an app can
    translate it (the prose in ``current_step`` is English). The codes of queue transitions
    (``starting``, ``waiting_to_retry``, ...) are written by the database itself; all of them
    are listed in docs/app.md and allowed by a check constraint (migrations/012_app_contract.sql).
    """

    ANALYZING = "analyzing"
    DRAWING_COVER = "drawing_cover"
    #: ``pages_done`` of ``pages_total`` pages are finished and saved.
    DRAWING_PAGE = "drawing_page"
    BINDING = "binding"
    UPLOADING = "uploading"


class LeaseLost(Exception):
    """A write was refused: another worker owns the item now, or it ended meanwhile (the order
    stopped being paid and the database failed it). Stop, write nothing more."""


@dataclass(frozen=True)
class BookResult:
    pdf_path: str
    pdf_url: str
    cover_path: str
    cover_url: str
    usage: dict[str, int] = field(default_factory=dict)
    #: When the signed URLs stop working; None when they do not expire.
    urls_expire_at: datetime | None = None


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
        self._accepted(await self._write(lambda: self.store.set_progress(
            self.item_id, self.worker, progress, step, step_code=code, pages_total=pages_total,
            usage=usage,
        )))

    async def checkpoint(
        self, page_number: int, image_path: str, *, prompt_version: str | None = None,
        model: str | None = None, usage: dict[str, Any] | None = None,
        verdict: dict[str, Any] | None = None, needs_review: bool = False,
    ) -> None:
        """Record a finished illustration (0 = cover) so no later attempt pays for it again,
        with the item's usage so far, and the quality judge's verdict, in the same transaction."""
        self._accepted(await self._write(lambda: self.store.checkpoint_page(
            self.item_id, self.worker, page_number, image_path,
            prompt_version=prompt_version, model=model, usage=usage,
            verdict=verdict, needs_review=needs_review,
        )))

    async def record_print_files(self, **files: Any) -> None:
        """The print PDFs on the row (``OrderStore.set_print_files``), before completion."""
        self._accepted(await self._write(
            lambda: self.store.set_print_files(self.item_id, self.worker, **files)))

    def _accepted(self, written: bool) -> None:
        if not written:
            self.lost = True
            raise LeaseLost(self.item_id)

    async def _write(self, call: Callable[[], Awaitable[T]]) -> T:
        return await through_outages(call, stop=stop_after_delay(self.outage_patience), max_wait=2.0)


class Processor(Protocol):
    def __call__(self, job: Job) -> Awaitable[BookResult]: ...


class ClosableProcessor(Processor, Protocol):
    async def aclose(self) -> None: ...


def describe_item(item: Row) -> dict[str, Any]:
    """The non-personal facts about an item, for logs and the status endpoint."""
    return {"item_id": item.get("id"), "attempt": item.get("attempts")}
