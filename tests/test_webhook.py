"""The ops webhook: signed, free of personal data, and never fatal."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import AsyncIterator

import psycopg
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from monitor.config import Secret, Settings
from monitor.daemon import Monitor
from monitor.store.postgres import PostgresStore
from monitor.webhook import SIGNATURE_HEADER, OpsWebhook
from processors.errors import TerminalError
from tests.factories import insert_book, insert_item, item_row
from tests.processors import Failing, Recording
from tests.waiting import eventually

SECRET = "webhook-secret-for-tests"


class Receiver:
    def __init__(self) -> None:
        self.received: list[tuple[bytes, str]] = []
        self.status = 200

    async def handle(self, request: web.Request) -> web.Response:
        self.received.append((await request.read(), request.headers.get(SIGNATURE_HEADER, "")))
        return web.Response(status=self.status)


@pytest.fixture
async def receiver() -> AsyncIterator[tuple[Receiver, str]]:
    app = web.Application()
    hook = Receiver()
    app.router.add_post("/hook", hook.handle)
    server = TestServer(app)
    await server.start_server()
    yield hook, str(server.make_url("/hook"))
    await server.close()


async def test_payload_is_signed_with_hmac_sha256(receiver: tuple[Receiver, str]) -> None:
    hook, url = receiver
    webhook = OpsWebhook(url, SECRET)
    assert await webhook.send("order_item.completed", item_id="abc", seconds=12.5)
    await webhook.aclose()
    [(body, signature)] = hook.received
    expected = hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    assert signature == f"sha256={expected}"
    payload = json.loads(body)
    assert payload["event"] == "order_item.completed" and payload["item_id"] == "abc"
    # A body changed in transit no longer matches its signature.
    forged = body.replace(b"abc", b"abd")
    assert hmac.new(SECRET.encode(), forged, hashlib.sha256).hexdigest() != expected


async def test_a_failing_receiver_is_reported_not_raised(receiver: tuple[Receiver, str]) -> None:
    hook, url = receiver
    hook.status = 500
    webhook = OpsWebhook(url, SECRET)
    assert await webhook.send("order_item.failed", item_id="abc") is False
    await webhook.aclose()


async def test_an_unreachable_receiver_is_reported_not_raised() -> None:
    webhook = OpsWebhook("http://127.0.0.1:9/hook", SECRET, timeout=1)
    assert await webhook.send("order_item.failed", item_id="abc") is False
    await webhook.aclose()


async def test_the_daemon_announces_outcomes_and_survives_a_dead_receiver(
    receiver: tuple[Receiver, str], database_url: str, db: psycopg.Connection
) -> None:
    hook, url = receiver
    book = insert_book(db)
    done = insert_item(db, book_id=book, child_name="Zoe")
    settings = Settings(database_url=Secret(database_url), poll_interval_seconds=0.2)
    monitor = Monitor(settings, PostgresStore(database_url), Recording(), webhook=OpsWebhook(url, SECRET))
    await monitor.start()
    try:
        await eventually(lambda: hook.received, what="the webhook call")
    finally:
        await monitor.shutdown()
    [(body, _)] = hook.received
    payload = json.loads(body)
    assert (payload["event"], payload["item_id"]) == ("order_item.completed", done)
    assert b"Zoe" not in body  # ids and codes only, never personal data

    failing = insert_item(db, book_id=book)
    dead = OpsWebhook("http://127.0.0.1:9/hook", SECRET, timeout=1)
    processor = Failing(TerminalError("x", code="photo_rejected"))
    monitor = Monitor(settings, PostgresStore(database_url), processor, webhook=dead)
    await monitor.start()
    try:
        await eventually(lambda: item_row(db, failing)["generation_status"] == "failed")
    finally:
        await monitor.shutdown()
    assert item_row(db, failing)["error_code"] == "photo_rejected"
