"""Photo retention (migrations/006_retention.sql, monitor/retention.py) on a real Postgres, through
both store adapters, with files in a local storage directory."""

from __future__ import annotations

import uuid
from pathlib import Path

import psycopg
import pytest

from monitor.config import Secret, Settings
from monitor.daemon import RETENTION_JOB_ID, Monitor
from monitor.metrics import Metrics
from monitor.retention import purge_expired_photos
from monitor.storage.local import LocalStorage
from monitor.store.base import OrderStore
from monitor.store.postgres import PostgresStore
from tests.support.factories import insert_book, insert_item, insert_order, item_row
from tests.support.processors import Recording
from tests.support.waiting import eventually


def finished_item(
    db: psycopg.Connection,
    storage_dir: Path,
    book: str,
    *,
    days_ago: float,
    status: str = "completed",
    photo: str | None = None,
    order: str | None = None,
) -> dict[str, str]:
    """An item that finished ``days_ago`` with every object it has in storage."""
    item = insert_item(db, book_id=book, order_id=order)
    photo = photo or item_row(db, item)["child_photo_path"]
    paths = {
        "photo": photo,
        "cover": f"generated/{item}/cover.jpg",
        "page1": f"generated/{item}/pages/01.jpg",
        "page2": f"generated/{item}/pages/02.jpg",
        "pdf": f"generated/{item}/book.pdf",
    }
    finished = status == "completed"
    db.execute(
        """update order_items
              set generation_status = %s, child_photo_path = %s,
                  pdf_path = %s, cover_image_path = %s,
                  generated_at = case when %s then now() - make_interval(days => %s) end,
                  updated_at = now() - make_interval(days => %s)
            where id = %s""",
        [
            status,
            photo,
            paths["pdf"] if finished else None,
            paths["cover"] if finished else None,
            finished,
            days_ago,
            days_ago,
            item,
        ],
    )
    # Page 0 is the cover's checkpoint; it points at the cover object that stays.
    for number, key in ((0, "cover"), (1, "page1"), (2, "page2")):
        db.execute(
            "insert into order_item_pages (order_item_id, page_number, image_path)"
            " values (%s, %s, %s)",
            [item, number, paths[key]],
        )
    for path in paths.values():
        file = storage_dir / path
        file.parent.mkdir(parents=True, exist_ok=True)
        file.write_bytes(b"x")
    return {"id": item, **paths}


def stored(storage_dir: Path, *paths: str) -> list[bool]:
    return [(storage_dir / p).exists() for p in paths]


def checkpoints(db: psycopg.Connection, item: str) -> list[int]:
    rows = db.execute(
        "select page_number from order_item_pages where order_item_id = %s order by page_number",
        [item],
    ).fetchall()
    return [r[0] for r in rows]


async def test_old_items_lose_photo_and_pages_and_keep_pdf_and_cover(
    store: OrderStore, db: psycopg.Connection, tmp_path: Path
) -> None:
    storage = LocalStorage(tmp_path)
    book = insert_book(db, pages=2)
    old = finished_item(db, tmp_path, book, days_ago=31)
    old_failed = finished_item(db, tmp_path, book, days_ago=31, status="failed")
    recent = finished_item(db, tmp_path, book, days_ago=1)
    metrics = Metrics()

    # batch=1: several batches in one run.
    deleted = await purge_expired_photos(store, storage, days=30, batch=1, metrics=metrics)

    assert deleted == 6  # photo + two pages, for each of the two old items
    for gone in (old, old_failed):
        assert stored(tmp_path, gone["photo"], gone["page1"], gone["page2"]) == [False] * 3
        row = item_row(db, gone["id"])
        assert row["child_photo_path"] is None and row["photo_deleted_at"] is not None
        assert checkpoints(db, gone["id"]) == [0]
    assert stored(tmp_path, old["pdf"], old["cover"]) == [True, True]
    row = item_row(db, old["id"])
    assert (row["pdf_path"], row["cover_image_path"]) == (old["pdf"], old["cover"])
    assert row["generation_status"] == "completed"
    # Yesterday's book keeps everything.
    assert (
        stored(tmp_path, *(recent[k] for k in ("photo", "cover", "page1", "page2", "pdf")))
        == [True] * 5
    )
    assert item_row(db, recent["id"])["child_photo_path"] == recent["photo"]
    assert checkpoints(db, recent["id"]) == [0, 1, 2]
    assert "book_monitor_retention_objects_deleted_total 6.0" in metrics.render(None)[0].decode()

    # Idempotent: a second run finds nothing; a deleted-but-unmarked item (a crash between the
    # two steps) is finished without error although its objects are already gone.
    assert await purge_expired_photos(store, storage, days=30, batch=10) == 0
    db.execute(
        "update order_items set photo_deleted_at = null, child_photo_path = %s where id = %s",
        [old["photo"], old["id"]],
    )
    assert await purge_expired_photos(store, storage, days=30, batch=10) == 1
    assert item_row(db, old["id"])["photo_deleted_at"] is not None


async def test_unfinished_items_and_switched_off_retention_keep_everything(
    store: OrderStore, db: psycopg.Connection, tmp_path: Path
) -> None:
    storage = LocalStorage(tmp_path)
    book = insert_book(db, pages=2)
    old = finished_item(db, tmp_path, book, days_ago=31)
    for status in ("pending", "processing"):
        waiting = insert_item(db, book_id=book)
        db.execute(
            "update order_items set generation_status = %s,"
            " updated_at = now() - interval '90 days' where id = %s",
            [status, waiting],
        )
    assert await purge_expired_photos(store, storage, days=0, batch=10) == 0
    assert stored(tmp_path, old["photo"], old["page1"]) == [True, True]
    due = await store.items_due_for_photo_deletion(30, 10)
    assert [row["item_id"] for row in due] == [old["id"]]


async def test_a_photo_still_used_by_a_newer_item_is_kept_until_that_one_expires(
    store: OrderStore, db: psycopg.Connection, tmp_path: Path
) -> None:
    storage = LocalStorage(tmp_path)
    book = insert_book(db, pages=2)
    parent = str(uuid.uuid4())
    order = insert_order(db, user_id=parent)
    shared = f"uploads/{parent}/photo.jpg"
    old = finished_item(db, tmp_path, book, days_ago=40, photo=shared, order=order)
    newer = finished_item(db, tmp_path, book, days_ago=2, photo=shared, order=order)
    await purge_expired_photos(store, storage, days=30, batch=10)
    assert stored(tmp_path, shared, old["page1"]) == [True, False]
    assert item_row(db, old["id"])["child_photo_path"] is None
    db.execute(
        "update order_items set generated_at = now() - interval '31 days' where id = %s",
        [newer["id"]],
    )
    await purge_expired_photos(store, storage, days=30, batch=10)
    assert stored(tmp_path, shared, newer["page1"]) == [False, False]


@pytest.mark.parametrize("days", [30, 0])
async def test_the_daemon_runs_retention_only_when_switched_on(
    database_url: str, db: psycopg.Connection, tmp_path: Path, days: int
) -> None:
    storage = LocalStorage(tmp_path)
    book = insert_book(db, pages=2)
    old = finished_item(db, tmp_path, book, days_ago=31)
    store = PostgresStore(database_url)
    runs: list[int] = []

    async def retention() -> int:
        runs.append(await purge_expired_photos(store, storage, days=days, batch=10))
        return runs[-1]

    settings = Settings(
        database_url=Secret(database_url),
        poll_interval_seconds=0.2,
        worker_id="retention-test",
        photo_retention_days=days,
    )
    monitor = Monitor(settings, store, Recording(steps=1), retention=retention)
    await monitor.start()
    try:
        if days:
            await eventually(lambda: runs == [3], what="a retention run")
            assert stored(tmp_path, old["photo"]) == [False]
        else:
            await eventually(lambda: monitor.stats.last_poll_at is not None, what="a poll")
            assert monitor._scheduler is not None
            assert monitor._scheduler.get_job(RETENTION_JOB_ID) is None
            assert runs == [] and stored(tmp_path, old["photo"]) == [True]
    finally:
        await monitor.shutdown()


async def test_retention_never_deletes_what_is_not_the_items_own(
    store: OrderStore, db: psycopg.Connection, tmp_path: Path
) -> None:
    """A row from before migration 011 may name another family's upload, and a checkpoint any
    object: the service-role sweep deletes neither (no confused deputy)."""
    storage = LocalStorage(tmp_path)
    book = insert_book(db, pages=2)
    other_family = finished_item(db, tmp_path, book, days_ago=1)
    db.execute("alter table order_items disable trigger order_items_child_photo_owned")
    old = finished_item(db, tmp_path, book, days_ago=31, photo=other_family["photo"])
    db.execute("alter table order_items enable trigger order_items_child_photo_owned")
    db.execute(
        "update order_item_pages set image_path = %s where order_item_id = %s and page_number = 2",
        [other_family["page1"], old["id"]],
    )

    assert await purge_expired_photos(store, storage, days=30, batch=10) == 1  # its own page 1
    assert stored(tmp_path, other_family["photo"], other_family["page1"]) == [True, True]
    assert stored(tmp_path, old["page1"]) == [False]
    assert item_row(db, old["id"])["photo_deleted_at"] is not None


async def test_a_drawing_that_never_got_its_checkpoint_is_deleted_too(
    store: OrderStore, db: psycopg.Connection, tmp_path: Path
) -> None:
    """A page that failed its quality judge for good is stored as a draft and has no checkpoint
    (migrations/021): it shows the child like any page and goes with the photo. A draft that
    names an object outside the item's folder is not followed."""
    storage = LocalStorage(tmp_path)
    book = insert_book(db, pages=3)
    neighbour = finished_item(db, tmp_path, book, days_ago=1)
    old = finished_item(db, tmp_path, book, days_ago=31, status="failed")
    rejected = f"generated/{old['id']}/pages/03.jpg"
    (tmp_path / rejected).write_bytes(b"x")
    for number, path in ((3, rejected), (4, neighbour["page1"])):
        db.execute(
            "insert into order_item_page_drafts"
            " (order_item_id, page_number, image_path, redraws, sha256)"
            " values (%s, %s, %s, 2, repeat('a', 64))",
            [old["id"], number, path],
        )

    assert await purge_expired_photos(store, storage, days=30, batch=10) == 4

    assert stored(tmp_path, rejected, old["page1"], old["photo"]) == [False] * 3
    assert stored(tmp_path, neighbour["page1"]) == [True]
    left = db.execute(
        "select count(*) from order_item_page_drafts where order_item_id = %s", [old["id"]]
    ).fetchone()[0]
    assert left == 0
