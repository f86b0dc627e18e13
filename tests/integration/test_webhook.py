"""The ops webhook: signed per Standard Webhooks, free of personal data, retried, never fatal.

Receivers verify with the spec's reference library (``standardwebhooks``), not with our code.
"""

from __future__ import annotations

import base64
import json
import os
import runpy
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from unittest import mock

import psycopg
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from monitor.config import ConfigError, Secret, Settings
from monitor.daemon import Monitor
from monitor.store.postgres import PostgresStore
from monitor.webhook import OpsWebhook, signed_headers
from processors.errors import TerminalError
from tests.support.factories import insert_book, insert_item, item_row
from tests.support.processors import Failing, Recording
from tests.support.waiting import eventually

SECRET = "whsec_" + base64.b64encode(b"webhook-secret-for-the-tests-32b").decode()
RECIPE = Path(__file__).resolve().parents[2] / "docs" / "webhook_receiver.py"


class Receiver:
    """The README's receiver (docs/webhook_receiver.py) behind a real HTTP endpoint, which can
    be made to answer 500 before the recipe runs (a receiver that is down)."""

    def __init__(self) -> None:
        with mock.patch.dict(os.environ, {"NOTIFY_WEBHOOK_SECRET": SECRET}):
            self.recipe = runpy.run_path(str(RECIPE))
        self.requests: list[tuple[bytes, dict[str, str]]] = []
        self.failures: list[int] = []  # answered in turn before the recipe sees the request
        self.events: dict[str, dict] = {}  # what the receiver acted on, by webhook-id
        self.rows_seen: list[str] = []
        self.on_request = lambda: None

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        headers = dict(request.headers)
        self.requests.append((body, headers))
        self.on_request()
        if self.failures:
            return web.Response(status=self.failures.pop(0))
        before = set(self.recipe["seen"])
        status = self.recipe["receive"](body, headers)
        for msg_id in set(self.recipe["seen"]) - before:
            self.events[msg_id] = json.loads(body)
        return web.Response(status=status)


@pytest.fixture
async def receiver() -> AsyncIterator[tuple[Receiver, str]]:
    app = web.Application()
    hook = Receiver()
    app.router.add_post("/hook", hook.handle)
    server = TestServer(app)
    await server.start_server()
    yield hook, str(server.make_url("/hook"))
    await server.close()


def test_the_readme_shows_the_receiver_recipe() -> None:
    readme = (RECIPE.parent.parent / "README.md").read_text()
    for line in RECIPE.read_text().splitlines():
        if line.strip().startswith(
            ("verifier =", "event = verifier.verify", "from standardwebhooks")
        ):
            assert line.strip() in readme, line


async def test_the_receiver_refuses_a_forged_or_replayed_request(
    receiver: tuple[Receiver, str],
) -> None:
    hook, url = receiver
    webhook = OpsWebhook(url, SECRET)
    assert await webhook.send("order_item.completed", item_id="abc")
    await webhook.aclose()
    [(body, headers)] = hook.requests
    receive = hook.recipe["receive"]
    assert receive(body, headers) == 200  # the same request again: answered, not acted on
    assert len(hook.recipe["seen"]) == 1
    old = signed_headers(
        Webhook(SECRET), "msg_replayed", body, datetime.now(UTC) - timedelta(minutes=6)
    )
    assert receive(body, old) == 400
    assert receive(body.replace(b"abc", b"abd"), headers) == 400


async def test_the_reference_verifier_accepts_the_event(receiver: tuple[Receiver, str]) -> None:
    hook, url = receiver
    webhook = OpsWebhook(url, SECRET)
    assert await webhook.send("order_item.completed", item_id="abc", seconds=12.5)
    await webhook.aclose()
    [(body, headers)] = hook.requests
    assert headers["webhook-id"].startswith("msg_")
    assert headers["webhook-signature"].startswith("v1,")
    payload = Webhook(SECRET).verify(body, headers)
    assert payload["event"] == "order_item.completed" and payload["item_id"] == "abc"
    # A body changed in transit no longer verifies, nor does another id or another secret.
    with pytest.raises(WebhookVerificationError):
        Webhook(SECRET).verify(body.replace(b"abc", b"abd"), headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(SECRET).verify(body, {**headers, "webhook-id": "msg_other"})
    other = "whsec_" + base64.b64encode(b"another-secret-of-thirty-two-byt").decode()
    with pytest.raises(WebhookVerificationError):
        Webhook(other).verify(body, headers)


async def test_a_replayed_request_fails_verification(receiver: tuple[Receiver, str]) -> None:
    """A captured request, sent again later: its old timestamp fails the reference verifier, and
    re-dating it breaks the signature."""
    hook, url = receiver
    webhook = OpsWebhook(url, SECRET)
    assert await webhook.send("order_item.completed", item_id="abc")
    await webhook.aclose()
    [(body, headers)] = hook.requests
    # What the capture would have looked like had it been sent six minutes ago.
    then = datetime.now(UTC) - timedelta(minutes=6)
    old = signed_headers(Webhook(SECRET), headers["webhook-id"], body, then)
    with pytest.raises(WebhookVerificationError, match="too old"):
        Webhook(SECRET).verify(body, old)
    redated = {**old, "webhook-timestamp": headers["webhook-timestamp"]}
    with pytest.raises(WebhookVerificationError, match="No matching signature"):
        Webhook(SECRET).verify(body, redated)


def test_the_signature_matches_the_specs_construction() -> None:
    """``v1,base64(HMAC-SHA256(key, "{id}.{timestamp}.{body}"))`` with the base64-decoded key:
    the test vector of the Python reference library's own test-suite."""
    signer = Webhook("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
    at = datetime.fromtimestamp(1614265330, tz=UTC)
    body = b'{"test": 2432232314}'
    assert (
        signed_headers(signer, "msg_p5jXN8AQM9LWM0D4loKWxJek", body, at)["webhook-signature"]
        == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
    )


async def test_a_receiver_answering_500_twice_gets_the_event_once(
    receiver: tuple[Receiver, str], database_url: str, db: psycopg.Connection
) -> None:
    """Two 500s, then 200: three attempts under one webhook-id, acted on once, each attempt
    freshly signed; the order completed before the receiver ever accepted."""
    hook, url = receiver
    hook.failures = [500, 500]
    item = insert_item(db, book_id=insert_book(db))
    hook.on_request = lambda: hook.rows_seen.append(item_row(db, item)["generation_status"])
    settings = Settings(database_url=Secret(database_url), poll_interval_seconds=0.2)
    webhook = OpsWebhook(url, SECRET, backoff_seconds=0.05)
    monitor = Monitor(settings, PostgresStore(database_url), Recording(), webhook=webhook)
    await monitor.start()
    try:
        await eventually(lambda: hook.events, what="the accepted webhook")
    finally:
        await monitor.shutdown()
        await webhook.aclose()
    assert len(hook.requests) == 3
    assert len({headers["webhook-id"] for _, headers in hook.requests}) == 1
    [(msg_id, payload)] = hook.events.items()
    assert (payload["event"], payload["item_id"]) == ("order_item.completed", item)
    assert hook.rows_seen == ["completed"] * 3  # the order never waited for the receiver


async def test_retries_are_bounded_and_gone_stops_them(receiver: tuple[Receiver, str]) -> None:
    hook, url = receiver
    hook.failures = [503] * 10
    webhook = OpsWebhook(url, SECRET, attempts=3, backoff_seconds=0.01)
    assert await webhook.send("order_item.failed", item_id="abc") is False
    assert len(hook.requests) == 3
    hook.failures = [410]
    assert await webhook.send("order_item.failed", item_id="abc") is False
    assert len(hook.requests) == 4  # 410 Gone: the receiver wants no more, so no retry
    await webhook.aclose()


async def test_an_unreachable_receiver_is_reported_not_raised() -> None:
    webhook = OpsWebhook(
        "http://127.0.0.1:9/hook", SECRET, timeout=1, attempts=2, backoff_seconds=0.01
    )
    assert await webhook.send("order_item.failed", item_id="abc") is False
    await webhook.aclose()


@pytest.mark.parametrize(
    "secret",
    [
        "plain-shared-secret",
        "whsec_not base64!",
        "whsec_" + base64.b64encode(b"too short").decode(),
    ],
)
def test_a_secret_not_in_the_standard_format_is_refused_at_start(secret: str) -> None:
    with pytest.raises(ConfigError, match="NOTIFY_WEBHOOK_SECRET"):
        Settings.from_env(
            {"NOTIFY_WEBHOOK_URL": "https://hooks.example/x", "NOTIFY_WEBHOOK_SECRET": secret},
            env_file=None,
        )


async def test_the_daemon_survives_a_dead_receiver(
    database_url: str, db: psycopg.Connection
) -> None:
    book = insert_book(db)
    failing = insert_item(db, book_id=book, child_name="Zoe")
    settings = Settings(database_url=Secret(database_url), poll_interval_seconds=0.2)
    dead = OpsWebhook("http://127.0.0.1:9/hook", SECRET, timeout=1, backoff_seconds=0.01)
    processor = Failing(TerminalError("x", code="photo_rejected"))
    monitor = Monitor(settings, PostgresStore(database_url), processor, webhook=dead)
    await monitor.start()
    try:
        await eventually(lambda: item_row(db, failing)["generation_status"] == "failed")
    finally:
        await monitor.shutdown()
        await dead.aclose()
    assert item_row(db, failing)["error_code"] == "photo_rejected"


async def test_the_payload_has_ids_and_codes_only(
    receiver: tuple[Receiver, str], database_url: str, db: psycopg.Connection
) -> None:
    hook, url = receiver
    done = insert_item(db, book_id=insert_book(db), child_name="Zoe")
    settings = Settings(database_url=Secret(database_url), poll_interval_seconds=0.2)
    webhook = OpsWebhook(url, SECRET)
    monitor = Monitor(settings, PostgresStore(database_url), Recording(), webhook=webhook)
    await monitor.start()
    try:
        await eventually(lambda: hook.events, what="the webhook call")
    finally:
        await monitor.shutdown()
        await webhook.aclose()
    [(body, _)] = hook.requests
    assert json.loads(body)["item_id"] == done
    assert b"Zoe" not in body and b"uploads/" not in body
