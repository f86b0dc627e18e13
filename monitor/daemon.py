"""The daemon: an APScheduler poll loop that claims items and runs each in its own task.

Postgres is the coordination engine (docs/architecture.md, "The queue protocol"); this module only
decides *when* to claim; running one claimed item, its lease and its final write are
``monitor/runner.py``'s, and *what* happens to it is the injected processor's business.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from loguru import logger

from monitor.config import Settings
from monitor.health import HealthProblems
from monitor.job import Job
from monitor.metrics import Metrics
from monitor.runner import AbandonReason, InFlight, ItemRunner, MonitorStats, utcnow
from monitor.store.base import (
    SCHEMA_NOT_MIGRATED,
    OrderStore,
    SchemaNotMigrated,
    StoreUnavailable,
)
from monitor.webhook import OpsWebhook
from processors.contract import Processor, Row
from processors.queue_order import served_as

POLL_JOB_ID = "poll"
RETENTION_JOB_ID = "photo_retention"
RETENTION_INTERVAL_SECONDS = 3600
URL_REFRESH_JOB_ID = "url_refresh"
#: SIGNED_URL_REFRESH_MARGIN_SECONDS must comfortably exceed this, or a URL may die between runs.
URL_REFRESH_INTERVAL_SECONDS = 3600
#: The parent-email sender (monitor.mailer) runs every poll interval.
EMAIL_JOB_ID = "parent_email"
# LISTEN bursts (an order with several items, a batch import) collapse into one claim.
WAKEUP_DEBOUNCE_SECONDS = 0.05
LISTEN_RETRY_SECONDS = 5.0
MAX_OUTAGE_BACKOFF_SECONDS = 60.0
MAX_AI_CHECK_BACKOFF_SECONDS = 600.0
#: The names under which the database's and the AI provider's state are reported to
#: HealthProblems: the AI's by start-up (unreachable) and by the model check (no usable model).
DATABASE_PROBLEM = "database"
AI_PROVIDER_PROBLEM = "ai_provider"


class AINotReady(RuntimeError):
    """``once`` found the AI unusable (no usable model, account limited): nothing was claimed."""


def _iso_or_none(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment else None


class Monitor:
    """Claims paid items and runs the processor on each, ``max_concurrent_orders`` at once."""

    def __init__(
        self,
        settings: Settings,
        store: OrderStore,
        processor: Processor | None,
        *,
        metrics: Metrics | None = None,
        webhook: OpsWebhook | None = None,
        retention: Callable[[], Awaitable[int]] | None = None,
        url_refresh: Callable[[], Awaitable[int]] | None = None,
        mailer: Callable[[], Awaitable[int]] | None = None,
        health: HealthProblems | None = None,
    ) -> None:
        self.settings = settings
        #: What /health reports; every database round trip of the store feeds it.
        self.health = health or HealthProblems()
        #: The photo-retention run (monitor.retention), scheduled hourly when retention is on.
        self.retention = retention
        #: The re-sign sweep of result URLs (monitor.url_refresh): hourly in run, once in once.
        self.url_refresh = url_refresh
        #: Sends the parent emails the outbox owes (monitor.mailer): every poll in run, in once.
        self.mailer = mailer
        self._mail_lock = asyncio.Lock()
        self.store = store
        store.observer = self._observe_database
        #: May be None until start-up has built it (the status server comes up first); set before
        #: :meth:`start`.
        self.processor = processor
        self.worker = settings.worker_id
        self.stats = MonitorStats()
        self.in_flight: dict[str, InFlight] = {}
        self.claiming = settings.auto_start_monitor
        self.metrics = metrics or Metrics()
        self.webhook = webhook
        self.metrics.track_in_flight(lambda: len(self.in_flight))
        self.metrics.track_health(
            database_up=lambda: self.health.get(DATABASE_PROBLEM) is None,
            ai_usable=lambda: self.health.get(AI_PROVIDER_PROBLEM) is None,
        )
        self._scheduler: AsyncIOScheduler | None = None
        self._stopping = False
        self._stop_requested = asyncio.Event()
        self._poll_lock = asyncio.Lock()
        self._poll_again = False
        self._wakeup_handle: asyncio.TimerHandle | None = None
        self._listen_task: asyncio.Task[None] | None = None
        self._predecessor_checked = False
        self._outage_failures = 0
        self._outage_retry_at = 0.0
        #: Why the AI cannot be used now (no usable model, account limited); claiming is paused
        #: while it is set, and the processor's ``check_ready`` is retried with backoff.
        self.ai_problem: str | None = None
        self._ai_checks = 0
        self._ai_check_at = 0.0
        self._db_problem_kind: str | None = None
        self._last_db_error: StoreUnavailable | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        #: Runs one claimed item: the processor, its lease, and the final write.
        self.runner = ItemRunner(
            settings=settings,
            store=store,
            worker=self.worker,
            stats=self.stats,
            metrics=self.metrics,
            webhook=webhook,
            spawn=self._spawn,
            processor=lambda: self.processor,
            on_setup_failure=self._on_setup_failure,
        )

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        assert self.processor is not None, "build the processor before starting the monitor"
        await self.store.open()
        self._scheduler = AsyncIOScheduler(timezone=UTC)
        self._every(self.poll, self.settings.poll_interval_seconds, POLL_JOB_ID)
        if self.retention is not None and self.settings.photo_retention_days > 0:
            self._every(self._run_retention, RETENTION_INTERVAL_SECONDS, RETENTION_JOB_ID)
        if self.url_refresh is not None:
            self._every(self._run_url_refresh, URL_REFRESH_INTERVAL_SECONDS, URL_REFRESH_JOB_ID)
        if self.mailer is not None:
            self._every(
                self._run_mailer, self.settings.poll_interval_seconds, EMAIL_JOB_ID, start_now=False
            )
        self._scheduler.start()
        if self.store.supports_listen:
            self._listen_task = self._spawn(self._listen_forever())
        logger.info(
            "monitor started",
            worker=self.worker,
            poll_interval=self.settings.poll_interval_seconds,
            max_concurrent=self.settings.max_concurrent_orders,
            claiming=self.claiming,
        )

    def request_stop(self) -> None:
        """Signal-safe: ask :meth:`run` to drain and exit."""
        self._stop_requested.set()

    async def wait_for_stop(self, seconds: float) -> bool:
        """Sleep up to ``seconds``; True as soon as a stop is requested (start-up waits)."""
        try:
            await asyncio.wait_for(self._stop_requested.wait(), seconds)
        except TimeoutError:
            return False
        return True

    @property
    def started(self) -> bool:
        """Whether :meth:`start` ran (start-up may be waiting for a dependency before it)."""
        return self._scheduler is not None

    async def run(self) -> None:
        """Run until SIGTERM/SIGINT, then drain and shut down."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_stop)
        await self.start()
        try:
            await self._stop_requested.wait()
            logger.info("stop requested; draining", in_flight=len(self.in_flight))
        finally:
            await self.shutdown()

    async def run_once(self) -> int:
        """Claim and process until nothing is claimable, run the photo retention, then return
        how many items were run.

        Raises StoreUnavailable when the database could not be reached, so cron sees a failure.
        """
        await self.store.open()
        processed = 0
        try:
            while True:
                claimed = await self._claim_batch()
                processed += len(claimed)
                if not claimed and not self.in_flight:
                    if self._last_db_error is not None:
                        raise self._last_db_error
                    if self.ai_problem is not None:
                        raise AINotReady(self.ai_problem)
                    # Cron has no hourly jobs: photo retention and the URL sweep run at the end
                    # of every ``once``.
                    await self._run_retention()
                    await self._run_url_refresh()
                    await self._run_mailer()
                    return processed
                if self.in_flight:
                    await asyncio.wait(
                        [f.task for f in self.in_flight.values() if f.task],
                        return_when=asyncio.FIRST_COMPLETED,
                    )
        finally:
            await self.shutdown()

    async def shutdown(self) -> None:
        """Stop claiming, give in-flight items the grace period, release the rest, close.

        APScheduler's executor cancels running jobs on shutdown, so our own item tasks are drained
        first and the scheduler is stopped last.
        """
        if self._stopping:
            return
        self._stopping = True
        if self._scheduler is not None and self._scheduler.running:
            self._scheduler.pause()
        if self._wakeup_handle is not None:
            self._wakeup_handle.cancel()
        tasks = [f.task for f in self.in_flight.values() if f.task]
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=self.settings.shutdown_grace_seconds)
            for flight in list(self.in_flight.values()):
                if flight.task in pending:
                    flight.abandon_reason = AbandonReason.SHUTDOWN
                    flight.task.cancel()
            if pending:
                await asyncio.gather(*pending, return_exceptions=True)
        # An email being handed to the server is finished and marked, so it is not sent twice.
        if self._mail_lock.locked():
            try:
                await asyncio.wait_for(
                    self._mail_lock.acquire(), self.settings.shutdown_grace_seconds
                )
            except TimeoutError:
                logger.warning("stopped while sending parent emails; unmarked ones are retried")
        if self._listen_task is not None:
            self._listen_task.cancel()
            await asyncio.gather(self._listen_task, return_exceptions=True)
        if self._scheduler is not None and self._scheduler.running:
            self._scheduler.shutdown(wait=False)
        await self.store.close()
        logger.info("monitor stopped", completed=self.stats.completed, failed=self.stats.failed)

    @property
    def running(self) -> bool:
        """Whether the poll scheduler is up and no shutdown has begun (for the health check)."""
        return self._scheduler is not None and self._scheduler.running and not self._stopping

    # ------------------------------------------------------------------ steering

    def stop_claiming(self) -> None:
        self.claiming = False
        logger.info("claiming stopped by operator")

    def start_claiming(self) -> None:
        self.claiming = True
        logger.info("claiming started by operator")
        self.wake_up()

    def wake_up(self) -> None:
        """Poll soon (debounced). Safe to call from callbacks and from many places at once."""
        if self._stopping or self._wakeup_handle is not None:
            return
        loop = asyncio.get_running_loop()
        self._wakeup_handle = loop.call_later(WAKEUP_DEBOUNCE_SECONDS, self._wakeup_now)

    def _wakeup_now(self) -> None:
        self._wakeup_handle = None
        if not self._stopping:
            self._spawn(self.poll())

    # ------------------------------------------------------------------ polling

    async def poll(self) -> None:
        """One poll: claim what capacity allows and start the items.

        Runs from the scheduler and from wake-ups; a wake-up during a running poll makes that poll
        go round once more instead of being dropped, so no notification is lost.
        """
        if self._poll_lock.locked():
            self._poll_again = True
            return
        async with self._poll_lock:
            self._poll_again = True
            while self._poll_again and not self._stopping:
                self._poll_again = False
                await self._claim_batch()

    async def _claim_batch(self) -> list[Row]:
        self.stats.last_poll_at = utcnow()
        if not self.claiming or self._stopping:
            return []
        if time.monotonic() < self._outage_retry_at:
            return []
        if not await self._ai_ready():
            return []
        capacity = self.settings.max_concurrent_orders - len(self.in_flight)
        try:
            if not self._predecessor_checked:
                await self._take_over_from_predecessor()
            if capacity <= 0:
                # Every slot busy: still one round trip per poll, so /health's evidence of the
                # database stays first-hand (and the queue-depth gauge current).
                self.metrics.set_queue_depth(*await self.store.queue_gauges())
                return []
            claimed = await self.store.claim(self.worker, capacity, self.settings.lease_seconds)
        except StoreUnavailable:
            self._back_off()
            return []
        self._outage_failures = 0
        self._outage_retry_at = 0.0
        if claimed:
            self.stats.last_claim_at = utcnow()
            self.metrics.items_claimed(len(claimed))
            logger.info("claimed {} item(s)", len(claimed), items=[r["id"] for r in claimed])
        for row in claimed:
            self._start_item(row)
        return claimed

    async def _take_over_from_predecessor(self) -> None:
        """Before the first claim: leases still held under this worker id are a crashed
        predecessor's (this process has claimed nothing yet), so free them for resumption now."""
        expired = await self.store.expire_leases_of(self.worker)
        self._predecessor_checked = True
        if expired:
            self.metrics.item_abandoned("predecessor_crashed", expired)
            logger.warning("resuming items a crashed predecessor held", items=expired)

    def _back_off(self) -> None:
        """After a failed claim: wait exponentially longer before the next one."""
        self._outage_failures += 1
        delay = min(2.0**self._outage_failures, MAX_OUTAGE_BACKOFF_SECONDS)
        self._outage_retry_at = time.monotonic() + delay
        # Polls are interval-driven; make sure one comes right after the backoff even with a
        # long poll interval, so recovery does not wait a whole interval.
        asyncio.get_running_loop().call_later(delay, self.wake_up)

    async def _ai_ready(self) -> bool:
        """Whether the processor can draw books now; while not, claiming is paused and the
        processor's ``check_ready`` (when it has one) is retried with exponential backoff."""
        if self.ai_problem is None:
            problem = getattr(self.processor, "ready_problem", None)
            if problem is None:
                return True
            self._pause_for_ai(problem)
            return False
        if time.monotonic() < self._ai_check_at:
            return False
        check = getattr(self.processor, "check_ready", None)
        problem = await check() if check is not None else None
        if problem is not None:
            self._pause_for_ai(problem)
            return False
        logger.info("AI usable again; claiming resumes", was=self.ai_problem)
        self.health.clear(AI_PROVIDER_PROBLEM)
        self.ai_problem, self._ai_checks, self._ai_check_at = None, 0, 0.0
        return True

    def _pause_for_ai(self, problem: str) -> None:
        self.ai_problem = problem
        changed = self.health.report(
            AI_PROVIDER_PROBLEM, f"AI not usable, claiming paused: {problem}"
        )
        self._ai_checks += 1
        delay = min(
            self.settings.model_check_retry_seconds * 2.0 ** (self._ai_checks - 1),
            MAX_AI_CHECK_BACKOFF_SECONDS,
        )
        self._ai_check_at = time.monotonic() + delay
        # Once per change of state, like the database's: a recheck that finds the same is DEBUG.
        logger.log(
            "ERROR" if changed else "DEBUG",
            "AI not usable; claiming paused, checking again in {:.0f}s: {}",
            delay,
            problem,
        )
        asyncio.get_running_loop().call_later(delay, self.wake_up)

    def _observe_database(self, error: StoreUnavailable | None) -> None:
        """The store's report of each round trip (claims, heartbeats, writes, probes): the only
        source of what /health says about the database. Logs once per change of state."""
        stats = self.stats
        if error is None:
            if self.health.clear(DATABASE_PROBLEM):
                logger.info(
                    "database reachable again", down_since=_iso_or_none(stats.db_down_since)
                )
            stats.db_down_since = None
            stats.db_error = None
            stats.last_db_ok_at = utcnow()
            self._last_db_error = None
            return
        self._last_db_error = error
        kind = "schema" if isinstance(error, SchemaNotMigrated) else "unreachable"
        if stats.db_down_since is None or kind != self._db_problem_kind:
            stats.db_down_since = utcnow()
            self._db_problem_kind = kind
        stats.db_error = str(error)
        if isinstance(error, SchemaNotMigrated):
            if self.health.report(DATABASE_PROBLEM, SCHEMA_NOT_MIGRATED):
                logger.error(str(error))
        elif self.health.report(
            DATABASE_PROBLEM, f"database unreachable since {stats.db_down_since.isoformat()}"
        ):
            logger.warning("database unavailable; backing off", error=str(error))

    async def check_database(self) -> bool:
        """Probe the database (used by health checks between polls); updates the stats and
        the queue-depth gauge."""
        try:
            depth, oldest_wait = await self.store.queue_gauges()
        except StoreUnavailable:
            return False
        self.metrics.set_queue_depth(depth, oldest_wait)
        return True

    async def _listen_forever(self) -> None:
        """LISTEN for ready items; on failure log once, poll meanwhile, and try again."""
        warned = False
        while not self._stopping:
            try:
                await self.store.listen(self._on_notify)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - any failure means: fall back to polling
                if not warned:
                    logger.warning(
                        "LISTEN unavailable, relying on polling until it is back",
                        error=f"{type(exc).__name__}: {exc}",
                    )
                    warned = True
                await asyncio.sleep(LISTEN_RETRY_SECONDS)
            else:
                warned = False

    def _on_notify(self) -> None:
        self.wake_up()

    def _every(
        self,
        job: Callable[[], Awaitable[Any]],
        seconds: float,
        job_id: str,
        *,
        start_now: bool = True,
    ) -> None:
        """A job on an interval (the poll, the side jobs): never two runs at once, a missed run
        coalesced into one."""
        assert self._scheduler is not None
        first_run = {"next_run_time": utcnow()} if start_now else {}
        self._scheduler.add_job(
            job,
            "interval",
            seconds=seconds,
            id=job_id,
            max_instances=1,
            coalesce=True,
            misfire_grace_time=None,
            **first_run,
        )

    async def _run_side_job(self, run: Callable[[], Awaitable[Any]] | None, what: str) -> None:
        """One run of a side job (retention, the URL sweep, email). A failure is logged by its
        type only (no paths, URLs or addresses) and the next run, scheduled or at the next
        ``once``, tries again: a side job must never take the daemon down."""
        if run is None or self._stopping:
            return
        try:
            await run()
        except Exception as exc:  # noqa: BLE001 - see the docstring
            logger.warning("{} failed; retrying at the next run", what, error=type(exc).__name__)

    async def _run_retention(self) -> None:
        await self._run_side_job(self.retention, "photo retention")

    async def _run_url_refresh(self) -> None:
        await self._run_side_job(self.url_refresh, "re-signing result URLs")

    async def _run_mailer(self) -> None:
        """Never two sends at once in one process; shutdown waits for one in progress."""
        if self._mail_lock.locked():
            return
        async with self._mail_lock:
            await self._run_side_job(self.mailer, "sending parent emails")

    # ------------------------------------------------------------------ one item

    def _start_item(self, row: Row) -> None:
        job = Job(
            item=row,
            worker=self.worker,
            store=self.store,
            outage_patience=self.settings.lease_seconds,
        )
        flight = InFlight(job=job, started_at=utcnow())
        self.in_flight[job.item_id] = flight
        flight.task = self._spawn(self._run_item(flight))

    async def _run_item(self, flight: InFlight) -> None:
        job = flight.job
        try:
            with (
                logger.contextualize(item_id=job.item_id, attempt=job.attempt, worker=self.worker),
                served_as(job.queue_place),
            ):
                await self.runner.process(flight)
        finally:
            self.in_flight.pop(job.item_id, None)
            # Capacity just freed up: look for more work now rather than at the next interval.
            self.wake_up()

    def _on_setup_failure(self, problem: str) -> None:
        """An item was handed back because the AI setup failed: pause claiming until it works."""
        if self.ai_problem is None:
            self._pause_for_ai(problem)

    def _spawn(self, coro: Awaitable[Any]) -> asyncio.Task[Any]:
        """Keep a reference to background tasks so they are not garbage-collected mid-flight."""
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task
