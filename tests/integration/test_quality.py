"""The quality judge through the real pipeline: fake Gemini at its HTTP boundary, real Postgres.

A page the judge scores low is drawn again with a prompt naming the problem; one that stays low
fails the item (``quality_check_failed``) or, under ``QA_ON_FAIL=review``, completes flagged; a
judged checkpoint is never judged or drawn again when the item resumes, and a drawing whose judge
never answered is judged again, not drawn again (its draft, migrations/021).
"""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from pathlib import Path

import psycopg
import pytest
from PIL import Image, ImageChops, ImageStat

from processors.files import ParkedBytes
from processors.qa import QualityCheckFailed
from testkit.fakes.gemini_server import RecordedRequest, judge_verdict, tinted_copy, unavailable
from tests.support.factories import item_row
from tests.support.open_files import open_files_under
from tests.support.pipeline_env import PipelineEnv, checkpoints, drafts, notifications

pytestmark = pytest.mark.filterwarnings("ignore:Inheritance class AiohttpClientSession")

JUDGED = ["cover", 1, 2, 4]  # page 3 has no character: nothing drawn, nothing judged


@pytest.fixture
async def env(database_url: str, tmp_path) -> AsyncIterator[PipelineEnv]:
    async with PipelineEnv.open(database_url, tmp_path) as environment:
        yield environment


async def test_a_low_likeness_is_redrawn_with_a_prompt_that_names_it(
    env: PipelineEnv, db: psycopg.Connection
) -> None:
    book = await env.add_book()
    item = await env.add_item(book.id)
    env.script.on("judge_2", judge_verdict(likeness_score=2.5, problems=["different hair"]))
    processor = await env.processor(QA_MODE="judge")

    assert await env.run_once(processor) == 1

    row = item_row(db, item)
    assert row["generation_status"] == "completed", row["error_code"]
    assert row["needs_review"] is False
    first, second = env.requests_for(2)
    assert "quality check" not in first.texts[0]
    assert "likeness 2.5 of 10, at least 6 needed" in second.texts[0]
    for target in JUDGED:
        assert len(env.requests_for(f"judge_{target}")) == (2 if target == 2 else 1), target
    saved = checkpoints(db, item)
    assert saved[2]["qa_verdict"]["redraws"] == 1
    assert saved[2]["qa_verdict"]["likeness_score"] == 8.5
    assert saved[1]["qa_verdict"]["redraws"] == 0
    assert saved[3]["qa_verdict"] is None  # the original page, not drawn
    # Judge calls are billed like any analysis call: on the item.
    judge_calls = len(JUDGED) + 1
    assert row["ai_usage"]["calls"] == 2 + len(JUDGED) + 1 + judge_calls
    assert row["ai_usage"]["calls"] == len(env.fake.answered())


async def test_a_page_that_stays_low_fails_the_item_for_good(
    env: PipelineEnv, db: psycopg.Connection
) -> None:
    book = await env.add_book()
    item = await env.add_item(book.id)
    env.script.on("judge_1", *[judge_verdict(extra_limbs_or_faces=True)] * 3)
    processor = await env.processor(QA_MODE="judge", QA_MAX_REDRAWS="2")

    await env.run_once(processor)

    row = item_row(db, item)
    assert row["generation_status"] == "failed"
    assert row["error_code"] == "quality_check_failed"
    assert row["error_message"] == QualityCheckFailed.parent_message
    assert len(env.requests_for(1)) == 3  # the first drawing and two redraws
    assert "extra or missing limbs" in env.requests_for(1)[-1].texts[0]
    assert 1 not in checkpoints(db, item)
    (note,) = notifications(db, item)
    assert note["kind"] != "book_ready"


async def test_under_review_the_book_completes_flagged(
    env: PipelineEnv, db: psycopg.Connection
) -> None:
    book = await env.add_book()
    item = await env.add_item(book.id)
    env.script.on("judge_4", *[judge_verdict(hero_present=False, likeness_score=0)] * 2)
    processor = await env.processor(QA_MODE="judge", QA_MAX_REDRAWS="1", QA_ON_FAIL="review")

    assert await env.run_once(processor) == 1

    row = item_row(db, item)
    assert row["generation_status"] == "completed"
    assert row["needs_review"] is True
    saved = checkpoints(db, item)
    assert saved[4]["needs_review"] is True
    assert saved[4]["qa_verdict"]["failed"] == ["hero_missing", "likeness"]
    assert [n for n, c in saved.items() if c["needs_review"]] == [4]


async def test_a_resumed_item_never_judges_or_redraws_a_checkpointed_page(
    env: PipelineEnv, db: psycopg.Connection
) -> None:
    book = await env.add_book()
    item = await env.add_item(book.id)
    # Page 4 cannot be drawn now (503 through every retry): the item goes back to the queue
    # with the cover and pages 1-2 drawn, judged and checkpointed.
    env.script.on(4, *[unavailable()] * 10)  # both image models, every retry
    processor = await env.processor(QA_MODE="judge", PAGE_CONCURRENCY="1")
    await env.run_once(processor)
    assert item_row(db, item)["generation_status"] == "pending"
    first_run = {t: len(env.requests_for(f"judge_{t}")) for t in JUDGED}
    assert first_run == {"cover": 1, 1: 1, 2: 1, 4: 0}
    db.execute("update order_items set next_attempt_at = now() where id = %s", [item])

    assert await env.run_once(processor) == 1

    assert item_row(db, item)["generation_status"] == "completed"
    for target in ["cover", 1, 2]:
        assert len(env.requests_for(target)) == 1, target
        assert len(env.requests_for(f"judge_{target}")) == 1, target
    assert len(env.requests_for("judge_4")) == 1


@pytest.mark.parametrize("target", ["cover", 2])
async def test_a_drawing_whose_judge_did_not_answer_is_judged_again_not_drawn_again(
    env: PipelineEnv, db: psycopg.Connection, target: str | int
) -> None:
    """What a kill -9 during a judge call leaves: the drawing stored and its draft recorded,
    no checkpoint. Here the judge is unavailable through every retry instead."""
    number, key = (0, "cover.jpg") if target == "cover" else (2, "pages/02.jpg")
    book = await env.add_book()
    item = await env.add_item(book.id)
    env.script.on(f"judge_{target}", *[unavailable()] * 10)
    processor = await env.processor(QA_MODE="judge", PAGE_CONCURRENCY="1")
    await env.run_once(processor)
    row = item_row(db, item)
    assert row["generation_status"] == "pending", row["error_code"]
    assert number not in checkpoints(db, item)
    draft = drafts(db, item)[number]
    assert (draft["redraws"], draft["image_path"]) == (0, f"generated/{item}/{key}")
    stored_drawing = env.stored(draft["image_path"])
    assert len(env.requests_for(target)) == 1
    judged_before = len(env.requests_for(f"judge_{target}"))
    env.script.forget(f"judge_{target}")
    db.execute("update order_items set next_attempt_at = now() where id = %s", [item])

    assert await env.run_once(processor) == 1

    assert item_row(db, item)["generation_status"] == "completed"
    assert len(env.requests_for(target)) == 1  # judged again, not drawn again
    assert len(env.requests_for(f"judge_{target}")) == judged_before + 1
    saved = checkpoints(db, item)[number]
    assert saved["qa_verdict"]["redraws"] == 0 and saved["qa_verdict"]["failed"] == []
    assert env.stored(saved["image_path"]) == stored_drawing
    assert drafts(db, item) == {}  # each checkpoint deleted its draft


async def test_a_stored_drawing_that_is_not_the_recorded_one_is_the_next_redraw(
    env: PipelineEnv, db: psycopg.Connection
) -> None:
    """A crash between storing redraw k+1 and recording it leaves the row at k with k's hash:
    the stored object is judged as redraw k+1, so the redraw budget holds across the crash."""
    book = await env.add_book()
    item = await env.add_item(book.id)
    env.script.on("judge_1", *[unavailable()] * 10)
    processor = await env.processor(QA_MODE="judge", PAGE_CONCURRENCY="1", QA_MAX_REDRAWS="1")
    await env.run_once(processor)
    assert drafts(db, item)[1]["redraws"] == 0
    env.script.forget("judge_1")
    db.execute(
        "update order_item_page_drafts set sha256 = repeat('0', 64)"
        " where order_item_id = %s and page_number = 1",
        [item],
    )
    db.execute("update order_items set next_attempt_at = now() where id = %s", [item])
    env.script.on("judge_1", judge_verdict(likeness_score=1.0))

    await env.run_once(processor)

    # Judged as the last allowed drawing: it fails without another image call.
    row = item_row(db, item)
    assert (row["generation_status"], row["error_code"]) == ("failed", "quality_check_failed")
    assert len(env.requests_for(1)) == 1


async def test_an_operators_retry_draws_the_page_that_failed_its_judge_afresh(
    env: PipelineEnv, db: psycopg.Connection
) -> None:
    book = await env.add_book()
    item = await env.add_item(book.id)
    env.script.on("judge_1", judge_verdict(likeness_score=1.0))
    processor = await env.processor(QA_MODE="judge", QA_MAX_REDRAWS="0")
    await env.run_once(processor)
    assert item_row(db, item)["error_code"] == "quality_check_failed"
    assert drafts(db, item)[1]["redraws"] == 0  # the drawing that failed, stored

    assert db.execute("select retry_failed_order_item(%s)", [item]).fetchone()[0] == "ok"
    assert drafts(db, item) == {}
    assert await env.run_once(processor) == 1

    assert item_row(db, item)["generation_status"] == "completed"
    assert len(env.requests_for(1)) == 2  # drawn again, not the failed drawing judged again


def wider_with_red_edges(request: RecordedRequest) -> tuple[bytes, str]:
    """The fake's tinted copy with a red band added on each side: 3 % wider than asked, within
    the aspect tolerance, so the page is its centre crop, without the bands."""
    data, mime_type = tinted_copy(request)
    with Image.open(io.BytesIO(data)) as drawn:
        band = round(drawn.width * 0.015)
        wide = Image.new("RGB", (drawn.width + 2 * band, drawn.height), (255, 0, 0))
        wide.paste(drawn.convert("RGB"), (band, 0))
    out = io.BytesIO()
    wide.save(out, "JPEG", quality=95)
    return out.getvalue(), mime_type


def drawn_size(reply: bytes) -> tuple[int, int]:
    """The size of the reply's centre crop at the (square) page's ratio."""
    with Image.open(io.BytesIO(reply)) as image:
        return (image.height, image.height)


def red_edges(image: Image.Image) -> bool:
    rgb = image.convert("RGB")
    return all(
        (lambda r, g, b: r > 200 and g < 60)(*rgb.getpixel((x, rgb.height // 2)))
        for x in (0, rgb.width - 1)
    )


async def test_the_judge_is_shown_the_page_that_is_stored_not_the_reply(
    env: PipelineEnv, db: psycopg.Connection
) -> None:
    """The judge's input is made from the model's reply while the page is fitted
    (processors/book.py ``_preview``), so the call need not wait for the fit: it must still
    show the page's own centre crop."""
    env.fake.image_maker = wider_with_red_edges
    book = await env.add_book()
    item = await env.add_item(book.id)

    assert await env.run_once(await env.processor(QA_MODE="judge")) == 1

    assert item_row(db, item)["generation_status"] == "completed"
    (drawn,) = [r for r in env.requests_for(1) if r.status == 200]
    reply, _ = wider_with_red_edges(drawn)
    assert red_edges(Image.open(io.BytesIO(reply)))  # what the model answered
    page = Image.open(io.BytesIO(env.stored(checkpoints(db, item)[1]["image_path"])))
    (judge,) = env.requests_for("judge_1")
    shown = Image.open(io.BytesIO(judge.images[1]))
    assert not red_edges(page) and not red_edges(shown)
    # The reply's own pixels (256 px here; the page is upscaled to 600), at most 1536 px.
    assert max(shown.size) == min(max(drawn_size(reply)), 1536)
    assert abs(shown.width / shown.height - page.width / page.height) < 0.01
    difference = ImageChops.difference(shown.convert("RGB"), page.convert("RGB").resize(shown.size))
    assert max(ImageStat.Stat(difference).mean) < 4


@pytest.mark.parametrize("qa_mode", ["judge", "off"])
async def test_every_reply_waits_for_its_fit_on_disk_and_no_parked_file_outlives_the_book(
    env: PipelineEnv, db: psycopg.Connection, monkeypatch: pytest.MonkeyPatch, qa_mode: str
) -> None:
    """While a reply waits for a core it is parked in an unlinked file (processors/files.py
    ``ParkedBytes``), so a book drawn faster than it is fitted does not hold its replies; its
    fit is the last reader and frees the file."""
    import processors.book

    parked: list[bytes] = []
    taken: list[bytes] = []

    class Recorded(ParkedBytes):
        def __init__(self, data: bytes, directory: Path) -> None:
            super().__init__(data, directory)
            parked.append(data)

        def take(self) -> bytes:
            taken.append(data := super().take())
            return data

    monkeypatch.setattr(processors.book, "ParkedBytes", Recorded)
    book = await env.add_book()
    item = await env.add_item(book.id)

    assert await env.run_once(await env.processor(QA_MODE=qa_mode)) == 1

    assert item_row(db, item)["generation_status"] == "completed"
    replies = [tinted_copy(r)[0] for t in JUDGED for r in env.requests_for(t) if r.status == 200]
    assert sorted(parked) == sorted(replies)
    assert sorted(taken) == sorted(replies)
    assert open_files_under(env.root / "cache") == []
