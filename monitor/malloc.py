"""Large buffers the daemon frees go back to the operating system (glibc, Linux).

glibc serves an allocation of at least ``M_MMAP_THRESHOLD`` bytes with an ``mmap`` of its own and
unmaps it on free. The threshold starts at 128 KiB but is dynamic: whenever such a block is freed,
it rises to that block's size, up to 32 MiB on 64-bit (mallopt(3), "M_MMAP_THRESHOLD"). Pillow
allocates a decoded picture in blocks of up to 16 MiB, so after the first page every later
picture comes from the heap arenas instead, one arena per thread that touched it (the
``asyncio.to_thread`` workers), and what is freed there mostly stays resident; a block freed in
one thread's arena cannot serve the next picture decoded in another. Measured in the bench's
memory scenario (bench/README.md, section 4): the RSS after one order grew from ~130 to ~250 MB,
and peaks grew with it.

Setting the threshold once (which also switches the dynamic adjustment off) keeps every block of
256 KiB or more (pictures, reply bytes, JPEG and base64 buffers) an ``mmap`` of its own,
returned the moment it is freed. The cost would be the kernel zeroing fresh pages for each such
block; measured, it is lost in the run-to-run spread: in the bench's single-order runs
(2026-12-04, quick mode, bench/README.md "Targets") a 10-page book of 4K replies used 11.67 s of
CPU at 256 KiB against 11.69 s at 1 MiB, a 24-page one 27.27 against 27.21 s, while one order's
peak RSS fell from 441 to 370 MB and from 455 to 378 MB.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

# mallopt(3) parameter number, from glibc's malloc.h.
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_BYTES = 256 << 10
# glibc's own environment variable for the same setting: when the operator set it, it stands.
ENV_OVERRIDE = "MALLOC_MMAP_THRESHOLD_"


def map_large_blocks(threshold: int = MMAP_THRESHOLD_BYTES) -> bool:
    """Fix glibc's mmap threshold at ``threshold`` bytes; True when it was set.

    Does nothing (False) off Linux, on a C library other than glibc (musl's ``mallopt`` is a
    stub), or when ``MALLOC_MMAP_THRESHOLD_`` is in the environment.
    """
    if not sys.platform.startswith("linux") or ENV_OVERRIDE in os.environ:
        return False
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        libc = ctypes.CDLL(name)
        libc.gnu_get_libc_version  # noqa: B018 - only glibc has it
    except (OSError, AttributeError):
        return False
    libc.mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    return bool(libc.mallopt(M_MMAP_THRESHOLD, threshold))
