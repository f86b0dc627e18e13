"""Picture work (decoding, resizing, encoding) in threads, no more at once than there are cores.

Each page's output checks decode the model's reply, and each print picture is an upscale to
300 PPI: tens of megabytes of pixels each, for a fraction of a second of CPU. Run in as many
threads as pages are in flight, they only take turns on the cores while all their buffers are
alive at once; a 4K reply decoded whole is 50 MB. One slot per core keeps the CPU just as busy,
and the pixels in memory bounded by the machine, not by the pages in flight (issue 15).

One ``PictureWork`` per process (the book processor's), shared by every order in it, its slots
taken in queue order (processors/queue_order.py).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from typing import ParamSpec, TypeVar

from processors.queue_order import QueueOrderSemaphore

P = ParamSpec("P")
T = TypeVar("T")


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity, as a container or taskset sets it)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


class PictureWork:
    """``run`` a blocking picture function in a thread once one of ``slots`` is free."""

    def __init__(self, slots: int | None = None) -> None:
        self.slots = slots or usable_cores()
        self._free = QueueOrderSemaphore(self.slots)

    async def run(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """``fn``'s result. A caller cancelled meanwhile (a redraw, a lost lease) is cancelled
        once ``fn`` has ended: a thread cannot be stopped, and its slot is freed only when the
        thread is, so no more pictures are in work than there are slots."""
        async with self._free:
            work = asyncio.ensure_future(asyncio.to_thread(fn, *args, **kwargs))
            try:
                return await asyncio.shield(work)
            except asyncio.CancelledError:
                await asyncio.wait([work])
                if not work.cancelled():
                    work.exception()  # the caller is gone: retrieved, so asyncio does not log it
                raise
