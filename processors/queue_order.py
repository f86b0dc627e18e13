"""Process-wide turns (AI call slots, the pacers' turns, picture work) served in queue order.

Every order in a process shares the same AI slots, quota pacers and picture threads. Handed out
first come first served, a call of the newest order goes before the next call of the oldest,
so under load all the orders in flight advance together and finish together, late: the next
order in the queue is claimed only when one of them finishes, and while the last ones run
alone most slots stay idle. Served in queue order instead, the oldest order's calls go first,
it finishes as early as if it were alone, its slot takes the next order while the others still
fill the AI slots, and orders finish in the order they were paid. The total work is the same;
what changes is that nothing waits behind a book that could already be done (bench/README.md,
section 0).

The place comes from a context variable the daemon sets around each item
(:func:`served_as`): asyncio copies the context into every task an order starts, so its
pages' calls carry it without being passed it. A call outside any order (the interactive
``POST /generate-cover``) has the empty place, ahead of every order: somebody is waiting on it
now.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from types import TracebackType

#: A sortable place in the queue; lower goes first. The daemon's is the item's
#: (next_attempt_at, id), the order its claim statement takes them in (monitor/job.py).
Place = tuple[str, ...]

_place: ContextVar[Place] = ContextVar("queue_place", default=())


@contextmanager
def served_as(place: Place) -> Iterator[None]:
    """Every turn taken inside (and in the tasks started inside) waits at ``place``."""
    token = _place.set(place)
    try:
        yield
    finally:
        _place.reset(token)


#: Appended to a place by ``deferred``: a tuple sorts after every tuple it extends.
_DEFERRED = "deferred"


@contextmanager
def deferred(steps: int = 1) -> Iterator[None]:
    """Turns taken inside wait behind the same order's other turns (those deferred by fewer
    ``steps`` included), and still before any younger order's: for work nobody waits on yet.
    A drawing's judge input is what its judge call waits on; its page's fit is wanted by the
    draft saved beside that call (one step); its finished pictures (print picture, screen
    copy) only by the PDFs at the end (two steps). So a core goes to the nearest need first."""
    with served_as((*_place.get(), *(_DEFERRED,) * steps)):
        yield


class QueueOrderSemaphore:
    """A semaphore whose free slot goes to the waiter with the lowest place (first come first
    served among equal places).

    A released slot is handed straight to the chosen waiter rather than put back, so a caller
    arriving in between cannot take it first. ``asyncio.Semaphore`` wakes in arrival order and
    offers no other, hence this class.
    """

    def __init__(self, value: int) -> None:
        if value < 1:
            raise ValueError("a semaphore needs at least one slot")
        self._free = value
        self._arrivals = itertools.count()
        self._waiters: list[tuple[Place, int, asyncio.Future[None]]] = []

    async def acquire(self) -> None:
        # A slot is only ever put back when nobody waits (``release``), so a free one means an
        # empty line.
        if self._free > 0:
            self._free -= 1
            return
        handed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiters, (_place.get(), next(self._arrivals), handed))
        try:
            await handed
        except asyncio.CancelledError:
            # Cancelled after the slot was handed over but before this task resumed: the slot
            # is ours, so it goes to the next waiter. A cancelled future's entry stays in the
            # heap until ``release`` pops and skips it.
            if handed.done() and not handed.cancelled():
                self.release()
            raise

    async def yield_to_older(self) -> bool:
        """For a holder that waited while holding its slot (the pacer, for the next token):
        if a lower place came in line meanwhile, hand it the slot, wait for it back here and
        return True; else keep it and return False.

        Returns holding the slot; cancelled while waiting for it back, the caller holds none.
        """
        while self._waiters and self._waiters[0][2].done():
            heapq.heappop(self._waiters)  # a waiter cancelled in line
        if not self._waiters or self._waiters[0][0] >= _place.get():
            return False
        self.release()
        await self.acquire()
        return True

    def release(self) -> None:
        while self._waiters:
            _, _, handed = heapq.heappop(self._waiters)
            if not handed.done():
                handed.set_result(None)
                return
        self._free += 1

    async def __aenter__(self) -> None:
        await self.acquire()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()
