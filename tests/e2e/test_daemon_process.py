"""The daemon as a subprocess: LISTEN pickup, SIGTERM drain, kill -9 recovery, a Postgres restart."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest

from monitor.migrate import migrate
from testkit.daemon_process import DaemonProcess
from testkit.postgres import Cluster
from tests.support.factories import insert_book, insert_item, item_row
from tests.support.waiting import eventually_sync

Spawn = Callable[..., DaemonProcess]


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Spawn]:
    daemons: list[DaemonProcess] = []

    def start(
        database_url: str, processor: str = "tests.support.processors:recording", **env: object
    ) -> DaemonProcess:
        values = {
            "DATABASE_URL": database_url,
            "POLL_INTERVAL_SECONDS": "0.5",
            "LEASE_SECONDS": "30",
            "SHUTDOWN_GRACE_SECONDS": "10",
            "WORKER_ID": f"proc-{len(daemons)}",
            "TEST_RECORD_FILE": str(tmp_path / "record.txt"),
            "PORT": "0",
        }
        values.update({k: str(v) for k, v in env.items()})
        daemon = DaemonProcess(
            values, processor=processor, log_file=tmp_path / f"daemon-{len(daemons)}.log"
        )
        daemons.append(daemon)
        return daemon

    yield start
    for daemon in daemons:
        daemon.stop()


def status(db: psycopg.Connection, item: str) -> str:
    return item_row(db, item)["generation_status"]


def test_listen_picks_up_a_new_item_despite_a_long_poll_interval(
    spawn: Spawn, database_url: str, db: psycopg.Connection
) -> None:
    book = insert_book(db)
    daemon = spawn(database_url, POLL_INTERVAL_SECONDS="3600")
    eventually_sync(lambda: '"monitor started"' in daemon.logs(), what="daemon start")
    item = insert_item(db, book_id=book)
    eventually_sync(
        lambda: status(db, item) == "completed",
        timeout=20,
        what="pickup via LISTEN (polling alone would take an hour)",
    )
    assert daemon.alive()


def test_sigterm_lets_the_item_finish_and_exits_zero(
    spawn: Spawn, database_url: str, db: psycopg.Connection
) -> None:
    item = insert_item(db, book_id=insert_book(db))
    daemon = spawn(database_url, TEST_PROCESS_SECONDS="1.5")
    eventually_sync(lambda: status(db, item) == "processing")
    assert daemon.terminate() == 0
    assert status(db, item) == "completed"


def test_sigterm_releases_what_the_grace_period_cannot_finish(
    spawn: Spawn, database_url: str, db: psycopg.Connection
) -> None:
    item = insert_item(db, book_id=insert_book(db))
    daemon = spawn(database_url, TEST_PROCESS_SECONDS="60", SHUTDOWN_GRACE_SECONDS="0.5")
    eventually_sync(lambda: status(db, item) == "processing")
    assert daemon.terminate() == 0
    row = item_row(db, item)
    assert (row["generation_status"], row["attempts"], row["claimed_by"]) == ("pending", 0, None)


def test_kill_9_mid_item_then_another_daemon_finishes_it_from_checkpoints(
    spawn: Spawn, database_url: str, db: psycopg.Connection, tmp_path: Path
) -> None:
    item = insert_item(db, book_id=insert_book(db))
    record = tmp_path / "record.txt"
    slow = {"TEST_PROCESS_SECONDS": "8", "TEST_PROCESS_STEPS": "4", "LEASE_SECONDS": "3"}
    first = spawn(database_url, **slow)
    eventually_sync(lambda: item_row(db, item)["pages_done"] >= 2, what="two checkpointed pages")
    first.kill()
    assert status(db, item) == "processing"  # nobody released it: the lease must expire

    second = spawn(database_url, **{**slow, "TEST_PROCESS_SECONDS": "1"})
    eventually_sync(lambda: status(db, item) == "completed", timeout=30, what="recovery")
    pages = [
        line.split()[2] for line in record.read_text().splitlines() if line.startswith("page ")
    ]
    # Every page drawn exactly once across both processes, apart from the one in flight at the kill.
    assert sorted(set(pages)) == ["1", "2", "3", "4"]
    assert len(pages) <= 5
    row = item_row(db, item)
    assert (row["attempts"], row["crash_count"]) == (1, 1)  # a crash, not a failure
    assert second.alive()


async def test_survives_a_postgres_stop_and_start(spawn: Spawn, own_cluster: Cluster) -> None:
    url = own_cluster.url()
    await migrate(url)
    daemon = spawn(url)
    with psycopg.connect(url, autocommit=True) as db:
        first = insert_item(db, book_id=insert_book(db))
        eventually_sync(lambda: status(db, first) == "completed")
    own_cluster.stop()
    eventually_sync(
        lambda: "database unavailable" in daemon.logs(), what="the outage being noticed"
    )
    assert daemon.alive()
    own_cluster.start()
    with psycopg.connect(url, autocommit=True) as db:
        second = insert_item(db, book_id=insert_book(db))
        eventually_sync(lambda: status(db, second) == "completed", timeout=60, what="recovery")
    assert "database reachable again" in daemon.logs()
    assert daemon.terminate() == 0


def record_lines(record: Path, kind: str) -> list[tuple[str, str]]:
    """(item, page) of each ``kind`` line ("draw": a paid call began; "page": it was checkpointed)."""
    if not record.exists():
        return []
    return [
        tuple(line.split()[1:3])
        for line in record.read_text().splitlines()  # type: ignore[misc]
        if line.startswith(f"{kind} ")
    ]


def test_a_refund_mid_book_stops_it_with_the_default_lease(
    spawn: Spawn, database_url: str, db: psycopg.Connection, tmp_path: Path
) -> None:
    item = insert_item(db, book_id=insert_book(db))
    # The default lease (300 s): the heartbeat, every 100 s, cannot be what notices the refund.
    daemon = spawn(
        database_url, LEASE_SECONDS="300", TEST_PROCESS_SECONDS="12", TEST_PROCESS_STEPS="6"
    )
    eventually_sync(lambda: item_row(db, item)["pages_done"] >= 1, what="a first page")
    db.execute(
        "update orders set payment_status = 'refunded' where id = "
        "(select order_id from order_items where id = %s)",
        [item],
    )
    drawn_at_refund = len(record_lines(tmp_path / "record.txt", "draw"))
    eventually_sync(lambda: status(db, item) == "failed", what="the refund enforced")
    row = item_row(db, item)
    assert (row["error_code"], row["pdf_url"], row["generated_at"]) == (
        "order_not_paid",
        None,
        None,
    )
    kinds = [
        k
        for (k,) in db.execute(
            "select kind from notifications where order_item_id = %s", [item]
        ).fetchall()
    ]
    assert kinds == ["book_failed"]
    eventually_sync(lambda: '"abandoned item' in daemon.logs(), what="the worker stopping")
    # At most the page in flight at the refund was finished; no new one was started.
    assert len(record_lines(tmp_path / "record.txt", "draw")) <= drawn_at_refund + 1
    assert daemon.alive()


def test_three_kill_9_mid_book_under_one_worker_id_complete_every_book(
    spawn: Spawn, database_url: str, db: psycopg.Connection, tmp_path: Path
) -> None:
    book = insert_book(db)
    items = [insert_item(db, book_id=book) for _ in range(3)]
    env = {
        "WORKER_ID": "deploy-1",
        "TEST_PROCESS_SECONDS": "6",
        "TEST_PROCESS_STEPS": "6",
        "MAX_CONCURRENT_ORDERS": "3",
        "LEASE_SECONDS": "300",
    }
    record = tmp_path / "record.txt"
    daemon = spawn(database_url, **env)
    for kill in range(3):
        before = len(record_lines(record, "page"))
        eventually_sync(
            lambda: (
                len(record_lines(record, "page")) > before
                and any(status(db, i) == "processing" for i in items)
            ),
            what=f"work in progress before kill {kill + 1}",
        )
        daemon.kill()
        daemon = spawn(database_url, **env)  # the supervisor restarts it under the same id
    eventually_sync(
        lambda: all(status(db, i) == "completed" for i in items),
        timeout=90,
        what="every book completed",
    )
    for item in items:
        row = item_row(db, item)
        # Three crashes spent no attempt: no book came near max_attempts.
        assert row["attempts"] == 1 and row["crash_count"] <= 3
        assert row["pages_done"] == 6
    checkpointed = record_lines(record, "page")
    assert len(checkpointed) == len(set(checkpointed))  # no checkpointed page was drawn again
    # Paid calls beyond one per page: only those in flight at a kill (one per item per kill).
    assert len(record_lines(record, "draw")) <= 6 * len(items) + 3 * len(items)
    assert daemon.alive()


def test_an_item_that_kills_every_worker_ends_as_crash_loop(
    spawn: Spawn, database_url: str, db: psycopg.Connection
) -> None:
    item = insert_item(db, book_id=insert_book(db))
    db.execute("update order_items set max_crashes = 2 where id = %s", [item])
    restarts = 0
    daemon = spawn(
        database_url, processor="tests.support.processors:kills_its_process", WORKER_ID="w"
    )
    while status(db, item) != "failed":
        assert restarts <= 4, item_row(db, item)  # 1 claim + 2 reclaims, then the dead letter
        if not daemon.alive():
            restarts += 1
            daemon = spawn(
                database_url, processor="tests.support.processors:kills_its_process", WORKER_ID="w"
            )
        else:
            eventually_sync(
                lambda: not daemon.alive() or status(db, item) == "failed",
                what="the process dying or the item ending",
            )
    row = item_row(db, item)
    assert (row["error_code"], row["attempts"], row["crash_count"]) == ("crash_loop", 1, 2)
    body = db.execute("select body from notifications where order_item_id = %s", [item]).fetchone()
    assert body is not None and "keep trying" not in body[0]
    assert daemon.alive()
