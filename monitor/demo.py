"""``run_monitor.py demo``: the whole pipeline on an embedded default, with no account anywhere.

An embedded Postgres (pgserver) under ``.demo/``, local storage, the sample book this project draws
itself, and the offline ``local`` image provider (real Gemini when ``GOOGLE_API_KEY`` is set). The
last line printed is the finished PDF's path.
"""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from pathlib import Path

from monitor.app import create_processor
from monitor.catalog import CONTENT_TYPES, import_book, read_book_dir
from monitor.config import Settings
from monitor.daemon import Monitor
from monitor.demo_book import COVER_BOX, TITLE, draw_child_photo, draw_cover, draw_pages
from monitor.migrate import migrate
from monitor.store.postgres import PostgresStore
from processors.layout import generated_pdf_path, generated_print_paths

SAMPLE_BOOK_ID = "6c0f4f5e-9a59-4c5e-8d7e-1a2b3c4d5e6f"


class DemoExtraMissing(RuntimeError):
    """The embedded Postgres is an optional extra, absent from a production install."""

    def __init__(self) -> None:
        super().__init__(
            "the demo needs the embedded Postgres of the [demo] extra, which is not installed: "
            "pip install 'book-order-monitor[demo]' (from a checkout: pip install '.[demo]', "
            "or make demo)"
        )


def write_sample_book(directory: Path) -> Path:
    """The sample book as an operator would hand it to ``import-book``."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "cover.jpg").write_bytes(draw_cover())
    meta: dict[str, dict[str, object]] = {"cover": {"character_box": COVER_BOX}}
    for page in draw_pages():
        (directory / f"{page.number:02d}.jpg").write_bytes(page.jpeg)
        meta[str(page.number)] = {
            "text": page.text,
            "has_character": True,
            "character_box": page.character_box,
            "text_box": page.text_box,
        }
    (directory / "pages.json").write_text(json.dumps(meta, indent=2))
    return directory


def demo_settings(home: Path, database_url: str) -> Settings:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("SUPABASE_")}
    environ.update(
        {
            "DATABASE_URL": database_url,
            "STORAGE_BACKEND": "local",
            "LOCAL_STORAGE_DIR": str(home / "storage"),
            "CACHE_DIR": str(home / "cache"),
            "WORKER_ID": "demo",
            "MAX_CONCURRENT_ORDERS": "1",
        }
    )
    return Settings.from_env(environ)


async def run_demo(*, home: Path, photo: Path | None, name: str, age: int, gender: str) -> int:
    import warnings

    # pgserver's platformdirs warns when XDG_RUNTIME_DIR is unset (as on most servers); harmless.
    warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR")
    try:
        import pgserver  # imported here: only the demo needs the embedded server
    except ImportError as exc:
        raise DemoExtraMissing() from exc

    home.mkdir(parents=True, exist_ok=True)
    server = await asyncio.to_thread(pgserver.get_server, home / "pg")
    database_url = server.get_uri()
    await migrate(database_url)
    settings = demo_settings(home, database_url)
    print(
        f"Embedded Postgres at {home / 'pg'}; storage in {settings.local_storage_dir}; "
        f"image AI: {settings.ai_provider}"
    )

    processor = await create_processor(settings)
    setup = PostgresStore(database_url)
    await setup.open()
    try:
        source = read_book_dir(write_sample_book(home / "sample-book"), TITLE)
        book_id = await import_book(
            setup,
            processor.storage,
            source,
            book_id=SAMPLE_BOOK_ID,
            genre="bedtime",
            age_min=3,
            age_max=7,
        )
        photo_bytes = photo.read_bytes() if photo else draw_child_photo()
        suffix = photo.suffix.lower() if photo else ".jpg"
        parent = str(uuid.uuid4())  # the photo is in the upload folder of the order's user
        photo_path = f"uploads/{parent}/photo{suffix}"
        await processor.storage.upload(
            photo_path, photo_bytes, CONTENT_TYPES.get(suffix, "image/jpeg")
        )
        item_id = await setup.create_paid_order_item(
            book_id,
            child_name=name,
            child_age=age,
            child_gender=gender,
            child_photo_path=photo_path,
            user_id=parent,
        )
        print(f"Paid order item {item_id}: '{TITLE}' for {name}")

        monitor = Monitor(settings, PostgresStore(database_url), processor)
        printer = asyncio.create_task(_print_progress(monitor))
        try:
            await monitor.run_once()
        finally:
            printer.cancel()
            await processor.aclose()
        summary = await setup.item_summary(item_id) or {}
    finally:
        await setup.close()

    if summary.get("generation_status") != "completed":
        print(
            f"The book was not finished: {summary.get('generation_status')} "
            f"({summary.get('error_code')}: {summary.get('error_message')})"
        )
        return 1
    print(f"Done: {summary.get('pages_done')} pages, AI usage {summary.get('ai_usage')}")
    interior, print_cover = generated_print_paths(item_id)
    for label, path in (("print interior", interior), ("print cover", print_cover)):
        print(f"{label}: {(settings.local_storage_dir / path).resolve()}")
    # The last line is the screen PDF alone, as the README promises (scripts take it from there).
    print((settings.local_storage_dir / generated_pdf_path(item_id)).resolve())
    return 0


async def _print_progress(monitor: Monitor) -> None:
    last = None
    while True:
        for flight in list(monitor.in_flight.values()):
            state = (flight.job.progress, flight.job.step)
            if state != last:
                print(f"  {state[0]:3d}%  {state[1]}", flush=True)
                last = state
        await asyncio.sleep(0.1)
