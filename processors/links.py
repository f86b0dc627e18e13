"""The URLs of a finished book, and when they stop working.

Both the pipeline (at completion) and the re-sign sweep (monitor/url_refresh.py) produce them
here, so the expiry written to ``order_items.urls_expire_at`` is computed one way. The clock is
read before signing: the recorded expiry is never later than the one in the signed token.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from processors.ports import BlobStorage


@dataclass(frozen=True)
class ResultLinks:
    pdf_url: str
    cover_url: str
    #: None when the storage's URLs do not expire.
    expires_at: datetime | None


async def sign_results(storage: BlobStorage, pdf_path: str, cover_path: str) -> ResultLinks:
    """URLs the app can open for the PDF and the cover."""
    # Whole seconds, as a JWT's "exp" is (RFC 7519 NumericDate; Storage signs with iat = now in
    # seconds): a fraction would put the recorded expiry after the token's.
    signed_at = datetime.now(UTC).replace(microsecond=0)
    pdf_url, cover_url = await asyncio.gather(
        storage.url_for(pdf_path), storage.url_for(cover_path)
    )
    ttl = storage.url_ttl_seconds
    expires_at = None if ttl is None else signed_at + timedelta(seconds=ttl)
    return ResultLinks(pdf_url=pdf_url, cover_url=cover_url, expires_at=expires_at)
