"""What a catalog page becomes before it is drawn, kept between the orders of one book.

Every order of a book decodes the same catalog pages and makes the same two things of each: the
output checks' small copy (``Original``) and the JPEG sent to the model: about 40 ms of CPU a
page of the bench's sample book, a sixth of what a 10-page order costs (bench/README.md, the
seventh pass), spent again for every copy of a book sold. ``PageInputs`` keeps them, least
recently used first out, within a byte budget (``PAGE_INPUT_CACHE_MB``), one per process beside
the disk cache of the catalog files (``monitor.storage.cache``), which keeps the files themselves.

An entry is found by the object key *and* the SHA-256 of the file's bytes, so a catalog image
replaced under the same key (and fetched again once its disk cache entry is dropped) is never
answered from the picture made of the old one.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from functools import partial

from processors.ai.base import ImagePart
from processors.images import Original

PageInput = tuple[Original, ImagePart]
Key = tuple[str, bytes]


def input_bytes(made: PageInput) -> int:
    """What an entry holds in memory: the checks' RGB copy and the model's JPEG."""
    original, part = made
    return original.look.width * original.look.height * len(original.look.getbands()) + len(
        part.data
    )


class PageInputs:
    """A byte-bounded LRU of page inputs; concurrent requests for one entry share one making.
    ``counted`` hears ``made`` or ``reused`` for every request (``PipelineMetrics.page_input``)."""

    def __init__(self, budget_bytes: int, counted: Callable[[str], None] | None = None) -> None:
        self.budget_bytes = budget_bytes
        self._counted = counted or (lambda outcome: None)
        self._entries: OrderedDict[Key, tuple[PageInput, int]] = OrderedDict()
        self._held = 0
        self._making: dict[Key, asyncio.Task[PageInput]] = {}

    @property
    def held_bytes(self) -> int:
        return self._held

    def __contains__(self, key: Key) -> bool:
        return key in self._entries

    async def get(self, key: Key, make: Callable[[], Awaitable[PageInput]]) -> PageInput:
        """The entry for ``key``, made by ``make`` when it is not held; a failure is not kept,
        so the next request makes it again."""
        held = self._entries.get(key)
        if held is not None:
            self._entries.move_to_end(key)
            self._counted("reused")
            return held[0]
        making = self._making.get(key)
        if making is None:
            making = asyncio.ensure_future(make())
            self._making[key] = making
            making.add_done_callback(partial(self._made, key))
            self._counted("made")
        else:
            self._counted("reused")
        # Shielded: one order cancelled (its lease lost) must not cancel the making that other
        # orders of the book wait for.
        return await asyncio.shield(making)

    def _made(self, key: Key, making: asyncio.Task[PageInput]) -> None:
        del self._making[key]
        if making.cancelled():
            return
        if making.exception() is not None:  # retrieved here, so asyncio does not log it unseen
            return
        made = making.result()
        size = input_bytes(made)
        if size > self.budget_bytes:
            return
        self._entries[key] = (made, size)
        self._held += size
        while self._held > self.budget_bytes:
            _, (_, evicted) = self._entries.popitem(last=False)
            self._held -= evicted
