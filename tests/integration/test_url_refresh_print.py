"""The re-sign sweep keeps the print files' links alive too (migration 020): the interior and
cover PDF URLs are signed again with the screen ones, under the same owner check. Real
Postgres (both store adapters), the fake Storage server signs."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import httpx
import psycopg
import pytest

from monitor.storage.supabase import SupabaseStorage
from monitor.store.base import OrderStore
from monitor.supabase_client import create_supabase_client
from monitor.url_refresh import refresh_expiring_urls
from testkit.fakes.storage_server import FakeStorageServer
from tests.support.factories import insert_book, insert_item, item_row

pytestmark = pytest.mark.filterwarnings("ignore:Inheritance class AiohttpClientSession")

DAY = 24 * 3600
URL_COLUMNS = {
    "pdf_url",
    "cover_image_url",
    "print_interior_url",
    "print_cover_url",
    "urls_expire_at",
    "updated_at",
}


@pytest.fixture
async def storage_server() -> AsyncIterator[FakeStorageServer]:
    async with FakeStorageServer(buckets={"books": False}) as server:
        yield server


@pytest.fixture
async def signed_storage(storage_server: FakeStorageServer) -> AsyncIterator[SupabaseStorage]:
    async with httpx.AsyncClient(timeout=10) as http:
        client = await create_supabase_client(storage_server.url, storage_server.service_key, http)
        yield SupabaseStorage(client, "books", signed_url_ttl=7 * DAY)


def printed_item(db: psycopg.Connection, server: FakeStorageServer, *, folder: str = "") -> str:
    """A finished book with print files whose URLs expire in an hour; ``folder`` puts the print
    files under another item's folder."""
    item = insert_item(db, book_id=insert_book(db))
    own = f"generated/{item}"
    pdf, cover = f"{own}/book.pdf", f"{own}/cover.jpg"
    interior = f"{folder or own}/print-interior.pdf"
    print_cover = f"{folder or own}/print-cover.pdf"
    db.execute(
        """update order_items set generation_status = 'completed', progress = 100,
                 pdf_path = %s, cover_image_path = %s, pdf_url = 'https://old/pdf',
                 cover_image_url = 'https://old/cover', print_interior_path = %s,
                 print_interior_url = 'https://old/interior', print_cover_path = %s,
                 print_cover_url = 'https://old/print-cover', urls_expire_at = %s,
                 generated_at = now()
           where id = %s""",
        [pdf, cover, interior, print_cover, datetime.now(UTC) + timedelta(hours=1), item],
    )
    for path in (pdf, cover, interior, print_cover):
        server.put("books", path, b"%PDF-1.4 file", "application/pdf")
    return item


def without(row: dict, columns: set[str]) -> dict:
    return {k: v for k, v in row.items() if k not in columns}


async def test_the_sweep_re_signs_the_print_files_with_the_screen_files(
    store: OrderStore,
    db: psycopg.Connection,
    storage_server: FakeStorageServer,
    signed_storage: SupabaseStorage,
) -> None:
    item = printed_item(db, storage_server)
    before = item_row(db, item)

    assert await refresh_expiring_urls(store, signed_storage, margin_seconds=DAY) == 1

    row = item_row(db, item)
    assert without(row, URL_COLUMNS) == without(before, URL_COLUMNS)
    for column, path_column in (
        ("pdf_url", "pdf_path"),
        ("cover_image_url", "cover_image_path"),
        ("print_interior_url", "print_interior_path"),
        ("print_cover_url", "print_cover_path"),
    ):
        url = httpx.URL(row[column])
        claims = storage_server.token_claims(url.params["token"])
        assert claims["url"] == f"books/{row[path_column]}"
        # One recorded expiry, never later than any of the four tokens.
        assert row["urls_expire_at"].timestamp() <= claims["exp"]
        async with httpx.AsyncClient() as app:
            assert (await app.get(str(url))).status_code == 200
    assert row["urls_expire_at"] > datetime.now(UTC) + timedelta(days=6)


async def test_print_files_outside_the_items_folder_are_never_signed(
    store: OrderStore,
    db: psycopg.Connection,
    storage_server: FakeStorageServer,
    signed_storage: SupabaseStorage,
) -> None:
    other = printed_item(db, storage_server)
    foreign = printed_item(db, storage_server, folder=f"generated/{other}")
    before = item_row(db, foreign)

    assert await refresh_expiring_urls(store, signed_storage, margin_seconds=DAY) == 1

    assert item_row(db, foreign) == before
    assert item_row(db, other)["print_interior_url"] != "https://old/interior"


async def test_a_write_for_print_paths_that_changed_writes_nothing(
    store: OrderStore, db: psycopg.Connection, storage_server: FakeStorageServer
) -> None:
    item = printed_item(db, storage_server)
    row = item_row(db, item)
    before = dict(row)
    common = {
        "pdf_path": row["pdf_path"],
        "pdf_url": "https://new/pdf",
        "cover_path": row["cover_image_path"],
        "cover_url": "https://new/cover",
        "urls_expire_at": datetime.now(UTC) + timedelta(days=7),
        "print_cover_path": row["print_cover_path"],
        "print_cover_url": "https://new/print-cover",
    }

    # Listed with other print paths (or none) than the row holds now: refused, nothing written.
    for stale in (f"generated/{item}/old-interior.pdf", None):
        assert not await store.refresh_urls(
            item,
            **common,
            print_interior_path=stale,
            print_interior_url="https://new/interior",
        )
        assert item_row(db, item) == before

    assert await store.refresh_urls(
        item,
        **common,
        print_interior_path=row["print_interior_path"],
        print_interior_url="https://new/interior",
    )
    after = item_row(db, item)
    assert (after["pdf_url"], after["print_interior_url"], after["print_cover_url"]) == (
        "https://new/pdf",
        "https://new/interior",
        "https://new/print-cover",
    )
