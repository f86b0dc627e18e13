"""Files the pipeline writes: all or nothing (the PDF builder, the local storage), and bytes
parked on disk while they wait for a core (a model's reply before its deferred fit)."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, BinaryIO


def write_atomically(
    target: Path, write: Callable[[BinaryIO], object], *, mode: int | None = None
) -> None:
    """Create or replace ``target`` with what ``write`` writes, all or nothing.

    The data goes to a temporary file in the same directory, is flushed to disk, and is renamed
    over ``target``, so after a crash ``target`` holds the old or the new content, never a mix;
    after any failure no debris stays behind. ``mode`` sets the file's permissions (else the
    temporary file's 0600 stays). Blocking: call it in a thread.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out:
            write(out)
            out.flush()
            os.fsync(out.fileno())
        if mode is not None:
            os.chmod(temp, mode)
        os.replace(temp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)
        raise


class ParkedBytes:
    """Bytes kept in an anonymous file instead of memory, read back by each step that needs them.

    A model's reply waits for a core twice, for its checks and for its fit, and while a book is
    drawn faster than the cores check and fit it, every waiting step held the reply in memory
    (1.5 MB at 2K, 6 MB at 4K): 23 of a 24-page book's replies were alive at its memory peak
    (bench/README.md, tenth pass). The file is unlinked from the start (``TemporaryFile``), so
    it leaves nothing behind when it is dropped or the process is killed; ``take`` frees it.
    Blocking: make and read it in a thread.
    """

    def __init__(self, data: bytes, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self._file: IO[bytes] = tempfile.TemporaryFile(dir=directory)
        self._file.write(data)

    def read(self) -> bytes:
        """The bytes; the file stays for the next reader."""
        self._file.seek(0)
        return self._file.read()

    def take(self) -> bytes:
        """The bytes, for the last reader: the file is closed and its space freed."""
        with self._file:
            return self.read()
