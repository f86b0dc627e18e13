"""What files this process holds open: a leak check for unlinked temporary files."""

from __future__ import annotations

import os
from pathlib import Path


def open_files_under(directory: Path) -> list[str]:
    """This process's open files in ``directory``, unlinked ones included (``/proc/self/fd``)."""
    found = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue  # closed between listdir and readlink
        if target.startswith(str(directory)):
            found.append(target)
    return found
