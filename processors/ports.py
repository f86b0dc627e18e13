"""The ports the pipeline is handed: blob storage, the catalog-image cache, metrics.

The pipeline owns these protocols and ``monitor/`` implements them (``monitor/storage/``,
``monitor/metrics.py``), so the arrows run one way: see docs/architecture.md, "Ports and adapters".
Paths are object keys inside one bucket (``generated/{item}/cover.jpg``), never URLs; URLs are
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

    def key_for(self, value: str) -> str:
        """The object key a path from a row names (a key, or this project's storage URL of an
        object in this bucket); raise ``InvalidPath`` for anything else. The pipeline never
        parses a URL itself."""
        ...

    async def download(self, path: str) -> bytes:
        """Return the object's bytes; raise ObjectNotFound or StorageUnavailable."""
        ...

    async def upload(self, path: str, data: bytes, content_type: str) -> None:
        """Write the object, replacing any earlier one, so a repeated step is harmless."""

    async def upload_file(self, path: str, source: Path, content_type: str) -> None:
        """Like upload, for large files such as the PDF, without reading them whole."""

    async def url_for(self, path: str) -> str:
        """A URL the app can open: signed for ``SIGNED_URL_TTL_SECONDS``, or public."""
        ...

    async def delete(self, paths: list[str]) -> None:
        """Remove objects; already missing ones are not an error (deletion is idempotent)."""

    async def aclose(self) -> None:
        """Release connections."""


class AssetCache(Protocol):
    """A read-through cache of a book's original catalog images (``monitor.storage.cache``)."""

    async def get(self, book_id: str, path: str) -> bytes:
        """The object's bytes; raises what the storage raises."""
        ...


class PipelineMetrics(Protocol):
    """What the pipeline counts (``monitor.metrics.Metrics`` exports it to Prometheus)."""

    def page_generated(self, outcome: str) -> None:
        """One page finished: ``ok``, ``original`` (drawn as is) or the error code."""

    def pdf_built(self, seconds: float) -> None:
        """The PDF of one book took ``seconds`` to assemble."""

    def page_input(self, outcome: str) -> None:
        """A catalog page's model input was ``made``, or ``reused`` from another order of its
        book (processors/page_inputs.py)."""


class NullMetrics:
    """Counts nothing: the default when no metrics are wanted (tests, scripts)."""

    def page_generated(self, outcome: str) -> None:
        pass

    def pdf_built(self, seconds: float) -> None:
        pass

    def page_input(self, outcome: str) -> None:
        pass
