"""A deadline that stops while its task waits its turn for something shared (issue 15).

``PAGE_DEADLINE_SECONDS`` bounds what one illustration may cost: a hung call, the retries of a
failing one. Waiting for a turn is neither. With several orders on a small image quota, the pages
of the later orders wait minutes for the pacer or for a free AI slot before their first call, and
a deadline counting that wait timed them out without a call made (``ai_timeout``, an attempt
spent): the default of five orders at once was sized so that could not happen at ten images a
minute. Whoever makes a task wait its turn (``processors.ai.limits``, ``processors.page_pool``)
wraps the wait in :func:`waiting_turn`, which pauses the deadline of the task it runs in, if
there is one.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from contextvars import ContextVar


class _Deadline:
    def __init__(self, timeout: asyncio.Timeout, seconds: float) -> None:
        self._timeout = timeout
        self._loop = asyncio.get_running_loop()
        self._when = self._loop.time() + seconds
        self._left = seconds
        self._waits = 0
        timeout.reschedule(self._when)

    def pause(self) -> None:
        self._waits += 1
        if self._waits == 1:
            self._left = self._when - self._loop.time()
            self._timeout.reschedule(None)

    def resume(self) -> None:
        self._waits -= 1
        if self._waits == 0:
            self._when = self._loop.time() + self._left
            self._timeout.reschedule(self._when)


_current: ContextVar[_Deadline | None] = ContextVar("deadline", default=None)


@asynccontextmanager
async def deadline(seconds: float) -> AsyncIterator[asyncio.Timeout]:
    """Like ``asyncio.timeout(seconds)`` (``TimeoutError`` when it passes), except for the time
    spent inside :func:`waiting_turn`. Yields the ``asyncio.Timeout``: its ``when()`` is None
    while the deadline is stopped."""
    async with asyncio.timeout(None) as timeout:
        token = _current.set(_Deadline(timeout, seconds))
        try:
            yield timeout
        finally:
            _current.reset(token)


@asynccontextmanager
async def waiting_turn() -> AsyncIterator[None]:
    """A wait for a shared resource: the enclosing :func:`deadline`, if any, stops meanwhile."""
    current = _current.get()
    if current is None:
        yield
        return
    current.pause()
    try:
        yield
    finally:
        current.resume()
