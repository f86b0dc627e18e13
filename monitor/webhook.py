"""The optional ops webhook: a signed JSON POST when an item completes or fails for good.

For operators' chat alerts and dashboards, not for parents (they get the notifications row). The
payload carries ids and codes only, no personal data. A failing webhook is logged and forgotten:
it never fails an order.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from datetime import datetime, timezone
from typing import Any

import httpx
from loguru import logger

SIGNATURE_HEADER = "X-Signature"


def sign(secret: str, body: bytes) -> str:
    """``sha256=<hex>`` of the body, as receivers verify it (constant-time compare on their side)."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


class OpsWebhook:
    def __init__(self, url: str, secret: str, *, timeout: float = 5.0) -> None:
        self._url = url
        self._secret = secret
        self._client = httpx.AsyncClient(timeout=timeout)

    async def send(self, event: str, **fields: Any) -> bool:
        """POST the event; True when the receiver answered 2xx. Never raises."""
        payload = {"event": event, "at": datetime.now(timezone.utc).isoformat(), **fields}
        body = json.dumps(payload, separators=(",", ":"), sort_keys=True).encode()
        headers = {"Content-Type": "application/json", SIGNATURE_HEADER: sign(self._secret, body)}
        try:
            response = await self._client.post(self._url, content=body, headers=headers)
        except httpx.HTTPError as exc:
            logger.warning("ops webhook failed", event=event, error=type(exc).__name__)
            return False
        if response.is_success:
            return True
        logger.warning("ops webhook refused", event=event, status=response.status_code)
        return False

    async def aclose(self) -> None:
        await self._client.aclose()
