"""/dashboard in a real headless browser (Debian's chromium driven by Playwright), on a real
Monitor over the test Postgres: progress written through the queue functions moves the bar, the
retry button sends a failed item back to pending, and a screenshot is saved.

Install the browser with ``make browser`` (apt-get install chromium); ``make test`` does.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import psycopg
import pytest
from aiohttp.test_utils import TestClient, TestServer

from monitor.config import Secret, Settings
from monitor.daemon import Monitor
from monitor.job import Job
from monitor.server import create_app
from monitor.store.postgres import PostgresStore
from processors.contract import BookResult, StepCode
from processors.errors import TerminalError
from tests.support.factories import insert_book, insert_item, item_row
from tests.support.waiting import eventually

ADMIN_TOKEN = "dashboard-token-41d9"
CHILD = "Zephyrine"
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
#: The flags this machine's notes say a sandboxed, offline chromium needs (no network chatter).
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
#: Where the run leaves its screenshot (gitignored); DASHBOARD_SCREENSHOT overrides.
SCREENSHOT = Path(
    os.environ.get(
        "DASHBOARD_SCREENSHOT", Path(__file__).resolve().parents[1] / "artifacts" / "dashboard.png"
    )
)
PHOTO_WORDS = ("uploads/", "generated/", "https://", ".jpg", ".pdf", "@")


class Stepped:
    """Draws one item a step at a time, each step on the test's signal, through job.report
    (the real set_order_item_progress); fails another item for good, naming the child in the
    parent's message as a real failure text may."""

    def __init__(self, fail: str) -> None:
        self.fail = fail
        self.step = asyncio.Queue[int]()
        self.drawing: list[str] = []

    async def __call__(self, job: Job) -> BookResult:
        if job.item_id == self.fail:
            raise TerminalError(
                "test: no face",
                code="photo_rejected",
                parent_message=f"We could not see {CHILD}'s face in the photo.",
            )
        self.drawing.append(job.item_id)
        await job.report(5, f"Drawing {CHILD}'s cover", code=StepCode.DRAWING_COVER, pages_total=4)
        while True:
            page = await self.step.get()
            await job.report(
                10 + 20 * page, f"Drawing page {page} of 4 for {CHILD}", code=StepCode.DRAWING_PAGE
            )


@pytest.fixture
async def browser() -> AsyncIterator[object]:
    try:
        from playwright.async_api import async_playwright
    except ImportError:
        pytest.skip("the playwright package is missing: pip install -r requirements-dev.txt")
    if shutil.which(CHROMIUM) is None:
        pytest.skip(f"no browser at {CHROMIUM}: run `make browser` (apt-get install chromium)")
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        await browser.close()


async def test_the_dashboard_shows_progress_moving_and_retries_a_failure_in_a_browser(
    database_url: str, db: psycopg.Connection, browser: object
) -> None:
    book = insert_book(db, pages=4)
    drawing = insert_item(db, book_id=book, child_name=CHILD)
    failing = insert_item(db, book_id=book, child_name=CHILD, max_attempts=1)
    processor = Stepped(fail=failing)
    settings = Settings(
        database_url=Secret(database_url),
        poll_interval_seconds=0.2,
        lease_seconds=30,
        shutdown_grace_seconds=1,
        worker_id="dashboard-test",
        admin_token=Secret(ADMIN_TOKEN),
    )
    monitor = Monitor(settings, PostgresStore(database_url), processor)
    client = TestClient(TestServer(create_app(monitor)))
    await client.start_server()
    await monitor.start()
    try:
        await eventually(
            lambda: (
                item_row(db, failing)["generation_status"] == "failed"
                and processor.drawing == [drawing]
            ),
            what="one drawing, one failed",
        )
        # No further claims, so the retried item stays pending for the check below.
        monitor.stop_claiming()

        page = await browser.new_page(viewport={"width": 1280, "height": 900})
        console_errors: list[str] = []
        page.on("console", lambda m: console_errors.append(m.text) if m.type == "error" else None)
        await page.goto(str(client.make_url("/dashboard?refresh=1")))

        bar = page.locator(f'#in-flight tr[data-item="{drawing}"] [role=progressbar]')
        await bar.wait_for()
        assert await bar.get_attribute("aria-valuenow") == "5"
        for step, expected in ((1, "30"), (3, "70")):
            processor.step.put_nowait(step)
            await page.wait_for_function(
                "([sel, want]) => document.querySelector(sel)?.getAttribute('aria-valuenow') === want",
                arg=[f'#in-flight tr[data-item="{drawing}"] [role=progressbar]', expected],
            )
        step_cell = page.locator(f'#in-flight tr[data-item="{drawing}"] td.step')
        assert await step_cell.inner_text() == "Drawing page 3 of 4 for [child]"
        fill_width = await page.eval_on_selector(
            f'#in-flight tr[data-item="{drawing}"] [role=progressbar] > span',
            "node => node.getBoundingClientRect().width / node.parentElement.getBoundingClientRect().width",
        )
        assert abs(fill_width - 0.7) < 0.05  # the bar is drawn at 70 %, not only labelled

        failure = page.locator(f'#failures tr[data-item="{failing}"]')
        await failure.wait_for()
        assert await failure.locator("td.code").inner_text() == "photo_rejected"
        assert "We could not see [child]'s face" in await failure.inner_text()
        retry = failure.locator("button.retry")
        assert await retry.is_disabled()  # read-only until the operator gives the token

        await page.fill("#token", ADMIN_TOKEN)
        await page.click("#token-save")
        await page.wait_for_function(
            f"() => !document.querySelector('#failures tr[data-item=\"{failing}\"] button').disabled"
        )
        await page.screenshot(path=str(_screenshot_path()), full_page=True)
        await retry.click()
        await page.locator("#alert.info").wait_for()
        assert item_row(db, failing)["generation_status"] == "pending"
        await page.wait_for_function(
            f"() => !document.querySelector('#failures tr[data-item=\"{failing}\"]')"
        )

        text = await page.inner_text("body")
        assert CHILD not in text and not [w for w in PHOTO_WORDS if w in text], text
        assert console_errors == []
    finally:
        await client.close()
        await monitor.shutdown()


def _screenshot_path() -> Path:
    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    return SCREENSHOT


async def test_a_wrong_token_is_refused_and_nothing_changes(
    database_url: str, db: psycopg.Connection, browser: object
) -> None:
    failing = insert_item(db, book_id=insert_book(db), child_name=CHILD, max_attempts=1)
    settings = Settings(
        database_url=Secret(database_url),
        poll_interval_seconds=0.2,
        lease_seconds=30,
        shutdown_grace_seconds=1,
        worker_id="dashboard-test",
        admin_token=Secret(ADMIN_TOKEN),
    )
    monitor = Monitor(settings, PostgresStore(database_url), Stepped(fail=failing))
    client = TestClient(TestServer(create_app(monitor)))
    await client.start_server()
    await monitor.start()
    try:
        await eventually(
            lambda: item_row(db, failing)["generation_status"] == "failed", what="the failure"
        )
        monitor.stop_claiming()
        page = await browser.new_page()
        await page.goto(str(client.make_url("/dashboard?refresh=1")))
        await page.fill("#token", "not-the-token")
        await page.click("#token-save")
        retry = page.locator(f'#failures tr[data-item="{failing}"] button.retry')
        await page.wait_for_function(
            f"() => !document.querySelector('#failures tr[data-item=\"{failing}\"] button').disabled"
        )
        await retry.click()
        await page.locator("#alert:not(.info)").filter(has_text="refused").wait_for()
        assert item_row(db, failing)["generation_status"] == "failed"
    finally:
        await client.close()
        await monitor.shutdown()


# ---------------------------------------------------------------- the same server without a browser


async def test_the_data_carry_no_personal_data_and_the_page_loads_nothing_foreign(
    database_url: str, db: psycopg.Connection
) -> None:
    book = insert_book(db)
    failing = insert_item(db, book_id=book, child_name=CHILD, max_attempts=1)
    settings = Settings(
        database_url=Secret(database_url),
        poll_interval_seconds=0.2,
        lease_seconds=30,
        shutdown_grace_seconds=1,
        worker_id="dashboard-test",
    )
    monitor = Monitor(settings, PostgresStore(database_url), Stepped(fail=failing))
    client = TestClient(TestServer(create_app(monitor)))
    await client.start_server()
    await monitor.start()
    try:
        await eventually(
            lambda: item_row(db, failing)["generation_status"] == "failed", what="the failure"
        )
        response = await client.get("/dashboard/data")
        assert response.status == 200
        raw = await response.text()
        body = json.loads(raw)
        assert [f["id"] for f in body["database"]["failures"]] == [failing]
        assert body["database"]["queue"]["by_status"] == {"failed": 1}
        assert body["daemon"]["adminEnabled"] is False
        assert CHILD not in raw and not [w for w in PHOTO_WORDS if w in raw], raw

        page = await client.get("/dashboard")
        html = await page.text()
        assert page.headers["Content-Security-Policy"].startswith("default-src 'self'")
        assert "http://" not in html and "https://" not in html  # no CDN, nothing foreign
        for asset in ("dashboard.css", "dashboard.js"):
            assert (await client.get(f"/dashboard/static/{asset}")).status == 200
        assert (await client.get("/dashboard/static/..%2Fdashboard.py")).status == 404
    finally:
        await client.close()
        await monitor.shutdown()


async def test_the_page_stays_up_and_says_so_when_the_database_is_down() -> None:
    nowhere = "postgresql://nobody@127.0.0.1:1/nothing"
    settings = Settings(
        database_url=Secret(nowhere),
        poll_interval_seconds=0.2,
        worker_id="dashboard-test",
        auto_start_monitor=False,
    )
    monitor = Monitor(settings, PostgresStore(nowhere, connect_timeout=1), None)
    client = TestClient(TestServer(create_app(monitor)))
    await client.start_server()
    try:
        response = await client.get("/dashboard/data")
        assert response.status == 503
        body = await response.json()
        assert body["database"] is None and body["daemon"]["workerId"] == "dashboard-test"
    finally:
        await client.close()
