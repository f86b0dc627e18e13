"""Email to the parent: "your book is ready" (with the signed link) and "we could not make your
book" (with what to do), when SMTP is configured.

The outbox is ``notification_emails`` (migrations/015_parent_email.sql): one row is written by a
trigger in the same transaction as each final ``book_ready`` / ``book_failed`` notification, so an
email is owed exactly when the row is final (a pending retry writes no notification and owes no
mail). This module only claims what is due, renders ``templates/email/`` and hands each message
to the SMTP server with aiosmtplib, one connection per batch.

It never touches an order: it runs as its own job (every poll interval in ``run``, at the end of
``once``), so a refusing or unreachable server delays and fails nothing. A failed attempt is due
again after an exponential backoff; after ``EMAIL_MAX_ATTEMPTS`` attempts, or at once when the
server refuses the recipient with a 5xx, the email is given up (logged, counted). Replicas claim
with ``FOR UPDATE SKIP LOCKED`` under a lease, so they never send the same email twice while it
holds; a crash between the server's acceptance and the "sent" mark repeats it once, under the same
``Message-ID``. Logs carry notification and item ids and machine codes only, never an address.
"""

from __future__ import annotations

import html
import json
import re
from dataclasses import dataclass
from email.errors import HeaderParseError
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import formatdate, parseaddr
from pathlib import Path
from string import Template
from typing import Any

import aiosmtplib
from loguru import logger
from tenacity import stop_after_attempt

from monitor.config import Settings
from monitor.metrics import Metrics
from monitor.store.base import OrderStore, Row, through_outages
from processors.resources import data_dir

TEMPLATES_DIR = data_dir(__file__, "templates") / "email"
KINDS = ("book_ready", "book_failed")
#: Emails per claim, and per SMTP connection.
BATCH = 10
#: One SMTP command (connect, each reply); aiosmtplib applies it per operation.
SMTP_TIMEOUT_SECONDS = 30.0
#: The longest wait between two attempts of one email.
BACKOFF_MAX_SECONDS = 3600.0
#: Safety stop for one run: at most this many batches, the rest waits for the next run.
MAX_BATCHES = 20
_LINK = re.compile(r"^https?://[^\s<>\"']+$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class TemplateError(ValueError):
    """A template of templates/email/ is missing or malformed (a broken checkout or install)."""


@dataclass(frozen=True)
class Letter:
    subject: str
    text: str
    html: str


def _clean(value: Any, limit: int = 120) -> str:
    """One line of at most ``limit`` characters: values typed by parents or stored on rows must
    not break a header or the layout."""
    text = " ".join(_CONTROL.sub(" ", str(value or "")).split())
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


class EmailTemplates:
    """``<kind>.txt`` (first line ``Subject: ...``, then the body) and ``<kind>.html`` per kind,
    as ``string.Template`` (``$name``; a value is never re-expanded), and ``what_to_do.json``."""

    def __init__(self, directory: Path = TEMPLATES_DIR) -> None:
        self._parts: dict[str, tuple[Template, Template, Template]] = {}
        try:
            for kind in KINDS:
                first, _, body = (directory / f"{kind}.txt").read_text("utf-8").partition("\n")
                if not first.startswith("Subject:"):
                    raise TemplateError(f"{kind}.txt must start with a 'Subject:' line")
                self._parts[kind] = (
                    Template(first.removeprefix("Subject:").strip()),
                    Template(body.lstrip("\n")),
                    Template((directory / f"{kind}.html").read_text("utf-8")),
                )
            advice = json.loads((directory / "what_to_do.json").read_text("utf-8"))
            self._advice: dict[str, str] = advice["advice"]
            self._codes: dict[str, str] = advice["codes"]
            self._default: str = advice["default"]
        except (OSError, ValueError, KeyError) as exc:
            raise TemplateError(f"email templates in {directory}: {exc}") from exc
        unknown = {self._default, *self._codes.values()} - set(self._advice)
        if unknown:
            raise TemplateError(f"what_to_do.json names advice it does not define: {unknown}")
        # A misspelt placeholder fails here, at start, rather than in a parent's email.
        for kind in KINDS:
            self.render({"kind": kind, "pdf_url": "https://example.invalid/book.pdf"})

    def what_to_do(self, error_code: str | None) -> str:
        return self._advice[self._codes.get(error_code or "", self._default)]

    def render(self, row: Row) -> Letter:
        """The letter for a claimed outbox row (see ``claim_notification_emails``)."""
        values = {
            "book_title": _clean(row.get("book_title")) or "your book",
            "child_name": _clean(row.get("child_name"), 40) or "your child",
            "pdf_url": str(row.get("pdf_url") or ""),
            "error_message": _clean(row.get("error_message"), 500),
            "what_to_do": self.what_to_do(row.get("error_code")),
        }
        escaped = {key: html.escape(value, quote=True) for key, value in values.items()}
        subject, text, page = self._parts[row["kind"]]
        try:
            return Letter(
                subject=_clean(subject.substitute(values), 200),
                text=text.substitute(values),
                html=page.substitute(escaped),
            )
        except (KeyError, ValueError) as exc:
            raise TemplateError(f"{row['kind']} template: unknown placeholder {exc}") from exc


class Mailer:
    """Sends what the outbox owes. :meth:`send_due` is the job ``run`` and ``once`` schedule."""

    def __init__(
        self,
        settings: Settings,
        store: OrderStore,
        *,
        metrics: Metrics | None = None,
        templates: EmailTemplates | None = None,
        batch: int = BATCH,
        timeout: float = SMTP_TIMEOUT_SECONDS,
    ) -> None:
        if not settings.email_enabled:
            raise ValueError("email is not configured (SMTP_URL or SMTP_HOST, and EMAIL_FROM)")
        self.settings = settings
        self.store = store
        self.metrics = metrics or Metrics()
        self.templates = templates or EmailTemplates()
        self.batch = batch
        self.timeout = timeout
        self.worker = settings.worker_id
        #: Long enough for a whole batch at the worst timeout, so no replica takes an email over
        #: while it is being sent.
        self.lease_seconds = int(batch * timeout * 2 + 60)
        assert settings.email_from is not None  # email_enabled
        self._sender_domain = parseaddr(settings.email_from)[1].rpartition("@")[2] or "localhost"

    async def send_due(self) -> int:
        """Claim and send due emails, batch after batch; returns how many the server accepted.
        Database outages propagate (the caller logs them; the next run goes on)."""
        sent = 0
        for _ in range(MAX_BATCHES):
            rows = await self.store.claim_emails(
                self.worker,
                self.batch,
                lease_seconds=self.lease_seconds,
                max_attempts=self.settings.email_max_attempts,
                max_age_seconds=int(self.settings.email_max_age_hours * 3600),
            )
            claimed = [r for r in rows if r.get("skipped") in (None, "no_address")]
            for row in rows:
                if row.get("skipped"):
                    self._closed(row, row["skipped"])
            batch_sent, server_down = await self._send_batch(
                [r for r in rows if not r.get("skipped")]
            )
            sent += batch_sent
            if server_down or len(claimed) < self.batch:
                break
        return sent

    # ------------------------------------------------------------------ one batch

    async def _send_batch(self, rows: list[Row]) -> tuple[int, bool]:
        """Send ``rows`` over one connection; (accepted, whether the server was unreachable)."""
        letters: list[tuple[Row, EmailMessage]] = []
        for row in rows:
            message = self._message(row)
            if isinstance(message, str):
                await self._failed(row, message, retry=False)
            else:
                letters.append((row, message))
        if not letters:
            return 0, False
        smtp = aiosmtplib.SMTP(
            hostname=self.settings.smtp_host,
            port=self.settings.smtp_port,
            timeout=self.timeout,
            use_tls=self.settings.smtp_security == "tls",
            start_tls=self.settings.smtp_security == "starttls",
        )
        try:
            await smtp.connect()
            if self.settings.smtp_user:
                await smtp.login(self.settings.smtp_user, str(self.settings.smtp_password or ""))
        except (aiosmtplib.SMTPException, OSError) as exc:
            for row, _ in letters:
                await self._failed(row, _error_code(exc, "connect_failed"), retry=True)
            smtp.close()
            return 0, True
        sent = 0
        try:
            for index, (row, message) in enumerate(letters):
                try:
                    await smtp.send_message(message)
                except aiosmtplib.SMTPRecipientsRefused as exc:
                    # 5xx for the recipient: the address is wrong, retrying cannot help.
                    permanent = all(r.code >= 500 for r in exc.recipients)
                    reason = "recipient_refused" if permanent else f"smtp_{exc.recipients[0].code}"
                    await self._failed(row, reason, retry=not permanent)
                    continue
                except aiosmtplib.SMTPResponseException as exc:
                    # Refused at MAIL or DATA (aiosmtplib sends RSET; the connection goes on).
                    await self._failed(row, f"smtp_{exc.code}", retry=True)
                    continue
                except (aiosmtplib.SMTPException, OSError) as exc:
                    # The connection is gone: this email and the rest wait for their next attempt.
                    for later, _ in letters[index:]:
                        await self._failed(later, _error_code(exc, "disconnected"), retry=True)
                    break
                sent += 1
                await self._sent(row)
        finally:
            if smtp.is_connected:
                try:
                    await smtp.quit()
                except (aiosmtplib.SMTPException, OSError):
                    smtp.close()
        return sent, False

    def _message(self, row: Row) -> EmailMessage | str:
        """The message for ``row``, or the code of why it can never be sent."""
        if row["kind"] == "book_ready" and not _LINK.match(str(row.get("pdf_url") or "")):
            return "no_link"  # local storage without a public base URL: nothing to open
        letter = self.templates.render(row)
        message = EmailMessage()
        try:
            message["To"] = Address(addr_spec=str(row["to_address"]).strip())
        except (ValueError, HeaderParseError):
            return "invalid_address"
        message["From"] = self.settings.email_from
        message["Subject"] = letter.subject
        message["Date"] = formatdate(usegmt=True)
        # The same id on every attempt, so a repeat after a crash can be recognised.
        message["Message-ID"] = f"<{row['notification_id']}@{self._sender_domain}>"
        message["Auto-Submitted"] = "auto-generated"  # RFC 3834: no auto-replies, please
        message.set_content(letter.text)
        message.add_alternative(letter.html, subtype="html")
        return message

    # ------------------------------------------------------------------ outcomes

    def _fields(self, row: Row) -> dict[str, Any]:
        return {
            "notification_id": str(row["notification_id"]),
            "item_id": str(row["order_item_id"]) if row.get("order_item_id") else None,
            "kind": row["kind"],
        }

    async def _sent(self, row: Row) -> None:
        # Marked through short blips: a mark lost here would send the email again later.
        await through_outages(
            lambda: self.store.mark_email_sent(str(row["notification_id"]), self.worker),
            stop=stop_after_attempt(5),
            first_wait=0.5,
        )
        self.metrics.email(row["kind"], "sent")
        logger.info("email sent to the parent", attempt=row["attempt"], **self._fields(row))

    async def _failed(self, row: Row, code: str, *, retry: bool) -> None:
        outcome = await self.store.mark_email_failed(
            str(row["notification_id"]),
            self.worker,
            error=code,
            retry=retry,
            max_attempts=self.settings.email_max_attempts,
            backoff_base_seconds=self.settings.email_backoff_base_seconds,
            backoff_max_seconds=BACKOFF_MAX_SECONDS,
        )
        if outcome == "lost":
            return
        self.metrics.email(row["kind"], outcome)
        if outcome == "gave_up":
            logger.error(
                "email to the parent given up",
                error=code,
                attempt=row["attempt"],
                **self._fields(row),
            )
        else:
            logger.warning(
                "email to the parent not sent; will retry",
                error=code,
                attempt=row["attempt"],
                **self._fields(row),
            )

    def _closed(self, row: Row, reason: str) -> None:
        """Closed by the claim without an attempt: no address, too old, or crashed senders."""
        outcome = "gave_up" if reason == "crashed" else "skipped"
        self.metrics.email(row["kind"], outcome)
        logger.log(
            "ERROR" if outcome == "gave_up" else "INFO",
            "email to the parent not sent",
            reason=reason,
            **self._fields(row),
        )


def _error_code(exc: Exception, default: str) -> str:
    """A machine code for an SMTP failure: never the server's text (it can echo an address)."""
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        return f"smtp_{exc.code}"
    if isinstance(exc, (aiosmtplib.SMTPTimeoutError, TimeoutError)):
        return "timeout"
    return default
