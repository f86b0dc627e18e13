"""The per-book disk cache of original images, in front of the Supabase adapter and a fake API."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from monitor.storage.cache import BookAssetCache
from monitor.storage.supabase import SupabaseStorage
from monitor.supabase_client import create_supabase_client
from processors.layout import InvalidPath
from processors.ports import ObjectNotFound
from testkit.fakes.storage_server import FakeStorageServer

BOOK = "5a0c3b52-7a56-4c1f-9f0e-1f9a4b8e2d11"
OTHER_BOOK = "9d2f6e10-0b5c-4a5e-8c3b-2e7f1a6d4c33"
PAGE = "catalog/fox/page-01.png"
PAGE_BYTES = b"\x89PNG" + bytes(range(256)) * 64
DOWNLOAD = f"GET /storage/v1/object/books/{PAGE}"


@pytest.fixture
async def server() -> AsyncIterator[FakeStorageServer]:
    async with FakeStorageServer() as server:
        server.put("books", PAGE, PAGE_BYTES, "image/png")
        yield server


@pytest.fixture
async def storage(server: FakeStorageServer) -> AsyncIterator[SupabaseStorage]:
    async with httpx.AsyncClient(timeout=5) as http:
        client = await create_supabase_client(server.url, server.service_key, http)
        yield SupabaseStorage(client, "books")


@pytest.fixture
def cache_dir(tmp_path: Path) -> Path:
    return tmp_path / "cache"


def cache_files(cache_dir: Path) -> list[Path]:
    return [p for p in cache_dir.rglob("*") if p.is_file()]


async def test_concurrent_gets_download_once(
    storage: SupabaseStorage, server: FakeStorageServer, cache_dir: Path
) -> None:
    cache = BookAssetCache(storage, cache_dir)

    results = await asyncio.gather(*(cache.get(BOOK, PAGE) for _ in range(20)))

    assert results == [PAGE_BYTES] * 20
    assert server.requests[DOWNLOAD] == 1


async def test_later_gets_and_a_restarted_daemon_read_from_disk(
    storage: SupabaseStorage, server: FakeStorageServer, cache_dir: Path
) -> None:
    await BookAssetCache(storage, cache_dir).get(BOOK, PAGE)
    server.objects.clear()  # from now on only the disk can answer

    assert await BookAssetCache(storage, cache_dir).get(BOOK, PAGE) == PAGE_BYTES
    assert server.requests[DOWNLOAD] == 1
    assert [p.parent.name for p in cache_files(cache_dir)] == [BOOK]


async def test_each_book_has_its_own_entries(
    storage: SupabaseStorage, server: FakeStorageServer, cache_dir: Path
) -> None:
    cache = BookAssetCache(storage, cache_dir)

    await cache.get(BOOK, PAGE)
    await cache.get(OTHER_BOOK, PAGE)

    assert server.requests[DOWNLOAD] == 2
    assert sorted(p.parent.name for p in cache_files(cache_dir)) == sorted([BOOK, OTHER_BOOK])


@pytest.mark.parametrize("damage", ["truncate", "empty", "flip"])
async def test_a_damaged_cache_file_is_never_served(
    storage: SupabaseStorage, server: FakeStorageServer, cache_dir: Path, damage: str
) -> None:
    cache = BookAssetCache(storage, cache_dir)
    await cache.get(BOOK, PAGE)
    [entry] = cache_files(cache_dir)
    content = entry.read_bytes()
    if damage == "truncate":
        entry.write_bytes(content[: len(content) // 2])
    elif damage == "empty":
        entry.write_bytes(b"")
    else:
        entry.write_bytes(content[:-1] + bytes([content[-1] ^ 1]))

    assert await cache.get(BOOK, PAGE) == PAGE_BYTES
    assert server.requests[DOWNLOAD] == 2
    assert await cache.get(BOOK, PAGE) == PAGE_BYTES  # repaired: no third download
    assert server.requests[DOWNLOAD] == 2


async def test_a_missing_object_fails_every_waiter_and_is_not_cached(
    storage: SupabaseStorage, server: FakeStorageServer, cache_dir: Path
) -> None:
    cache = BookAssetCache(storage, cache_dir)
    missing = "catalog/fox/page-99.png"

    results = await asyncio.gather(
        *(cache.get(BOOK, missing) for _ in range(5)), return_exceptions=True
    )

    assert all(isinstance(result, ObjectNotFound) for result in results)
    assert server.requests[f"GET /storage/v1/object/books/{missing}"] == 1
    server.put("books", missing, b"uploaded later")
    assert await cache.get(BOOK, missing) == b"uploaded later"


async def test_a_cancelled_caller_does_not_cancel_the_download_for_the_others(
    storage: SupabaseStorage, server: FakeStorageServer, cache_dir: Path
) -> None:
    cache = BookAssetCache(storage, cache_dir)
    first = asyncio.create_task(cache.get(BOOK, PAGE))
    second = asyncio.create_task(cache.get(BOOK, PAGE))
    await asyncio.sleep(0)  # both are now waiting on the one download

    first.cancel()

    assert await second == PAGE_BYTES
    assert first.cancelled()
    assert server.requests[DOWNLOAD] == 1


@pytest.mark.parametrize("book_id", ["../../etc", "", "fox"])
async def test_book_ids_must_be_uuids(
    storage: SupabaseStorage, cache_dir: Path, book_id: str
) -> None:
    with pytest.raises(InvalidPath):
        await BookAssetCache(storage, cache_dir).get(book_id, PAGE)
