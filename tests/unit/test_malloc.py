"""glibc's mmap threshold, fixed at start-up so freed pictures leave the RSS (monitor/malloc.py)."""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

from monitor.malloc import ENV_OVERRIDE, map_large_blocks

REPO = Path(__file__).resolve().parents[2]


class MallInfo2(ctypes.Structure):
    """glibc's ``struct mallinfo2`` (malloc.h, glibc >= 2.33): every field a size_t."""

    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena",
            "ordblks",
            "smblks",
            "hblks",
            "hblkhd",
            "usmblks",
            "fsmblks",
            "uordblks",
            "fordblks",
            "keepcost",
        )
    ]


def glibc() -> ctypes.CDLL:
    if not sys.platform.startswith("linux"):
        pytest.skip("glibc only")
    libc = ctypes.CDLL(ctypes.util.find_library("c"))
    if not hasattr(libc, "mallinfo2"):
        pytest.skip("needs glibc >= 2.33 for mallinfo2")
    libc.mallinfo2.restype = MallInfo2
    libc.malloc.restype = ctypes.c_void_p
    libc.malloc.argtypes = (ctypes.c_size_t,)
    libc.free.argtypes = (ctypes.c_void_p,)
    return libc


_PROBE = """
import ctypes
from monitor.malloc import MMAP_THRESHOLD_BYTES, map_large_blocks
from tests.unit.test_malloc import glibc

libc = glibc()
# Freeing a mapped 24 MiB block raises glibc's dynamic threshold to 24 MiB, as the first decoded
# page does in the daemon: a 4 MiB picture after it would grow the heap instead of being mapped.
libc.free(libc.malloc(24 << 20))
assert map_large_blocks() is True
mapped = libc.mallinfo2().hblkhd
block = libc.malloc(4 * MMAP_THRESHOLD_BYTES)
assert libc.mallinfo2().hblkhd - mapped >= 4 * MMAP_THRESHOLD_BYTES, "not mapped"
libc.free(block)
assert libc.mallinfo2().hblkhd == mapped, "not unmapped on free"
"""


def test_a_block_above_the_threshold_is_mapped_even_after_a_larger_one_was_freed() -> None:
    glibc()
    env = {k: v for k, v in os.environ.items() if k != ENV_OVERRIDE}
    # A fresh process: this one's heap may already hold free chunks that would serve the block.
    done = subprocess.run(
        [sys.executable, "-c", _PROBE], cwd=REPO, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr


def test_the_operators_own_glibc_setting_stands(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_OVERRIDE, "131072")
    assert map_large_blocks() is False
