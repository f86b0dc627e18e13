"""A page's deadline counts its own work, not its wait for a turn (processors/deadline.py).

The waits here are real but one-sided: a paused deadline must survive a wait several times its
length, and a running one must fire well before the work it bounds would end. The waits are
released by events, not by the clock, wherever the order of events decides the outcome.
"""

from __future__ import annotations

import asyncio

import pytest

from processors.ai.base import EditRequest, GeneratedImage, ImagePart, Usage
from processors.ai.limits import LimitedAI
from processors.deadline import deadline, waiting_turn
from processors.page_pool import PagePool

SHORT = 0.2  # the deadline
LONG = 1.0  # a wait five times as long


async def test_work_past_the_deadline_raises_timeout() -> None:
    with pytest.raises(TimeoutError):
        async with deadline(SHORT):
            await asyncio.sleep(LONG)


async def test_a_wait_for_a_turn_is_not_counted() -> None:
    async with deadline(SHORT):
        async with waiting_turn():
            await asyncio.sleep(LONG)
        await asyncio.sleep(SHORT / 4)  # what is left of the deadline is still there


async def test_the_deadline_runs_again_after_the_wait() -> None:
    with pytest.raises(TimeoutError):
        async with deadline(SHORT):
            async with waiting_turn():
                await asyncio.sleep(SHORT / 2)
            await asyncio.sleep(LONG)


async def test_waiting_turn_outside_a_deadline_is_a_plain_wait() -> None:
    async with waiting_turn():
        await asyncio.sleep(0)


class HeldImages:
    """An image model whose calls end when the test says so."""

    def __init__(self) -> None:
        self.started = asyncio.Event()
        self.release = asyncio.Event()

    async def generate_image(self, request: EditRequest, usage: Usage | None) -> GeneratedImage:
        self.started.set()
        await self.release.wait()
        return GeneratedImage(b"jpeg", "image/jpeg", "fake-image-model")


REQUEST = EditRequest(
    prompt="p",
    base=ImagePart(b"base"),
    child_photo=ImagePart(b"photo"),
    aspect_ratio="1:1",
    child_name="Mia",
)


async def test_a_call_waiting_for_a_busy_ai_slot_keeps_its_deadline() -> None:
    """One AI slot, held by another order's call for five deadlines' worth: the waiting page's
    call starts late and still gets its whole deadline."""
    inner = HeldImages()
    ai = LimitedAI(inner, max_concurrency=1, requests_per_minute=None, max_retries=0)  # type: ignore[arg-type]
    other = asyncio.ensure_future(ai.generate_image(REQUEST))
    await inner.started.wait()

    async def page() -> GeneratedImage:
        async with deadline(SHORT):
            return await ai.generate_image(REQUEST)

    waiting = asyncio.ensure_future(page())
    await asyncio.sleep(LONG)
    assert not waiting.done()  # still waiting for the slot, its deadline stopped
    inner.release.set()
    assert (await other).model == (await waiting).model == "fake-image-model"


async def test_a_paced_call_keeps_its_deadline_while_the_quota_window_refills() -> None:
    inner = HeldImages()
    inner.release.set()
    window = 1.5 * LONG  # one call per window: the second waits a window for its token
    ai = LimitedAI(
        inner,  # type: ignore[arg-type]
        max_concurrency=4,
        requests_per_minute=60 / window,
        rate_window_s=window,
        max_retries=0,
    )
    await ai.generate_image(REQUEST)
    async with deadline(SHORT):
        assert (await ai.generate_image(REQUEST)).model == "fake-image-model"


async def test_a_redraw_waiting_for_the_orders_page_slot_keeps_its_deadline() -> None:
    pool = PagePool(1, lambda: None)
    busy = pool.slot()
    await busy.take()

    async def redraw() -> None:
        slot = pool.slot()
        async with deadline(SHORT), slot.drawing():
            pass

    waiting = asyncio.ensure_future(redraw())
    await asyncio.sleep(LONG)
    assert not waiting.done()
    busy.release()
    await waiting
