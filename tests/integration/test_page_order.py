"""The page pool's scheduling through the real pipeline (processors/page_pool.py, book.py).

The judge runs outside a page's image slot, so another page is drawn while one is judged; pages
in progress are bounded apart from the slots; with ``COVER_FIRST=false`` the cover is drawn in
the pool beside the first pages, pages drawn after it passed its checks carry it as identity
reference, and every page is judged against it. Each fake call is recorded with the moment it started and ended at the fake (its HTTP
boundary), and the tests assert the order of those events, never a duration.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import psycopg
import pytest
from aiohttp import web

from monitor.metrics import Metrics
from processors.layout import generated_cover_path
from testkit.fakes.gemini_server import FakeGemini, RecordedRequest, delayed, judge_verdict
from tests.support.factories import item_row
from tests.support.pipeline_env import (
    PipelineEnv,
    checkpoints,
    drawn_identity_part,
    identity_part,
)

pytestmark = pytest.mark.filterwarnings("ignore:Inheritance class AiohttpClientSession")


@dataclass(frozen=True)
class Span:
    target: object
    start: float
    end: float
    request: RecordedRequest


@pytest.fixture
async def env(database_url: str, tmp_path) -> AsyncIterator[PipelineEnv]:
    async with PipelineEnv.open(database_url, tmp_path) as environment:
        yield environment


def record(env: PipelineEnv) -> list[Span]:
    """Every answered call with when it started and ended at the fake, in the order they ended."""
    spans: list[Span] = []
    inner = env.fake.default

    async def timed(fake: FakeGemini, request: RecordedRequest) -> web.Response:
        start = time.monotonic()
        try:
            return await inner(fake, request)
        finally:
            spans.append(Span(env.target(request), start, time.monotonic(), request))

    env.fake.default = timed
    return spans


def one(spans: list[Span], target: object) -> Span:
    (span,) = [s for s in spans if s.target == target]
    return span


async def test_a_page_is_drawn_while_the_page_before_it_is_judged(
    env: PipelineEnv, db: psycopg.Connection
) -> None:
    book = await env.add_book(pages=3, without_character=())
    item = await env.add_item(book.id)
    env.script.on("judge_1", delayed(0.5))
    spans = record(env)
    processor = await env.processor(QA_MODE="judge", PAGE_CONCURRENCY="1")

    assert await env.run_once(processor) == 1

    assert item_row(db, item)["generation_status"] == "completed"
    page_1, judge_1, page_2 = one(spans, 1), one(spans, "judge_1"), one(spans, 2)
    # One slot: with the judge inside it, page 2 could only start after page 1 was judged.
    assert page_1.end <= judge_1.start
    assert page_1.end <= page_2.start < judge_1.end
    images = [s for s in spans if s.request.schema_kind is None]
    for a in images:  # the slot still bounds image calls: never two at once
        assert not any(b is not a and b.start < a.end and a.start < b.end for b in images)


async def test_pages_in_progress_are_bounded_apart_from_the_slots(
    env: PipelineEnv, db: psycopg.Connection
) -> None:
    book = await env.add_book(pages=4, without_character=())
    item = await env.add_item(book.id)
    for page in (1, 2):
        env.script.on(f"judge_{page}", delayed(0.5))
    spans = record(env)
    # One slot: two pages in progress (processors/page_pool.py IN_PROGRESS_PER_SLOT).
    processor = await env.processor(QA_MODE="judge", PAGE_CONCURRENCY="1")

    assert await env.run_once(processor) == 1

    assert item_row(db, item)["generation_status"] == "completed"
    judge_1, judge_2 = one(spans, "judge_1"), one(spans, "judge_2")
    assert one(spans, 2).start < judge_1.end  # the second page in progress drew meanwhile
    # The slot was free, but the third page waited until the first was judged (and saved).
    assert one(spans, 3).start >= judge_1.end
    assert one(spans, 4).start >= judge_2.end


async def test_pages_first_starts_pages_beside_the_cover_and_later_pages_carry_it(
    env: PipelineEnv, db: psycopg.Connection
) -> None:
    book = await env.add_book(pages=8, without_character=())
    item = await env.add_item(book.id)
    env.script.on("cover", delayed(0.6))
    for page in range(1, 9):
        env.script.on(page, delayed(0.2))
    spans = record(env)
    processor = await env.processor(QA_MODE="judge", PAGE_CONCURRENCY="2", COVER_FIRST="false")

    assert await env.run_once(processor) == 1

    assert item_row(db, item)["generation_status"] == "completed"
    cover = one(spans, "cover")
    page_1 = one(spans, 1)
    assert page_1.start < cover.end  # the first page did not wait for the cover
    reference = drawn_identity_part(cover.request, book.cover)
    with_cover = []
    for number in range(1, 9):
        drawn, judged = one(spans, number), one(spans, f"judge_{number}")
        carried = drawn.request.images[2:]
        assert carried in ([], [reference]), number
        if carried:
            # The drawn cover is a reference from the moment it is drawn (before its judge).
            assert drawn.start >= cover.end, number
            with_cover.append(number)
        # Drawn with it or not, every page is judged against the cover: its judge waited.
        assert judged.request.images[3:] == [reference], number
        assert judged.start >= cover.end, number
    assert 1 not in with_cover
    assert 8 in with_cover


async def test_a_page_drawn_before_the_cover_is_redrawn_with_it(
    env: PipelineEnv, db: psycopg.Connection
) -> None:
    book = await env.add_book(pages=2, without_character=())
    item = await env.add_item(book.id)
    env.script.on("cover", delayed(0.4))
    # Judged against the cover it was not drawn with, page 1 is not the cover's character.
    env.script.on("judge_1", judge_verdict(likeness_score=2))
    spans = record(env)
    metrics = Metrics()
    processor = await env.processor(
        metrics=metrics, QA_MODE="judge", PAGE_CONCURRENCY="3", COVER_FIRST="false"
    )

    assert await env.run_once(processor) == 1

    assert item_row(db, item)["generation_status"] == "completed"
    cover = one(spans, "cover")
    reference = drawn_identity_part(cover.request, book.cover)
    first, redraw = [s for s in spans if s.target == 1]
    assert first.start < cover.end and first.request.images[2:] == []
    assert redraw.request.images[2:] == [reference]
    assert [s.request.images[3:] for s in spans if s.target == "judge_1"] == [[reference]] * 2
    # What the redraw cost is counted by what the drawing was made with, and on the page.
    saved = checkpoints(db, item)
    assert saved[1]["qa_verdict"]["drawn_with"] == "with_cover"
    assert saved[1]["qa_verdict"]["redraws"] == 1

    def verdicts(outcome: str, reference: str) -> float | None:
        labels = {"outcome": outcome, "reference": reference}
        return metrics.registry.get_sample_value("book_monitor_quality_verdicts_total", labels)

    assert verdicts("failed", "without_cover") == 1
    assert verdicts("passed", "with_cover") == 1
    assert verdicts("passed", "cover_itself") == 1


async def test_cover_first_draws_every_page_with_the_cover(
    env: PipelineEnv, db: psycopg.Connection
) -> None:
    book = await env.add_book(pages=4, without_character=())
    item = await env.add_item(book.id)
    spans = record(env)
    processor = await env.processor(QA_MODE="judge", COVER_FIRST="true")

    assert await env.run_once(processor) == 1

    assert item_row(db, item)["generation_status"] == "completed"
    cover_judged = one(spans, "judge_cover")
    reference = identity_part(env.stored(generated_cover_path(item)))
    for number in range(1, 5):
        drawn = one(spans, number)
        assert drawn.start >= cover_judged.end
        assert drawn.request.images[2:] == [reference]


async def test_a_cover_that_fails_for_good_beside_the_pages_starts_no_new_page(
    env: PipelineEnv, db: psycopg.Connection
) -> None:
    book = await env.add_book(pages=6, without_character=())
    item = await env.add_item(book.id)
    env.script.on("judge_cover", judge_verdict(likeness_score=1))
    for page in range(1, 7):
        env.script.on(page, delayed(0.3))
    spans = record(env)
    processor = await env.processor(
        QA_MODE="judge", PAGE_CONCURRENCY="2", COVER_FIRST="false", QA_MAX_REDRAWS="0"
    )

    await env.run_once(processor)

    row = item_row(db, item)
    assert (row["generation_status"], row["error_code"]) == ("failed", "quality_check_failed")
    verdict = one(spans, "judge_cover")
    drawn = [s for s in spans if isinstance(s.target, int)]
    assert drawn, "a page was drawn beside the cover"
    # Nothing new after the cover failed; what was in flight finished and is checkpointed.
    assert all(s.start < verdict.end for s in drawn)
    assert sorted(checkpoints(db, item)) == sorted(s.target for s in drawn)
