"""Secrets never leak: planted values for every secret the daemon knows are searched for in
everything it writes: its logs, its HTTP answers, order_items.error_message, notifications."""

from __future__ import annotations

import io
import json
import logging
import re
import sys
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
from aiohttp import web
from loguru import logger

from monitor.catalog import import_book, read_book_dir
from monitor.config import Secret, Settings
from monitor.demo import write_sample_book
from monitor.demo_book import TITLE, draw_child_photo
from monitor.logs import setup_logging
from monitor.storage.local import LocalStorage
from monitor.store.postgres import PostgresStore
from testkit.daemon_process import DaemonProcess
from testkit.fakes.gemini_server import FakeGemini, RecordedRequest, error_response
from tests.support.factories import item_row
from tests.support.waiting import eventually

DB_PASSWORD = "pg-planted-Q7w9Zx2v"
SERVICE_KEY = "sk-planted-service-role-4f8e1a9b"
GEMINI_KEY = "AIza-planted-gemini-7c3d2e1f"
ADMIN_TOKEN = "admin-planted-token-9b8a7c6d"
WEBHOOK_SECRET = "whsec_cGxhbnRlZC13ZWJob29rLXNlY3JldC01ZTRkM2MyYg=="
PLANTED = (DB_PASSWORD, SERVICE_KEY, GEMINI_KEY, ADMIN_TOKEN, WEBHOOK_SECRET)


def with_password(url: str, password: str) -> str:
    """The same database with a password in the URL (the test cluster trusts local sockets, so
    the password is carried everywhere the URL goes but never checked)."""
    parts = urlsplit(url)
    user = parts.username or "postgres"
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return urlunsplit(parts._replace(netloc=f"{user}:{password}@{host}{port}"))


def leaks(text: str) -> list[str]:
    return [secret for secret in PLANTED if secret in text]


# ---------------------------------------------------------------------- in-process: the log sink


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """setup_logging reconfigures the process; put loguru and the stdlib root back afterwards."""
    handlers, level = logging.root.handlers[:], logging.root.level
    yield
    logger.remove()
    logger.add(lambda message: sys.stderr.write(message))
    logging.root.handlers[:] = handlers
    logging.root.setLevel(level)


def test_log_sink_scrubs_stdlib_loggers_exceptions_and_extras(restore_logging: None) -> None:
    settings = Settings(
        database_url=Secret(f"postgresql://app:{DB_PASSWORD}@db.example:5432/app"),
    )
    secrets = [*settings.secrets(), SERVICE_KEY, GEMINI_KEY, ADMIN_TOKEN, WEBHOOK_SECRET]
    for fmt in ("json", "pretty"):
        out = io.StringIO()
        setup_logging(level="DEBUG", fmt=fmt, secrets=secrets, stream=out)
        try:
            logging.getLogger("psycopg.pool").warning(
                "error connecting in 'pool-1': %s", f"postgresql://app:{DB_PASSWORD}@db.example/app"
            )
            logging.getLogger("some.other.library").error("sent key=%s", GEMINI_KEY)
            try:
                try:
                    raise ConnectionError(f"401 for apikey {SERVICE_KEY}")
                except ConnectionError as inner:
                    raise RuntimeError(f"token {ADMIN_TOKEN} refused") from inner
            except RuntimeError:
                logger.exception("request failed")
                logging.getLogger("aiohttp.server").exception("handler crashed")
            logger.bind(secret=WEBHOOK_SECRET).warning("signing with {}", WEBHOOK_SECRET)
        finally:
            logger.remove()
        text = out.getvalue()
        assert leaks(text) == [], fmt
        # The lines themselves did get through, scrubbed.
        assert "error connecting" in text and "request failed" in text and "handler crashed" in text
        assert "***" in text


def test_settings_repr_and_description_hide_secrets() -> None:
    settings = Settings(
        database_url=Secret(f"postgresql://app:{DB_PASSWORD}@db.example/app"),
        supabase_service_role_key=Secret(SERVICE_KEY),
        google_api_key=Secret(GEMINI_KEY),
        admin_token=Secret(ADMIN_TOKEN),
    )
    assert leaks(repr(settings)) == []
    assert leaks(json.dumps(settings.describe(), default=str)) == []


# ---------------------------------------------------------------------- the daemon as a process


@pytest.fixture
async def fake() -> AsyncIterator[FakeGemini]:
    async with FakeGemini(api_key=GEMINI_KEY) as server:
        yield server


def http(method: str, url: str, token: str | None = None) -> tuple[int, str]:
    request = urllib.request.Request(url, method=method, data=b"" if method == "POST" else None)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


async def echo_key(fake: FakeGemini, request: RecordedRequest) -> web.Response:
    """A provider that quotes the caller's key back in its error (some do)."""
    return error_response(
        400, "INVALID_ARGUMENT", f"API key {fake.api_key} is not enabled for this model"
    )


async def test_no_planted_secret_reaches_logs_http_rows_or_notifications(
    database_url: str, db: psycopg.Connection, fake: FakeGemini, tmp_path: Path
) -> None:
    storage = LocalStorage(tmp_path / "storage")
    store = PostgresStore(database_url)
    await store.open()
    try:
        book = await import_book(
            store, storage, read_book_dir(write_sample_book(tmp_path / "b"), TITLE)
        )

        async def order(name: str, photo: bytes | None) -> str:
            path = f"uploads/00000000-0000-0000-0000-0000000000aa/{name.lower()}.jpg"
            if photo is not None:
                await storage.upload(path, photo, "image/jpeg")
            return await store.create_paid_order_item(
                book,
                child_name=name,
                child_age=5,
                child_gender="girl",
                child_photo_path=path,
                user_id="00000000-0000-0000-0000-0000000000aa",
            )

        env = {
            "DATABASE_URL": with_password(database_url, DB_PASSWORD),
            "SUPABASE_URL": "http://127.0.0.1:9",
            "SUPABASE_SERVICE_ROLE_KEY": SERVICE_KEY,
            "ADMIN_TOKEN": ADMIN_TOKEN,
            "NOTIFY_WEBHOOK_URL": "http://127.0.0.1:9/hook",
            "NOTIFY_WEBHOOK_SECRET": WEBHOOK_SECRET,
            "STORAGE_BACKEND": "local",
            "LOCAL_STORAGE_DIR": str(tmp_path / "storage"),
            "CACHE_DIR": str(tmp_path / "cache"),
            "AI_PROVIDER": "gemini",
            "GOOGLE_API_KEY": GEMINI_KEY,
            "GEMINI_BASE_URL": fake.base_url,
            "GEMINI_ANALYSIS_MODEL": fake.ANALYSIS_MODEL,
            "GEMINI_IMAGE_MODEL": fake.IMAGE_MODEL,
            "POLL_INTERVAL_SECONDS": "0.5",
            "MAX_ATTEMPTS": "1",
            "LOG_LEVEL": "DEBUG",
            "PORT": "0",
        }
        daemon = DaemonProcess(env, log_file=tmp_path / "daemon.log")
        try:
            good = await order("Mia", draw_child_photo())
            await eventually(
                lambda: item_row(db, good)["generation_status"] == "completed",
                timeout=90,
                what="the good order",
            )
            unreadable = await order("Leo", b"this is not a picture at all")
            missing = await order("Ava", None)
            await eventually(
                lambda: all(
                    item_row(db, i)["generation_status"] == "failed" for i in (unreadable, missing)
                ),
                timeout=60,
                what="bad inputs",
            )
            fake.enqueue(*([echo_key] * 30))
            rejected = await order("Noa", draw_child_photo())
            await eventually(
                lambda: item_row(db, rejected)["generation_status"] == "failed",
                timeout=60,
                what="the provider's error",
            )

            match = re.search(
                r'"status server listening".*?"addresses": \["([^"]+)"\]', daemon.logs()
            )
            assert match, daemon.logs()[-2000:]
            base = f"http://{match.group(1)}"
            bodies = [
                http("GET", f"{base}{path}")[1]
                for path in ("/health", "/monitor/status", "/metrics")
            ]
            bodies.append(http("POST", f"{base}/monitor/stop", token="wrong-token")[1])
            status, body = http("POST", f"{base}/monitor/stop", token=ADMIN_TOKEN)
            assert status == 200
            bodies.append(body)
            bodies.append(http("POST", f"{base}/orders/{rejected}/retry", token=ADMIN_TOKEN)[1])
            assert await daemon.terminate_beside_fakes() == 0
        finally:
            daemon.stop()
    finally:
        await store.close()

    logs = daemon.logs()
    # The scenario did happen: every path that could carry a secret was taken.
    assert '"item completed"' in logs and '"item failed"' in logs
    assert any(r.status == 400 for r in fake.requests)
    assert leaks(logs) == []
    assert "***" in logs  # the provider's quoted key did reach a log line, scrubbed
    for body in bodies:
        assert leaks(body) == [], body
    rows = db.execute(
        "select coalesce(error_code, '') || ' ' || coalesce(error_message, '')"
        " || ' ' || coalesce(current_step, '') from order_items"
    ).fetchall()
    assert len(rows) == 4
    for (text,) in rows:
        assert leaks(text) == [], text
    notes = db.execute("select title || ' ' || body from notifications").fetchall()
    assert len(notes) >= 4
    for (text,) in notes:
        assert leaks(text) == [], text
