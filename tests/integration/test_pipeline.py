"""The book pipeline end to end in-process: Monitor + BookProcessor + real Postgres + local storage,
with Gemini faked at its HTTP boundary and reached through the real google-genai client.

What is shown here (issue "The book pipeline"):

* a paid item becomes a completed book: a PDF of cover + pages at the trim size, the cover
  uploaded, a ``book_ready`` notification, AI usage, one checkpoint per illustration;
* the requests carry what the prompts promise: the analyses' values in the prompt text, the child's
  name as JSON inside ``<child_data>``, and the images in the documented order (original, child
  photo, and for pages the generated cover as the identity reference);
* every injected fault ends as designed: retried in-process, moved to the fallback model, redrawn
  with the softened prompt, sent back to the queue, or failed with a terminal ``error_code``;
  never a "completed" book with a page that was not drawn;
* a resumed item pays for nothing twice, and one cover analysis serves every order of a book.
"""

from __future__ import annotations

import asyncio
import io
import json
import re
import shutil
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import httpx
import psycopg
import pytest
from aiohttp import web
from loguru import logger
from PIL import Image, ImageStat
from pypdf import PdfReader

from monitor.daemon import AINotReady
from monitor.metrics import Metrics
from monitor.store.base import OrderStore
from monitor.store.postgres import PostgresStore
from monitor.store.supabase import SupabaseStore
from processors.ai.base import (
    AIBadResponse,
    AIRecitation,
    AIUnavailable,
    ContentBlocked,
    Usage,
)
from processors.ai.pricing import PriceTable
from processors.analysis import PhotoRejected
from processors.errors import TerminalError
from processors.images import OutputInvalid
from processors.prompts import PromptBook
from testkit.fakes.gemini_server import (
    DEFAULT_ANALYSIS_JSON,
    Behaviour,
    FakeGemini,
    RecordedRequest,
    delayed,
    drifting_analysis,
    finish_reason,
    hang,
    http_error,
    malformed_json,
    prompt_blocked,
    rate_limited,
    succeed,
    text_only,
    unavailable,
    wrong_aspect_ratio,
)
from testkit.fakes.postgrest_server import FakePostgrestServer
from tests.support.factories import item_row
from tests.support.pipeline_env import (
    PAGE_SIDE,
    PipelineEnv,
    SampleBook,
    Target,
    ai_part,
    checkpoints,
    draw_child_photo,
    draw_scene,
    identity_part,
    notifications,
    photo_part,
    unchanged_page,
)

pytestmark = pytest.mark.filterwarnings("ignore:Inheritance class AiohttpClientSession")

TRIM_PT = 612  # 8.5 in, the catalog's default trim
IMAGE_MODEL = FakeGemini.IMAGE_MODEL
SECOND_IMAGE_MODEL = FakeGemini.SECOND_IMAGE_MODEL
# The fake bills every call 1290 input tokens and 1120 + 30 (thinking) output tokens.
INPUT_TOKENS, OUTPUT_TOKENS = 1290, 1150


@pytest.fixture
async def env(database_url: str, tmp_path) -> AsyncIterator[PipelineEnv]:
    async with PipelineEnv.open(database_url, tmp_path) as environment:
        yield environment


def pdf_images(data: bytes) -> list[bytes]:
    """The embedded image stream of each PDF page (img2pdf passes JPEGs through unchanged)."""
    reader = PdfReader(io.BytesIO(data))
    streams = []
    for page in reader.pages:
        (xobject,) = page["/Resources"]["/XObject"].values()
        streams.append(xobject.get_object()._data)
    return streams


def assert_completed_book(
    env: PipelineEnv, db: psycopg.Connection, item: str, book: SampleBook
) -> dict:
    """A finished book in which every page with a character was drawn by the model."""
    row = item_row(db, item)
    assert row["generation_status"] == "completed", (row["error_code"], row["error_message"])
    assert (row["progress"], row["error_code"], row["error_message"]) == (100, None, None)
    assert (row["pages_total"], row["pages_done"]) == (len(book.pages), len(book.pages))
    assert row["pdf_path"] == f"generated/{item}/book.pdf"
    assert row["cover_image_path"] == f"generated/{item}/cover.jpg"
    assert row["generated_at"] is not None and row["claimed_by"] is None

    saved = checkpoints(db, item)
    assert sorted(saved) == [0, *sorted(book.pages)]
    version = PromptBook().version
    for number, checkpoint in saved.items():
        assert checkpoint["prompt_version"] == version
        drawn = number == 0 or book.has_character[number]
        if drawn:
            assert checkpoint["model"] in (IMAGE_MODEL, SECOND_IMAGE_MODEL)
        else:
            assert checkpoint["model"] is None
    cover = env.stored(row["cover_image_path"])
    assert Image.open(io.BytesIO(cover)).size == (PAGE_SIDE, PAGE_SIDE)
    pages = {n: env.stored(saved[n]["image_path"]) for n in book.pages}
    for number, data in pages.items():
        assert Image.open(io.BytesIO(data)).size == (PAGE_SIDE, PAGE_SIDE)
        if book.has_character[number]:
            assert data != unchanged_page(book.pages[number]), f"page {number} was not drawn"
        else:
            assert data == unchanged_page(book.pages[number])

    pdf = env.stored(row["pdf_path"])
    reader = PdfReader(io.BytesIO(pdf))
    assert len(reader.pages) == 1 + len(book.pages)
    for page in reader.pages:
        assert (float(page.mediabox.width), float(page.mediabox.height)) == (TRIM_PT, TRIM_PT)
    # The PDF is the cover then the pages in order, each exactly the checkpointed image.
    assert pdf_images(pdf) == [cover, *(pages[n] for n in sorted(pages))]
    for image in pdf_images(pdf):  # and no page of another shape was squeezed in
        assert Image.open(io.BytesIO(image)).size == (PAGE_SIDE, PAGE_SIDE)

    assert [n["kind"] for n in notifications(db, item)] == ["book_ready"]
    return row


def assert_not_completed(
    env: PipelineEnv, db: psycopg.Connection, item: str, *, status: str, code: str, message: str
) -> dict:
    """The item ended as ``status``/``code`` with a parent-safe message and no book."""
    row = item_row(db, item)
    assert (row["generation_status"], row["error_code"]) == (status, code), row["error_message"]
    assert row["error_message"] == message
    assert row["pdf_path"] is None and row["pdf_url"] is None and row["generated_at"] is None
    assert not env.exists(f"generated/{item}/book.pdf")
    assert row["claimed_by"] is None
    kinds = [n["kind"] for n in notifications(db, item)]
    if status == "failed":
        assert kinds == ["book_failed"]
        assert notifications(db, item)[0]["body"] == message
    else:
        assert kinds == []
        assert row["next_attempt_at"] > datetime.now(UTC)
    return row


def image_targets(book: SampleBook) -> list[Target]:
    return ["cover", *book.drawn_pages]


# --- the happy path ------------------------------------------------------------------------


@pytest.fixture(params=["postgres", "supabase"])
async def daemon_store(
    request: pytest.FixtureRequest, database_url: str
) -> AsyncIterator[OrderStore]:
    """The daemon's order store, through each adapter (the Monitor opens and closes it)."""
    if request.param == "postgres":
        yield PostgresStore(database_url)
        return
    async with FakePostgrestServer(database_url) as server:
        yield await SupabaseStore.connect(server.url, server.service_key, httpx.AsyncClient())


async def test_a_paid_item_becomes_a_finished_book(
    env: PipelineEnv, db: psycopg.Connection, daemon_store: OrderStore
) -> None:
    book = await env.add_book()
    item = await env.add_item(book.id)
    processor = await env.factory_processor()  # the daemon's own wiring

    assert await env.run_once(processor, store=daemon_store) == 1

    row = assert_completed_book(env, db, item, book)
    storage_file = env.storage_dir / "generated" / item
    assert row["pdf_url"] == (storage_file / "book.pdf").as_uri()
    assert row["cover_image_url"] == (storage_file / "cover.jpg").as_uri()
    assert row["current_step"] == "Your book is ready"
    calls = 2 + len(image_targets(book))  # two analyses, the cover, the drawn pages
    images = len(image_targets(book))
    assert row["ai_usage"] == {
        "calls": calls,
        "images": images,
        "unanswered": 0,
        "input_tokens": calls * INPUT_TOKENS,
        "output_tokens": calls * OUTPUT_TOKENS,
        # The price table (processors/ai/prices.json) prices the analysis model, not the image one.
        "unpriced_calls": images,
        "cost_usd": round(
            PriceTable.load()
            .price_of(FakeGemini.ANALYSIS_MODEL)
            .cost(Usage(calls=2, input_tokens=2 * INPUT_TOKENS, output_tokens=2 * OUTPUT_TOKENS)),
            6,
        ),
        "by_model": {
            FakeGemini.ANALYSIS_MODEL: {
                "calls": 2,
                "images": 0,
                "input_tokens": 2 * INPUT_TOKENS,
                "output_tokens": 2 * OUTPUT_TOKENS,
            },
            IMAGE_MODEL: {
                "calls": images,
                "images": images,
                "input_tokens": images * INPUT_TOKENS,
                "output_tokens": images * OUTPUT_TOKENS,
            },
        },
    }
    assert row["ai_usage"]["calls"] == len(env.fake.answered())
    assert row["child_analysis"] == DEFAULT_ANALYSIS_JSON["child"]
    saved = checkpoints(db, item)
    assert {n: c["model"] for n, c in saved.items()} == {
        0: IMAGE_MODEL,
        1: IMAGE_MODEL,
        2: IMAGE_MODEL,
        3: None,
        4: IMAGE_MODEL,
    }
    (note,) = notifications(db, item)
    assert note["title"] == "Your book is ready!" and book.title in note["body"]
    assert note["user_id"] is not None
    analyses = db.execute("select model from book_analyses where book_id = %s", [book.id])
    assert analyses.fetchall() == [(FakeGemini.ANALYSIS_MODEL,)]
    # Every target was asked exactly once; the page without a character costs no call.
    for target in ["cover_analysis", "child_analysis", *image_targets(book)]:
        assert len(env.requests_for(target)) == 1, target
    assert env.requests_for(3) == []
    assert env.requests_for("unknown") == []
    # The attempt's work directory is gone.
    assert not list((env.root / "cache" / "work").glob(f"{item}*"))


# --- what goes over the wire ---------------------------------------------------------------


async def test_requests_carry_the_images_in_order_and_the_cover_as_identity_reference(
    env: PipelineEnv, db: psycopg.Connection
) -> None:
    book = await env.add_book()
    photo = draw_child_photo()
    item = await env.add_item(book.id, photo_path=await env.add_photo(photo))

    # Cover first, so every page carries it (pages drawn beside it: tests/integration/
    # test_page_order.py).
    await env.run_once(await env.processor(COVER_FIRST="true"))

    assert_completed_book(env, db, item, book)
    generated_cover = env.stored(f"generated/{item}/cover.jpg")
    (cover_analysis,) = env.requests_for("cover_analysis")
    assert cover_analysis.images == [ai_part(book.cover)]
    (child_analysis,) = env.requests_for("child_analysis")
    assert child_analysis.images == [photo_part(photo)]

    (cover,) = env.requests_for("cover")
    assert [("text" if p.text is not None else "image") for p in cover.parts] == [
        "text",
        "image",
        "image",
    ]
    assert cover.images == [ai_part(book.cover), photo_part(photo)]
    assert cover.aspect_ratio == "1:1"
    for number in book.drawn_pages:
        (page,) = env.requests_for(number)
        assert [("text" if p.text is not None else "image") for p in page.parts] == [
            "text",
            "image",
            "image",
            "image",
        ]
        assert page.images == [
            ai_part(book.pages[number]),
            photo_part(photo),
            identity_part(generated_cover),
        ], f"page {number}"
        assert {p.mime_type for p in page.parts if p.data} == {"image/jpeg"}
        assert page.model == IMAGE_MODEL and page.aspect_ratio == "1:1"


def child_data(prompt: str) -> object:
    match = re.search(r"<child_data>\n(.*)\n</child_data>", prompt)
    assert match, "the prompt has no <child_data> block"
    return json.loads(match.group(1))


async def test_prompts_carry_the_analyses_and_the_child_as_json_data(
    env: PipelineEnv, db: psycopg.Connection
) -> None:
    name = 'Zoë "Zee" <b>O\'Neil</b>'
    prompts: dict[str, dict[Target, str]] = {}
    for run, (style, hair) in {
        "first": ("ink-and-crayon style 4711", "teal braids 9931"),
        "second": ("gouache collage style 5822", "silver bob 8842"),
    }.items():
        env.fake.analysis_json["cover"] = {**DEFAULT_ANALYSIS_JSON["cover"], "art_style": style}
        env.fake.analysis_json["child"] = {**DEFAULT_ANALYSIS_JSON["child"], "hair": hair}
        book = await env.add_book()  # a new book, so its cover is analyzed anew
        item = await env.add_item(book.id, child_name=name)
        since = len(env.fake.requests)
        await env.run_once(await env.processor())
        assert_completed_book(env, db, item, book)
        prompts[run] = {
            t: env.requests_for(t, since=since)[0].texts[0]
            for t in ["child_analysis", *image_targets(book)]
        }
        for target in image_targets(book):
            prompt = prompts[run][target]
            assert style in prompt and hair in prompt, target
            # The name is data: JSON inside <child_data>, with no raw quote or tag left over.
            assert child_data(prompt) == {"name": name, "age": 5, "gender": "girl"}
            assert "<b>" not in prompt and '"Zee"' not in prompt
            assert (
                json.dumps(name, ensure_ascii=False).replace("<", "\\u003c").replace(">", "\\u003e")
                in prompt
            )
        # The photo analysis does not need the name, so it never sees it.
        assert "Zee" not in prompts[run]["child_analysis"]

    # Change the analysis, the prompt changes: exactly where the analysis values go.
    for target in image_targets(book):
        first, second = prompts["first"][target], prompts["second"][target]
        assert first != second
        assert (
            first.replace("ink-and-crayon style 4711", "gouache collage style 5822").replace(
                "teal braids 9931", "silver bob 8842"
            )
            == second
        )


# --- faults that the pipeline absorbs ------------------------------------------------------


@dataclass(frozen=True)
class Absorbed:
    """A fault injected into one target's requests, after which the book still completes."""

    target: Target
    behaviours: tuple[Behaviour, ...]
    statuses: tuple[int | None, ...]
    """HTTP status of each request for the target (None: the client gave up before the reply)."""
    retried: tuple[str, ...] = ()
    """Error codes LimitedAI retried in-process."""
    softened: bool = False
    """Whether the second request carries the softened prompt (after a safety block)."""
    models: tuple[str, ...] | None = None
    settings: dict[str, str] = field(default_factory=dict)
    check: Callable[[PipelineEnv, psycopg.Connection, str], None] | None = None


def _honoured_retry_delay(env: PipelineEnv, db: psycopg.Connection, item: str) -> None:
    assert max(env.sleeps) >= 7.0  # RetryInfo said 7s; the backoff alone asks for ~0.02s


def _page2_from_fallback_model(env: PipelineEnv, db: psycopg.Connection, item: str) -> None:
    saved = checkpoints(db, item)
    assert saved[2]["model"] == SECOND_IMAGE_MODEL
    assert {saved[n]["model"] for n in (0, 1, 4)} == {IMAGE_MODEL}


def _page4_from_the_redraw(env: PipelineEnv, db: psycopg.Connection, item: str) -> None:
    """The 2:1 reply (tinted blue) was thrown away; the page is the redraw (tinted orange)."""
    page = Image.open(io.BytesIO(env.stored(checkpoints(db, item)[4]["image_path"])))
    red, _, blue = ImageStat.Stat(page).mean
    assert red > blue
    assert item_row(db, item)["ai_usage"]["calls"] == len(env.fake.answered())  # both replies


ABSORBED = {
    "429_with_retry_info": Absorbed(
        1,
        (rate_limited("7s"),),
        (429, 200),
        retried=("ai_rate_limited",),
        check=_honoured_retry_delay,
    ),
    "503_image_model_falls_back": Absorbed(
        2,
        (unavailable(),),
        (503, 200),
        models=(IMAGE_MODEL, SECOND_IMAGE_MODEL),
        check=_page2_from_fallback_model,
    ),
    "503_analysis_retried": Absorbed(
        "cover_analysis", (unavailable(),), (503, 200), retried=("ai_unavailable",)
    ),
    "404_not_found_falls_back": Absorbed(
        4,
        (http_error(404, "NOT_FOUND", "models/x is not found"),),
        (404, 200),
        models=(IMAGE_MODEL, SECOND_IMAGE_MODEL),
    ),
    "slow_reply_past_timeout": Absorbed(
        4,
        (delayed(60),),
        (None, 200),
        retried=("ai_timeout",),
        settings={"GEMINI_TIMEOUT_SECONDS": "3"},
    ),
    "image_safety_once": Absorbed(2, (finish_reason("IMAGE_SAFETY"),), (200, 200), softened=True),
    "prompt_blocked_once": Absorbed(
        "cover", (prompt_blocked("SAFETY"),), (200, 200), softened=True
    ),
    "text_only_reply": Absorbed(1, (text_only(),), (200, 200), retried=("ai_bad_response",)),
    "no_image_finish_reason": Absorbed(
        2, (finish_reason("NO_IMAGE"),), (200, 200), retried=("ai_bad_response",)
    ),
    "wrong_aspect_ratio_is_redrawn": Absorbed(
        4, (wrong_aspect_ratio("2:1"),), (200, 200), check=_page4_from_the_redraw
    ),
    "malformed_cover_analysis_json": Absorbed(
        "cover_analysis", (malformed_json(),), (200, 200), retried=("ai_bad_response",)
    ),
    "malformed_child_analysis_json": Absorbed(
        "child_analysis",
        (malformed_json('{"face_count": 1, "hair": '),),
        (200, 200),
        retried=("ai_bad_response",),
    ),
}


@pytest.mark.parametrize("case", ABSORBED.values(), ids=ABSORBED.keys())
async def test_absorbed_faults_end_in_a_complete_book(
    env: PipelineEnv, db: psycopg.Connection, case: Absorbed
) -> None:
    book = await env.add_book()
    item = await env.add_item(book.id)
    env.script.on(case.target, *case.behaviours)

    await env.run_once(await env.processor(**case.settings))

    assert_completed_book(env, db, item, book)
    requests = env.requests_for(case.target)
    assert tuple(r.status for r in requests) == case.statuses
    assert env.retries == list(case.retried)
    if case.models is not None:
        assert tuple(r.model for r in requests) == case.models
    prompts = [r.texts[0] for r in requests]
    if case.softened:
        first, second = prompts
        assert second.startswith(first.rstrip() + "\n\n") and len(second) > len(first) + 100
    else:
        assert len(set(prompts)) == 1, "a retry must send the same prompt"
    # The fault touched its target only: everything else was asked once.
    for other in ["cover_analysis", "child_analysis", *image_targets(book)]:
        if other != case.target:
            assert len(env.requests_for(other)) == 1, other
    if case.check is not None:
        case.check(env, db, item)


async def test_a_model_retired_while_running_costs_one_request(
    env: PipelineEnv, db: psycopg.Connection
) -> None:
    book = await env.add_book()
    item = await env.add_item(book.id)
    # Both models exist at start. The cover drawn first, alone, meets the 404 before any page
    # call starts; drawn beside the pages (the default), every call already in flight when the
    # first 404 lands meets one too (one a slot at most, and a 404 is not billed), so how many
    # is a race this test would not decide.
    processor = await env.processor(COVER_FIRST="true")
    env.fake.retire(IMAGE_MODEL)  # then the first one is shut down

    await env.run_once(processor)

    assert_completed_book(env, db, item, book)
    saved = checkpoints(db, item)
    assert {saved[n]["model"] for n in (0, *book.drawn_pages)} == {SECOND_IMAGE_MODEL}
    # No page tries the dead model after the cover's 404.
    assert [(r.model, r.status) for r in env.requests_for("cover")] == [
        (IMAGE_MODEL, 404),
        (SECOND_IMAGE_MODEL, 200),
    ]
    assert len(env.fake.generate_requests(IMAGE_MODEL)) == 1


async def test_a_retired_primary_in_the_list_is_skipped_at_start(
    env: PipelineEnv, db: psycopg.Connection
) -> None:
    book = await env.add_book()
    item = await env.add_item(book.id)
    processor = await env.processor(
        GEMINI_IMAGE_MODEL=f"gemini-3.1-flash-image-preview,{SECOND_IMAGE_MODEL}"
    )

    await env.run_once(processor)

    assert processor.ready_problem is None
    assert_completed_book(env, db, item, book)
    assert env.fake.generate_requests("gemini-3.1-flash-image-preview") == []
    assert {c["model"] for n, c in checkpoints(db, item).items() if n != 3} == {SECOND_IMAGE_MODEL}


async def test_a_retired_default_leaves_the_processor_waiting_with_the_reason(
    env: PipelineEnv, db: psycopg.Connection
) -> None:
    book = await env.add_book()
    item = await env.add_item(book.id)
    processor = await env.processor(GEMINI_ANALYSIS_MODEL="gemini-2.5-flash")

    assert processor.ready_problem is not None
    assert "'gemini-2.5-flash' has been shut down" in processor.ready_problem
    assert "'gemini-3.5-flash'" in processor.ready_problem
    with pytest.raises(AINotReady):
        await env.run_once(processor, GEMINI_ANALYSIS_MODEL="gemini-2.5-flash")
    assert item_row(db, item)["generation_status"] == "pending"
    assert env.fake.generate_requests() == []


async def test_drifting_analysis_replies_make_books_with_one_analysis_each(
    env: PipelineEnv, db: psycopg.Connection
) -> None:
    book = await env.add_book()
    item = await env.add_item(book.id)
    env.script.on("cover_analysis", drifting_analysis())
    env.script.on("child_analysis", drifting_analysis())

    await env.run_once(await env.processor())

    assert_completed_book(env, db, item, book)
    assert len(env.requests_for("cover_analysis")) == 1
    assert len(env.requests_for("child_analysis")) == 1
    assert item_row(db, item)["child_analysis"]["distinctive_features"] == ["freckles"]


# --- faults that end the attempt or the item -----------------------------------------------


@dataclass(frozen=True)
class Ended:
    """A fault after which the item is not completed: failed for good, or back in the queue."""

    target: Target
    behaviours: tuple[Behaviour, ...]
    status: str
    code: str
    message: str
    requests: int
    """How many requests the target got: retries and fallbacks are bounded."""
    settings: dict[str, str] = field(default_factory=dict)
    no_image_calls: bool = False
    check: Callable[[PipelineEnv, psycopg.Connection, str], None] | None = None


def _waits_for_the_server_delay(env: PipelineEnv, db: psycopg.Connection, item: str) -> None:
    row = item_row(db, item)
    assert row["next_attempt_at"] - row["updated_at"] >= timedelta(seconds=600)


def _softened_then_blocked(env: PipelineEnv, db: psycopg.Connection, item: str) -> None:
    first, second = (r.texts[0] for r in env.requests_for(2))
    assert second.startswith(first.rstrip() + "\n\n")
    assert 2 not in checkpoints(db, item)


RETRYABLE = AIUnavailable.parent_message
ENDED = {
    "image_safety_twice": Ended(
        2,
        (finish_reason("IMAGE_SAFETY"), finish_reason("IMAGE_SAFETY")),
        "failed",
        "content_blocked",
        ContentBlocked.parent_message,
        2,
        check=_softened_then_blocked,
    ),
    "prompt_blocked_twice_on_cover": Ended(
        "cover",
        (prompt_blocked("SAFETY"), prompt_blocked("OTHER")),
        "failed",
        "content_blocked",
        ContentBlocked.parent_message,
        2,
    ),
    "invalid_request": Ended(
        1,
        (http_error(400, "INVALID_ARGUMENT", "Request contains an invalid argument."),),
        "failed",
        "ai_invalid_request",
        TerminalError.parent_message,
        1,
    ),
    "text_only_every_time": Ended(
        4, (text_only(),) * 3, "pending", "ai_bad_response", AIBadResponse.parent_message, 3
    ),
    "all_image_models_overloaded": Ended(
        1, (unavailable(),) * 6, "pending", "ai_unavailable", RETRYABLE, 6
    ),
    "rate_limit_longer_than_the_backoff": Ended(
        1,
        (rate_limited("600s"),),
        "pending",
        "ai_rate_limited",
        RETRYABLE,
        1,
        check=_waits_for_the_server_delay,
    ),
    "malformed_analysis_twice": Ended(
        "cover_analysis",
        (malformed_json(),) * 2,
        "failed",
        "ai_bad_response",
        TerminalError.parent_message,
        2,
        no_image_calls=True,
    ),
    "malformed_child_analysis_twice": Ended(
        "child_analysis",
        (malformed_json(),) * 2,
        "failed",
        "ai_bad_response",
        TerminalError.parent_message,
        2,
        no_image_calls=True,
    ),
    "wrong_aspect_every_time": Ended(
        1,
        (wrong_aspect_ratio("2:1"),) * 2,
        "pending",
        "ai_bad_output",
        OutputInvalid.parent_message,
        2,
        check=lambda env, db, item: _no_page(db, item, 1),
    ),
    "recitation": Ended(
        2,
        (finish_reason("IMAGE_RECITATION"),),
        "failed",
        "ai_recitation",
        AIRecitation.parent_message,
        1,
    ),
}


def _no_page(db: psycopg.Connection, item: str, number: int) -> None:
    assert number not in checkpoints(db, item)


@pytest.mark.parametrize("case", ENDED.values(), ids=ENDED.keys())
async def test_unabsorbed_faults_never_complete_the_book(
    env: PipelineEnv, db: psycopg.Connection, case: Ended
) -> None:
    book = await env.add_book()
    item = await env.add_item(book.id)
    env.script.on(case.target, *case.behaviours)

    await env.run_once(await env.processor(**case.settings))

    row = assert_not_completed(
        env, db, item, status=case.status, code=case.code, message=case.message
    )
    assert row["attempts"] == 1
    assert len(env.requests_for(case.target)) == case.requests
    if case.no_image_calls:
        assert all(not env.requests_for(t) for t in image_targets(book))
    if case.check is not None:
        case.check(env, db, item)


async def test_a_photo_with_two_faces_is_rejected_before_any_drawing(
    env: PipelineEnv, db: psycopg.Connection
) -> None:
    env.fake.analysis_json["child"] = {**DEFAULT_ANALYSIS_JSON["child"], "face_count": 2}
    book = await env.add_book()
    item = await env.add_item(book.id)

    await env.run_once(await env.processor())

    assert_not_completed(
        env, db, item, status="failed", code="photo_rejected", message=PhotoRejected.parent_message
    )
    assert all(not env.requests_for(t) for t in image_targets(book))
    assert checkpoints(db, item) == {}


# --- resuming and sharing ------------------------------------------------------------------


async def test_a_resumed_item_pays_for_nothing_twice(
    env: PipelineEnv, db: psycopg.Connection
) -> None:
    book = await env.add_book()
    item = await env.add_item(book.id)
    # One page at a time, so pages 1-3 are done when page 4 fails; no in-process retry.
    processor = await env.processor(PAGE_CONCURRENCY="1", AI_MAX_RETRIES="0")
    env.script.on(4, text_only())

    await env.run_once(processor)

    row = assert_not_completed(
        env,
        db,
        item,
        status="pending",
        code="ai_bad_response",
        message=AIBadResponse.parent_message,
    )
    first_run = checkpoints(db, item)
    assert sorted(first_run) == [0, 1, 2, 3] and row["pages_done"] == 3
    # Two analyses, cover, pages 1 and 2, and page 4's text-only answer: billed all the same.
    assert row["ai_usage"]["calls"] == 6 == len(env.fake.answered())

    db.execute("update order_items set next_attempt_at = now() where id = %s", [item])
    since = len(env.fake.requests)
    await env.run_once(processor)

    row = assert_completed_book(env, db, item, book)
    assert row["attempts"] == 2
    second_run = [r for r in env.fake.requests[since:] if r.action == "generateContent"]
    assert [env.target(r) for r in second_run] == [4]  # no analysis, no cover, no done page
    for number, checkpoint in first_run.items():  # checkpoints were kept, not redone
        assert checkpoints(db, item)[number]["created_at"] == checkpoint["created_at"]
    assert row["ai_usage"]["calls"] == 3 + len(image_targets(book)) == len(env.fake.answered())
    assert row["ai_usage"]["images"] == len(image_targets(book))


async def test_the_cover_is_analyzed_once_for_every_order_of_the_book(
    env: PipelineEnv, db: psycopg.Connection
) -> None:
    book = await env.add_book()
    items = [await env.add_item(book.id, child_name=name) for name in ("Mia", "Noah", "Lea")]

    assert await env.run_once(await env.processor(), MAX_CONCURRENT_ORDERS="3") == 3

    for item in items:
        assert_completed_book(env, db, item, book)
    assert len(env.requests_for("cover_analysis")) == 1
    assert len(env.requests_for("child_analysis")) == 3
    assert db.execute("select count(*) from book_analyses").fetchone() == (1,)
    # Only the order that paid for the analysis carries its cost.
    calls = sorted(item_row(db, item)["ai_usage"]["calls"] for item in items)
    drawn = len(image_targets(book))
    assert calls == [1 + drawn, 1 + drawn, 2 + drawn]


async def test_later_orders_of_a_book_reuse_its_page_inputs_until_a_file_changes(
    env: PipelineEnv, db: psycopg.Connection, tmp_path
) -> None:
    metrics = Metrics()

    def page_inputs(outcome: str) -> float:
        value = metrics.registry.get_sample_value(
            "book_monitor_page_inputs_total", {"outcome": outcome}
        )
        return value or 0.0

    book = await env.add_book()
    processor = await env.processor(metrics=metrics)
    drawn = len(book.drawn_pages)
    first = await env.add_item(book.id, child_name="Mia")
    assert await env.run_once(processor) == 1
    assert (page_inputs("made"), page_inputs("reused")) == (drawn, 0)

    second = await env.add_item(book.id, child_name="Noah")
    assert await env.run_once(processor) == 1
    for item in (first, second):
        assert_completed_book(env, db, item, book)
    assert (page_inputs("made"), page_inputs("reused")) == (drawn, drawn)
    assert all(len(env.requests_for(n)) == 2 for n in book.drawn_pages)

    # An operator replaces page 1's image and drops the book's disk cache: the next order is
    # drawn from the new picture, not from the inputs made of the old one.
    (path,) = db.execute(
        "select image_path from book_pages where book_id = %s and page_number = 1", [book.id]
    ).fetchone()
    replacement = draw_scene(7)
    await env.storage.upload(path, replacement, "image/jpeg")
    shutil.rmtree(tmp_path / "cache" / "books" / book.id)
    env.register(replacement, 1)
    since = len(env.fake.requests)
    await env.add_item(book.id, child_name="Lea")
    assert await env.run_once(processor) == 1
    (request,) = env.requests_for(1, since=since)
    assert request.images[0] == ai_part(replacement)


# --- honest usage, bounded time, siblings that finish ---------------------------------------


FAULT_MIX: list[tuple[Target, tuple[Behaviour, ...]]] = [
    (1, (rate_limited("0.01s"),)),
    (2, (unavailable(), unavailable())),  # both image models overloaded once
    (4, (finish_reason("IMAGE_SAFETY"),)),
    ("cover", (text_only(),)),
    (2, (wrong_aspect_ratio("2:1"),)),
    (4, (hang(),)),
    ("child_analysis", (malformed_json(),)),
]


async def test_after_a_fault_mix_each_row_carries_what_was_answered(
    env: PipelineEnv, db: psycopg.Connection
) -> None:
    processor = await env.processor(GEMINI_TIMEOUT_SECONDS="2")
    for target, behaviours in FAULT_MIX:
        book = await env.add_book()  # a book of its own, so its cover analysis is this item's
        item = await env.add_item(book.id)
        env.script.on(target, *behaviours)
        since = len(env.fake.requests)

        await env.run_once(processor)

        assert_completed_book(env, db, item, book)
        mine = env.fake.requests[since:]
        usage = item_row(db, item)["ai_usage"]
        assert usage["calls"] == len(env.fake.answered(mine)), target
        assert usage["unanswered"] == sum(
            1 for r in mine if r.action == "generateContent" and r.status is None
        ), target
        assert sum(m["calls"] for m in usage["by_model"].values()) == usage["calls"]


async def test_a_hung_call_costs_at_most_the_page_deadline_and_says_so(
    env: PipelineEnv, db: psycopg.Connection
) -> None:
    book = await env.add_book()
    item = await env.add_item(book.id)
    env.script.on(1, hang())
    lines: list[str] = []
    sink = logger.add(lambda m: lines.append(m), format="{level} {message} {extra}")
    try:
        # The call timeout alone would hold the page for 10 minutes; the deadline ends it.
        await env.run_once(
            await env.processor(GEMINI_TIMEOUT_SECONDS="600", PAGE_DEADLINE_SECONDS="2")
        )
    finally:
        logger.remove(sink)

    row = assert_not_completed(
        env, db, item, status="pending", code="ai_timeout", message=AIUnavailable.parent_message
    )
    (warning,) = [line for line in lines if "giving up on this illustration" in line]
    assert warning.startswith("WARNING") and "'page': 1" in warning and item in warning
    assert row["ai_usage"]["unanswered"] == 1
    assert {2, 4} <= set(checkpoints(db, item))  # the other pages were finished and kept


async def test_pages_in_flight_when_one_fails_finish_and_are_kept(
    env: PipelineEnv, db: psycopg.Connection
) -> None:
    book = await env.add_book()
    item = await env.add_item(book.id)
    # Page 1 fails once pages 2 and 4 are in flight: a page decides to start when its slot and
    # its inputs are ready, and one that sees a sibling's final failure by then starts nothing.
    invalid = http_error(400, "INVALID_ARGUMENT", "Request contains an invalid argument.")
    env.script.on(1, delayed(0.3, invalid))
    env.script.on(2, delayed(1.0))
    env.script.on(4, delayed(1.0))

    await env.run_once(await env.processor(PAGE_CONCURRENCY="4"))

    row = assert_not_completed(
        env,
        db,
        item,
        status="failed",
        code="ai_invalid_request",
        message=TerminalError.parent_message,
    )
    saved = checkpoints(db, item)
    assert {2, 4} <= set(saved)  # paid for while page 1 failed: checkpointed, not thrown away
    assert row["ai_usage"]["calls"] == len(env.fake.answered())


async def test_a_failed_cover_analysis_is_not_paid_for_again_by_the_next_order(
    env: PipelineEnv, db: psycopg.Connection
) -> None:
    book = await env.add_book()
    first = await env.add_item(book.id)
    env.script.on("cover_analysis", malformed_json(), malformed_json())
    processor = await env.processor()
    await env.run_once(processor)
    second = await env.add_item(book.id, child_name="Noah")

    await env.run_once(processor)

    for item in (first, second):
        assert_not_completed(
            env,
            db,
            item,
            status="failed",
            code="ai_bad_response",
            message=TerminalError.parent_message,
        )
    assert len(env.requests_for("cover_analysis")) == 2  # the first order's two tries only


async def test_an_account_limited_by_google_pauses_claiming_instead_of_failing_orders(
    env: PipelineEnv, db: psycopg.Connection
) -> None:
    book = await env.add_book()
    item = await env.add_item(book.id)
    env.script.on("cover", finish_reason("PUP_LIMITED_DISABLED"))
    monitor = env.monitor(await env.processor())

    with pytest.raises(AINotReady, match="PUP_LIMITED_DISABLED"):
        await monitor.run_once()

    row = item_row(db, item)
    assert (row["generation_status"], row["attempts"], row["error_code"]) == ("pending", 0, None)
    assert notifications(db, item) == []
    assert monitor.ai_problem is not None and "Prohibited Use Policy" in monitor.ai_problem
    assert row["ai_usage"]["calls"] == len(env.fake.answered())  # the analyses and the cover


async def test_a_refund_stops_the_drawing_within_one_page_round(
    env: PipelineEnv, db: psycopg.Connection
) -> None:
    book = await env.add_book(pages=8, without_character=())
    item = await env.add_item(book.id)
    concurrency = 2
    processor = await env.processor(PAGE_CONCURRENCY=str(concurrency), AI_MAX_RETRIES="0")
    refunded_at: list[int] = []

    async def refund_then_draw(fake: FakeGemini, request: RecordedRequest) -> web.Response:
        # The parent is refunded while page 2 is being drawn (between two heartbeats).
        await asyncio.to_thread(
            db.execute,
            "update orders set payment_status = 'refunded' where id ="
            " (select order_id from order_items where id = %s)",
            [item],
        )
        refunded_at.append(len(fake.requests))
        return await succeed()(fake, request)

    env.script.on(2, refund_then_draw)
    await env.run_once(processor)

    assert_not_completed(
        env,
        db,
        item,
        status="failed",
        code="order_not_paid",
        message="This order is no longer paid, so we stopped creating the book.",
    )
    later = [r for r in env.fake.requests[refunded_at[0] :] if r.action == "generateContent"]
    # Only what was already in flight when page 2's checkpoint was refused; nothing new started.
    assert len(later) <= concurrency - 1, [env.target(r) for r in later]
    assert 2 not in checkpoints(db, item)
