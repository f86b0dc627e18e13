"""Process-wide limits around the gemini adapter, against the local fake server.

Backoff and pacing sleeps go through an injected ``sleep`` that records the delays it is asked
for and returns at once: the tests check the decisions, never the clock.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from processors.ai.base import AIConfigError, AIUnavailable, ContentBlocked, EditRequest, ImagePart
from processors.ai.gemini import GeminiAI
from processors.ai.limits import LimitedAI
from processors.analysis_models import ChildAnalysis
from testkit.fakes.gemini_server import (
    FakeGemini,
    delayed,
    finish_reason,
    rate_limited,
    solid_jpeg,
    unavailable,
)

PHOTO = ImagePart(solid_jpeg((64, 64), (220, 170, 140)))

pytestmark = pytest.mark.filterwarnings("ignore:Inheritance class AiohttpClientSession")


class Recorder:
    """Collects what LimitedAI reports through its hooks and its sleep."""

    def __init__(self) -> None:
        self.sleeps: list[float] = []
        self.retries: list[str] = []
        self.calls: list[tuple[str, str, float, str]] = []

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        await asyncio.sleep(0)

    def on_retry(self, reason: str) -> None:
        self.retries.append(reason)

    def on_call(self, kind: str, model: str, seconds: float, outcome: str) -> None:
        self.calls.append((kind, model, seconds, outcome))


@pytest.fixture
async def fake() -> AsyncIterator[FakeGemini]:
    async with FakeGemini() as server:
        yield server


@pytest.fixture
async def gemini(fake: FakeGemini) -> AsyncIterator[GeminiAI]:
    adapter = GeminiAI(
        fake.api_key,
        analysis_model=fake.ANALYSIS_MODEL,
        image_models=[fake.IMAGE_MODEL],
        timeout_seconds=5,
        base_url=fake.base_url,
    )
    yield adapter
    await adapter.aclose()


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


def limited(inner: GeminiAI, recorder: Recorder, **overrides: Any) -> LimitedAI:
    options: dict[str, Any] = {
        "max_concurrency": 8,
        "requests_per_minute": None,
        "max_retries": 3,
        "backoff_base": 0.01,
        "backoff_max": 60.0,
        "on_retry": recorder.on_retry,
        "on_call": recorder.on_call,
        "sleep": recorder.sleep,
    }
    options.update(overrides)
    return LimitedAI(inner, **options)


async def analyze(ai: LimitedAI) -> ChildAnalysis:
    result = await ai.analyze(prompt="Look at the child.", images=[PHOTO], schema=ChildAnalysis)
    return result.value


async def test_rate_limit_is_retried_after_the_server_delay(
    fake: FakeGemini, gemini: GeminiAI, recorder: Recorder
) -> None:
    fake.enqueue(rate_limited("3s"))

    value = await analyze(limited(gemini, recorder))

    assert value.face_count == 1
    assert [r.status for r in fake.generate_requests()] == [429, 200]
    assert recorder.retries == ["ai_rate_limited"]
    assert recorder.sleeps == [3.0]  # the server's delay, longer than the 0.01 s backoff
    assert [(kind, model, outcome) for kind, model, _, outcome in recorder.calls] == [
        ("analyze", "unknown", "ai_rate_limited"),
        ("analyze", fake.ANALYSIS_MODEL, "ok"),
    ]


async def test_backoff_grows_exponentially_with_bounded_jitter(
    fake: FakeGemini, gemini: GeminiAI, recorder: Recorder
) -> None:
    fake.enqueue(unavailable(), unavailable(), unavailable())

    await analyze(limited(gemini, recorder, backoff_base=1.0))

    assert len(recorder.sleeps) == 3
    for attempt, delay in enumerate(recorder.sleeps):
        assert 2**attempt <= delay <= 2**attempt + 1.0


async def test_gives_up_after_max_retries(
    fake: FakeGemini, gemini: GeminiAI, recorder: Recorder
) -> None:
    fake.enqueue(*[unavailable()] * 3)

    with pytest.raises(AIUnavailable):
        await analyze(limited(gemini, recorder, max_retries=2))
    assert len(fake.generate_requests()) == 3
    assert recorder.retries == ["ai_unavailable", "ai_unavailable"]


async def test_server_delay_beyond_backoff_max_goes_back_to_the_queue(
    fake: FakeGemini, gemini: GeminiAI, recorder: Recorder
) -> None:
    fake.enqueue(rate_limited("3600s"))

    with pytest.raises(AIUnavailable) as caught:
        await analyze(limited(gemini, recorder, backoff_max=60.0))
    assert caught.value.retry_after == 3600.0
    assert len(fake.generate_requests()) == 1
    assert recorder.sleeps == []


async def test_terminal_errors_are_not_retried(
    fake: FakeGemini, gemini: GeminiAI, recorder: Recorder
) -> None:
    fake.enqueue(finish_reason("SAFETY"))

    with pytest.raises(ContentBlocked):
        await analyze(limited(gemini, recorder))
    assert len(fake.generate_requests()) == 1
    assert recorder.retries == []


async def test_config_errors_are_not_retried_in_process(
    fake: FakeGemini, recorder: Recorder
) -> None:
    wrong_key = GeminiAI(
        "wrong-key",
        analysis_model=fake.ANALYSIS_MODEL,
        image_models=[fake.IMAGE_MODEL],
        base_url=fake.base_url,
    )

    with pytest.raises(AIConfigError):
        await analyze(limited(wrong_key, recorder))
    await wrong_key.aclose()
    assert len(fake.generate_requests()) == 1


async def test_calls_in_flight_never_exceed_max_concurrency(
    fake: FakeGemini, gemini: GeminiAI, recorder: Recorder
) -> None:
    fake.default = delayed(0.25)  # long enough for the calls to overlap on a busy machine
    ai = limited(gemini, recorder, max_concurrency=2)

    values = await asyncio.gather(*(analyze(ai) for _ in range(6)))

    assert len(values) == 6
    assert fake.peak_in_flight == 2


async def test_requests_beyond_the_window_quota_wait_for_the_next_window(
    fake: FakeGemini, gemini: GeminiAI, recorder: Recorder
) -> None:
    # 120 analyses per minute in a 1 s window: a bucket of two starts.
    ai = limited(gemini, recorder, analysis_requests_per_minute=120, rate_window_s=1.0)

    await asyncio.gather(*(analyze(ai) for _ in range(3)))

    assert len(fake.generate_requests()) == 3
    # The first two start at once (the window's burst); the third waits about a second.
    assert sorted(recorder.sleeps) == pytest.approx([1.0], abs=0.5)


async def test_analyses_and_images_are_paced_apart(
    fake: FakeGemini, gemini: GeminiAI, recorder: Recorder
) -> None:
    # Gemini's quotas are per model: an analysis must not take the image model's paced turn.
    ai = limited(
        gemini,
        recorder,
        requests_per_minute=60,  # images: 1 per second
        analysis_requests_per_minute=60,  # analyses: 1 per second, a bucket of their own
        rate_window_s=1.0,
    )
    draw = EditRequest(
        prompt="Draw the child.",
        base=PHOTO,
        child_photo=PHOTO,
        aspect_ratio="1:1",
        child_name="Mia",
    )

    await analyze(ai)
    await ai.generate_image(draw)
    await analyze(ai)
    await ai.generate_image(draw)

    assert len(fake.generate_requests()) == 4
    # Each kind waits only for its own previous start: the two second calls, about a second each.
    assert sorted(recorder.sleeps) == pytest.approx([1.0, 1.0], abs=0.5)


def test_limits_are_validated(gemini: GeminiAI) -> None:
    with pytest.raises(ValueError, match="max_concurrency"):
        LimitedAI(gemini, max_concurrency=0, requests_per_minute=None, max_retries=1)
    with pytest.raises(ValueError, match="requests_per_minute"):
        LimitedAI(gemini, max_concurrency=1, requests_per_minute=0, max_retries=1)
    with pytest.raises(ValueError, match="analysis_requests_per_minute"):
        LimitedAI(
            gemini,
            max_concurrency=1,
            requests_per_minute=None,
            analysis_requests_per_minute=-1,
            max_retries=1,
        )
    with pytest.raises(ValueError, match="rate_window_s"):
        LimitedAI(gemini, max_concurrency=1, requests_per_minute=60, max_retries=1, rate_window_s=0)
