"""Writing a file all or nothing: the one helper the PDF builder and the local storage share."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO


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
