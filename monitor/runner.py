"""Running one claimed item: the processor, the lease kept alive beside it, and the final write.

The daemon (``monitor/daemon.py``) decides *when* to claim; this module owns what happens between
a claim and the row's next state: complete, fail (retry or for good), release or abandon. See
docs/architecture.md, "The queue protocol".
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from loguru import logger
from tenacity import stop_after_attempt

from monitor.config import Settings
from monitor.job import Job
from monitor.metrics import Metrics
from monitor.store.base import (
    FailOutcome,
    LeaseState,
    OrderStore,
    StoreUnavailable,
    through_outages,
)
from monitor.webhook import OpsWebhook
from processors.contract import BookResult, LeaseLost, Processor
from processors.errors import OrderError, RetryableError


def utcnow() -> datetime:
    return datetime.now(UTC)


class AbandonReason(StrEnum):
    """Why an item stops without a result being written (also the metric's label)."""

    #: A write was refused or the heartbeat lost the lease: another worker may own it now.
    LEASE_LOST = "lease_lost"
    #: The heartbeat found the order no longer paid (the database failed the item).
    ORDER_NOT_PAID = "order_not_paid"
    #: The grace period of a shutdown ran out: the item is released for another worker.
    SHUTDOWN = "shutdown"


@dataclass
class InFlight:
    """One item being processed by this worker."""

    job: Job
    started_at: datetime
    task: asyncio.Task[None] | None = None
    #: Why the item is being abandoned; None while nobody gave it up.
    abandon_reason: AbandonReason | None = None


@dataclass
class MonitorStats:
    """What the status endpoint and health check report. Never personal data."""

    started_at: datetime = field(default_factory=utcnow)
    last_poll_at: datetime | None = None
    last_claim_at: datetime | None = None
    last_db_ok_at: datetime | None = None
    db_down_since: datetime | None = None
    db_error: str | None = None
    completed: int = 0
    failed: int = 0
    retried: int = 0
    released: int = 0
    abandoned: int = 0


class ItemRunner:
    """Runs the processor on one claimed item at a time (the daemon runs many of these tasks)."""

    def __init__(
        self,
        *,
        settings: Settings,
        store: OrderStore,
        worker: str,
        stats: MonitorStats,
        metrics: Metrics,
        webhook: OpsWebhook | None,
        spawn: Callable[[Awaitable[Any]], asyncio.Task[Any]],
        processor: Callable[[], Processor | None],
        on_setup_failure: Callable[[str], None],
    ) -> None:
        self.settings = settings
        self.store = store
        self.worker = worker
        self.stats = stats
        self.metrics = metrics
        self.webhook = webhook
        self._spawn = spawn
        #: The daemon's processor, read per item: it is built after the status server is up.
        self._processor = processor
        #: Told when an item was handed back because the operator's AI setup failed.
        self._on_setup_failure = on_setup_failure

    async def process(self, flight: InFlight) -> None:
        """Run the processor on the claimed item and write how it ended."""
        job = flight.job
        started = time.monotonic()
        logger.info("processing item")
        processor = self._processor()
        assert processor is not None  # set before the monitor starts
        work = asyncio.ensure_future(processor(job))
        keeper = self._spawn(self._keep_lease(flight, work))
        try:
            result = await work
        except asyncio.CancelledError:
            await self._abandon(flight)
            if flight.abandon_reason is None:
                raise
            return
        except LeaseLost:
            flight.abandon_reason = AbandonReason.LEASE_LOST
            await self._abandon(flight)
            return
        except OrderError as exc:
            if exc.pauses_claiming:
                await self._release_for_configuration(job, exc)
                return
            await self._fail(job, exc, time.monotonic() - started)
            return
        except Exception as exc:  # noqa: BLE001 - an unexpected bug must not kill the daemon
            logger.exception("processor crashed")
            await self._fail(
                job,
                RetryableError(f"{type(exc).__name__}: {exc}", code="internal_error"),
                time.monotonic() - started,
            )
            return
        finally:
            keeper.cancel()
        await self._complete(job, result, time.monotonic() - started)

    async def _keep_lease(self, flight: InFlight, work: asyncio.Future[Any]) -> None:
        """Heartbeat every lease/3; cancel the work when the lease is gone."""
        lease = self.settings.lease_seconds
        last_ok = time.monotonic()
        while not work.done():
            await asyncio.sleep(lease / 3)
            try:
                state = await self.store.heartbeat(flight.job.item_id, self.worker, lease)
            except StoreUnavailable as exc:
                logger.warning("heartbeat failed", error=str(exc))
                if time.monotonic() - last_ok < lease:
                    continue
                # The lease has run out unrenewed: another worker may own the item by now.
                state = LeaseState.LOST
            if state is LeaseState.OK:
                last_ok = time.monotonic()
                continue
            flight.abandon_reason = (
                AbandonReason.ORDER_NOT_PAID
                if state is LeaseState.ORDER_NOT_PAID
                else AbandonReason.LEASE_LOST
            )
            work.cancel()
            return

    async def _release_for_configuration(self, job: Job, exc: OrderError) -> None:
        """The operator's setup failed, not the order: hand the item back without using up an
        attempt, and pause claiming until the setup checks out (``_ai_ready``)."""
        await self._record_usage(job)
        released = await self._write(lambda: self.store.release(job.item_id, self.worker))
        self.stats.released += 1
        self.metrics.item_abandoned(exc.code)
        logger.warning(
            "released item: the AI setup needs fixing",
            error_code=exc.code,
            detail=exc.detail,
            released=bool(released),
        )
        self._on_setup_failure(exc.detail or exc.code)

    async def _record_usage(self, job: Job) -> None:
        """Persist what the item's AI calls cost before its row leaves 'processing'."""
        if job.usage_of is not None:
            usage = job.usage_of()
            await self._write(lambda: self.store.record_usage(job.item_id, self.worker, usage))

    async def _abandon(self, flight: InFlight) -> None:
        reason = flight.abandon_reason
        job = flight.job
        if reason is AbandonReason.SHUTDOWN:
            await self._record_usage(job)
            released = await self._write(lambda: self.store.release(job.item_id, self.worker))
            self.stats.released += 1
            self.metrics.item_abandoned(reason)
            logger.info("released item for another worker", released=bool(released))
        elif reason is not None:
            self.stats.abandoned += 1
            self.metrics.item_abandoned(reason)
            logger.warning(
                "abandoned item: a write was refused (lease lost, or the order is no "
                "longer paid and the database failed it)"
                if reason is AbandonReason.LEASE_LOST
                else "abandoned item",
                reason=reason,
            )

    async def _complete(self, job: Job, result: BookResult, seconds: float) -> None:
        done = await self._write(
            lambda: self.store.complete(
                job.item_id,
                self.worker,
                pdf_path=result.pdf_path,
                pdf_url=result.pdf_url,
                cover_path=result.cover_path,
                cover_url=result.cover_url,
                usage=result.usage or None,
                urls_expire_at=result.urls_expire_at,
            )
        )
        if done:
            self.stats.completed += 1
            self.metrics.item_completed(seconds)
            logger.info("item completed", seconds=round(seconds, 2))
            self._announce("order_item.completed", job, seconds=round(seconds, 3))
        else:
            logger.warning("completion refused: the lease was lost before it was written")

    async def _fail(
        self, job: Job, exc: OrderError, seconds: float, *, retryable: bool | None = None
    ) -> None:
        retryable = exc.retryable if retryable is None else retryable
        await self._record_usage(job)
        outcome = await self._write(
            lambda: self.store.fail(
                job.item_id,
                self.worker,
                error_code=exc.code,
                error_message=exc.parent_message,
                retryable=retryable,
                retry_after=exc.retry_after,
                backoff_base_seconds=self.settings.retry_backoff_base_seconds,
                backoff_max_seconds=self.settings.retry_backoff_max_seconds,
                max_attempts=self.settings.max_attempts,
                final_error_message=exc.final_message,
            )
        )
        if outcome is FailOutcome.RETRY:
            self.stats.retried += 1
            self.metrics.item_retried(exc.code, seconds)
        elif outcome is FailOutcome.FAILED:
            self.stats.failed += 1
            self.metrics.item_failed(exc.code, seconds)
            self._announce("order_item.failed", job, error_code=exc.code)
        logger.warning(
            "item failed",
            error_code=exc.code,
            retryable=retryable,
            outcome=outcome.value if outcome else "unwritten",
            detail=exc.detail,
        )

    def _announce(self, event: str, job: Job, **fields: Any) -> None:
        """Tell the ops webhook, in the background: it must never delay or fail an item."""
        if self.webhook is not None:
            self._spawn(
                self.webhook.send(
                    event, item_id=job.item_id, attempt=job.attempt, worker=self.worker, **fields
                )
            )

    async def _write(self, call: Callable[[], Awaitable[Any]]) -> Any:
        """A final write, retried through short database blips. None if it never got through:
        the lease then expires and another worker finishes the item from its checkpoints."""
        try:
            return await through_outages(call, stop=stop_after_attempt(5), first_wait=0.5)
        except StoreUnavailable as exc:
            logger.error("could not record the outcome; the lease will expire", error=str(exc))
        return None
