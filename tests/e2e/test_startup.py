"""Start-up as an operator meets it: ``run_monitor.py`` as a subprocess, with what goes wrong
first on a new host (a missing env file, a bad value, no migrations, Gemini out of reach).

Every failure must be one line (JSON when piped), with the README's exit code, no traceback and
no secret; what may pass by itself is waited out by ``run`` with /health saying why.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import TypeVar

import httpx
import psycopg
import pytest
from aiohttp import web

from testkit.daemon_process import REPO, DaemonProcess
from testkit.fakes.gemini_server import FakeGemini
from tests.e2e.test_healthcheck import free_port
from tests.support.factories import insert_book, insert_item, item_row
from tests.support.waiting import eventually_sync

SECRET = "hunter2-very-secret"
T = TypeVar("T")


def run_cli(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    clean = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("GOOGLE_", "GEMINI_", "SUPABASE_", "DATABASE_", "AI_", "STORAGE_"))
    }
    return subprocess.run(
        [sys.executable, str(REPO / "run_monitor.py"), *args],
        env={**clean, **env},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )


def one_json_line(output: str) -> dict:
    lines = [line for line in output.splitlines() if line.strip()]
    assert len(lines) == 1, output
    assert "Traceback" not in output
    return json.loads(lines[0])


def test_a_missing_env_file_is_exit_2_naming_it(tmp_path: Path) -> None:
    done = run_cli("--env-file", "/srv/nowhere/.env", "run", env={}, cwd=tmp_path)
    assert done.returncode == 2
    entry = one_json_line(done.stderr)
    assert entry["level"] == "ERROR" and "/srv/nowhere/.env" in entry["message"]


def test_an_invalid_configuration_is_one_scrubbed_line_and_exit_2(tmp_path: Path) -> None:
    env = {
        "DATABASE_URL": f"mysql://app:{SECRET}@db/x",
        "PORT": "eighty",
        "ADMIN_TOKEN": SECRET + "-token",
    }
    done = run_cli("run", env=env, cwd=tmp_path)
    assert done.returncode == 2
    entry = one_json_line(done.stderr)
    assert "DATABASE_URL must be a postgresql://" in entry["message"]
    assert len(entry["problems"]) == 2
    assert SECRET not in done.stderr + done.stdout


def test_migrate_needs_only_database_url(tmp_path: Path, empty_database_url: str) -> None:
    # Settings migrate does not need may be missing or wrong: AI_PROVIDER=gemini has no key.
    env = {
        "DATABASE_URL": empty_database_url,
        "AI_PROVIDER": "gemini",
        "STORAGE_BACKEND": "supabase",
        "LOG_FORMAT": "json",
    }
    done = run_cli("migrate", env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "migrations up to date" in done.stderr
    again = run_cli("migrate", env={"AI_PROVIDER": "gemini"}, cwd=tmp_path)
    assert again.returncode == 2
    assert "DATABASE_URL is required" in one_json_line(again.stderr)["message"]


def test_migrate_against_an_unreachable_database_is_one_line_and_exit_1(tmp_path: Path) -> None:
    url = f"postgresql://app:{SECRET}@127.0.0.1:{free_port()}/x"
    done = run_cli("migrate", env={"DATABASE_URL": url}, cwd=tmp_path)
    assert done.returncode == 1
    assert one_json_line(done.stderr)["message"] == "database unreachable"
    assert SECRET not in done.stderr


@pytest.fixture
def daemons(tmp_path: Path) -> Iterator[list[DaemonProcess]]:
    running: list[DaemonProcess] = []
    yield running
    for daemon in running:
        daemon.stop()


def health(port: int) -> tuple[int, dict]:
    try:
        response = httpx.get(f"http://127.0.0.1:{port}/health", timeout=5)
    except httpx.TransportError:
        return 0, {}
    return response.status_code, response.json()


def test_an_unmigrated_database_says_run_migrate_once_without_tracebacks(
    tmp_path: Path, empty_database_url: str, daemons: list[DaemonProcess]
) -> None:
    port = free_port()
    daemon = DaemonProcess(
        {
            "DATABASE_URL": empty_database_url,
            "POLL_INTERVAL_SECONDS": "0.2",
            "HOST": "127.0.0.1",
            "PORT": str(port),
        },
        processor="tests.support.processors:recording",
        log_file=tmp_path / "d.log",
    )
    daemons.append(daemon)
    eventually_sync(lambda: health(port)[0] == 503, what="/health answering")
    eventually_sync(lambda: daemon.logs().count('"monitor started"') == 1, what="the start")
    _, body = health(port)
    assert "schema not migrated: run `run_monitor.py migrate`" in body["problems"], body
    for _ in range(5):  # each probe is one more failed round trip, like each poll
        assert health(port)[0] == 503
    logs = daemon.logs()
    assert logs.count("schema not migrated") == 1, logs
    assert "Traceback" not in logs and "raised an exception" not in logs
    assert daemon.terminate() == 0


def test_an_unreachable_gemini_at_boot_is_waited_out_with_health_503(
    tmp_path: Path, database_url: str, daemons: list[DaemonProcess]
) -> None:
    port = free_port()
    env = {
        "DATABASE_URL": database_url,
        "AI_PROVIDER": "gemini",
        "GOOGLE_API_KEY": SECRET,
        "GEMINI_BASE_URL": f"http://127.0.0.1:{free_port()}",
        "GEMINI_TIMEOUT_SECONDS": "2",
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "CACHE_DIR": str(tmp_path / "cache"),
        "LOCAL_STORAGE_DIR": str(tmp_path / "storage"),
    }
    daemon = DaemonProcess(
        env, log_file=tmp_path / "d.log"
    )  # the real processor, real google-genai
    daemons.append(daemon)
    eventually_sync(
        lambda: "AI provider unreachable" in " ".join(health(port)[1].get("problems", [])),
        what="/health naming the AI provider",
    )
    assert daemon.alive()  # not an exit into the supervisor's restart loop
    problems = health(port)[1]["problems"]
    # The database is fine and /health says so from a real round trip, not a guess.
    assert not [p for p in problems if p.startswith("database")], problems
    logs = daemon.logs()
    assert logs.count("AI not usable; claiming paused") == 1
    assert "Traceback" not in logs and SECRET not in logs
    assert daemon.terminate() == 0


def test_the_retention_command_runs_the_sweep_alone(tmp_path: Path, database_url: str) -> None:
    with psycopg.connect(database_url, autocommit=True) as db:
        old = insert_item(db, book_id=insert_book(db))
        db.execute(
            "update order_items set generation_status = 'completed', generated_at = now() - "
            "interval '40 days' where id = %s",
            [old],
        )
        waiting = insert_item(db, book_id=insert_book(db))
        done = run_cli(
            "retention",
            env={
                "DATABASE_URL": database_url,
                "LOG_FORMAT": "json",
                "LOCAL_STORAGE_DIR": str(tmp_path / "storage"),
            },
            cwd=tmp_path,
        )
        assert done.returncode == 0, done.stderr
        assert item_row(db, old)["photo_deleted_at"] is not None
        assert item_row(db, waiting)["generation_status"] == "pending"  # it claims nothing


def test_once_on_an_unmigrated_database_says_run_migrate_and_exits_1(
    tmp_path: Path, empty_database_url: str
) -> None:
    done = run_cli(
        "once", env={"DATABASE_URL": empty_database_url, "LOG_FORMAT": "json"}, cwd=tmp_path
    )
    assert done.returncode == 1
    errors = [json.loads(line) for line in done.stderr.splitlines() if '"ERROR"' in line]
    assert [e["message"] for e in errors] == [
        "schema not migrated: run `run_monitor.py migrate` (expire_leases_of: UndefinedFunction)"
    ]
    assert "Traceback" not in done.stderr


async def test_run_starts_working_once_gemini_answers(
    tmp_path: Path, database_url: str, daemons: list[DaemonProcess]
) -> None:
    fake = FakeGemini()
    gemini_port = free_port()
    port = free_port()
    env = {
        "DATABASE_URL": database_url,
        "AI_PROVIDER": "gemini",
        "GOOGLE_API_KEY": fake.api_key,
        "GEMINI_BASE_URL": f"http://127.0.0.1:{gemini_port}",
        "GEMINI_ANALYSIS_MODEL": fake.ANALYSIS_MODEL,
        "GEMINI_IMAGE_MODEL": fake.IMAGE_MODEL,
        "GEMINI_TIMEOUT_SECONDS": "2",
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "CACHE_DIR": str(tmp_path / "cache"),
        "LOCAL_STORAGE_DIR": str(tmp_path / "storage"),
    }
    daemon = DaemonProcess(env, log_file=tmp_path / "d.log")
    daemons.append(daemon)

    async def problems() -> list[str]:
        status, body = await asyncio.to_thread(health, port)
        return body.get("problems", []) if status else ["no answer"]

    await eventually_async(
        problems,
        lambda p: any("AI provider unreachable" in x for x in p),
        what="the wait for Gemini",
    )
    # Gemini comes up (on the configured address) after the daemon did.
    runner = web.AppRunner(fake.build_app(), access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", gemini_port).start()
        await eventually_async(problems, lambda p: p == [], what="/health turning ok")
        assert "AI usable again; claiming resumes" in daemon.logs()
        assert await daemon.terminate_beside_fakes() == 0
    finally:
        await runner.cleanup()


async def eventually_async(
    read: Callable[[], Awaitable[T]],
    check: Callable[[T], bool],
    *,
    what: str,
    timeout: float = 60.0,
) -> None:
    """Bounded wait until ``check(await read())`` holds (not a timing assertion)."""
    deadline = time.monotonic() + timeout
    while True:
        value = await read()
        if check(value):
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}: {value}")
        await asyncio.sleep(0.2)
