"""The daemon as a subprocess: LISTEN pickup, SIGTERM drain, kill -9 recovery, a Postgres restart."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest

from monitor.migrate import migrate
from tests.daemon_process import DaemonProcess
from tests.factories import insert_book, insert_item, item_row
from tests.postgres import Cluster
from tests.waiting import eventually_sync

Spawn = Callable[..., DaemonProcess]


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Spawn]:
    daemons: list[DaemonProcess] = []

    def start(database_url: str, processor: str = "tests.processors:recording", **env: object) -> DaemonProcess:
        values = {
            "DATABASE_URL": database_url, "POLL_INTERVAL_SECONDS": "0.5", "LEASE_SECONDS": "30",
            "SHUTDOWN_GRACE_SECONDS": "10", "WORKER_ID": f"proc-{len(daemons)}",
            "TEST_RECORD_FILE": str(tmp_path / "record.txt"), "PORT": "0",
        }
        values.update({k: str(v) for k, v in env.items()})
        daemon = DaemonProcess(values, processor=processor, log_file=tmp_path / f"daemon-{len(daemons)}.log")
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
    eventually_sync(lambda: status(db, item) == "completed", timeout=20,
                    what="pickup via LISTEN (polling alone would take an hour)")
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
    pages = [line.split()[2] for line in record.read_text().splitlines() if line.startswith("page ")]
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
    eventually_sync(lambda: "database unavailable" in daemon.logs(), what="the outage being noticed")
    assert daemon.alive()
    own_cluster.start()
    with psycopg.connect(url, autocommit=True) as db:
        second = insert_item(db, book_id=insert_book(db))
        eventually_sync(lambda: status(db, second) == "completed", timeout=60, what="recovery")
    assert "database reachable again" in daemon.logs()
    assert daemon.terminate() == 0
