"""The blob-storage port: where book images, children's photos and finished PDFs live.

Paths are object paths inside one bucket (``generated/{item}/cover.jpg``), never URLs; URLs are
derived on demand because signed URLs expire.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from processors.errors import RetryableError, TerminalError


class ObjectNotFound(TerminalError):
    """The object is not in the bucket: an input the catalog or the app promised is missing."""

    code = "input_missing"
    parent_message = "A picture needed for your book is missing. Our team has been notified."


class StorageUnavailable(RetryableError):
    """The storage service failed in a way that may pass (network error, 5xx, 429)."""

    code = "storage_unavailable"


class BlobStorage(Protocol):
    #: Seconds a URL from :meth:`url_for` stays valid; None when it never expires (public bucket,
    #: local directory). Tells the daemon whether, and when, result URLs must be signed again.
    url_ttl_seconds: int | None

    async def download(self, path: str) -> bytes:
        """Return the object's bytes; raise ObjectNotFound or StorageUnavailable."""

    async def upload(self, path: str, data: bytes, content_type: str) -> None:
        """Write the object, replacing any earlier one, so a repeated step is harmless."""

    async def upload_file(self, path: str, source: Path, content_type: str) -> None:
        """Like upload, for large files such as the PDF, without reading them whole."""

    async def url_for(self, path: str) -> str:
        """A URL the app can open: signed for ``SIGNED_URL_TTL_SECONDS``, or public if configured."""

    async def delete(self, paths: list[str]) -> None:
        """Remove objects; already missing ones are not an error (deletion is idempotent)."""

    async def aclose(self) -> None:
        """Release connections."""
