"""End to end: ``run_monitor.py`` as a subprocess + real Postgres + fake Gemini + local storage.

The daemon talks to the fake through the real google-genai client (``GEMINI_BASE_URL``), exactly
as it would talk to Gemini, and the tests read the results the way the app does: from the rows.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import psycopg
import pytest
from pypdf import PdfReader

from monitor.catalog import import_book, read_book_dir
from monitor.demo import write_sample_book
from monitor.demo_book import TITLE, draw_child_photo
from monitor.storage.local import LocalStorage
from monitor.store.postgres import PostgresStore
from testkit.daemon_process import DaemonProcess
from testkit.fakes.gemini_server import FakeGemini, delayed
from tests.support.factories import item_row
from tests.support.waiting import eventually

PAGES = 8
PAGE_IN_PROMPT = re.compile(r"original illustration of page (\d+)\b")


@pytest.fixture
async def fake() -> AsyncIterator[FakeGemini]:
    async with FakeGemini() as server:
        yield server


@pytest.fixture
async def shelf(database_url: str, tmp_path: Path) -> AsyncIterator[Callable[..., object]]:
    """Imports the sample book once and places paid orders of it, as the app would."""
    storage = LocalStorage(tmp_path / "storage")
    store = PostgresStore(database_url)
    await store.open()
    source = read_book_dir(write_sample_book(tmp_path / "book"), TITLE)
    book_id = await import_book(store, storage, source)

    async def order(name: str = "Mia") -> str:
        photo = f"uploads/00000000-0000-0000-0000-0000000000aa/{name.lower()}.jpg"
        await storage.upload(photo, draw_child_photo(), "image/jpeg")
        return await store.create_paid_order_item(
            book_id,
            child_name=name,
            child_age=5,
            child_gender="girl",
            child_photo_path=photo,
            user_id="00000000-0000-0000-0000-0000000000aa",
        )

    yield order
    await store.close()


def daemon_env(database_url: str, fake: FakeGemini, tmp_path: Path, **extra: str) -> dict[str, str]:
    return {
        "DATABASE_URL": database_url,
        "STORAGE_BACKEND": "local",
        "LOCAL_STORAGE_DIR": str(tmp_path / "storage"),
        "CACHE_DIR": str(tmp_path / "cache"),
        "AI_PROVIDER": "gemini",
        "GOOGLE_API_KEY": fake.api_key,
        "GEMINI_BASE_URL": fake.base_url,
        "GEMINI_ANALYSIS_MODEL": fake.ANALYSIS_MODEL,
        "GEMINI_IMAGE_MODEL": fake.IMAGE_MODEL,
        "POLL_INTERVAL_SECONDS": "0.5",
        "PORT": "0",
        **extra,
    }


async def wait_status(db: psycopg.Connection, item: str, status: str, timeout: float = 60) -> None:
    await eventually(
        lambda: item_row(db, item)["generation_status"] == status,
        timeout=timeout,
        what=f"{item} to be {status}",
    )


def successful_page_calls(fake: FakeGemini) -> list[int]:
    pages = []
    for request in fake.generate_requests(fake.IMAGE_MODEL):
        match = PAGE_IN_PROMPT.search(" ".join(request.texts))
        if match and request.status == 200:
            pages.append(int(match.group(1)))
    return pages


def judged_pages(fake: FakeGemini) -> list[int]:
    """The page (0: the cover) of every answered judge call, told by its first image: the
    original the judge compares with is the base image its page's image calls were sent."""
    page_of_base: dict[bytes, int] = {}
    for request in fake.generate_requests(fake.IMAGE_MODEL):
        match = PAGE_IN_PROMPT.search(" ".join(request.texts))
        page_of_base[request.images[0]] = int(match.group(1)) if match else 0
    return [
        page_of_base[request.images[0]]
        for request in fake.generate_requests(fake.ANALYSIS_MODEL)
        if request.schema_kind == "judge" and request.status == 200
    ]


async def test_paid_order_becomes_a_finished_book(
    fake: FakeGemini,
    shelf: Callable[..., object],
    database_url: str,
    db: psycopg.Connection,
    tmp_path: Path,
) -> None:
    item = await shelf()
    daemon = DaemonProcess(daemon_env(database_url, fake, tmp_path), log_file=tmp_path / "d.log")
    try:
        await wait_status(db, item, "completed")
    finally:
        assert await daemon.terminate_beside_fakes() == 0
    row = item_row(db, item)
    assert row["progress"] == 100 and row["pages_done"] == PAGES and row["pages_total"] == PAGES
    assert row["pdf_path"] == f"generated/{item}/book.pdf"
    assert row["cover_image_url"].startswith("file://") and row["generated_at"] is not None
    # Two analyses, the cover and the pages, and (QA_MODE=judge, the default) one judge call
    # for each of the 1 + PAGES pictures.
    assert row["ai_usage"]["images"] == 1 + PAGES
    assert row["ai_usage"]["calls"] == 3 + PAGES + (1 + PAGES)

    pdf = PdfReader(tmp_path / "storage" / row["pdf_path"])
    assert len(pdf.pages) == 1 + PAGES
    assert all(
        (float(p.mediabox.width), float(p.mediabox.height)) == (612.0, 612.0) for p in pdf.pages
    )
    assert pdf.metadata.title == TITLE
    assert (tmp_path / "storage" / row["cover_image_path"]).stat().st_size > 0

    kinds = db.execute("select kind from notifications where order_item_id = %s", [item]).fetchall()
    assert kinds == [("book_ready",)]
    pages = db.execute(
        "select count(*) from order_item_pages where order_item_id = %s", [item]
    ).fetchone()
    assert pages == (1 + PAGES,)


async def test_the_cover_is_analyzed_once_for_three_orders_of_a_book(
    fake: FakeGemini,
    shelf: Callable[..., object],
    database_url: str,
    db: psycopg.Connection,
    tmp_path: Path,
) -> None:
    items = [await shelf(name) for name in ("Mia", "Noah", "Lea")]
    daemon = DaemonProcess(daemon_env(database_url, fake, tmp_path), log_file=tmp_path / "d.log")
    try:
        for item in items:
            await wait_status(db, item, "completed")
    finally:
        await daemon.terminate_beside_fakes()
    kinds = [r.schema_kind for r in fake.generate_requests(fake.ANALYSIS_MODEL)]
    assert kinds.count("cover") == 1
    assert kinds.count("child") == 3


async def test_kill_9_mid_book_repeats_no_checkpointed_page(
    fake: FakeGemini,
    shelf: Callable[..., object],
    database_url: str,
    db: psycopg.Connection,
    tmp_path: Path,
) -> None:
    item = await shelf()
    fake.default = delayed(0.4)  # slow enough to kill between pages
    env = daemon_env(database_url, fake, tmp_path, PAGE_CONCURRENCY="1", LEASE_SECONDS="3")
    first = DaemonProcess(env, log_file=tmp_path / "first.log")
    await eventually(lambda: item_row(db, item)["pages_done"] >= 3, timeout=60, what="three pages")
    first.kill()
    checkpointed = {
        n
        for (n,) in db.execute(
            "select page_number from order_item_pages where order_item_id = %s and page_number > 0",
            [item],
        )
    }
    assert item_row(db, item)["generation_status"] == "processing"

    second = DaemonProcess(env, log_file=tmp_path / "second.log")
    try:
        await wait_status(db, item, "completed")
    finally:
        assert await second.terminate_beside_fakes() == 0
    calls = successful_page_calls(fake)
    for page in checkpointed:
        assert calls.count(page) == 1, f"page {page} was paid for again after its checkpoint"
    assert sorted(set(calls)) == list(range(1, PAGES + 1))
    # The cover was checkpointed before the kill: the second daemon reused it.
    cover_calls = [
        r
        for r in fake.generate_requests(fake.IMAGE_MODEL)
        if r.status == 200 and not PAGE_IN_PROMPT.search(" ".join(r.texts))
    ]
    assert len(cover_calls) == 1
    # Judged before it was checkpointed, no page (the cover included) is judged again.
    judged = judged_pages(fake)
    for page in checkpointed | {0}:
        assert judged.count(page) == 1, f"page {page} was judged again after its checkpoint"
    assert len(PdfReader(tmp_path / "storage" / item_row(db, item)["pdf_path"]).pages) == 1 + PAGES


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def pdf_page_sizes(path: Path) -> set[tuple[int, int]]:
    """The pixel size of every image in the PDF: one shape for every page, none squeezed."""
    from io import BytesIO

    from PIL import Image

    sizes = set()
    for page in PdfReader(path).pages:
        # One picture per page; a page with story text also has its text layer (a form).
        (xobject,) = [
            x
            for x in page["/Resources"]["/XObject"].values()
            if x.get_object()["/Subtype"] == "/Image"
        ]
        sizes.add(Image.open(BytesIO(xobject.get_object()._data)).size)
    return sizes


async def test_books_complete_with_the_default_model_settings(
    fake: FakeGemini,
    shelf: Callable[..., object],
    database_url: str,
    db: psycopg.Connection,
    tmp_path: Path,
) -> None:
    items = [await shelf("Mia"), await shelf("Noah")]
    env = daemon_env(database_url, fake, tmp_path)
    del env["GEMINI_ANALYSIS_MODEL"], env["GEMINI_IMAGE_MODEL"]  # what a new operator runs
    daemon = DaemonProcess(env, log_file=tmp_path / "d.log")
    try:
        for item in items:
            await wait_status(db, item, "completed")
    finally:
        assert await daemon.terminate_beside_fakes() == 0
    used = {r.model for r in fake.generate_requests() if r.status == 200}
    assert used == {"gemini-3.5-flash", "gemini-3.1-flash-image"}
    assert all(r.status == 200 for r in fake.generate_requests())  # nothing refused: no 400
    assert "AFC is enabled" not in daemon.logs()
    for item in items:
        row = item_row(db, item)
        (size,) = pdf_page_sizes(tmp_path / "storage" / row["pdf_path"])
        assert size[0] == size[1]  # the sample book is square (8.5 x 8.5 in)


async def test_no_usable_model_keeps_the_daemon_up_and_unhealthy_until_it_returns(
    fake: FakeGemini,
    shelf: Callable[..., object],
    database_url: str,
    db: psycopg.Connection,
    tmp_path: Path,
) -> None:
    import httpx

    item = await shelf()
    fake.retire(fake.IMAGE_MODEL)
    port = free_port()
    daemon = DaemonProcess(
        daemon_env(
            database_url,
            fake,
            tmp_path,
            PORT=str(port),
            HOST="127.0.0.1",
            MODEL_CHECK_RETRY_SECONDS="0.5",
        ),
        log_file=tmp_path / "d.log",
    )
    try:

        async def health() -> httpx.Response | None:
            try:
                async with httpx.AsyncClient() as client:
                    return await client.get(f"http://127.0.0.1:{port}/health")
            except httpx.TransportError:
                return None

        async def unhealthy() -> bool:
            answer = await health()
            return answer is not None and answer.status_code == 503

        await eventually_async(unhealthy, what="/health 503")
        body = (await health()).json()
        assert any(
            f"'{fake.IMAGE_MODEL}'" in p and "claiming paused" in p for p in body["problems"]
        )
        assert body["claiming"] is False
        assert daemon.alive() and item_row(db, item)["generation_status"] == "pending"

        fake.models.add(fake.IMAGE_MODEL)  # the operator fixed it (or Google brought it back)
        await wait_status(db, item, "completed")
        assert (await health()).status_code == 200
    finally:
        assert await daemon.terminate_beside_fakes() == 0
    assert "checking again" in daemon.logs()


async def eventually_async(check: Callable[[], object], *, what: str, timeout: float = 30) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        if await check():  # type: ignore[misc]
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")
