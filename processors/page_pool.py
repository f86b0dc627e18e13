"""The page pool of one item: how many image calls run at once, and how many pages are in progress.

An illustration takes one of ``page_concurrency`` image slots for each image call (its in-process
retries and output redraws included) and gives it back while the quality judge looks at the
result, so the next page's image call starts while the previous page is judged; a redraw the
judge asks for takes a slot again. Without that, pages advanced at one image call plus one judge
call per round (issue 15). Without a judge (QA_MODE=off) the slot is kept until the page is
saved, as before: a refused checkpoint (refund, lost lease) is then known before the slot's next
page starts. With the judge, the save follows the judge outside the slot, so a refund is noticed
at the next write and up to one round of image calls may start before it.

Pages in progress (waiting for a slot, drawing, being judged, saving) are bounded on their own, at
``IN_PROGRESS_PER_SLOT`` times the slots: enough that a page is ready whenever a slot frees while
up to as many pages are being judged, and few enough that memory stays flat in the book's length.
A page holds its decoded original only from just before its slot until its image call ends, and
at most one more page than there are slots holds one that way (``decoding``); a page being judged
holds bytes only.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

IN_PROGRESS_PER_SLOT = 2


class DrawSlot:
    """One illustration's claim on the image slots; give it back with :meth:`release`."""

    def __init__(self, slots: asyncio.Semaphore, before_call: Callable[[], None]) -> None:
        self._slots = slots
        self._before_call = before_call
        self._held = False

    async def take(self) -> None:
        """Wait for a slot and keep it for the next :meth:`drawing` (the page's inputs, such as
        the cover reference, are fixed the moment its first call may start)."""
        if not self._held:
            await self._slots.acquire()
            self._held = True

    @asynccontextmanager
    async def drawing(self, *, keep: bool = False) -> AsyncIterator[None]:
        """Hold a slot for one image call; ``before_call`` runs first and raises when no new paid
        call may start (a sibling's refused write: the lease is lost). ``keep``: hold it on after
        the call (until :meth:`release`), for a drawing that is saved without a judge."""
        await self.take()
        try:
            self._before_call()
            yield
        except BaseException:
            self.release()
            raise
        if not keep:
            self.release()

    def release(self) -> None:
        if self._held:
            self._held = False
            self._slots.release()


class PagePool:
    def __init__(self, page_concurrency: int, before_call: Callable[[], None]) -> None:
        self._slots = asyncio.Semaphore(page_concurrency)
        self._before_call = before_call
        #: Held by a page from before its original is loaded until it is saved.
        self.in_progress = asyncio.Semaphore(IN_PROGRESS_PER_SLOT * page_concurrency)
        #: Held by a page while its decoded original waits for or is in its first image call:
        #: one page ready ahead of the slots, not every page waiting (a redraw decodes again
        #: inside its slot, outside this bound).
        self.decoding = asyncio.Semaphore(page_concurrency + 1)

    def slot(self) -> DrawSlot:
        return DrawSlot(self._slots, self._before_call)
