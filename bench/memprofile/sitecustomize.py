"""Bench-only memory profiler for a daemon subprocess: where the peak is, not a guess.

Python imports ``sitecustomize`` at start-up from the first directory of ``sys.path`` that has
one, so the memory scenario puts this directory on the daemon's ``PYTHONPATH`` and sets
``BENCH_MEMPROFILE`` to an output file; the product code knows nothing of it. Without the
variable this module does nothing.

A thread samples the process's RSS every 20 ms. Each time the RSS passes its highest value so
far by ``_STEP`` bytes (at most every ``_EVERY`` s), it takes a tracemalloc snapshot and
rewrites the output file (JSON) with:

- ``rss`` and ``traced`` at that moment (traced = what Python's allocator holds, what
  tracemalloc sees), and tracemalloc's own peak of traced memory;
- ``sites``: the largest allocation sites alive then, each as its innermost frame and the
  innermost frame inside this project (``processors/``, ``monitor/``), which says who asked;
- ``pil``: the decoded Pillow images alive then (size, mode, bytes). Pillow allocates pixels
  with C ``malloc``, outside tracemalloc's view; RSS − traced − these is what is left to the
  C libraries and the allocator (libjpeg buffers, glibc arenas, fragmentation).

After each snapshot the thread calls glibc's ``malloc_trim(0)``, so the memory the snapshot
itself took does not stay resident and set the next high. The last snapshot written is the one
nearest the RSS peak. Deleting the file starts over (the
bench does so after its warm-up order). Snapshots cost CPU and memory of
their own, so the bench measures RSS in a separate, unprofiled run.
"""

from __future__ import annotations

import os

_STEP = 4 * 2**20
# At most one snapshot per _EVERY seconds: a snapshot stops the process for a while.
_EVERY = 0.5
_FRAMES = 8
_PROJECT = ("/processors/", "/monitor/")


def _rss() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


#: Every Pillow image made since start-up, weakly: ``gc.get_objects()`` from this thread would
#: hand out tuples other threads are still building, and CPython then stops the daemon with
#: "SystemError: Objects/tupleobject.c: bad argument to internal function" (the gc module's
#: warning on get_objects; it did so in the full bench run of 2026-12-02).
_IMAGES: object = None


def _track_images() -> None:
    import weakref

    try:
        from PIL import Image
    except ImportError:
        return
    global _IMAGES
    # Keyed by id: an Image defines __eq__ and so is not hashable.
    images: weakref.WeakValueDictionary[int, Image.Image] = weakref.WeakValueDictionary()
    _IMAGES = images
    init = Image.Image.__init__

    def tracked(self: Image.Image, *args: object, **kwargs: object) -> None:
        init(self, *args, **kwargs)
        images[id(self)] = self

    Image.Image.__init__ = tracked  # type: ignore[method-assign]


def _pil_images() -> list[dict[str, object]]:
    if _IMAGES is None:
        return []
    for _ in range(5):  # another thread may add one while the set is copied
        try:
            alive = list(_IMAGES.values())  # type: ignore[attr-defined]
            break
        except RuntimeError:
            continue
    else:
        return []
    found = []
    for obj in alive:
        if obj.__dict__.get("_im") is not None:
            # Pillow keeps 1-byte modes in one byte per pixel and every other mode in four.
            depth = 1 if obj.mode in ("1", "L", "P") else 4
            found.append(
                {"size": list(obj.size), "mode": obj.mode, "bytes": obj.width * obj.height * depth}
            )
    return sorted(found, key=lambda i: -int(i["bytes"]))  # type: ignore[call-overload]


def _sites(snapshot, top: int = 12) -> list[dict[str, object]]:  # type: ignore[no-untyped-def]
    totals: dict[tuple[str, str], list[int]] = {}
    # Grouping by traceback is done on the raw traces, far cheaper than one Trace per block.
    for stat in snapshot.statistics("traceback"):
        frames = list(stat.traceback)  # oldest first
        inner = frames[-1]
        mine = next((f for f in reversed(frames) if any(p in f.filename for p in _PROJECT)), None)
        key = (
            f"{inner.filename}:{inner.lineno}",
            f"{mine.filename}:{mine.lineno}" if mine else "",
        )
        entry = totals.setdefault(key, [0, 0])
        entry[0] += stat.size
        entry[1] += stat.count
    ranked = sorted(totals.items(), key=lambda kv: -kv[1][0])[:top]
    return [
        {"site": _short(k[0]), "caller": _short(k[1]), "bytes": v[0], "blocks": v[1]}
        for k, v in ranked
    ]


def _short(location: str) -> str:
    """A frame as ``processors/book.py:123`` or ``PIL/Image.py:45``, without the install path."""
    for marker in _PROJECT:
        if marker in location:
            return marker.strip("/") + "/" + location.split(marker, 1)[1]
    if "/site-packages/" in location:
        return location.split("/site-packages/", 1)[1]
    return location.rsplit("/", 2)[-1] if "/lib/python3" in location else location


def _trim() -> None:
    """Give the snapshot's freed memory back (glibc), so the next high is the daemon's own."""
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    if name:
        trim = getattr(ctypes.CDLL(name), "malloc_trim", None)
        if trim is not None:
            trim(0)


def _run(out: str) -> None:
    import json
    import time
    import tracemalloc

    best, last = 0, 0.0
    while True:
        if not os.path.exists(out):
            best = 0  # the bench deleted the file: profile from here on
        # The profiler's own tables grow with every traced block: not the daemon's memory.
        overhead = tracemalloc.get_tracemalloc_memory()
        rss, seen = _rss() - overhead, time.monotonic()
        if rss > best + _STEP and time.monotonic() - last > _EVERY:
            best = rss
            # Pixels first: a decoded picture lives for a fraction of a second, the snapshot
            # takes longer than that.
            pil = _pil_images()
            traced, traced_peak = tracemalloc.get_traced_memory()
            snapshot = tracemalloc.take_snapshot()
            report = {
                "rss": rss,
                "traced": traced,
                "traced_peak": traced_peak,
                "overhead": overhead,
                "sites": _sites(snapshot),
                "pil": pil,
                # How long after the RSS reading the sites were taken: a transient buffer freed
                # in between is in ``rss`` but in neither list.
                "lag_s": round(time.monotonic() - seen, 3),
            }
            del snapshot
            tmp = out + ".part"
            with open(tmp, "w") as f:
                json.dump(report, f)
            os.replace(tmp, out)
            del report
            _trim()
            last = time.monotonic()
        time.sleep(0.02)


def _start(out: str) -> None:
    import threading
    import tracemalloc

    tracemalloc.start(_FRAMES)
    _track_images()
    threading.Thread(target=_run, args=(out,), name="bench-memprofile", daemon=True).start()


if os.environ.get("BENCH_MEMPROFILE"):
    _start(os.environ["BENCH_MEMPROFILE"])
