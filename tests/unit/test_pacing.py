"""The client pacer (processors.ai.limits): a token bucket of one quota window, in virtual time.

A fake clock and a fake sleep stand in for time: call starts are counted against the fake
clock, so the tests check the pacer's decisions and never measure real time.
"""

from __future__ import annotations

import asyncio
import dataclasses
import heapq
import itertools
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from monitor.config import ConfigError, Settings
from processors.ai.base import Analysis, EditRequest, GeneratedImage, ImagePart, ModelT, Usage
from processors.ai.limits import RETURN_MARGIN, LimitedAI
from processors.analysis_models import ChildAnalysis
from processors.queue_order import Place, served_as

#: A spent token comes back this many windows after its start (a small margin late).
LATE = 1 + RETURN_MARGIN


class VirtualTime:
    """A clock that jumps to the next sleeper's wake-up once every task is waiting."""

    def __init__(self) -> None:
        self.now = 0.0
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._order = itertools.count()

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self.now + seconds, next(self._order), future))
        await future

    async def run(self, *jobs: Awaitable[Any]) -> None:
        tasks = [asyncio.ensure_future(job) for job in jobs]
        while not all(t.done() for t in tasks):
            for _ in range(10):  # let every runnable task reach its next sleep
                await asyncio.sleep(0)
            if self._sleepers:
                wake, _, future = heapq.heappop(self._sleepers)
                self.now = max(self.now, wake)
                future.set_result(None)
        for t in tasks:
            t.result()


class StartLog:
    """An image AI whose calls record their start on the virtual clock and take ``call_s``."""

    def __init__(self, time: VirtualTime, call_s: float = 0.0) -> None:
        self.time = time
        self.call_s = call_s
        self.starts: dict[str, list[float]] = {"analyze": [], "generate_image": []}
        #: Whose image calls started, in start order (the request's child name).
        self.drawn_for: list[str] = []

    async def check_models(self) -> list[str]:
        return []

    async def analyze(
        self,
        *,
        prompt: str,
        images: list[ImagePart],
        schema: type[ModelT],
        usage: Usage | None = None,
    ) -> Analysis[ModelT]:
        self.starts["analyze"].append(self.time.now)
        await self.time.sleep(self.call_s)
        return Analysis(value=schema.model_construct(), model="fake-analysis", usage=Usage())

    async def generate_image(
        self, request: EditRequest, usage: Usage | None = None
    ) -> GeneratedImage:
        self.starts["generate_image"].append(self.time.now)
        self.drawn_for.append(request.child_name)
        await self.time.sleep(self.call_s)
        return GeneratedImage(data=b"", mime_type="image/jpeg", model="fake-image", usage=Usage())

    async def aclose(self) -> None:
        return None


DRAW = EditRequest(
    prompt="Draw.",
    base=ImagePart(b""),
    child_photo=ImagePart(b""),
    aspect_ratio="1:1",
    child_name="Mia",
)


def paced(
    time: VirtualTime,
    inner: StartLog,
    rpm: float,
    window_s: float,
    slots: int,
    analysis_rpm: float | None = None,
) -> LimitedAI:
    return LimitedAI(
        inner,  # type: ignore[arg-type]
        max_concurrency=slots,
        requests_per_minute=rpm,
        analysis_requests_per_minute=analysis_rpm,
        rate_window_s=window_s,
        max_retries=0,
        sleep=time.sleep,
        clock=time.clock,
    )


def most_in_any_window(starts: list[float], window_s: float) -> int:
    """The most starts in any half-open span [s, s + window_s) (s ranging over the starts)."""
    ordered = sorted(starts)
    return max(sum(1 for t in ordered if s <= t < s + window_s) for s in ordered)


def worker(ai: LimitedAI, calls: int) -> Callable[[], Awaitable[None]]:
    async def run() -> None:
        for _ in range(calls):
            await ai.generate_image(DRAW)

    return run


async def test_a_whole_window_of_quota_starts_at_once() -> None:
    time = VirtualTime()
    inner = StartLog(time)
    ai = paced(time, inner, rpm=240, window_s=5.0, slots=100)  # 20 per 5 s window

    await time.run(*(ai.generate_image(DRAW) for _ in range(50)))

    starts = inner.starts["generate_image"]
    # Even spacing would have started one call at 0 and the next 0.25 s later.
    assert starts.count(0.0) == 20
    assert starts.count(5.0 * LATE) == 20
    assert starts.count(10.0 * LATE) == 10


async def test_the_long_run_rate_is_the_quota_and_no_window_holds_more() -> None:
    time = VirtualTime()
    inner = StartLog(time, call_s=0.5)
    # 8 slots of 0.5 s calls ask for 16 starts a second, four times the quota.
    ai = paced(time, inner, rpm=240, window_s=5.0, slots=8)

    await time.run(*(worker(ai, 25)() for _ in range(8)))

    starts = sorted(inner.starts["generate_image"])
    assert len(starts) == 200
    assert most_in_any_window(starts, 5.0) == 20
    # Every window from the first start on is filled to its quota: 20 starts per 5 s.
    for k in range(10):
        assert sum(1 for t in starts if t < 5.0 * LATE * (k + 1)) == 20 * (k + 1)


async def analyze(ai: LimitedAI) -> None:
    await ai.analyze(prompt="Look.", images=[], schema=ChildAnalysis)


async def test_analyses_have_their_own_bucket_and_rate() -> None:
    time = VirtualTime()
    inner = StartLog(time)
    # Images 2 per second; analyses, whose model has its own quota, 3 per second.
    ai = paced(time, inner, rpm=120, window_s=1.0, slots=100, analysis_rpm=180)

    await time.run(*(analyze(ai) for _ in range(6)), *(ai.generate_image(DRAW) for _ in range(4)))

    assert sorted(inner.starts["analyze"]) == [0.0, 0.0, 0.0, LATE, LATE, LATE]
    assert sorted(inner.starts["generate_image"]) == [0.0, 0.0, LATE, LATE]


async def test_analyses_are_not_paced_without_their_own_rate() -> None:
    time = VirtualTime()
    inner = StartLog(time)
    ai = paced(time, inner, rpm=60, window_s=1.0, slots=100)  # images: 1 per second

    await time.run(*(analyze(ai) for _ in range(5)), *(ai.generate_image(DRAW) for _ in range(3)))

    assert inner.starts["analyze"] == [0.0] * 5
    assert sorted(inner.starts["generate_image"]) == pytest.approx([0.0, LATE, 2 * LATE])


async def test_an_image_call_waiting_for_its_token_holds_no_slot() -> None:
    time = VirtualTime()
    inner = StartLog(time, call_s=0.1)
    # Two slots; images 1 per 5 s window. The second and third images wait for later windows.
    ai = paced(time, inner, rpm=12, window_s=5.0, slots=2)

    async def judge_after(delay: float) -> None:
        await time.sleep(delay)
        await analyze(ai)

    await time.run(*(ai.generate_image(DRAW) for _ in range(3)), judge_after(1.0))

    assert sorted(inner.starts["generate_image"]) == pytest.approx([0.0, 5 * LATE, 10 * LATE])
    # Had the waiting images held both slots, the judge call would have waited until 5.1 s.
    assert inner.starts["analyze"] == [1.0]


async def test_a_late_slot_never_crowds_a_window_beyond_its_quota() -> None:
    time = VirtualTime()
    inner = StartLog(time, call_s=3.0)
    # A bucket of 2 per 1 s window but one slot of 3 s calls: every start is late for its token.
    ai = paced(time, inner, rpm=120, window_s=1.0, slots=1)

    await time.run(*(ai.generate_image(DRAW) for _ in range(4)), *(analyze(ai) for _ in range(2)))

    starts = sorted(inner.starts["generate_image"])
    assert len(starts) == 4
    assert most_in_any_window(starts, 1.0) <= 2


async def test_a_quota_below_one_call_per_window_keeps_the_rate() -> None:
    time = VirtualTime()
    inner = StartLog(time)
    ai = paced(time, inner, rpm=6, window_s=5.0, slots=10)  # half a call per 5 s window

    await time.run(*(ai.generate_image(DRAW) for _ in range(3)))

    assert inner.starts["generate_image"] == pytest.approx([0.0, 10 * LATE, 20 * LATE])


async def draw_for(ai: LimitedAI, child: str, place: Place, calls: int) -> None:
    """An order's image calls, all at once, waiting at its place in the queue."""
    with served_as(place):
        request = dataclasses.replace(DRAW, child_name=child)
        await asyncio.gather(*(ai.generate_image(request) for _ in range(calls)))


async def test_the_oldest_order_gets_the_next_free_slot() -> None:
    time = VirtualTime()
    inner = StartLog(time, call_s=1.0)
    ai = LimitedAI(
        inner,  # type: ignore[arg-type]
        max_concurrency=2,
        requests_per_minute=None,
        max_retries=0,
        sleep=time.sleep,
        clock=time.clock,
    )

    async def later(delay: float, child: str, place: Place) -> None:
        await time.sleep(delay)
        await draw_for(ai, child, place, 2)

    # The newest order asks first and takes both slots; the oldest asks a moment later.
    await time.run(
        draw_for(ai, "Newest", ("10:03", "c"), 4),
        later(0.5, "Oldest", ("10:01", "a")),
        later(0.5, "Middle", ("10:02", "b")),
    )

    # Once the two calls in flight end, the oldest's two go first, then the middle's, and the
    # newest's other two last, although they were waiting longest.
    assert inner.drawn_for == ["Newest"] * 2 + ["Oldest"] * 2 + ["Middle"] * 2 + ["Newest"] * 2


async def test_the_oldest_order_gets_the_next_quota_token() -> None:
    time = VirtualTime()
    inner = StartLog(time)
    ai = paced(time, inner, rpm=24, window_s=5.0, slots=100)  # 2 starts per 5 s window

    async def later(delay: float) -> None:
        await time.sleep(delay)
        await draw_for(ai, "Oldest", ("10:01", "a"), 2)

    await time.run(draw_for(ai, "Newest", ("10:03", "c"), 6), later(1.0))

    # The newest order spent the first window; the oldest, waiting since 1 s, takes the second.
    assert inner.drawn_for == ["Newest"] * 2 + ["Oldest"] * 2 + ["Newest"] * 4
    assert sorted(inner.starts["generate_image"])[2:4] == pytest.approx([5 * LATE, 5 * LATE])


def test_the_rate_window_setting_defaults_to_a_minute_and_is_checked_by_name() -> None:
    base = {"DATABASE_URL": "postgresql://localhost/books", "AI_PROVIDER": "local"}
    assert Settings.from_env(base).ai_rate_window_seconds == 60.0
    assert Settings.from_env({**base, "AI_RATE_WINDOW_SECONDS": "5"}).ai_rate_window_seconds == 5.0
    with pytest.raises(ConfigError, match="AI_RATE_WINDOW_SECONDS"):
        Settings.from_env({**base, "AI_RATE_WINDOW_SECONDS": "0"})


def test_the_analysis_rate_is_its_own_setting_unset_by_default() -> None:
    base = {"DATABASE_URL": "postgresql://localhost/books", "AI_PROVIDER": "local"}
    assert Settings.from_env(base).ai_analysis_requests_per_minute is None
    both = {**base, "AI_REQUESTS_PER_MINUTE": "10", "AI_ANALYSIS_REQUESTS_PER_MINUTE": "1000"}
    settings = Settings.from_env(both)
    assert (settings.ai_requests_per_minute, settings.ai_analysis_requests_per_minute) == (10, 1000)
    with pytest.raises(ConfigError, match="AI_ANALYSIS_REQUESTS_PER_MINUTE"):
        Settings.from_env({**base, "AI_ANALYSIS_REQUESTS_PER_MINUTE": "-3"})
