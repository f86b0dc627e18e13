"""The metrics the processors and the AI wrapper report (the daemon's are in test_server.py)."""

from __future__ import annotations

import asyncio
import math

import pytest

from monitor.metrics import Metrics
from processors.ai.base import ImagePart
from processors.ai.gemini import GeminiAI
from processors.ai.limits import LimitedAI
from processors.analysis_models import ChildAnalysis
from testkit.fakes.gemini_server import FakeGemini, rate_limited, solid_jpeg


async def no_wait(seconds: float) -> None:
    await asyncio.sleep(0)


@pytest.mark.filterwarnings("ignore:Inheritance class AiohttpClientSession")
async def test_limited_ai_hooks_feed_call_latency_and_retries() -> None:
    metrics = Metrics()
    async with FakeGemini() as fake:
        fake.enqueue(rate_limited("1s"))
        gemini = GeminiAI(
            fake.api_key,
            analysis_model=fake.ANALYSIS_MODEL,
            image_models=[fake.IMAGE_MODEL],
            base_url=fake.base_url,
        )
        ai = LimitedAI(
            gemini,
            max_concurrency=2,
            requests_per_minute=None,
            max_retries=2,
            on_call=metrics.observe_ai_call,
            on_retry=metrics.ai_retry,
            sleep=no_wait,
        )
        photo = ImagePart(solid_jpeg((64, 64), (220, 170, 140)))
        await ai.analyze(prompt="Look at the child.", images=[photo], schema=ChildAnalysis)
        await ai.aclose()

    value = metrics.registry.get_sample_value
    assert value("book_monitor_ai_retries_total", {"reason": "ai_rate_limited"}) == 1
    calls = "book_monitor_ai_call_duration_seconds_count"
    assert value(calls, {"kind": "analyze", "model": fake.ANALYSIS_MODEL, "outcome": "ok"}) == 1
    assert value(calls, {"kind": "analyze", "model": "unknown", "outcome": "ai_rate_limited"}) == 1


def test_pages_and_pdf_builds_are_counted() -> None:
    metrics = Metrics()
    for outcome in ("ok", "ok", "ai_blocked"):
        metrics.page_generated(outcome)
    metrics.pdf_built(1.5)

    value = metrics.registry.get_sample_value
    assert value("book_monitor_pages_generated_total", {"outcome": "ok"}) == 2
    assert value("book_monitor_pages_generated_total", {"outcome": "ai_blocked"}) == 1
    assert value("book_monitor_pdf_build_duration_seconds_count") == 1
    assert value("book_monitor_pdf_build_duration_seconds_sum") == 1.5


def test_each_metrics_object_counts_for_itself() -> None:
    first, second = Metrics(), Metrics()
    first.items_claimed(2)
    assert first.registry.get_sample_value("book_monitor_items_claimed_total") == 2
    assert second.registry.get_sample_value("book_monitor_items_claimed_total") == 0


def test_queue_depth_age_starts_unknown() -> None:
    metrics = Metrics()
    assert metrics.queue_depth_age() == math.inf
    metrics.set_queue_depth(3)
    assert metrics.queue_depth_age() < math.inf
    assert metrics.registry.get_sample_value("book_monitor_queue_depth") == 3


@pytest.mark.parametrize(
    ("accept", "content_type"),
    [
        (None, "text/plain; version=0.0.4"),
        ("application/openmetrics-text; version=1.0.0", "application/openmetrics-text"),
    ],
)
def test_render_negotiates_the_format(accept: str | None, content_type: str) -> None:
    metrics = Metrics()
    metrics.items_claimed(1)
    body, served_as = metrics.render(accept)
    assert served_as.startswith(content_type)
    assert b"book_monitor_items_claimed_total 1.0" in body
