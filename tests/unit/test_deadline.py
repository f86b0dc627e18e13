"""A page's deadline counts its own work, not its waits for a turn (processors/deadline.py).

No clock decides these tests: a deadline of 0 passes at the event loop's next turn unless it is
stopped, and a stopped one shows as ``when() is None`` on the ``asyncio.Timeout`` it yields,
read while the waiter is known to be blocked (on an event the test holds).
"""

from __future__ import annotations

import asyncio

import pytest

from processors.ai.base import EditRequest, GeneratedImage, ImagePart, Usage
from processors.ai.limits import LimitedAI
from processors.deadline import deadline, waiting_turn
from processors.page_pool import PagePool

REQUEST = EditRequest(
    prompt="p",
    base=ImagePart(b"base"),
    child_photo=ImagePart(b"photo"),
    aspect_ratio="1:1",
    child_name="Mia",
)


async def settle() -> None:
    """Let every other task run until it blocks."""
    for _ in range(20):
        await asyncio.sleep(0)


async def test_work_past_the_deadline_raises_timeout() -> None:
    with pytest.raises(TimeoutError):
        async with deadline(0):
            await settle()


async def test_a_wait_for_a_turn_stops_the_deadline_and_the_rest_still_counts() -> None:
    waited = []
    with pytest.raises(TimeoutError):
        async with deadline(0) as timeout:
            async with waiting_turn():
                await settle()  # a running deadline of 0 would have passed here
                assert timeout.when() is None
            waited.append(timeout.when())
            await settle()  # and here it passes
    assert waited and waited[0] is not None


async def test_waiting_turn_outside_a_deadline_is_a_plain_wait() -> None:
    async with waiting_turn():
        await settle()


class HeldImages:
    """An image model whose calls end when the test says so."""

    def __init__(self) -> None:
        self.started = asyncio.Event()
        self.release = asyncio.Event()

    async def generate_image(self, request: EditRequest, usage: Usage | None) -> GeneratedImage:
        self.started.set()
        await self.release.wait()
        return GeneratedImage(b"jpeg", "image/jpeg", "fake-image-model")


async def page_call(ai: LimitedAI, timeouts: list[asyncio.Timeout]) -> GeneratedImage:
    async with deadline(3600) as timeout:
        timeouts.append(timeout)
        return await ai.generate_image(REQUEST)


async def test_a_call_waiting_for_a_busy_ai_slot_has_its_deadline_stopped() -> None:
    inner = HeldImages()
    ai = LimitedAI(inner, max_concurrency=1, requests_per_minute=None, max_retries=0)  # type: ignore[arg-type]
    other = asyncio.ensure_future(ai.generate_image(REQUEST))  # another order's call
    await inner.started.wait()
    timeouts: list[asyncio.Timeout] = []
    waiting = asyncio.ensure_future(page_call(ai, timeouts))
    await settle()

    assert not waiting.done() and timeouts[0].when() is None
    inner.release.set()
    await other
    await asyncio.wait_for(waiting, 10)


async def test_a_call_waiting_for_the_quota_window_has_its_deadline_stopped() -> None:
    inner = HeldImages()
    inner.release.set()
    window_over = asyncio.Event()
    waits: list[float] = []

    async def sleep(seconds: float) -> None:  # the pacer's wait for the next window
        waits.append(seconds)
        await window_over.wait()

    ai = LimitedAI(
        inner,  # type: ignore[arg-type]
        max_concurrency=4,
        requests_per_minute=1,  # one call per window: the second waits for the next one
        max_retries=0,
        sleep=sleep,
    )
    await ai.generate_image(REQUEST)
    timeouts: list[asyncio.Timeout] = []
    waiting = asyncio.ensure_future(page_call(ai, timeouts))
    await settle()

    assert len(waits) == 1 and timeouts[0].when() is None
    window_over.set()
    await asyncio.wait_for(waiting, 10)


async def test_a_redraw_waiting_for_its_orders_page_slot_has_its_deadline_stopped() -> None:
    pool = PagePool(1, lambda: None)
    busy = pool.slot()
    await busy.take()
    timeouts: list[asyncio.Timeout] = []

    async def redraw() -> None:
        async with deadline(3600) as timeout:
            timeouts.append(timeout)
            async with pool.slot().drawing():
                pass

    waiting = asyncio.ensure_future(redraw())
    await settle()

    assert not waiting.done() and timeouts[0].when() is None
    busy.release()
    await asyncio.wait_for(waiting, 10)
