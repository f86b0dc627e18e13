"""The status server in-process, through aiohttp's test client, on a daemon with a real Postgres."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import datetime

import psycopg
import pytest
from aiohttp.test_utils import TestClient, TestServer
from loguru import logger
from prometheus_client.parser import text_string_to_metric_families

from monitor import __version__
from monitor.config import Secret, Settings
from monitor.daemon import Monitor
from monitor.job import Job
from monitor.migrate import migrate
from monitor.runner import utcnow
from monitor.server import (
    DB_FRESH_MIN_SECONDS,
    DB_PROBE_TIMEOUT_SECONDS,
    LOOP_LAG_LIMIT_SECONDS,
    create_app,
)
from monitor.store.base import OrderStore
from monitor.store.postgres import PostgresStore
from processors.contract import BookResult, Processor
from processors.errors import RetryableError, TerminalError
from testkit.postgres import Cluster
from tests.support.factories import insert_book, insert_item, item_row
from tests.support.processors import Failing, Hanging, Recording
from tests.support.waiting import eventually

ADMIN_TOKEN = "operator-token-7c1e"
AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
CHILD = "Zephyrine"
ADMIN_ENDPOINTS = ["/monitor/stop", "/monitor/start", f"/orders/{uuid.uuid4()}/retry"]

Serve = Callable[..., Awaitable[tuple[Monitor, TestClient]]]


class Gated:
    """Reports a step naming the child, as a progress text for the parent's app may, then waits
    for the test to open the gate, and returns URLs as a real book would."""

    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.started: list[str] = []

    async def __call__(self, job: Job) -> BookResult:
        await job.report(40, f"Painting {job.item['child_name']}'s cover")
        self.started.append(job.item_id)
        await self.gate.wait()
        path = f"generated/{job.item_id}"
        url = f"https://cdn.example.com/{path}"
        return BookResult(
            pdf_path=f"{path}/book.pdf",
            pdf_url=f"{url}/book.pdf",
            cover_path=f"{path}/cover.jpg",
            cover_url=f"{url}/cover.jpg",
        )


@pytest.fixture
async def serve(database_url: str) -> AsyncIterator[Serve]:
    """Start a monitor and a test client on its status app; both are shut down afterwards."""
    running: list[tuple[Monitor, TestClient]] = []

    async def start(
        processor: Processor, *, store: OrderStore | None = None, **overrides: object
    ) -> tuple[Monitor, TestClient]:
        values: dict[str, object] = dict(
            database_url=Secret(database_url),
            poll_interval_seconds=0.2,
            lease_seconds=30,
            shutdown_grace_seconds=1,
            worker_id="server-test",
            admin_token=Secret(ADMIN_TOKEN),
        )
        values.update(overrides)
        monitor = Monitor(Settings(**values), store or PostgresStore(database_url), processor)
        client = TestClient(TestServer(create_app(monitor)))
        await client.start_server()
        running.append((monitor, client))
        await monitor.start()
        await eventually(lambda: monitor.stats.last_poll_at is not None, what="the first poll")
        return monitor, client

    yield start
    for monitor, client in running:
        await client.close()
        await monitor.shutdown()


@pytest.fixture
def logged(caplog: pytest.LogCaptureFixture) -> Iterator[Callable[[], list[str]]]:
    """What the process logged so far: loguru lines, then stdlib records (APScheduler's)."""
    lines: list[str] = []
    sink = logger.add(lambda m: lines.append(str(m)), format="{message}")
    yield lambda: [*lines, *(r.getMessage() for r in caplog.records)]
    logger.remove(sink)


def status(db: psycopg.Connection, item: str) -> str:
    return item_row(db, item)["generation_status"]


def metric(text: str, name: str, **labels: str) -> float | None:
    """One sample's value from a Prometheus exposition, None when absent."""
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return sample.value
    return None


# ---------------------------------------------------------------------------------------- health


async def test_health_is_ok_while_the_daemon_polls(serve: Serve) -> None:
    _, client = await serve(Recording())
    response = await client.get("/health")
    body = await response.json()
    assert response.status == 200, body
    assert body["status"] == "ok" and body["problems"] == []
    assert body["scheduler"] == "running" and body["database"]["downSince"] is None


async def test_health_probes_the_database_when_the_daemon_has_not_touched_it(serve: Serve) -> None:
    # With claiming stopped the daemon makes no database calls, so health must ask itself.
    monitor, client = await serve(Recording(), auto_start_monitor=False)
    assert monitor.stats.last_db_ok_at is None
    response = await client.get("/health")
    assert response.status == 200, await response.text()
    assert monitor.stats.last_db_ok_at is not None


async def test_health_reports_an_unreachable_database(serve: Serve) -> None:
    nowhere = PostgresStore("postgresql://nobody@127.0.0.1:1/nothing", connect_timeout=1)
    monitor, client = await serve(Recording(), store=nowhere)
    await eventually(lambda: monitor.stats.db_down_since is not None, what="the outage noticed")
    response = await client.get("/health")
    body = await response.json()
    assert response.status == 503
    assert body["status"] == "unhealthy"
    assert body["database"]["downSince"] == monitor.stats.db_down_since.isoformat()
    assert [p for p in body["problems"] if p.startswith("database unreachable since")]


async def test_health_turns_503_when_the_database_stops_with_every_slot_busy(
    serve: Serve, own_cluster: Cluster
) -> None:
    url = own_cluster.url()
    await migrate(url)
    with psycopg.connect(url, autocommit=True) as db:
        insert_item(db, book_id=insert_book(db))
    hanging = Hanging()
    monitor, client = await serve(
        hanging,
        store=PostgresStore(url, connect_timeout=1),
        database_url=Secret(url),
        max_concurrent_orders=1,
        poll_interval_seconds=1.0,
    )
    await eventually(lambda: hanging.started.is_set(), what="the only slot taken")
    own_cluster.stop()
    fresh_for = DB_FRESH_MIN_SECONDS  # 3 poll intervals, at least 15 s
    answers = []
    deadline = (
        time.monotonic() + fresh_for + DB_PROBE_TIMEOUT_SECONDS + 30
    )  # 30 s: a loaded machine
    while time.monotonic() < deadline:
        response = await client.get("/health")
        body = await response.json()
        answers.append(response.status)
        if response.status == 503:
            break
        # Never "ok" on stale evidence: a 200 always rests on a round trip within the window.
        last_ok = datetime.fromisoformat(body["database"]["lastOkAt"])
        assert (utcnow() - last_ok).total_seconds() < fresh_for, body
        await asyncio.sleep(0.5)
    assert answers[-1] == 503, answers
    assert any(
        p.startswith(("database unreachable", "database not answering")) for p in body["problems"]
    ), body
    assert len(monitor.in_flight) == 1  # still busy: the probe did not need a free slot


async def test_an_unmigrated_database_says_run_migrate_once(
    serve: Serve, empty_database_url: str, logged: Callable[[], list[str]]
) -> None:
    monitor, client = await serve(
        Recording(),
        store=PostgresStore(empty_database_url),
        database_url=Secret(empty_database_url),
    )
    await eventually(lambda: monitor.stats.db_down_since is not None, what="the missing schema")
    response = await client.get("/health")
    body = await response.json()
    assert response.status == 503
    assert "schema not migrated: run `run_monitor.py migrate`" in body["problems"], body
    await eventually(lambda: monitor._outage_failures >= 3, what="more failed polls")
    said = [line for line in logged() if "schema not migrated" in line]
    assert len(said) == 1, said
    assert not [line for line in logged() if "Traceback" in line or "raised an exception" in line]


async def test_a_problem_another_component_reports_shows_in_health(serve: Serve) -> None:
    monitor, client = await serve(Recording())
    monitor.health.report("ai_provider", "AI provider unusable: test")
    response = await client.get("/health")
    assert response.status == 503
    assert "AI provider unusable: test" in (await response.json())["problems"]
    monitor.health.clear("ai_provider")
    assert (await client.get("/health")).status == 200


async def test_health_reports_a_stopped_scheduler(serve: Serve) -> None:
    monitor, client = await serve(Recording())
    await monitor.shutdown()
    response = await client.get("/health")
    body = await response.json()
    assert response.status == 503
    assert body["scheduler"] == "stopped" and "scheduler stopped" in body["problems"]


async def test_health_reports_a_stalled_event_loop_until_it_recovers(serve: Serve) -> None:
    _, client = await serve(Recording())
    time.sleep(LOOP_LAG_LIMIT_SECONDS + 1)  # blocking on purpose: this is the stall
    response = await client.get("/health")
    body = await response.json()
    assert response.status == 503
    assert [p for p in body["problems"] if p.startswith("event loop stalled")]

    async def healthy() -> bool:
        return (await client.get("/health")).status == 200

    deadline = time.monotonic() + 10
    while not await healthy():
        assert time.monotonic() < deadline, "health never recovered from the stall"
        await asyncio.sleep(0.1)


# ---------------------------------------------------------------------------------------- status


async def test_status_describes_the_work_without_personal_data(
    serve: Serve, db: psycopg.Connection
) -> None:
    gated = Gated()
    monitor, client = await serve(gated)
    item = insert_item(db, book_id=insert_book(db), child_name=CHILD)
    await eventually(lambda: gated.started, what="the item in flight")

    response = await client.get("/monitor/status")
    body = await response.json()
    assert response.status == 200
    assert (body["isRunning"], body["processingOrders"], body["pollInterval"]) == (True, 1, 200)
    assert (body["workerId"], body["version"]) == ("server-test", __version__)
    assert body["startedAt"] and body["lastPollAt"] and body["lastClaimAt"]
    assert (body["completed"], body["failed"], body["retried"]) == (0, 0, 0)
    [flight] = body["inFlight"]
    assert flight == {
        "id": item,
        "step": "Painting [child]'s cover",
        "progress": 40,
        "startedAt": monitor.in_flight[item].started_at.isoformat(),
    }
    for path in ("/monitor/status", "/health", "/metrics"):
        text = await (await client.get(path)).text()
        assert CHILD.lower() not in text.lower(), path
        assert "photo" not in text and "uploads/" not in text, path

    gated.gate.set()
    await eventually(lambda: status(db, item) == "completed")
    body = await (await client.get("/monitor/status")).json()
    assert (body["completed"], body["processingOrders"], body["inFlight"]) == (1, 0, [])
    assert "cdn.example.com" not in str(body) and CHILD not in str(body)


async def test_stop_and_start_claiming_over_http_while_an_item_is_in_flight(
    serve: Serve, db: psycopg.Connection
) -> None:
    gated = Gated()
    monitor, client = await serve(gated)
    book = insert_book(db)
    first = insert_item(db, book_id=book)
    await eventually(lambda: gated.started, what="the first item in flight")

    response = await client.post("/monitor/stop", headers=AUTH)
    body = await response.json()
    assert response.status == 200
    assert (body["isRunning"], body["processingOrders"]) == (False, 1)
    second = insert_item(db, book_id=book)
    await monitor.poll()
    gated.gate.set()
    await eventually(lambda: status(db, first) == "completed", what="the in-flight item finishing")
    await monitor.poll()
    assert status(db, second) == "pending"

    response = await client.post("/monitor/start", headers=AUTH)
    assert response.status == 200 and (await response.json())["isRunning"] is True
    await eventually(lambda: status(db, second) == "completed", what="claiming again")


async def test_auto_start_false_serves_with_claiming_stopped(
    serve: Serve, db: psycopg.Connection
) -> None:
    monitor, client = await serve(Recording(), auto_start_monitor=False)
    item = insert_item(db, book_id=insert_book(db))
    await monitor.poll()
    body = await (await client.get("/monitor/status")).json()
    assert body["isRunning"] is False and status(db, item) == "pending"
    assert (await client.post("/monitor/start", headers=AUTH)).status == 200
    await eventually(lambda: status(db, item) == "completed")


# ---------------------------------------------------------------------------------------- admin


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong-token"},
        {"Authorization": f"Basic {ADMIN_TOKEN}"},
        {"Authorization": f"Bearer {ADMIN_TOKEN}x"},
        {"Authorization": "Bearer"},
    ],
    ids=["missing", "wrong", "other-scheme", "longer", "empty"],
)
async def test_admin_actions_refuse_a_missing_or_wrong_token(
    serve: Serve, db: psycopg.Connection, headers: dict[str, str]
) -> None:
    monitor, client = await serve(Failing(TerminalError("x", code="photo_rejected")))
    failed = insert_item(db, book_id=insert_book(db))
    await eventually(lambda: status(db, failed) == "failed")
    for path in [*ADMIN_ENDPOINTS, f"/orders/{failed}/retry"]:
        response = await client.post(path, headers=headers)
        assert response.status == 401, path
        assert response.headers["WWW-Authenticate"] == "Bearer"
        assert (await response.json())["error"] == "unauthorized"
    assert monitor.claiming is True
    assert status(db, failed) == "failed"


@pytest.mark.parametrize(
    "token", [b"\xff\xfe\x80", "t\u00f6k\u00e9n".encode()], ids=["not-utf8", "utf8-non-ascii"]
)
async def test_a_non_ascii_token_is_unauthorized_not_an_error(serve: Serve, token: bytes) -> None:
    """Raw header bytes, as a hostile client sends them (aiohttp's client would refuse them)."""
    monitor, client = await serve(Recording())
    reader, writer = await asyncio.open_connection(client.server.host, client.server.port)
    writer.write(
        b"POST /monitor/stop HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n"
        b"Connection: close\r\nAuthorization: Bearer " + token + b"\r\n\r\n"
    )
    await writer.drain()
    answer = await reader.read()
    writer.close()
    status_line = answer.split(b"\r\n", 1)[0]
    assert status_line.split()[1] == b"401", status_line
    assert monitor.claiming is True


async def test_admin_actions_are_disabled_without_an_admin_token(serve: Serve) -> None:
    monitor, client = await serve(Recording(), admin_token=None)
    for path in ADMIN_ENDPOINTS:
        response = await client.post(path, headers={"Authorization": "Bearer anything"})
        body = await response.json()
        assert response.status == 403, path
        assert body["error"] == "admin_disabled" and "disabled" in body["message"]
    assert monitor.claiming is True


async def test_retry_sends_a_failed_item_back_to_the_queue(
    serve: Serve, db: psycopg.Connection
) -> None:
    monitor, client = await serve(Failing(TerminalError("x", code="photo_rejected")))
    item = insert_item(db, book_id=insert_book(db))
    await eventually(lambda: status(db, item) == "failed")
    monitor.stop_claiming()  # so the item stays where the retry puts it

    response = await client.post(f"/orders/{item}/retry", headers=AUTH)
    assert response.status == 200
    assert await response.json() == {"id": item, "status": "pending"}
    row = item_row(db, item)
    assert (row["generation_status"], row["attempts"], row["error_code"]) == ("pending", 0, None)


@pytest.mark.parametrize(
    ("case", "expected_status", "expected_error"),
    [
        ("unknown", 404, "not_found"),
        ("pending", 409, "not_failed"),
        ("refunded", 409, "order_not_paid"),
        ("not-a-uuid", 400, "invalid_id"),
    ],
)
async def test_retry_refuses_what_it_cannot_retry(
    serve: Serve, db: psycopg.Connection, case: str, expected_status: int, expected_error: str
) -> None:
    _, client = await serve(Recording(), auto_start_monitor=False)
    item = insert_item(db, book_id=insert_book(db))
    if case == "refunded":
        db.execute("update order_items set generation_status = 'failed' where id = %s", [item])
        db.execute(
            "update orders set payment_status = 'refunded' where id = "
            "(select order_id from order_items where id = %s)",
            [item],
        )
    target = {"unknown": str(uuid.uuid4()), "not-a-uuid": "not-a-uuid"}.get(case, item)
    response = await client.post(f"/orders/{target}/retry", headers=AUTH)
    body = await response.json()
    assert response.status == expected_status
    assert body["error"] == expected_error and body["message"]


# ---------------------------------------------------------------------------------------- metrics


async def test_metrics_move_when_an_order_completes(serve: Serve, db: psycopg.Connection) -> None:
    monitor, client = await serve(Recording(steps=2))
    item = insert_item(db, book_id=insert_book(db))
    await eventually(lambda: monitor.stats.completed == 1)

    response = await client.get("/metrics")
    text = await response.text()
    assert response.status == 200 and response.content_type == "text/plain"
    assert metric(text, "book_monitor_items_claimed_total") == 1
    assert metric(text, "book_monitor_items_completed_total") == 1
    assert metric(text, "book_monitor_order_duration_seconds_count", outcome="completed") == 1
    assert metric(text, "book_monitor_items_in_flight") == 0
    assert metric(text, "book_monitor_queue_depth") == 0
    assert status(db, item) == "completed"


@pytest.mark.parametrize(
    ("error", "name", "outcome"),
    [
        (TerminalError("x", code="photo_rejected"), "book_monitor_items_failed_total", "failed"),
        (RetryableError("x", code="ai_unavailable"), "book_monitor_items_retried_total", "retry"),
    ],
    ids=["terminal", "retryable"],
)
async def test_metrics_count_failures_by_error_code(
    serve: Serve, db: psycopg.Connection, error: Exception, name: str, outcome: str
) -> None:
    monitor, client = await serve(Failing(error))
    insert_item(db, book_id=insert_book(db))
    await eventually(lambda: monitor.stats.failed + monitor.stats.retried == 1)
    text = await (await client.get("/metrics")).text()
    assert metric(text, name, error_code=error.code) == 1
    assert metric(text, "book_monitor_order_duration_seconds_count", outcome=outcome) == 1
    assert metric(text, "book_monitor_items_completed_total") == 0


async def test_metrics_report_the_queue_depth(serve: Serve, db: psycopg.Connection) -> None:
    _, client = await serve(Recording(), auto_start_monitor=False)
    book = insert_book(db)
    for _ in range(2):
        insert_item(db, book_id=book)
    insert_item(db, book_id=book, paid=False)
    text = await (await client.get("/metrics")).text()
    assert metric(text, "book_monitor_queue_depth") == 2
