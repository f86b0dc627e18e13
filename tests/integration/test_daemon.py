"""The daemon in-process against a real Postgres, with processors that succeed, fail and hang."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import psycopg
import pytest

from monitor.config import Secret, Settings
from monitor.daemon import Monitor
from monitor.job import Job
from monitor.store.postgres import PostgresStore
from processors.contract import BookResult, Processor
from processors.errors import RetryableError, TerminalError
from processors.queue_order import QueueOrderSemaphore
from tests.support.factories import insert_book, insert_item, item_row
from tests.support.processors import Crashing, Failing, Hanging, Recording
from tests.support.waiting import eventually

MonitorFactory = Callable[..., Monitor]


@pytest.fixture
async def make_monitor(database_url: str) -> AsyncIterator[MonitorFactory]:
    monitors: list[Monitor] = []

    def make(processor: Processor, **overrides: object) -> Monitor:
        values: dict[str, object] = dict(
            database_url=Secret(database_url),
            poll_interval_seconds=0.2,
            lease_seconds=30,
            shutdown_grace_seconds=2,
            worker_id=f"test-{len(monitors)}",
        )
        values.update(overrides)
        monitor = Monitor(Settings(**values), PostgresStore(database_url), processor)
        monitors.append(monitor)
        return monitor

    yield make
    for monitor in monitors:
        await monitor.shutdown()


def status(db: psycopg.Connection, item: str) -> str:
    return item_row(db, item)["generation_status"]


async def test_processes_paid_items_and_completes_them(
    make_monitor: MonitorFactory, db: psycopg.Connection
) -> None:
    book = insert_book(db)
    items = [insert_item(db, book_id=book) for _ in range(3)]
    unpaid = insert_item(db, book_id=book, paid=False)
    processor = Recording(steps=2)
    monitor = make_monitor(processor)
    await monitor.start()
    await eventually(lambda: all(status(db, i) == "completed" for i in items), what="completion")
    assert sorted(processor.seen) == sorted(items)
    assert monitor.stats.completed == 3
    assert status(db, unpaid) == "pending"
    row = item_row(db, items[0])
    assert row["pdf_path"] == f"generated/{items[0]}/book.pdf" and row["pages_done"] == 2


async def test_never_runs_more_than_the_concurrency_limit(
    make_monitor: MonitorFactory, db: psycopg.Connection
) -> None:
    book = insert_book(db)
    items = [insert_item(db, book_id=book) for _ in range(5)]
    monitor = make_monitor(Hanging(), max_concurrent_orders=2)
    await monitor.start()
    await eventually(lambda: len(monitor.in_flight) == 2)
    await monitor.poll()
    assert len(monitor.in_flight) == 2
    assert sum(status(db, i) == "processing" for i in items) == 2


@pytest.mark.parametrize(
    ("processor", "expected_status", "expected_code"),
    [
        (Failing(RetryableError("x", code="ai_unavailable")), "pending", "ai_unavailable"),
        (Failing(TerminalError("x", code="photo_rejected")), "failed", "photo_rejected"),
        (Crashing(), "pending", "internal_error"),
    ],
    ids=["retryable", "terminal", "crash"],
)
async def test_failures_are_classified(
    make_monitor: MonitorFactory,
    db: psycopg.Connection,
    processor: Processor,
    expected_status: str,
    expected_code: str,
) -> None:
    item = insert_item(db, book_id=insert_book(db))
    monitor = make_monitor(processor)
    await monitor.start()
    await eventually(lambda: item_row(db, item)["error_code"] is not None)
    row = item_row(db, item)
    assert (row["generation_status"], row["error_code"]) == (expected_status, expected_code)
    assert row["claimed_by"] is None
    # The parent sees a sentence, never the exception text.
    assert "x" != row["error_message"] and "RuntimeError" not in row["error_message"]


async def test_lost_lease_cancels_the_work(
    make_monitor: MonitorFactory, db: psycopg.Connection
) -> None:
    item = insert_item(db, book_id=insert_book(db))
    hanging = Hanging()
    monitor = make_monitor(hanging, lease_seconds=3)
    await monitor.start()
    await eventually(lambda: hanging.started.is_set())
    db.execute("update order_items set claimed_by = 'someone-else' where id = %s", [item])
    await eventually(lambda: hanging.cancelled, what="cancellation after the lease was lost")
    await eventually(lambda: not monitor.in_flight)
    assert item_row(db, item)["claimed_by"] == "someone-else"
    assert monitor.stats.abandoned == 1


async def test_refund_mid_processing_stops_the_item(
    make_monitor: MonitorFactory, db: psycopg.Connection
) -> None:
    item = insert_item(db, book_id=insert_book(db))
    hanging = Hanging()
    monitor = make_monitor(hanging, lease_seconds=3)
    await monitor.start()
    await eventually(lambda: hanging.started.is_set())
    db.execute(
        "update orders set payment_status = 'refunded' where id = "
        "(select order_id from order_items where id = %s)",
        [item],
    )
    await eventually(lambda: hanging.cancelled)
    row = item_row(db, item)
    assert (row["generation_status"], row["error_code"]) == ("failed", "order_not_paid")


async def test_shutdown_releases_what_does_not_finish_in_the_grace_period(
    make_monitor: MonitorFactory, db: psycopg.Connection
) -> None:
    item = insert_item(db, book_id=insert_book(db))
    hanging = Hanging()
    monitor = make_monitor(hanging, shutdown_grace_seconds=0.3)
    await monitor.start()
    await eventually(lambda: hanging.started.is_set())
    await monitor.shutdown()
    row = item_row(db, item)
    assert (row["generation_status"], row["attempts"], row["claimed_by"]) == ("pending", 0, None)
    assert hanging.cancelled


async def test_shutdown_lets_quick_items_finish(
    make_monitor: MonitorFactory, db: psycopg.Connection
) -> None:
    item = insert_item(db, book_id=insert_book(db))
    processor = Recording(seconds=0.5)
    monitor = make_monitor(processor, shutdown_grace_seconds=10)
    await monitor.start()
    await eventually(lambda: processor.seen)
    await monitor.shutdown()
    assert status(db, item) == "completed"


async def test_stop_and_start_claiming(
    make_monitor: MonitorFactory, db: psycopg.Connection
) -> None:
    book = insert_book(db)
    monitor = make_monitor(Recording(), auto_start_monitor=False)
    await monitor.start()
    item = insert_item(db, book_id=book)
    await monitor.poll()
    assert status(db, item) == "pending"
    monitor.start_claiming()
    await eventually(lambda: status(db, item) == "completed")


async def test_listen_wakes_the_daemon_long_before_the_next_poll(
    make_monitor: MonitorFactory, db: psycopg.Connection
) -> None:
    monitor = make_monitor(Recording(), poll_interval_seconds=3600)
    await monitor.start()
    await eventually(lambda: monitor.stats.last_poll_at is not None)
    item = insert_item(db, book_id=insert_book(db))
    await eventually(
        lambda: status(db, item) == "completed",
        timeout=10,
        what="pickup through LISTEN with an hour-long poll interval",
    )


async def test_once_processes_everything_claimable_then_returns(
    make_monitor: MonitorFactory, db: psycopg.Connection
) -> None:
    book = insert_book(db)
    items = [insert_item(db, book_id=book) for _ in range(4)]
    monitor = make_monitor(Recording(), max_concurrent_orders=2)
    assert await monitor.run_once() == 4
    assert all(status(db, i) == "completed" for i in items)


async def test_a_restart_under_the_same_worker_id_resumes_its_items_at_once(
    make_monitor: MonitorFactory, db: psycopg.Connection
) -> None:
    book = insert_book(db)
    mine, other = insert_item(db, book_id=book), insert_item(db, book_id=book)
    # Two items a kill -9 left behind, with the whole 30 s lease still to run: one held under
    # the restarted process's worker id, one under another worker that may well be alive.
    for item, worker in ((mine, "restarted"), (other, "someone-else")):
        db.execute(
            """update order_items set generation_status = 'processing', claimed_by = %s,
                             attempts = 1, lease_expires_at = now() + interval '30 seconds'
                       where id = %s""",
            [worker, item],
        )
    processor = Recording()

    monitor = make_monitor(processor, worker_id="restarted")
    assert await monitor.run_once() == 1

    assert processor.seen == [mine]
    row = item_row(db, mine)
    assert row["generation_status"] == "completed" and (row["attempts"], row["crash_count"]) == (
        1,
        1,
    )
    assert item_row(db, other)["claimed_by"] == "someone-else"


class SharingOneSlot:
    """Each item's work, in a task of its own as a page's is, waits for one process-wide slot
    once the test lets that item ask for it."""

    def __init__(self) -> None:
        self.slot: QueueOrderSemaphore | None = None
        self.may_ask: dict[str, asyncio.Event] = {}
        self.in_line: list[str] = []
        self.served: list[str] = []

    async def __call__(self, job: Job) -> BookResult:
        may_ask = self.may_ask.setdefault(job.item_id, asyncio.Event())

        async def page() -> None:
            await may_ask.wait()
            assert self.slot is not None
            self.in_line.append(job.item_id)
            async with self.slot:
                self.served.append(job.item_id)

        await asyncio.ensure_future(page())
        base = f"generated/{job.item_id}"
        return BookResult(
            pdf_path=f"{base}/book.pdf",
            pdf_url=f"file:///{base}/book.pdf",
            cover_path=f"{base}/cover.jpg",
            cover_url=f"file:///{base}/cover.jpg",
        )


async def test_items_in_flight_are_served_in_queue_order_whoever_asks_first(
    make_monitor: MonitorFactory, db: psycopg.Connection
) -> None:
    book = insert_book(db)
    items = [insert_item(db, book_id=book) for _ in range(3)]
    for minutes, item in zip((30, 20, 10), items, strict=True):  # items[0] has waited longest
        db.execute(
            "update order_items set next_attempt_at = now() - make_interval(mins => %s)"
            " where id = %s",
            [minutes, item],
        )
    processor = SharingOneSlot()
    processor.slot = QueueOrderSemaphore(1)
    await processor.slot.acquire()  # held by something outside the orders
    monitor = make_monitor(processor, max_concurrent_orders=3)
    await monitor.start()
    await eventually(lambda: len(monitor.in_flight) == 3)

    # The newest item asks first, the oldest last.
    for n, item in enumerate(reversed(items), start=1):
        await eventually(lambda item=item: item in processor.may_ask)
        processor.may_ask[item].set()
        await eventually(lambda n=n: len(processor.in_line) == n)
    processor.slot.release()

    await eventually(lambda: all(status(db, i) == "completed" for i in items))
    assert processor.in_line == list(reversed(items))
    assert processor.served == items
