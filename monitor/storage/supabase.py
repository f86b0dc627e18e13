"""Blob storage on Supabase Storage (``STORAGE_BACKEND=supabase``), through supabase-py's storage3.

The bucket is private by default: the app gets signed URLs that expire after
``SIGNED_URL_TTL_SECONDS``; with ``STORAGE_PUBLIC=true`` it gets the bucket's public URLs instead.
Uploads always upsert, so repeating a step after a lost lease rewrites the same object harmlessly.

Storage API errors arrive as HTTP 400 with the real status in the body's ``statusCode`` (its legacy
error format), gateways answer with a plain HTTP status; both are looked at when classifying.
"""

from __future__ import annotations

import email.utils
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
from storage3.exceptions import StorageApiError

from monitor.storage.paths import object_path, validate_key
from processors.errors import TerminalError
from processors.layout import redacted
from processors.ports import ObjectNotFound, StorageUnavailable
from supabase import AsyncClient

_RETRYABLE_STATUSES = frozenset({408, 423, 429})
#: Storage answers a missing bucket with a 404 too; that is a misconfiguration, not a missing input.
_NO_SUCH_BUCKET = "Bucket not found"


class SupabaseStorage:
    """The blob-storage port over one Supabase Storage bucket.

    ``client`` comes from :func:`monitor.supabase_client.create_supabase_client`; its HTTP client
    belongs to whoever created it, which is why :meth:`aclose` closes nothing.
    """

    def __init__(
        self,
        client: AsyncClient,
        bucket: str,
        *,
        public: bool = False,
        signed_url_ttl: int = 3600,
        supabase_url: str | None = None,
    ) -> None:
        if signed_url_ttl <= 0:
            raise ValueError("signed_url_ttl must be a positive number of seconds")
        self._bucket = bucket
        self._supabase_url = supabase_url
        self._files = client.storage.from_(bucket)
        self._public = public
        self._signed_url_ttl = signed_url_ttl
        self.url_ttl_seconds: int | None = None if public else signed_url_ttl

    def key_for(self, value: str) -> str:
        return object_path(value, bucket=self._bucket, supabase_url=self._supabase_url)

    async def download(self, path: str) -> bytes:
        key = validate_key(path)
        with _classified("download", key):
            return await self._files.download(key)

    async def upload(self, path: str, data: bytes, content_type: str) -> None:
        await self._upload(path, data, content_type)

    async def upload_file(self, path: str, source: Path, content_type: str) -> None:
        # storage3 opens the path itself and httpx streams the multipart body from it in 64 KiB
        # reads, so the PDF is never held in memory whole.
        await self._upload(path, source, content_type)

    async def url_for(self, path: str) -> str:
        key = validate_key(path)
        if self._public:
            return await self._files.get_public_url(key)
        with _classified("sign", key):
            signed = await self._files.create_signed_url(key, self._signed_url_ttl)
        url = signed["signedURL"]
        if not url:
            raise StorageUnavailable(f"storage returned no signed URL for {redacted(key)}")
        return url

    async def delete(self, paths: list[str]) -> None:
        """Remove objects; Storage simply leaves out keys that are already gone."""
        keys = [validate_key(path) for path in paths]
        if not keys:
            return
        with _classified("delete", ", ".join(keys)):
            await self._files.remove(keys)

    async def aclose(self) -> None:
        """Nothing to release here: the shared HTTP client is closed by its owner."""

    async def _upload(self, path: str, body: bytes | Path, content_type: str) -> None:
        key = validate_key(path)
        with _classified("upload", key):
            await self._files.upload(key, body, {"content-type": content_type, "upsert": "true"})


@contextmanager
def _classified(action: str, key: str) -> Iterator[None]:
    """Turn storage3 and httpx failures into the port's errors, classified once, here.

    Messages carry the action, the key, statuses and Storage's error name, never the server's
    free text, request headers (the service key) or URLs with tokens.
    """
    try:
        yield
    except StorageApiError as exc:
        raise _classify(exc, action, key) from exc
    except httpx.RequestError as exc:  # connect/read errors and timeouts: no response at all
        raise StorageUnavailable(
            f"storage {action} of {redacted(key)}: {type(exc).__name__}"
        ) from exc


def _classify(exc: StorageApiError, action: str, key: str) -> Exception:
    response = _http_response(exc)
    http_status = response.status_code if response is not None else None
    body_status = int(exc.status) if str(exc.status).isdigit() else None
    statuses = {status for status in (http_status, body_status) if status is not None}
    detail = f"storage {action} of {redacted(key)}: HTTP {http_status}, {body_status} {exc.code}"
    if any(status in _RETRYABLE_STATUSES or status >= 500 for status in statuses):
        retry_after = _retry_after(response) if response is not None else None
        return StorageUnavailable(detail, retry_after=retry_after)
    if 404 in statuses and exc.code != _NO_SUCH_BUCKET:
        return ObjectNotFound(detail)
    return TerminalError(detail, code="storage_error")


def _http_response(exc: BaseException) -> httpx.Response | None:
    """The HTTP response behind a StorageApiError; storage3 chains it as cause or context."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, httpx.HTTPStatusError):
            return seen.response
        seen = seen.__cause__ or seen.__context__
    return None


def _retry_after(response: httpx.Response) -> float | None:
    """Retry-After in seconds, given as a number or an HTTP date; None when absent or unreadable."""
    value = response.headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())
