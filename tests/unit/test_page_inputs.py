"""PageInputs: catalog page inputs made once per version of a file, within a byte budget."""

from __future__ import annotations

import asyncio

import pytest
from PIL import Image

from processors.ai.base import ImagePart
from processors.images import Original
from processors.page_inputs import PageInput, PageInputs, input_bytes

LOOK = Image.new("RGB", (10, 10))  # 300 bytes of pixels
ENTRY = 300 + 100


def made(tag: int) -> PageInput:
    return Original((100, 100), LOOK), ImagePart(bytes([tag]) * 100)


class Maker:
    """Counts how often each entry is made; ``gate`` holds the making until it is set."""

    def __init__(self) -> None:
        self.calls: list[int] = []
        self.gate = asyncio.Event()
        self.gate.set()

    def of(self, tag: int):
        async def make() -> PageInput:
            self.calls.append(tag)
            await self.gate.wait()
            return made(tag)

        return make


def key(n: int, digest: bytes = b"d") -> tuple[str, bytes]:
    return f"books/b/{n:02d}.jpg", digest


def test_an_entry_counts_its_pixels_and_its_jpeg() -> None:
    assert input_bytes(made(1)) == ENTRY


async def test_an_entry_is_made_once_and_then_served() -> None:
    cache, maker = PageInputs(10 * ENTRY), Maker()
    first = await cache.get(key(1), maker.of(1))
    again = await cache.get(key(1), maker.of(1))
    assert again is first
    assert maker.calls == [1]
    assert cache.held_bytes == ENTRY


async def test_a_file_with_other_bytes_under_the_same_key_is_made_again() -> None:
    cache, maker = PageInputs(10 * ENTRY), Maker()
    old = await cache.get(key(1, b"old"), maker.of(1))
    new = await cache.get(key(1, b"new"), maker.of(2))
    assert old[1].data != new[1].data
    assert maker.calls == [1, 2]


async def test_the_least_recently_used_entry_leaves_when_the_budget_is_full() -> None:
    cache, maker = PageInputs(2 * ENTRY), Maker()
    await cache.get(key(1), maker.of(1))
    await cache.get(key(2), maker.of(2))
    await cache.get(key(1), maker.of(1))  # 1 is now the most recently used
    await cache.get(key(3), maker.of(3))
    assert key(1) in cache and key(3) in cache
    assert key(2) not in cache
    assert cache.held_bytes == 2 * ENTRY


async def test_a_zero_budget_keeps_nothing() -> None:
    cache, maker = PageInputs(0), Maker()
    await cache.get(key(1), maker.of(1))
    await cache.get(key(1), maker.of(1))
    assert maker.calls == [1, 1]
    assert cache.held_bytes == 0


async def test_orders_asking_together_share_one_making() -> None:
    cache, maker = PageInputs(10 * ENTRY), Maker()
    maker.gate.clear()
    waiting = [asyncio.ensure_future(cache.get(key(1), maker.of(1))) for _ in range(3)]
    await asyncio.sleep(0)
    maker.gate.set()
    results = await asyncio.gather(*waiting)
    assert maker.calls == [1]
    assert all(r is results[0] for r in results)


async def test_a_failure_is_not_kept() -> None:
    cache = PageInputs(10 * ENTRY)

    async def broken() -> PageInput:
        raise ValueError("does not decode")

    with pytest.raises(ValueError):
        await cache.get(key(1), broken)
    assert key(1) not in cache
    maker = Maker()
    await cache.get(key(1), maker.of(1))
    assert maker.calls == [1]


async def test_one_waiter_cancelled_leaves_the_making_to_the_others() -> None:
    cache, maker = PageInputs(10 * ENTRY), Maker()
    maker.gate.clear()
    cancelled = asyncio.ensure_future(cache.get(key(1), maker.of(1)))
    kept = asyncio.ensure_future(cache.get(key(1), maker.of(1)))
    await asyncio.sleep(0)
    cancelled.cancel()
    maker.gate.set()
    assert (await kept)[1].data == made(1)[1].data
    assert cancelled.cancelled()
    assert key(1) in cache


async def test_each_request_is_counted_made_or_reused() -> None:
    heard: list[str] = []
    cache, maker = PageInputs(10 * ENTRY, heard.append), Maker()
    maker.gate.clear()
    together = [asyncio.ensure_future(cache.get(key(1), maker.of(1))) for _ in range(2)]
    await asyncio.sleep(0)
    maker.gate.set()
    await asyncio.gather(*together)
    await cache.get(key(1), maker.of(1))
    assert heard == ["made", "reused", "reused"]
