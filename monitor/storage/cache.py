"""A local disk cache of original book images, so a hundred orders of one book fetch its pages once.

Entries live at ``{cache_dir}/{book_id}/{sha256(object key)}``, one directory per book, so an
operator can drop one book's entries when its catalog images are replaced. Catalog images are
treated as immutable: an image that changes in place keeps being served from the cache until its
directory is removed. Each entry starts with the SHA-256 of its content, so a file cut short
by a crash or a full disk, or damaged on disk, is noticed and fetched again rather than served.
"""

from __future__ import annotations

import asyncio
import hashlib
from functools import partial
from pathlib import Path

from monitor.storage.local import LocalStorage
from monitor.storage.paths import validate_key
from processors.layout import canonical_uuid
from processors.ports import BlobStorage, ObjectNotFound

_DIGEST_SIZE = hashlib.sha256().digest_size


class BookAssetCache:
    """Read-through cache in front of ``storage`` for a book's original cover and pages.

    Concurrent requests for one object share a single fetch: with ten orders of one book starting
    together, the first starts the download and the other nine await it.
    """

    def __init__(self, storage: BlobStorage, cache_dir: Path) -> None:
        self._storage = storage
        self._disk = LocalStorage(cache_dir)
        self._inflight: dict[str, asyncio.Task[bytes]] = {}

    async def get(self, book_id: str, path: str) -> bytes:
        """The object's bytes, from disk when cached, else from storage (then cached).

        Raises what the storage raises (ObjectNotFound, StorageUnavailable); failures are not
        cached, so the next call tries again.
        """
        entry = f"{canonical_uuid(book_id, what='book id')}/{_hash(validate_key(path))}"
        fetch = self._inflight.get(entry)
        if fetch is None:
            fetch = asyncio.create_task(self._load(entry, path))
            self._inflight[entry] = fetch
            fetch.add_done_callback(partial(self._forget, entry))
        # Shielded: one caller being cancelled (its order's lease lost) must not cancel the fetch
        # the other callers are waiting for.
        return await asyncio.shield(fetch)

    async def _load(self, entry: str, path: str) -> bytes:
        try:
            data = await asyncio.to_thread(_unframe, await self._disk.download(entry))
        except ObjectNotFound:
            data = None
        if data is None:
            data = await self._storage.download(path)
            framed = await asyncio.to_thread(_frame, data)
            await self._disk.upload(entry, framed, "application/octet-stream")
        return data

    def _forget(self, entry: str, fetch: asyncio.Task[bytes]) -> None:
        del self._inflight[entry]
        if not fetch.cancelled():
            # Mark a failure as seen even if every waiter was cancelled, so asyncio does not log
            # "exception was never retrieved"; the waiters that remain get it through the shield.
            fetch.exception()


def _hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def _frame(data: bytes) -> bytes:
    return hashlib.sha256(data).digest() + data


def _unframe(framed: bytes) -> bytes | None:
    """The content of a cache entry, or None if it does not match its digest."""
    digest, data = framed[:_DIGEST_SIZE], framed[_DIGEST_SIZE:]
    if len(digest) != _DIGEST_SIZE or hashlib.sha256(data).digest() != digest:
        return None
    return data
