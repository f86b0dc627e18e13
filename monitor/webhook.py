"""The optional ops webhook: a JSON POST per item that completes or fails for good.

Signed per the Standard Webhooks specification (github.com/standard-webhooks/standard-webhooks,
spec/standard-webhooks.md) with its reference library, ``standardwebhooks``: the headers
``webhook-id`` (one id per event, the same on every retry, a receiver's idempotency key),
``webhook-timestamp`` (unix seconds of the attempt, so a captured request stops verifying after the
verifier's tolerance of five minutes) and ``webhook-signature`` (``v1,<base64 HMAC-SHA256>`` of
``{id}.{timestamp}.{body}``). The secret is ``whsec_`` plus base64 of at least 24 random bytes,
the spec's format, so a receiver verifies with ``Webhook(secret).verify(body, headers)``.

For operators' chat alerts and dashboards, not for parents (they get the notifications row). The
payload carries ids and codes only, no personal data. Delivery is retried with exponential backoff
and jitter a bounded number of times (the spec's "Deliverability and reliability"), in the
background; an undeliverable event is logged and dropped: it never delays or fails an order.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import random
from datetime import UTC, datetime
from typing import Any
from uuid import uuid4

import httpx
from loguru import logger
from standardwebhooks.webhooks import Webhook

SECRET_PREFIX = "whsec_"
#: The spec's minimum for symmetric signing secrets (192 bits).
SECRET_MIN_BYTES = 24
#: Attempts per event, the first included, and the first retry's delay; each retry waits 4x more
#: (5 s, 20 s, 80 s, 320 s: under half an hour, so a restart loses at most that much retrying).
ATTEMPTS = 5
BACKOFF_SECONDS = 5.0


def secret_problem(secret: str) -> str | None:
    """Why ``secret`` is not a Standard Webhooks signing secret, or None when it is one."""
    if not secret.startswith(SECRET_PREFIX):
        return f"must start with {SECRET_PREFIX!r} (Standard Webhooks secret format)"
    try:
        key = base64.b64decode(secret[len(SECRET_PREFIX) :], validate=True)
    except (binascii.Error, ValueError):
        return f"must be {SECRET_PREFIX!r} followed by base64"
    if len(key) < SECRET_MIN_BYTES:
        return f"must hold at least {SECRET_MIN_BYTES} random bytes"
    return None


def signed_headers(webhook: Webhook, msg_id: str, body: bytes, at: datetime) -> dict[str, str]:
    """The three Standard Webhooks headers of one attempt."""
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(at.timestamp())),
        "webhook-signature": webhook.sign(msg_id, at, body.decode()),
    }


class OpsWebhook:
    def __init__(
        self,
        url: str,
        secret: str,
        *,
        timeout: float = 5.0,
        attempts: int = ATTEMPTS,
        backoff_seconds: float = BACKOFF_SECONDS,
    ) -> None:
        if problem := secret_problem(secret):
            raise ValueError(f"NOTIFY_WEBHOOK_SECRET {problem}")
        self._url = url
        self._signer = Webhook(secret)
        self._attempts = attempts
        self._backoff = backoff_seconds
        self._client = httpx.AsyncClient(timeout=timeout)

    async def send(self, event: str, **fields: Any) -> bool:
        """Deliver the event; True once the receiver answered 2xx. Never raises.

        Retries transport errors and every non-2xx answer except ``410 Gone`` (the spec: the
        receiver wants no more), re-signing each attempt with its own timestamp under the same
        ``webhook-id``.
        """
        msg_id = f"msg_{uuid4().hex}"
        payload = {"event": event, "at": datetime.now(UTC).isoformat(), **fields}
        body = json.dumps(payload, separators=(",", ":"), sort_keys=True).encode()
        for attempt in range(1, self._attempts + 1):
            headers = {
                "Content-Type": "application/json",
                **signed_headers(self._signer, msg_id, body, datetime.now(UTC)),
            }
            try:
                response = await self._client.post(self._url, content=body, headers=headers)
            except httpx.HTTPError as exc:
                outcome: dict[str, Any] = {"error": type(exc).__name__}
            else:
                if response.is_success:
                    return True
                outcome = {"status": response.status_code}
                if response.status_code == 410:
                    break
            if attempt < self._attempts:
                delay = self._backoff * 4 ** (attempt - 1) * random.uniform(0.8, 1.2)
                logger.info(
                    "ops webhook attempt failed; retrying",
                    event=event,
                    msg_id=msg_id,
                    attempt=attempt,
                    retry_in=round(delay, 2),
                    **outcome,
                )
                await asyncio.sleep(delay)
        logger.warning("ops webhook not delivered", event=event, msg_id=msg_id, **outcome)
        return False

    async def aclose(self) -> None:
        await self._client.aclose()
