"""healthcheck.py as a supervisor runs it, against ``run_monitor.py`` as a subprocess."""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest

from monitor.migrate import migrate
from testkit.daemon_process import REPO, DaemonProcess
from testkit.postgres import Cluster
from tests.support.factories import insert_book, insert_item, item_row
from tests.support.waiting import eventually_sync

Spawn = Callable[[str], DaemonProcess]


def free_port() -> int:
    """A port nothing listens on now: the daemon and the probe both need to know it up front."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def healthcheck(port: int, cwd: Path) -> tuple[int, str]:
    """Run the probe with PORT in its environment, as a Docker HEALTHCHECK would."""
    done = subprocess.run(
        [sys.executable, str(REPO / "healthcheck.py")],
        cwd=cwd,
        env={"PORT": str(port)},
        capture_output=True,
        text=True,
        timeout=30,
    )
    return done.returncode, done.stdout + done.stderr


@pytest.fixture
def port() -> int:
    return free_port()


@pytest.fixture
def spawn(tmp_path: Path, port: int) -> Iterator[Spawn]:
    daemons: list[DaemonProcess] = []

    def start(database_url: str) -> DaemonProcess:
        env = {
            "DATABASE_URL": database_url,
            "HOST": "127.0.0.1",
            "PORT": str(port),
            "POLL_INTERVAL_SECONDS": "0.5",
            "WORKER_ID": "healthcheck-test",
        }
        daemon = DaemonProcess(
            env,
            processor="tests.support.processors:recording",
            log_file=tmp_path / f"daemon-{len(daemons)}.log",
        )
        daemons.append(daemon)
        return daemon

    yield start
    for daemon in daemons:
        daemon.stop()


def test_healthy_daemon_then_nothing_listening_after_sigterm(
    spawn: Spawn, port: int, database_url: str, db: psycopg.Connection, tmp_path: Path
) -> None:
    daemon = spawn(database_url)
    eventually_sync(lambda: healthcheck(port, tmp_path)[0] == 0, what="a healthy answer")
    code, output = healthcheck(port, tmp_path)
    assert (code, output.count("\n")) == (0, 1)
    assert output.startswith("healthy")
    item = insert_item(db, book_id=insert_book(db))
    eventually_sync(lambda: item_row(db, item)["generation_status"] == "completed")

    assert daemon.terminate() == 0  # the server is cleaned up with the daemon
    code, output = healthcheck(port, tmp_path)
    assert code == 1 and output.startswith("unhealthy: no answer")


def test_nothing_listening(port: int, tmp_path: Path) -> None:
    code, output = healthcheck(port, tmp_path)
    assert code == 1
    assert output.startswith("unhealthy: no answer") and output.count("\n") == 1


async def test_unhealthy_while_the_database_is_down(
    spawn: Spawn, port: int, own_cluster: Cluster, tmp_path: Path
) -> None:
    await migrate(own_cluster.url())
    daemon = spawn(own_cluster.url())
    eventually_sync(lambda: healthcheck(port, tmp_path)[0] == 0, what="a healthy answer")

    own_cluster.stop()
    eventually_sync(lambda: "database unavailable" in daemon.logs(), what="the outage noticed")
    code, output = healthcheck(port, tmp_path)
    assert code == 1
    assert output.startswith("unhealthy: HTTP 503: database unreachable since")

    own_cluster.start()
    eventually_sync(lambda: healthcheck(port, tmp_path)[0] == 0, timeout=30, what="recovery")
    assert await daemon.terminate_beside_fakes() == 0
