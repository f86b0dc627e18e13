"""The named operations of the store: the queue protocol of migrations/002_queue.sql and the
calls of the pipeline's caches, the catalog, retention, the URL sweep and the operator's reads.

Everything the daemon means by "claim", "heartbeat" or "complete" is spelled out once here, on top
of the connector port (``monitor/store/connector.py``), so both adapters share it.
Results come back as JSON-shaped Python values (str ids and timestamps), the same from both.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from monitor.store.connector import (
    SCHEMA_NOT_MIGRATED,
    Connector,
    RoundTripObserver,
    SchemaNotMigrated,
    StoreUnavailable,
    through_outages,
)
from processors.contract import ItemContext, Row

# The connector's errors and outage helper are part of this module's API: callers of the store
# catch them without knowing which port raised them.
__all__ = [
    "SCHEMA_NOT_MIGRATED",
    "FailOutcome",
    "LeaseState",
    "OrderStore",
    "RetryOutcome",
    "RoundTripObserver",
    "SchemaNotMigrated",
    "StoreUnavailable",
    "through_outages",
]


class LeaseState(StrEnum):
    OK = "ok"
    LOST = "lost"
    ORDER_NOT_PAID = "order_not_paid"


class FailOutcome(StrEnum):
    RETRY = "retry"
    FAILED = "failed"
    LOST = "lost"


class RetryOutcome(StrEnum):
    OK = "ok"
    NOT_FOUND = "not_found"
    NOT_FAILED = "not_failed"
    ORDER_NOT_PAID = "order_not_paid"


class OrderStore(Connector):
    """Queue operations. Every write passes ``worker`` so the database can fence stale owners."""

    async def claim(self, worker: str, limit: int, lease_seconds: int) -> list[Row]:
        if limit <= 0:
            return []
        return await self._call(
            "claim_order_items",
            {"p_worker": worker, "p_limit": limit, "p_lease_seconds": lease_seconds},
            returns_set=True,
        )

    async def heartbeat(self, item_id: str, worker: str, lease_seconds: int) -> LeaseState:
        return LeaseState(
            await self._call(
                "heartbeat_order_item",
                {"p_item": item_id, "p_worker": worker, "p_lease_seconds": lease_seconds},
            )
        )

    async def set_progress(
        self,
        item_id: str,
        worker: str,
        progress: int,
        step: str,
        *,
        step_code: str | None = None,
        pages_total: int | None = None,
        usage: dict[str, int] | None = None,
    ) -> bool:
        return bool(
            await self._call(
                "set_order_item_progress",
                {
                    "p_item": item_id,
                    "p_worker": worker,
                    "p_progress": progress,
                    "p_step": step,
                    "p_pages_total": pages_total,
                    "p_usage": usage,
                    "p_step_code": step_code,
                },
            )
        )

    async def checkpoint_page(
        self,
        item_id: str,
        worker: str,
        page_number: int,
        image_path: str,
        *,
        prompt_version: str | None = None,
        model: str | None = None,
        usage: dict[str, Any] | None = None,
        verdict: dict[str, Any] | None = None,
        needs_review: bool = False,
    ) -> bool:
        params: dict[str, Any] = {
            "p_item": item_id,
            "p_worker": worker,
            "p_page_number": page_number,
            "p_image_path": image_path,
            "p_prompt_version": prompt_version,
            "p_model": model,
        }
        if verdict is not None or needs_review:
            return bool(
                await self._call(
                    "checkpoint_order_item_page_with_verdict",
                    {
                        **params,
                        "p_usage": usage,
                        "p_verdict": verdict,
                        "p_needs_review": needs_review,
                    },
                )
            )
        if usage is None:
            return bool(await self._call("checkpoint_order_item_page", params))
        return bool(
            await self._call("checkpoint_order_item_page_with_usage", {**params, "p_usage": usage})
        )

    async def save_page_draft(
        self,
        item_id: str,
        worker: str,
        page_number: int,
        image_path: str,
        *,
        redraws: int,
        model: str | None,
        sha256: str,
        usage: dict[str, Any] | None = None,
    ) -> bool:
        return bool(
            await self._call(
                "save_order_item_page_draft",
                {
                    "p_item": item_id,
                    "p_worker": worker,
                    "p_page_number": page_number,
                    "p_image_path": image_path,
                    "p_redraws": redraws,
                    "p_model": model,
                    "p_sha256": sha256,
                    "p_usage": usage,
                },
            )
        )

    async def set_print_files(
        self,
        item_id: str,
        worker: str,
        *,
        interior_path: str,
        interior_url: str,
        cover_path: str,
        cover_url: str,
        upscaled: bool,
        source_ppi: float | None,
    ) -> bool:
        """The print PDFs of a finished book, written just before ``complete``; fenced."""
        return bool(
            await self._call(
                "set_order_item_print_files",
                {
                    "p_item": item_id,
                    "p_worker": worker,
                    "p_interior_path": interior_path,
                    "p_interior_url": interior_url,
                    "p_cover_path": cover_path,
                    "p_cover_url": cover_url,
                    "p_upscaled": upscaled,
                    "p_source_ppi": source_ppi,
                },
            )
        )

    async def record_usage(self, item_id: str, worker: str, usage: dict[str, Any]) -> bool:
        """Write the item's AI usage so far (before a fail or release), fenced by the lease."""
        return bool(
            await self._call(
                "record_order_item_usage", {"p_item": item_id, "p_worker": worker, "p_usage": usage}
            )
        )

    async def complete(
        self,
        item_id: str,
        worker: str,
        *,
        pdf_path: str,
        pdf_url: str,
        cover_path: str,
        cover_url: str,
        usage: dict[str, int] | None = None,
        urls_expire_at: datetime | None = None,
    ) -> bool:
        return bool(
            await self._call(
                "complete_order_item",
                {
                    "p_item": item_id,
                    "p_worker": worker,
                    "p_pdf_path": pdf_path,
                    "p_pdf_url": pdf_url,
                    "p_cover_path": cover_path,
                    "p_cover_url": cover_url,
                    "p_usage": usage,
                    "p_urls_expire_at": _timestamp(urls_expire_at),
                },
            )
        )

    async def fail(
        self,
        item_id: str,
        worker: str,
        *,
        error_code: str,
        error_message: str,
        retryable: bool,
        retry_after: float | None = None,
        backoff_base_seconds: float = 30.0,
        backoff_max_seconds: float = 1800.0,
        max_attempts: int | None = None,
        final_error_message: str | None = None,
    ) -> FailOutcome:
        """``error_message`` is shown while a retry is pending, ``final_error_message``
        (default: the same) once the item has failed for good."""
        return FailOutcome(
            await self._call(
                "fail_order_item",
                {
                    "p_item": item_id,
                    "p_worker": worker,
                    "p_error_code": error_code,
                    "p_error_message": error_message,
                    "p_retryable": retryable,
                    "p_retry_after_seconds": retry_after,
                    "p_backoff_base_seconds": backoff_base_seconds,
                    "p_backoff_max_seconds": backoff_max_seconds,
                    "p_max_attempts": max_attempts,
                    "p_final_error_message": final_error_message,
                },
            )
        )

    async def save_child_analysis(self, item_id: str, worker: str, analysis: Row) -> bool:
        return bool(
            await self._call(
                "save_child_analysis",
                {"p_item": item_id, "p_worker": worker, "p_analysis": analysis},
            )
        )

    async def expire_leases_of(self, worker: str) -> int:
        return int(await self._call("expire_leases_of", {"p_worker": worker}))

    async def release(self, item_id: str, worker: str) -> bool:
        return bool(await self._call("release_order_item", {"p_item": item_id, "p_worker": worker}))

    async def load_context(self, item_id: str, worker: str) -> ItemContext | None:
        data = await self._call("load_order_item_context", {"p_item": item_id, "p_worker": worker})
        if data is None:
            return None
        return ItemContext(
            item=data["item"],
            order=data["order"],
            book=data["book"],
            pages=data["pages"],
            checkpoints=data["checkpoints"],
            drafts=data.get("drafts") or [],
        )

    async def retry_failed(self, item_id: str) -> RetryOutcome:
        return RetryOutcome(await self._call("retry_failed_order_item", {"p_item": item_id}))

    async def queue_depth(self) -> int:
        """Paid items waiting now. Doubles as the liveness probe of the database."""
        return int(await self._call("order_queue_depth", {}))

    async def queue_gauges(self) -> tuple[int, float]:
        """The claimable items and how long the longest-waiting one has waited, in seconds."""
        gauges = await self._call("order_queue_gauges", {})
        return int(gauges["depth"]), float(gauges["oldest_wait_seconds"])

    async def get_book_analysis(self, book_id: str, prompt_version: str, model: str) -> Row | None:
        return await self._call(
            "get_book_analysis",
            {"p_book": book_id, "p_prompt_version": prompt_version, "p_model": model},
        )

    async def put_book_analysis(
        self, book_id: str, prompt_version: str, model: str, analysis: Row
    ) -> None:
        await self._call(
            "put_book_analysis",
            {
                "p_book": book_id,
                "p_prompt_version": prompt_version,
                "p_model": model,
                "p_analysis": analysis,
            },
        )

    async def import_book(self, book: Row, pages: list[Row]) -> str:
        """Add a catalog entry (or replace an existing id's pages); returns the book id."""
        return await self._call("import_book", {"p_book": book, "p_pages": pages})

    async def set_book_layout(
        self, book_id: str, *, bleed_in: float | None, ppi: int | None, pages: list[Row]
    ) -> bool:
        """A book's print profile and text boxes (migrations/014), after ``import_book``."""
        return bool(
            await self._call(
                "set_book_layout",
                {
                    "p_book": book_id,
                    # As text: the column and parameter are numeric, and a Python float goes
                    # to Postgres as double precision, which no set_book_layout takes (psycopg
                    # sends str untyped, PostgREST casts the JSON string), so a book with its
                    # own bleed could not be imported.
                    "p_bleed_in": None if bleed_in is None else str(bleed_in),
                    "p_ppi": ppi,
                    "p_pages": pages,
                },
            )
        )

    async def create_paid_order_item(
        self,
        book_id: str,
        *,
        child_name: str,
        child_age: int | None,
        child_gender: str | None,
        child_photo_path: str,
        user_id: str | None = None,
    ) -> str:
        """A paid order with one item, as the app creates it (demo and benchmarks)."""
        return await self._call(
            "create_paid_order_item",
            {
                "p_book": book_id,
                "p_child_name": child_name,
                "p_child_age": child_age,
                "p_child_gender": child_gender,
                "p_child_photo_path": child_photo_path,
                "p_user": user_id,
            },
        )

    async def item_summary(self, item_id: str) -> Row | None:
        """Status, progress, results and error of one item, as the app would see them."""
        return await self._call("order_item_summary", {"p_item": item_id})

    # ------------------------------------------------------------------ photo retention

    async def items_due_for_photo_deletion(self, days: int, limit: int) -> list[Row]:
        """Finished items older than ``days`` whose photo and page images are still stored:
        rows of ``item_id`` and ``paths`` (the storage objects to delete; never the PDF or
        cover)."""
        return await self._call(
            "items_due_for_photo_deletion", {"p_days": days, "p_limit": limit}, returns_set=True
        )

    async def mark_photo_deleted(self, item_id: str) -> bool:
        """Clear the item's photo path and page checkpoints once their objects are deleted."""
        return bool(await self._call("mark_photo_deleted", {"p_item": item_id}))

    # ------------------------------------------------------------------ operator reads (ops CLI)

    async def queue_report(self) -> Row:
        """Counts by state, in flight, waiting and since when, failures of the last 24 h by code."""
        return await self._call("ops_queue_status", {})

    async def list_items(
        self, *, status: str | None, since: str | None, error_code: str | None, limit: int
    ) -> list[Row]:
        """Items, newest change first; ``since`` is an ISO 8601 timestamp. No personal data."""
        return await self._call(
            "ops_list_order_items",
            {"p_status": status, "p_since": since, "p_error_code": error_code, "p_limit": limit},
            returns_set=True,
        )

    async def item_detail(self, item_id: str, *, pii: bool) -> Row | None:
        """The row, order, book and page checkpoints; the personal fields only with ``pii``."""
        return await self._call("ops_show_order_item", {"p_item": item_id, "p_pii": pii})

    async def dashboard(self, *, in_flight: int, failures: int) -> Row:
        """What /dashboard shows: queue counts, items drawing, recent failures, spend today;
        no personal data (migrations/016_dashboard.sql)."""
        return await self._call("ops_dashboard", {"p_in_flight": in_flight, "p_failures": failures})

    # ------------------------------------------------------------------ result URLs

    async def items_with_expiring_urls(
        self, margin_seconds: int, limit: int, *, skip: list[str] | None = None
    ) -> list[Row]:
        """Completed items whose signed URLs expire within ``margin_seconds`` (or whose expiry
        is unknown), soonest first, leaving out the ids in ``skip``: rows of ``item_id``,
        ``pdf_path``, ``cover_image_path``, ``print_interior_path`` and ``print_cover_path``
        (both None for an item without print files), only ever paths under the item's own
        ``generated/{item id}/`` folder (migrations/020_print_urls_stay_fresh.sql)."""
        return await self._call(
            "items_with_expiring_result_urls",
            {"p_margin_seconds": margin_seconds, "p_limit": limit, "p_skip": skip or []},
            returns_set=True,
        )

    async def refresh_urls(
        self,
        item_id: str,
        *,
        pdf_path: str,
        pdf_url: str,
        cover_path: str,
        cover_url: str,
        urls_expire_at: datetime | None,
        print_interior_path: str | None = None,
        print_interior_url: str | None = None,
        print_cover_path: str | None = None,
        print_cover_url: str | None = None,
    ) -> bool:
        """Store freshly signed URLs, the print files' with the screen ones in one write; false
        when the item is no longer completed with these paths (nothing is written then)."""
        return bool(
            await self._call(
                "refresh_order_item_urls_with_print",
                {
                    "p_item": item_id,
                    "p_pdf_path": pdf_path,
                    "p_pdf_url": pdf_url,
                    "p_cover_path": cover_path,
                    "p_cover_url": cover_url,
                    "p_print_interior_path": print_interior_path,
                    "p_print_interior_url": print_interior_url,
                    "p_print_cover_path": print_cover_path,
                    "p_print_cover_url": print_cover_url,
                    "p_urls_expire_at": _timestamp(urls_expire_at),
                },
            )
        )

    # ------------------------------------------------------------------ parent email (outbox)

    async def claim_emails(
        self,
        worker: str,
        limit: int,
        *,
        lease_seconds: int,
        max_attempts: int,
        max_age_seconds: int,
    ) -> list[Row]:
        """Due emails of migrations/015_parent_email.sql, claimed for ``lease_seconds``; rows
        with ``skipped`` set were closed without sending (no address, too old, crashed)."""
        return await self._call(
            "claim_notification_emails",
            {
                "p_worker": worker,
                "p_limit": limit,
                "p_lease_seconds": lease_seconds,
                "p_max_attempts": max_attempts,
                "p_max_age_seconds": max_age_seconds,
            },
            returns_set=True,
        )

    async def mark_email_sent(self, notification_id: str, worker: str) -> bool:
        return bool(
            await self._call(
                "mark_notification_email_sent",
                {"p_notification": notification_id, "p_worker": worker},
            )
        )

    async def mark_email_failed(
        self,
        notification_id: str,
        worker: str,
        *,
        error: str,
        retry: bool,
        max_attempts: int,
        backoff_base_seconds: float,
        backoff_max_seconds: float,
    ) -> str:
        """``retry``, ``gave_up`` or ``lost``."""
        return str(
            await self._call(
                "mark_notification_email_failed",
                {
                    "p_notification": notification_id,
                    "p_worker": worker,
                    "p_error": error,
                    "p_retry": retry,
                    "p_max_attempts": max_attempts,
                    "p_backoff_base_seconds": backoff_base_seconds,
                    "p_backoff_max_seconds": backoff_max_seconds,
                },
            )
        )

    async def catalog_book(self, book_id: str) -> Row | None:
        """One book's catalog entry for a cover made without an order (migration 017)."""
        return await self._call("get_catalog_book", {"p_book": book_id})


def _timestamp(value: datetime | None) -> str | None:
    """A timezone-aware datetime as ISO 8601, which both adapters pass on as JSON-safe text."""
    if value is None:
        return None
    if value.tzinfo is None:
        raise ValueError("timestamps sent to the database must be timezone-aware")
    return value.isoformat()
