"""A real SMTP server in process (aiosmtpd), for the parent-email tests.

aiosmtpd speaks the SMTP protocol itself; only the handler is ours. Its hooks follow aiosmtpd's
handler documentation (github.com/aio-libs/aiosmtpd, aiosmtpd/docs/handlers.rst): ``handle_RCPT``
and ``handle_DATA`` are coroutines that return the SMTP status line the server sends, "250 OK" to
accept or, say, "554 ..." to refuse; a RCPT hook that accepts must append the address to
``envelope.rcpt_tos`` itself.
"""

from __future__ import annotations

import socket
from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import Any

from aiosmtpd.controller import Controller


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Inbox:
    """Accepts and keeps every message, or refuses as told (``refuse_data``, ``refuse_rcpt``)."""

    def __init__(self) -> None:
        self.messages: list[EmailMessage] = []
        self.envelopes: list[tuple[str, list[str]]] = []
        self.refuse_data: str | None = None
        self.refuse_rcpt: str | None = None

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: list[str]
    ) -> str:
        if self.refuse_rcpt:
            return self.refuse_rcpt
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self.refuse_data:
            return self.refuse_data
        message = message_from_bytes(envelope.content, policy=policy.default)
        assert isinstance(message, EmailMessage)
        self.messages.append(message)
        self.envelopes.append((envelope.mail_from, list(envelope.rcpt_tos)))
        return "250 OK"


class SmtpServer:
    """An aiosmtpd server on ``port`` (its own thread and loop) that can go down and come back."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.inbox = Inbox()
        self._controller: Controller | None = None

    def start(self) -> None:
        self._controller = Controller(self.inbox, hostname="127.0.0.1", port=self.port)
        self._controller.start()

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None
