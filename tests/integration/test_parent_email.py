"""Email to the parent (migrations/015_parent_email.sql, monitor/mailer.py) against a real SMTP
server in process (aiosmtpd) and a real Postgres, with the daemon in process."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator

import psycopg
import pytest
from loguru import logger

from monitor.config import ConfigError, Secret, Settings
from monitor.daemon import Monitor
from monitor.job import Job
from monitor.mailer import EmailTemplates, Mailer
from monitor.metrics import Metrics
from monitor.store.base import OrderStore
from monitor.store.postgres import PostgresStore
from processors.contract import BookResult, Processor
from processors.errors import RetryableError, TerminalError
from tests.support.factories import insert_book, insert_item, insert_order, item_row
from tests.support.processors import Failing
from tests.support.smtp_server import SmtpServer
from tests.support.waiting import eventually

PARENT = "parent@example.com"
FROM = "Book Shop <books@shop.example>"


class Finishing:
    """Completes every item with a signed https link, as the Supabase storage adapter writes."""

    async def __call__(self, job: Job) -> BookResult:
        base = f"generated/{job.item_id}"
        url = f"https://proj.supabase.co/storage/v1/object/sign/books/{base}/book.pdf?token=t&x=1"
        return BookResult(
            pdf_path=f"{base}/book.pdf",
            pdf_url=url,
            cover_path=f"{base}/cover.jpg",
            cover_url=url.replace("book.pdf", "c"),
        )


@pytest.fixture
def smtp() -> Iterator[SmtpServer]:
    server = SmtpServer()
    server.start()
    yield server
    server.stop()


def email_settings(database_url: str, port: int, **overrides: object) -> Settings:
    values: dict[str, object] = dict(
        database_url=Secret(database_url),
        poll_interval_seconds=0.2,
        lease_seconds=30,
        shutdown_grace_seconds=2,
        worker_id="mail-test",
        smtp_host="127.0.0.1",
        smtp_port=port,
        smtp_security="none",
        email_from=FROM,
        email_backoff_base_seconds=0.2,
    )
    values.update(overrides)
    return Settings(**values)


@pytest.fixture
async def monitors() -> AsyncIterator[list[Monitor]]:
    started: list[Monitor] = []
    yield started
    for monitor in started:
        await monitor.shutdown()


def start_monitor(
    monitors: list[Monitor],
    settings: Settings,
    processor: Processor,
    metrics: Metrics | None = None,
) -> Monitor:
    store = PostgresStore(str(settings.database_url))
    metrics = metrics or Metrics()
    mailer = Mailer(settings, store, metrics=metrics)
    monitor = Monitor(settings, store, processor, metrics=metrics, mailer=mailer.send_due)
    monitors.append(monitor)
    return monitor


def ordered_item(db: psycopg.Connection, *, email: str | None = PARENT, **kw: object) -> str:
    order = insert_order(db)
    db.execute("update orders set contact_email = %s where id = %s", [email, order])
    return insert_item(db, book_id=insert_book(db, title="The Lantern Walk"), order_id=order, **kw)


def owed(db: psycopg.Connection, item: str) -> dict:
    """The item's outbox row, or {} while it owes no email."""
    cursor = db.cursor(row_factory=psycopg.rows.dict_row)
    return (
        cursor.execute(
            "select * from notification_emails where order_item_id = %s", [item]
        ).fetchone()
        or {}
    )


def outbox(db: psycopg.Connection, item: str) -> dict:
    row = owed(db, item)
    assert row, "no email owed for the item"
    return row


def parts(message) -> tuple[str, str]:
    return (message.get_body(("plain",)).get_content(), message.get_body(("html",)).get_content())


async def test_a_completed_item_emails_the_parent_its_signed_link(
    db: psycopg.Connection, database_url: str, smtp: SmtpServer, monitors: list[Monitor]
) -> None:
    item = ordered_item(db)
    await start_monitor(monitors, email_settings(database_url, smtp.port), Finishing()).start()
    await eventually(lambda: smtp.inbox.messages, what="the email")
    row = item_row(db, item)
    assert row["generation_status"] == "completed"
    [message] = smtp.inbox.messages
    text, html = parts(message)
    assert message["Subject"] == 'Your book "The Lantern Walk" is ready'
    assert message["To"] == PARENT and smtp.inbox.envelopes[0][1] == [PARENT]
    assert message["From"] == FROM and message["Auto-Submitted"] == "auto-generated"
    assert row["pdf_url"] in text and "Mia's personalized copy" in text
    assert f'href="{row["pdf_url"].replace("&", "&amp;")}"' in html
    sent = outbox(db, item)
    assert (sent["status"], sent["attempts"]) == ("sent", 1)
    assert message["Message-ID"] == f"<{sent['notification_id']}@shop.example>"


async def test_a_failed_item_emails_what_happened_and_what_to_do(
    db: psycopg.Connection, database_url: str, smtp: SmtpServer, monitors: list[Monitor]
) -> None:
    ordered_item(db)
    failing = Failing(
        TerminalError(
            "no face", code="photo_rejected", parent_message="We could not find exactly one face."
        )
    )
    await start_monitor(monitors, email_settings(database_url, smtp.port), failing).start()
    await eventually(lambda: smtp.inbox.messages, what="the email")
    [message] = smtp.inbox.messages
    text, html = parts(message)
    assert message["Subject"] == 'We could not make your book "The Lantern Walk"'
    advice = EmailTemplates().what_to_do("photo_rejected")
    assert "different photo" in advice
    for part in (text, html):
        assert "We could not find exactly one face." in part
        assert advice.replace("'", "&#x27;") in part or advice in part
    assert "http" not in text


async def test_a_pending_retry_owes_no_email(
    db: psycopg.Connection, database_url: str, smtp: SmtpServer, monitors: list[Monitor]
) -> None:
    item = ordered_item(db)
    settings = email_settings(database_url, smtp.port)
    monitor = start_monitor(monitors, settings, Failing(RetryableError("x", code="ai_timeout")))
    await monitor.start()
    await eventually(lambda: item_row(db, item)["error_code"] == "ai_timeout")
    assert item_row(db, item)["generation_status"] == "pending"
    assert await Mailer(settings, monitor.store).send_due() == 0
    assert smtp.inbox.messages == []
    assert db.execute("select count(*) from notification_emails").fetchone() == (0,)


@pytest.mark.parametrize("failure", ["refused", "down"])
async def test_a_failing_server_delays_nothing_and_the_mail_follows_when_it_is_back(
    db: psycopg.Connection, database_url: str, monitors: list[Monitor], failure: str
) -> None:
    server = SmtpServer()
    if failure == "refused":
        server.inbox.refuse_data = "554 5.7.1 refused for the test"
        server.start()
    item = ordered_item(db)
    try:
        await start_monitor(
            monitors, email_settings(database_url, server.port), Finishing()
        ).start()
        # The item completes while the email fails, attempt after attempt.
        await eventually(lambda: owed(db, item).get("attempts", 0) >= 2, what="failed attempts")
        assert item_row(db, item)["generation_status"] == "completed"
        waiting = outbox(db, item)
        assert waiting["status"] == "pending"
        assert waiting["last_error"] == ("smtp_554" if failure == "refused" else "connect_failed")
        assert server.inbox.messages == []
        # The server is back (within the retry window): the email goes out.
        if failure == "refused":
            server.inbox.refuse_data = None
        else:
            server.start()
        await eventually(lambda: outbox(db, item)["status"] == "sent", what="sent")
        assert len(server.inbox.messages) == 1
    finally:
        server.stop()


async def test_replicas_never_send_an_email_twice(
    db: psycopg.Connection, database_url: str, smtp: SmtpServer
) -> None:
    items = [ordered_item(db) for _ in range(24)]
    for item in items:
        complete(db, item)
    stores = [PostgresStore(database_url) for _ in range(3)]
    mailers = [
        Mailer(email_settings(database_url, smtp.port, worker_id=f"replica-{n}"), s, batch=3)
        for n, s in enumerate(stores)
    ]
    for store in stores:
        await store.open()
    try:
        counts = await asyncio.gather(*(m.send_due() for m in mailers))
        counts += await asyncio.gather(*(m.send_due() for m in mailers))
    finally:
        for store in stores:
            await store.close()
    ids = [m["Message-ID"] for m in smtp.inbox.messages]
    assert len(ids) == len(set(ids)) == len(items) == sum(counts)
    assert db.execute(
        "select count(*) from notification_emails where status = 'sent'"
    ).fetchone() == (len(items),)


def complete(db: psycopg.Connection, item: str, url: str = "https://x.example/b.pdf") -> None:
    """Complete the item through the queue functions, as a worker does."""
    db.execute("select claim_order_items('w', 100, 60)")
    assert db.execute(
        "select complete_order_item(%s, 'w', 'p', %s, 'c', %s)", [item, url, url]
    ).fetchone() == (True,)


async def test_outbox_through_both_store_adapters(
    store: OrderStore, db: psycopg.Connection, database_url: str, smtp: SmtpServer
) -> None:
    item = ordered_item(db)
    complete(db, item)
    assert await Mailer(email_settings(database_url, smtp.port), store).send_due() == 1
    assert outbox(db, item)["status"] == "sent" and len(smtp.inbox.messages) == 1


async def test_gives_up_after_the_attempts_and_logs_no_address(
    db: psycopg.Connection, database_url: str, smtp: SmtpServer
) -> None:
    smtp.inbox.refuse_data = "554 5.7.1 refused for the test"
    item = ordered_item(db)
    complete(db, item)
    settings = email_settings(
        database_url, smtp.port, email_max_attempts=3, email_backoff_base_seconds=0.01
    )
    store, metrics = PostgresStore(database_url), Metrics()
    await store.open()
    lines: list[str] = []
    sink = logger.add(lambda m: lines.append(str(m) + repr(m.record["extra"])), level="DEBUG")
    try:
        mailer = Mailer(settings, store, metrics=metrics)
        await eventually_async(mailer.send_due, lambda: outbox(db, item)["status"] == "gave_up")
    finally:
        logger.remove(sink)
        await store.close()
    owed = outbox(db, item)
    assert (owed["attempts"], owed["last_error"]) == (3, "smtp_554")
    exposition = metrics.render(None)[0].decode()
    assert 'book_monitor_emails_total{kind="book_ready",outcome="gave_up"} 1.0' in exposition
    assert 'book_monitor_emails_total{kind="book_ready",outcome="retry"} 2.0' in exposition
    assert any("given up" in line and item in line for line in lines)
    assert not any(PARENT in line for line in lines)


async def eventually_async(step, condition, tries: int = 200) -> None:
    for _ in range(tries):
        await step()
        if condition():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("condition never held")


async def test_a_refused_recipient_is_given_up_at_once(
    db: psycopg.Connection, database_url: str, smtp: SmtpServer
) -> None:
    smtp.inbox.refuse_rcpt = "550 5.1.1 no such user"
    item = ordered_item(db)
    complete(db, item)
    store = PostgresStore(database_url)
    await store.open()
    try:
        await Mailer(email_settings(database_url, smtp.port), store).send_due()
    finally:
        await store.close()
    owed = outbox(db, item)
    assert (owed["status"], owed["attempts"], owed["last_error"]) == (
        "gave_up",
        1,
        "recipient_refused",
    )


async def test_the_address_comes_from_the_order_else_the_account(
    db: psycopg.Connection, database_url: str, smtp: SmtpServer
) -> None:
    # Supabase's auth.users, reduced to the two columns used (a plain Postgres has none).
    db.execute("create table auth.users (id uuid primary key, email text)")
    from_order = ordered_item(db, email="order@example.com")
    from_account = ordered_item(db, email=None)
    nowhere = ordered_item(db, email=None)
    (user,) = db.execute(
        "select o.user_id from orders o join order_items oi on oi.order_id = o.id where oi.id = %s",
        [from_account],
    ).fetchone()
    db.execute("insert into auth.users values (%s, 'account@example.com')", [user])
    for item in (from_order, from_account, nowhere):
        complete(db, item)
    store = PostgresStore(database_url)
    await store.open()
    try:
        assert await Mailer(email_settings(database_url, smtp.port), store).send_due() == 2
    finally:
        await store.close()
    assert sorted(m["To"] for m in smtp.inbox.messages) == [
        "account@example.com",
        "order@example.com",
    ]
    owed = outbox(db, nowhere)
    assert (owed["status"], owed["last_error"]) == ("skipped", "no_address")


async def test_old_and_historic_notifications_are_never_mailed(
    db: psycopg.Connection, database_url: str, smtp: SmtpServer
) -> None:
    old = ordered_item(db)
    complete(db, old)
    db.execute("update notification_emails set created_at = now() - interval '4 days'")
    store = PostgresStore(database_url)
    await store.open()
    try:
        assert await Mailer(email_settings(database_url, smtp.port), store).send_due() == 0
    finally:
        await store.close()
    assert (outbox(db, old)["status"], outbox(db, old)["last_error"]) == ("skipped", "expired")
    assert smtp.inbox.messages == []


async def test_once_sends_the_emails_before_it_returns(
    db: psycopg.Connection, database_url: str, smtp: SmtpServer
) -> None:
    item = ordered_item(db)
    settings = email_settings(database_url, smtp.port)
    store = PostgresStore(database_url)
    monitor = Monitor(settings, store, Finishing(), mailer=Mailer(settings, store).send_due)
    assert await monitor.run_once() == 1
    assert len(smtp.inbox.messages) == 1 and outbox(db, item)["status"] == "sent"


def test_templates_escape_what_parents_typed() -> None:
    letter = EmailTemplates().render(
        {
            "kind": "book_ready",
            "book_title": "Tom & Jerry",
            "child_name": "<b>Mia</b>\r\nBcc: x",
            "pdf_url": "https://x.example/a?b=1&c=2",
        }
    )
    assert "<b>Mia</b>" not in letter.html and "&lt;b&gt;Mia&lt;/b&gt; Bcc: x" in letter.html
    assert 'href="https://x.example/a?b=1&amp;c=2"' in letter.html
    assert "\n" not in letter.subject and "Tom & Jerry" in letter.subject
    assert "https://x.example/a?b=1&c=2" in letter.text


def test_email_settings_from_smtp_url_or_host_with_secrets_scrubbed() -> None:
    base = {"DATABASE_URL": "postgresql://u@h/d"}
    s = Settings.from_env(
        {**base, "SMTP_URL": "smtps://mailer:s%3Acret@mail.example", "EMAIL_FROM": FROM},
        env_file=None,
    )
    assert (s.smtp_host, s.smtp_port, s.smtp_user, s.smtp_security) == (
        "mail.example",
        465,
        "mailer",
        "tls",
    )
    assert s.smtp_password == "s:cret" and "s:cret" in s.secrets()
    assert "s:cret" not in repr(s) and "s:cret" not in str(s.describe())
    s = Settings.from_env(
        {**base, "SMTP_HOST": "relay", "SMTP_STARTTLS": "false", "EMAIL_FROM": FROM}, env_file=None
    )
    assert (s.smtp_port, s.smtp_security, s.email_enabled) == (587, "none", True)
    assert not Settings.from_env(base, env_file=None).email_enabled
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({**base, "SMTP_URL": "smtp://u:topsecret@h"}, env_file=None)
    assert "EMAIL_FROM is required" in str(caught.value) and "topsecret" not in str(caught.value)
    with pytest.raises(ConfigError, match="no SMTP server"):
        Settings.from_env({**base, "EMAIL_FROM": FROM}, env_file=None)


def test_a_hostile_contact_email_is_refused_by_the_database(db: psycopg.Connection) -> None:
    order = insert_order(db)
    with pytest.raises(psycopg.errors.CheckViolation):
        db.execute(
            "update orders set contact_email = %s where id = %s", ["a@b.c\r\nBcc: evil@x.y", order]
        )
    assert uuid.UUID(order)
