"""Blob storage in a local directory (``STORAGE_BACKEND=local``, ``LOCAL_STORAGE_DIR``).

For the offline demo, the test suite and single-machine installs. Object keys map to files below
the root; every write lands under a temporary name and is renamed into place, so a reader (the
app, a web server, a second replica on a shared disk) never sees half a file. File I/O runs in a
worker thread, so a PDF of many megabytes does not stall the event loop and its heartbeats.
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO
from urllib.parse import quote

from monitor.storage.paths import object_path, validate_key
from processors.files import write_atomically
from processors.layout import InvalidPath, redacted
from processors.ports import ObjectNotFound, StorageUnavailable

#: Objects are meant to be served (``base_url``), so they are world-readable like any upload.
_FILE_MODE = 0o644


class LocalStorage:
    """The blob-storage port over a directory.

    ``url_for`` gives ``base_url`` + key when the directory is published by a web server, else a
    ``file://`` URL (useful on the machine itself only). Content types are not stored: files are
    served by their extension, which the daemon's paths always carry.
    """

    #: Files do not expire, nor do URLs to them.
    url_ttl_seconds: int | None = None

    def __init__(
        self,
        root: Path,
        base_url: str | None = None,
        *,
        bucket: str | None = None,
        supabase_url: str | None = None,
    ) -> None:
        self._root = root.resolve()
        self._base_url = base_url.rstrip("/") + "/" if base_url else None
        # Rows may still hold this project's Storage URLs (monitor/storage/paths.py).
        self._bucket = bucket
        self._supabase_url = supabase_url

    def key_for(self, value: str) -> str:
        return object_path(value, bucket=self._bucket, supabase_url=self._supabase_url)

    async def download(self, path: str) -> bytes:
        file = self._file(path)
        try:
            return await asyncio.to_thread(file.read_bytes)
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError) as exc:
            raise ObjectNotFound(f"no object at {redacted(path)}") from exc
        except OSError as exc:
            raise StorageUnavailable(f"reading {redacted(path)} failed: {exc.strerror}") from exc

    async def upload(self, path: str, data: bytes, content_type: str) -> None:
        await self._write(path, lambda out: out.write(data))

    async def upload_file(self, path: str, source: Path, content_type: str) -> None:
        def copy(out: BinaryIO) -> None:
            with source.open("rb") as src:
                shutil.copyfileobj(src, out)

        await self._write(path, copy)

    async def url_for(self, path: str) -> str:
        if self._base_url is None:
            return self._file(path).as_uri()
        return self._base_url + quote(validate_key(path))

    async def delete(self, paths: list[str]) -> None:
        files = [self._file(path) for path in paths]

        def unlink_all() -> None:
            for file in files:
                file.unlink(missing_ok=True)

        try:
            await asyncio.to_thread(unlink_all)
        except OSError as exc:
            raise StorageUnavailable(f"deleting objects failed: {exc.strerror}") from exc

    async def aclose(self) -> None:
        """Nothing to release: files are opened and closed per call."""

    async def _write(self, path: str, write: Callable[[BinaryIO], object]) -> None:
        file = self._file(path)
        try:
            await asyncio.to_thread(write_atomically, file, write, mode=_FILE_MODE)
        except OSError as exc:
            raise StorageUnavailable(f"writing {redacted(path)} failed: {exc.strerror}") from exc

    def _file(self, path: str) -> Path:
        """The file for an object key; refuses keys that would resolve outside the root.

        ``validate_key`` already rules out ``..`` and absolute keys; resolving also catches a
        symlink below the root that points elsewhere.
        """
        file = self._root.joinpath(*validate_key(path).split("/"))
        if not file.resolve().is_relative_to(self._root):
            raise InvalidPath(f"storage path leaves the storage directory: {redacted(path)}")
        return file
