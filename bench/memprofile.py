"""Where a daemon's memory peak is, from memray's capture of the whole process, C included.

The daemon's memory is mostly C: Pillow's pixels, libjpeg's buffers, pikepdf's objects, the
HTTP clients' TLS and socket buffers. tracemalloc sees only Python's own allocator (it
attributed 69 of 350 MB in the run of 2026-12-04, and its snapshot took 40-80 s, so the sites
it reported were the start-up imports). memray records every ``malloc``, ``mmap`` and their
frees with the native and the Python stack that made them (``--native``), and its reader can
rebuild the allocations alive at the heap's high-water mark.

The memory scenario runs a profiled case once more with the daemon started under
``python -m memray run --native`` (``command``) and, after the daemon has stopped, reduces the
capture to a small JSON-ready summary (``summarize``): the high-water mark, the RSS then, and
the largest groups of allocations alive at that moment, each as the innermost Python frame,
the native function under it and the innermost frame in this project, which says who asked.
The capture covers the whole run, the warm-up order included (it is the same size as a
measured one). memray costs time, so the RSS figures of the report come from the unprofiled run.

memray's reader API: https://bloomberg.github.io/memray/api.html (FileReader,
get_high_watermark_allocation_records, hybrid_stack_trace, get_memory_snapshots).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

_PROJECT = ("/processors/", "/monitor/")
# Frames of the allocators themselves say nothing about who asked: the first native frame
# outside them is the one reported.
_ALLOCATOR_FILES = ("Objects/obmalloc.c", "Storage.c")


def command(capture: Path) -> list[str]:
    """The interpreter arguments that run a script under memray, writing ``capture``."""
    return ["-m", "memray", "run", "--native", "--quiet", "--force", "-o", str(capture)]


def summarize(capture: Path, top: int = 12) -> dict[str, Any]:
    """The high-water mark of ``capture`` and the largest allocation groups alive then."""
    from memray import FileReader

    reader = FileReader(str(capture))
    try:
        groups: dict[tuple[str, str, str], list[int]] = {}
        for record in reader.get_high_watermark_allocation_records(merge_threads=True):
            key = _attribute(record.hybrid_stack_trace(max_stacks=1000))
            entry = groups.setdefault(key, [0, 0])
            entry[0] += record.size
            entry[1] += record.n_allocations
        snapshots = list(reader.get_memory_snapshots())
        peak_heap = reader.metadata.peak_memory
    finally:
        reader.close()
    ranked = sorted(groups.items(), key=lambda kv: -kv[1][0])[:top]
    heap_peak_at = max(snapshots, key=lambda s: s.heap, default=None)
    return {
        "peak_heap": peak_heap,
        "peak_rss": max((s.rss for s in snapshots), default=0),
        # memray samples RSS every 10 ms: the RSS when the tracked heap was highest.
        "rss_at_peak_heap": heap_peak_at.rss if heap_peak_at else 0,
        "sites": [
            {"site": site, "native": native, "caller": caller, "bytes": size, "blocks": blocks}
            for (site, native, caller), (size, blocks) in ranked
        ],
    }


def _attribute(frames: list[tuple[str, str, int]]) -> tuple[str, str, str]:
    """(innermost Python frame, native function under it, innermost project frame)."""
    site = native = caller = ""
    for function, filename, line in frames:  # innermost first
        python = filename.endswith(".py")
        if not python and not site and not native and not filename.endswith(_ALLOCATOR_FILES):
            native = function
        if python and not site:
            site = f"{_short(filename)}:{line}"
        if python and any(p in filename for p in _PROJECT):
            caller = f"{_short(filename)}:{line} {function}"
            break
    return site, native, caller


def _short(filename: str) -> str:
    """A file as ``processors/book.py`` or ``PIL/Image.py``, without the install path."""
    for marker in _PROJECT:
        if marker in filename:
            return marker.strip("/") + "/" + filename.split(marker, 1)[1]
    if "/site-packages/" in filename:
        return filename.split("/site-packages/", 1)[1]
    return filename.rsplit("/", 1)[-1]
