"""Arranging books, photos and paid orders for the pipeline tests, and running them.

:class:`PipelineEnv` is one test's world: a real Postgres (the ``database_url`` fixture), a
local blob store in ``tmp_path``, and a :class:`FakeGemini` that the real google-genai client
talks to. Books are drawn here with Pillow (small, so the suite stays fast), imported the way an
operator does it (``monitor.catalog.import_book``), and ordered the way the app does it
(``create_paid_order_item``). Items are processed by the real :class:`Monitor` with the real
:class:`BookProcessor`.

Faults are injected per *target* with :class:`Script`: ``"cover_analysis"``,
``"child_analysis"``, ``"cover"`` or a page number. A request's target is told by what it
carries, not by prompt wording: the analysis schema, or the original cover or page image sent
as the first image part.
"""

from __future__ import annotations

import asyncio
import io
import json
import uuid
from collections import defaultdict, deque
from collections.abc import AsyncIterator, Iterable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from aiohttp import web
from PIL import Image, ImageDraw

from monitor.app import create_processor
from monitor.catalog import import_book, read_book_dir
from monitor.config import Settings
from monitor.daemon import Monitor
from monitor.metrics import Metrics
from monitor.storage.local import LocalStorage
from monitor.store.base import OrderStore
from monitor.store.postgres import PostgresStore
from processors.book import AI_INPUT_MAX_SIDE, BookProcessor
from processors.contract import Processor
from processors.images import (
    Original,
    check_output,
    image_part_bytes,
    load_page_image,
    normalize_photo,
    to_jpeg,
)
from testkit.fakes.gemini_server import (
    Behaviour,
    FakeGemini,
    RecordedRequest,
    succeed,
    tinted_copy,
)

PAGE_SIDE = 600
PHOTO_SIDE = 640
TITLE = "The Little Lighthouse"
SUPABASE_URL = "https://project-ref.supabase.co"
"""A configured Supabase project, so photo URLs of this project are accepted and others refused.
No Supabase call is ever made: the store is Postgres and the blob storage is local."""
RUN_TIMEOUT = 90.0
"""Upper bound for one ``run_once``: a hang fails the test instead of eating the pytest timeout."""

Target = str | int


# --- drawing -------------------------------------------------------------------------------


def _jpeg(img: Image.Image, quality: int = 90) -> bytes:
    out = io.BytesIO()
    img.save(out, "JPEG", quality=quality)
    return out.getvalue()


def draw_scene(number: int, side: int = PAGE_SIDE) -> bytes:
    """A textured page (gradient sky, hills, a hero figure), different for every ``number``."""
    img = Image.new("RGB", (side, side))
    draw = ImageDraw.Draw(img)
    top = ((40 * number) % 200 + 40, 150, 230 - (25 * number) % 120)
    bottom = (240, 220 - (15 * number) % 80, 170)
    for y in range(side):
        t = y / side
        colour = tuple(int(a + (b - a) * t) for a, b in zip(top, bottom))
        draw.line([(0, y), (side, y)], fill=colour)
    draw.ellipse([-side // 3, side // 2, side, side * 3 // 2], fill=(90, 150 - 8 * number, 80))
    draw.ellipse([side // 2, side * 3 // 5, side * 3 // 2, side * 3 // 2], fill=(70, 130, 70))
    x = side // 8 + (number * side // 7) % (side // 2)
    draw.rectangle([x, side // 2, x + side // 6, side * 5 // 6], fill=(210, 70, 70))
    draw.ellipse([x, side * 3 // 8, x + side // 6, side // 2 + 10], fill=(240, 200, 160))
    for n in range(number + 2):
        cx = (n * 97 + number * 31) % side
        draw.ellipse([cx, 40 + n * 9, cx + 24, 64 + n * 9], fill=(255, 250, 210))
    return _jpeg(img)


def draw_child_photo(side: int = PHOTO_SIDE) -> bytes:
    """A drawn stand-in for a child's photo, large enough to pass the photo checks."""
    img = Image.new("RGB", (side, side), (170, 205, 230))
    draw = ImageDraw.Draw(img)
    s = side / 900
    draw.ellipse([170 * s, 560 * s, 730 * s, 1200 * s], fill=(70, 140, 200))
    draw.ellipse([250 * s, 150 * s, 650 * s, 610 * s], fill=(236, 190, 150))
    draw.chord([230 * s, 110 * s, 670 * s, 560 * s], 180, 360, fill=(230, 170, 60))
    for x in (360, 540):
        draw.ellipse([(x - 24) * s, 360 * s, (x + 24) * s, 408 * s], fill=(255, 255, 255))
        draw.ellipse([(x - 13) * s, 371 * s, (x + 13) * s, 397 * s], fill=(60, 110, 60))
    draw.arc([370 * s, 430 * s, 530 * s, 540 * s], 20, 160, fill=(180, 70, 70), width=6)
    return _jpeg(img)


def ai_part(jpeg: bytes) -> bytes:
    """The bytes the pipeline sends for a catalog image: decoded, then re-encoded for the model."""
    return image_part_bytes(load_page_image(jpeg), AI_INPUT_MAX_SIDE)


def photo_part(data: bytes) -> bytes:
    """The bytes the pipeline sends for the child's photo."""
    return image_part_bytes(normalize_photo(data), AI_INPUT_MAX_SIDE)


def identity_part(generated_cover: bytes) -> bytes:
    """The bytes the pipeline sends as the identity reference when the cover is drawn first:
    the saved cover, re-encoded."""
    with Image.open(io.BytesIO(generated_cover)) as img:
        return image_part_bytes(img.convert("RGB"), AI_INPUT_MAX_SIDE)


def drawn_identity_part(cover_request: RecordedRequest, original_cover: bytes) -> bytes:
    """The identity reference a cover drawn beside the pages gives them: its judge input, made
    from the model's reply (the fake's ``tinted_copy``, made again) as the page it becomes."""
    reply, _ = tinted_copy(cover_request)
    page = Original.of(load_page_image(original_cover))
    preview = check_output(
        reply,
        original=page,
        requested_ratio=cover_request.aspect_ratio,
        preview_side=AI_INPUT_MAX_SIDE,
    ).preview
    return to_jpeg(preview)


def unchanged_page(jpeg: bytes) -> bytes:
    """A page without a character as it goes into the book: the original, re-encoded."""
    return to_jpeg(load_page_image(jpeg))


class Script:
    """``FakeGemini.default``: answers each target's requests from its own queue, then succeeds."""

    def __init__(self, env: PipelineEnv) -> None:
        self._env = env
        self._plans: dict[Target, deque[Behaviour]] = defaultdict(deque)

    def on(self, target: Target, *behaviours: Behaviour) -> None:
        self._plans[target].extend(behaviours)

    def forget(self, target: Target) -> None:
        """Drop what is left of ``target``'s plan: its next requests succeed."""
        self._plans.pop(target, None)

    async def __call__(self, fake: FakeGemini, request: RecordedRequest) -> web.Response:
        plan = self._plans.get(self._env.target(request))
        behaviour = plan.popleft() if plan else succeed()
        return await behaviour(fake, request)


# --- the environment -----------------------------------------------------------------------


@dataclass
class SampleBook:
    id: str
    title: str
    cover: bytes
    pages: dict[int, bytes]
    has_character: dict[int, bool]

    @property
    def drawn_pages(self) -> list[int]:
        """Pages the model redraws (the others go into the book as they are)."""
        return sorted(n for n, has in self.has_character.items() if has)


@dataclass
class PipelineEnv:
    fake: FakeGemini
    database_url: str
    root: Path
    setup: PostgresStore
    storage: LocalStorage = field(init=False)
    script: Script = field(init=False)
    retries: list[str] = field(default_factory=list)
    """Error codes ``LimitedAI`` retried in-process, in order (its ``on_retry`` callback)."""
    sleeps: list[float] = field(default_factory=list)
    """Backoff delays ``LimitedAI`` asked for; recorded, not slept, so retries cost no time."""
    parent: str = field(default_factory=lambda: str(uuid.uuid4()))
    """The signed-in user who places this world's orders; their photos are in their folder."""
    _targets: dict[bytes, Target] = field(default_factory=dict)
    _stack: AsyncExitStack = field(default_factory=AsyncExitStack)
    _books: int = 0

    def __post_init__(self) -> None:
        self.storage = LocalStorage(self.storage_dir)
        self.script = Script(self)
        self.fake.default = self.script

    @classmethod
    @asynccontextmanager
    async def open(cls, database_url: str, root: Path) -> AsyncIterator[PipelineEnv]:
        async with FakeGemini() as fake:
            setup = PostgresStore(database_url)
            await setup.open()
            env = cls(fake=fake, database_url=database_url, root=root, setup=setup)
            try:
                yield env
            finally:
                await env._stack.aclose()
                await setup.close()

    @property
    def storage_dir(self) -> Path:
        return self.root / "storage"

    # ---------------------------------------------------------------- settings and processors

    def environ(self, **overrides: str) -> dict[str, str]:
        environ = {
            "DATABASE_URL": self.database_url,
            "SUPABASE_URL": SUPABASE_URL,
            "STORAGE_BACKEND": "local",
            "LOCAL_STORAGE_DIR": str(self.storage_dir),
            "CACHE_DIR": str(self.root / "cache"),
            "AI_PROVIDER": "gemini",
            "GOOGLE_API_KEY": self.fake.api_key,
            "GEMINI_BASE_URL": self.fake.base_url,
            "GEMINI_ANALYSIS_MODEL": self.fake.ANALYSIS_MODEL,
            "GEMINI_IMAGE_MODEL": f"{self.fake.IMAGE_MODEL},{self.fake.SECOND_IMAGE_MODEL}",
            "GEMINI_TIMEOUT_SECONDS": "30",
            "AI_MAX_RETRIES": "2",
            "WORKER_ID": "pipeline-test",
            "POLL_INTERVAL_SECONDS": "0.2",
            "LEASE_SECONDS": "30",
            "SHUTDOWN_GRACE_SECONDS": "5",
            "MAX_CONCURRENT_ORDERS": "3",
            "PAGE_CONCURRENCY": "4",
            "RETRY_BACKOFF_BASE_SECONDS": "60",
            # The request counts of the older tests are without judge calls; tests of the
            # judge (tests/integration/test_quality.py) switch it on.
            "QA_MODE": "off",
        }
        environ.update(overrides)
        return environ

    def settings(self, **overrides: str) -> Settings:
        """Settings as the daemon builds them from its environment (validated the same way)."""
        return Settings.from_env(self.environ(**overrides))

    async def factory_processor(self, **overrides: str) -> BookProcessor:
        """The processor exactly as the daemon builds it: ``monitor.app.create_processor``.

        Its ``LimitedAI`` backs off for seconds, so use it only where nothing is retried.
        """
        return await self._create(self.settings(**overrides))

    async def processor(self, *, metrics: Metrics | None = None, **overrides: str) -> BookProcessor:
        """The factory's processor with a tiny backoff whose delays are recorded in :attr:`sleeps`
        and whose retried error codes are recorded in :attr:`retries`."""
        return await self._create(
            self.settings(**overrides),
            metrics=metrics,
            backoff_base=0.01,
            on_retry=self.retries.append,
            sleep=self._record_sleep,
        )

    async def _create(self, settings: Settings, **limit_options: Any) -> BookProcessor:
        processor = await create_processor(settings, **limit_options)
        self._stack.push_async_callback(processor.aclose)
        return processor

    async def _record_sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        await asyncio.sleep(0)

    # ---------------------------------------------------------------- arranging

    async def add_book(
        self,
        *,
        pages: int = 4,
        without_character: Iterable[int] = (3,),
        title: str = TITLE,
    ) -> SampleBook:
        """Draw a book, write it as an operator's directory and import it like ``import-book``."""
        self._books += 1
        directory = self.root / f"book-{self._books}"
        directory.mkdir(parents=True)
        cover = draw_scene(0)
        (directory / "cover.jpg").write_bytes(cover)
        originals: dict[int, bytes] = {}
        has_character: dict[int, bool] = {}
        meta: dict[str, dict[str, object]] = {}
        no_hero = set(without_character)
        for number in range(1, pages + 1):
            originals[number] = draw_scene(number)
            (directory / f"{number:02d}.jpg").write_bytes(originals[number])
            has_character[number] = number not in no_hero
            meta[str(number)] = {
                "text": f"On page {number}, the keeper climbs the lighthouse stairs.",
                "has_character": has_character[number],
                "character_box": {"x": 0.2, "y": 0.4, "w": 0.3, "h": 0.5},
            }
        (directory / "pages.json").write_text(json.dumps(meta))
        book_id = await import_book(
            self.setup,
            self.storage,
            read_book_dir(directory, title),
            genre="adventure",
            age_min=3,
            age_max=7,
        )
        self.register(cover, "cover")
        for number, jpeg in originals.items():
            self.register(jpeg, number)
        return SampleBook(str(book_id), title, cover, originals, has_character)

    async def add_photo(self, data: bytes | None = None, *, name: str = "photo.jpg") -> str:
        """Upload a child photo as the app does, into the parent's upload folder; returns its
        object path."""
        path = f"uploads/{self.parent}/{uuid.uuid4()}/{name}"
        await self.storage.upload(path, draw_child_photo() if data is None else data, "image/jpeg")
        return path

    async def add_item(
        self,
        book_id: str,
        *,
        photo_path: str | None = None,
        child_name: str = "Mia",
        child_age: int | None = 5,
        child_gender: str | None = "girl",
    ) -> str:
        """A paid order with one item, through the same SQL function the demo uses."""
        return str(
            await self.setup.create_paid_order_item(
                book_id,
                child_name=child_name,
                child_age=child_age,
                child_gender=child_gender,
                child_photo_path=photo_path if photo_path is not None else await self.add_photo(),
                user_id=self.parent,
            )
        )

    # ---------------------------------------------------------------- running

    def monitor(
        self, processor: Processor, *, store: OrderStore | None = None, **overrides: str
    ) -> Monitor:
        return Monitor(
            self.settings(**overrides), store or PostgresStore(self.database_url), processor
        )

    async def run_once(
        self, processor: Processor, *, store: OrderStore | None = None, **overrides: str
    ) -> int:
        """``run_monitor.py once``: claim and process until nothing is claimable."""
        monitor = self.monitor(processor, store=store, **overrides)
        return await asyncio.wait_for(monitor.run_once(), RUN_TIMEOUT)

    # ---------------------------------------------------------------- inspecting

    def register(self, original: bytes, target: Target) -> None:
        """Requests that carry ``original`` (a catalog image replaced in storage) are ``target``'s."""
        self._targets[ai_part(original)] = target

    def target(self, request: RecordedRequest) -> Target:
        kind = request.schema_kind
        if kind == "judge":
            # The judge is sent the original first: "judge_cover", "judge_2"...
            original = (
                self._targets.get(request.images[0], "unknown") if request.images else "unknown"
            )
            return f"judge_{original}"
        if kind is not None:
            return f"{kind}_analysis"
        if not request.images:
            return "unknown"
        return self._targets.get(request.images[0], "unknown")

    def requests_for(self, target: Target, *, since: int = 0) -> list[RecordedRequest]:
        """generateContent requests for ``target``, from ``fake.requests[since:]``."""
        return [
            r
            for r in self.fake.requests[since:]
            if r.action == "generateContent" and self.target(r) == target
        ]

    def stored(self, key: str) -> bytes:
        return self.storage_dir.joinpath(*key.split("/")).read_bytes()

    def exists(self, key: str) -> bool:
        return self.storage_dir.joinpath(*key.split("/")).is_file()


# --- rows ----------------------------------------------------------------------------------


def _rows(db: psycopg.Connection, query: str, params: list[object]) -> list[dict]:
    cursor = db.cursor(row_factory=psycopg.rows.dict_row)
    return cursor.execute(query, params).fetchall()


def checkpoints(db: psycopg.Connection, item_id: str) -> dict[int, dict]:
    rows = _rows(db, "select * from order_item_pages where order_item_id = %s", [item_id])
    return {row["page_number"]: row for row in rows}


def drafts(db: psycopg.Connection, item_id: str) -> dict[int, dict]:
    """The item's drafts (migrations/021): drawings stored before their judge answered."""
    rows = _rows(db, "select * from order_item_page_drafts where order_item_id = %s", [item_id])
    return {row["page_number"]: row for row in rows}


def notifications(db: psycopg.Connection, item_id: str) -> list[dict]:
    return _rows(
        db, "select * from notifications where order_item_id = %s order by created_at", [item_id]
    )
