"""What a processor is handed and what it hands back: the pipeline's side of the job contract.

The daemon (``monitor/``) claims an item, wraps it in something satisfying :class:`JobContext`
(``monitor.job.Job``) and awaits the processor with it. Every write through the context is fenced
by the item's lease and waits out a short database outage; once a write is refused, it raises
:class:`LeaseLost` and the processor stops. See docs/architecture.md, "The job contract".
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, Protocol

#: A row as both store adapters return it: JSON-shaped values (str ids and timestamps).
Row = dict[str, Any]


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
class ItemContext:
    """Everything one item's processing needs, loaded in one round trip."""

    item: Row
    order: Row
    book: Row | None
    pages: list[Row]
    checkpoints: list[Row]
    #: The latest drawing of each page still waiting for its judge's verdict (a checkpoint
    #: deletes the page's draft): migrations/021_drafts_before_the_judge.sql.
    drafts: list[Row] = field(default_factory=list)


@dataclass(frozen=True)
class BookResult:
    pdf_path: str
    pdf_url: str
    cover_path: str
    cover_url: str
    usage: dict[str, int] = field(default_factory=dict)
    #: When the signed URLs stop working; None when they do not expire.
    urls_expire_at: datetime | None = None


class JobContext(Protocol):
    """One claimed order item, as a processor sees it (implemented by ``monitor.job.Job``).

    Every method that writes is fenced by the lease (a refused write raises :class:`LeaseLost`)
    and waits out a database outage for as long as the daemon allows.
    """

    item: Row
    #: The processor's running total of AI usage for this item (set by the processor), so the
    #: daemon can persist what was billed when the item fails or is released.
    usage_of: Callable[[], dict[str, Any]] | None

    @property
    def item_id(self) -> str: ...

    def raise_if_lost(self) -> None:
        """Raise :class:`LeaseLost` if any write of this item was refused: start no paid work."""

    async def load_context(self) -> ItemContext:
        """The item, its order, the book and its pages, and the checkpoints of earlier attempts."""

    async def report(
        self,
        progress: int,
        step: str,
        *,
        code: StepCode | None = None,
        pages_total: int | None = None,
        usage: dict[str, int] | None = None,
    ) -> None:
        """Progress for the app's progress bar, with the usage so far."""

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
        """A finished illustration (0 = cover) is stored, with the usage so far and the quality
        judge's verdict: no later attempt pays for, judges or redraws it again."""

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
        """A drawing that passed the output checks is stored and about to be judged: a later
        attempt judges it instead of paying for it again. With the usage so far."""

    async def record_print_files(self, **files: Any) -> None:
        """The print PDFs' paths and URLs on the row, before completion."""

    async def save_child_analysis(self, analysis: Row) -> None:
        """Keep the child analysis on the item, so a resumed attempt does not pay for it again."""

    async def get_book_analysis(self, book_id: str, prompt_version: str, model: str) -> Row | None:
        """The cached cover analysis of a book, shared by every order of it."""

    async def put_book_analysis(
        self, book_id: str, prompt_version: str, model: str, analysis: Row
    ) -> None:
        """Cache a book's cover analysis (or its failure) for every later order."""


class Processor(Protocol):
    """Any async callable from a job to a finished book; may have an async ``aclose``."""

    def __call__(self, job: JobContext) -> Awaitable[BookResult]: ...
