"""The page pool of one item: how many image calls run at once, and how many pages are in progress.

An illustration takes one of ``page_concurrency`` image slots for each image call (its in-process
retries included) and gives it back when the reply is in: the checks of the output and the
quality judge run outside it, so the next page's image call starts while the previous page is
checked and judged; a redraw takes a slot again. Without that, pages advanced at one image call
plus one judge call per round (issue 15). Without a judge (QA_MODE=off) the slot is kept until
the page is saved, as before: a refused checkpoint (refund, lost lease) is then known before the
slot's next page starts. With the judge, the save follows the judge outside the slot, so a
refund is noticed at the next write and up to one round of image calls may start before it.

Pages in progress (waiting for a slot, drawing, being judged, saving) are bounded on their own, at
``IN_PROGRESS_PER_SLOT`` times the slots: enough that a page is ready whenever a slot frees while
up to as many pages are being judged, and few enough that memory stays flat in the book's length.
A page loads its original just before it waits for a slot, and at most one more page than there
are slots is between that and its first reply (``page_slot``). What it keeps of the original is
the model's JPEG of it and a copy of at most 256 px for the output checks
(``processors.images.Original``): the decoded page is freed before the page waits.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from processors.deadline import waiting_turn

IN_PROGRESS_PER_SLOT = 2


class DrawSlot:
    """One illustration's claim on the image slots; give it back with :meth:`release`.

    ``after_first`` runs once, when the first image call's reply is in (or at :meth:`release`,
    whichever comes first): the pool's ``decoding`` permit goes back then."""

    def __init__(
        self,
        slots: asyncio.Semaphore,
        before_call: Callable[[], None],
        after_first: Callable[[], None] | None = None,
    ) -> None:
        self._slots = slots
        self._before_call = before_call
        self._after_first = after_first
        self._held = False

    async def take(self) -> None:
        """Wait for a slot and keep it for the next :meth:`drawing` (the page's inputs, such as
        the cover reference, are fixed the moment its first call may start)."""
        if not self._held:
            async with waiting_turn():  # a sibling's call, not this page's: off its deadline
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
        self._first_done()
        if not keep:
            self.release()

    def release(self) -> None:
        self._first_done()
        if self._held:
            self._held = False
            self._slots.release()

    def _first_done(self) -> None:
        if self._after_first is not None:
            self._after_first()
            self._after_first = None


class PagePool:
    def __init__(self, page_concurrency: int, before_call: Callable[[], None]) -> None:
        self._slots = asyncio.Semaphore(page_concurrency)
        self._before_call = before_call
        #: Held by a page from before its original is loaded until it is saved.
        self.in_progress = asyncio.Semaphore(IN_PROGRESS_PER_SLOT * page_concurrency)
        #: Held by a page from before its original is decoded until its first image call's
        #: reply is in: one page ready ahead of the slots, not every page waiting.
        self._decoding = asyncio.Semaphore(page_concurrency + 1)

    def slot(self) -> DrawSlot:
        return DrawSlot(self._slots, self._before_call)

    async def page_slot(self) -> DrawSlot:
        """A slot for a page whose original is about to be decoded: waits for a ``decoding``
        permit first (in page order), which the slot gives back after the first reply."""
        await self._decoding.acquire()
        return DrawSlot(self._slots, self._before_call, self._decoding.release)
