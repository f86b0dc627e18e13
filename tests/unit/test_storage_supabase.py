"""The Supabase Storage adapter, through the real supabase-py client, against a fake Storage API."""

from __future__ import annotations

import email.utils
import os
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from storage3.exceptions import StorageApiError

from monitor.storage.supabase import SupabaseStorage
from monitor.supabase_client import create_supabase_client
from processors.errors import OrderError, TerminalError
from processors.layout import InvalidPath
from processors.ports import ObjectNotFound, StorageUnavailable
from testkit.fakes.storage_server import FakeStorageServer

KEY = "generated/0b7c9d7e-3f0a-4c55-9f51-6a2f1e7d8c90/cover.jpg"
OBJECT_API = "/storage/v1/object"


@pytest.fixture
async def server() -> AsyncIterator[FakeStorageServer]:
    async with FakeStorageServer(buckets={"books": False, "public-books": True}) as server:
        yield server


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=5) as http:
        yield http


async def make_storage(
    server: FakeStorageServer,
    http: httpx.AsyncClient,
    *,
    bucket: str = "books",
    key: str | None = None,
    public: bool = False,
    signed_url_ttl: int = 600,
) -> SupabaseStorage:
    client = await create_supabase_client(server.url, key or server.service_key, http)
    return SupabaseStorage(client, bucket, public=public, signed_url_ttl=signed_url_ttl)


@pytest.fixture
async def storage(server: FakeStorageServer, http: httpx.AsyncClient) -> SupabaseStorage:
    return await make_storage(server, http)


def assert_no_secret(error: OrderError, *secrets: str) -> None:
    for secret in secrets:
        for text in (str(error), error.detail, error.parent_message):
            assert secret not in text


async def test_upload_upserts_so_a_repeated_step_replaces_the_object(
    storage: SupabaseStorage, server: FakeStorageServer
) -> None:
    await storage.upload(KEY, b"first try", "image/jpeg")
    await storage.upload(KEY, b"second try", "image/jpeg")

    stored = server.objects[("books", KEY)]
    assert stored.data == b"second try"
    assert stored.content_type == "image/jpeg"
    assert server.requests[f"POST {OBJECT_API}/books/{KEY}"] == 2


async def test_the_fake_refuses_overwrites_without_upsert(
    server: FakeStorageServer, http: httpx.AsyncClient
) -> None:
    """Guards the test above: without x-upsert a second upload must fail, as on Supabase."""
    files = (await create_supabase_client(server.url, server.service_key, http)).storage
    await files.from_("books").upload("a.txt", b"one")
    with pytest.raises(StorageApiError, match="Duplicate"):
        await files.from_("books").upload("a.txt", b"two")
    assert server.objects[("books", "a.txt")].data == b"one"


async def test_download_returns_the_stored_bytes(
    storage: SupabaseStorage, server: FakeStorageServer
) -> None:
    server.put("books", "catalog/b1/page 1.png", b"\x89PNG original", "image/png")

    assert await storage.download("catalog/b1/page 1.png") == b"\x89PNG original"


async def test_upload_file_sends_the_whole_file(
    storage: SupabaseStorage, server: FakeStorageServer, tmp_path: Path
) -> None:
    source = tmp_path / "book.pdf"
    source.write_bytes(os.urandom(2 * 1024 * 1024 + 3))

    await storage.upload_file("generated/x/book.pdf", source, "application/pdf")

    stored = server.objects[("books", "generated/x/book.pdf")]
    assert stored.data == source.read_bytes()
    assert stored.content_type == "application/pdf"


async def test_signed_url_opens_the_object_until_it_expires(
    server: FakeStorageServer, http: httpx.AsyncClient
) -> None:
    storage = await make_storage(server, http, signed_url_ttl=900)
    await storage.upload(KEY, b"cover", "image/jpeg")

    url = await storage.url_for(KEY)

    assert url.startswith(f"{server.url}{OBJECT_API}/sign/books/{KEY}?token=")
    claims = server.token_claims(httpx.URL(url).params["token"])
    assert claims["exp"] - claims["iat"] == 900
    opened = await http.get(url)  # no service key: the URL alone grants access
    assert opened.status_code == 200
    assert opened.content == b"cover"

    server.advance_clock(901)
    assert (await http.get(url)).status_code == 400


async def test_a_tampered_signed_url_is_refused(
    storage: SupabaseStorage, server: FakeStorageServer, http: httpx.AsyncClient
) -> None:
    await storage.upload(KEY, b"cover", "image/jpeg")
    server.put("books", "other.jpg", b"someone else's")
    url = httpx.URL(await storage.url_for(KEY))
    token = url.params["token"]
    header, claims, signature = token.split(".")
    forged = signature[:-2] + ("AA" if signature[-2:] != "AA" else "BB")

    bad_signature = await http.get(url.copy_set_param("token", f"{header}.{claims}.{forged}"))
    other_object = await http.get(url.copy_with(path=f"{OBJECT_API}/sign/books/other.jpg"))

    assert bad_signature.status_code == 400
    assert other_object.status_code == 400
    assert bad_signature.json()["error"] == "InvalidSignature"


async def test_public_mode_returns_the_public_url_without_a_request(
    server: FakeStorageServer, http: httpx.AsyncClient
) -> None:
    storage = await make_storage(server, http, bucket="public-books", public=True)
    await storage.upload("covers/a b.jpg", b"cover", "image/jpeg")
    requests_before = sum(server.requests.values())

    url = await storage.url_for("covers/a b.jpg")

    assert url == f"{server.url}{OBJECT_API}/public/public-books/covers/a%20b.jpg"
    assert sum(server.requests.values()) == requests_before
    assert (await http.get(url)).content == b"cover"


async def test_delete_is_idempotent(storage: SupabaseStorage, server: FakeStorageServer) -> None:
    server.put("books", "a.jpg", b"a")
    server.put("books", "b.jpg", b"b")

    await storage.delete(["a.jpg", "never-existed.jpg"])
    await storage.delete(["a.jpg"])
    await storage.delete([])

    assert list(server.objects) == [("books", "b.jpg")]
    assert server.requests[f"DELETE {OBJECT_API}/books"] == 2


async def test_a_missing_object_raises_object_not_found(storage: SupabaseStorage) -> None:
    with pytest.raises(ObjectNotFound) as caught:
        await storage.download("catalog/missing.png")
    assert caught.value.code == "input_missing"
    assert not caught.value.retryable


async def test_a_missing_bucket_is_a_storage_error_not_a_missing_input(
    server: FakeStorageServer, http: httpx.AsyncClient
) -> None:
    storage = await make_storage(server, http, bucket="no-such-bucket")
    with pytest.raises(TerminalError) as caught:
        await storage.download("x.jpg")
    assert not isinstance(caught.value, ObjectNotFound)
    assert caught.value.code == "storage_error"


@pytest.mark.parametrize("status", [500, 502, 503, 504])
async def test_server_errors_are_retryable(
    storage: SupabaseStorage, server: FakeStorageServer, status: int
) -> None:
    server.put("books", "a.jpg", b"a")
    server.fail_next(1, status=status)

    with pytest.raises(StorageUnavailable) as caught:
        await storage.download("a.jpg")
    assert caught.value.retryable
    assert await storage.download("a.jpg") == b"a"  # the fault has passed


async def test_rate_limits_are_retryable_and_carry_retry_after(
    storage: SupabaseStorage, server: FakeStorageServer
) -> None:
    server.fail_next(2, status=429, retry_after="7")

    with pytest.raises(StorageUnavailable) as upload_error:
        await storage.upload(KEY, b"x", "image/jpeg")
    with pytest.raises(StorageUnavailable) as sign_error:
        await storage.url_for(KEY)

    assert upload_error.value.retry_after == 7.0
    assert sign_error.value.retry_after == 7.0
    assert ("books", KEY) not in server.objects


async def test_retry_after_may_be_an_http_date(
    storage: SupabaseStorage, server: FakeStorageServer
) -> None:
    later = datetime.now(UTC) + timedelta(minutes=10)
    server.fail_next(1, status=503, retry_after=email.utils.format_datetime(later, usegmt=True))

    with pytest.raises(StorageUnavailable) as caught:
        await storage.download(KEY)

    assert caught.value.retry_after is not None
    assert 500 < caught.value.retry_after <= 600


async def test_network_errors_are_retryable(
    server: FakeStorageServer, storage: SupabaseStorage
) -> None:
    await server.stop()

    with pytest.raises(StorageUnavailable) as caught:
        await storage.download("a.jpg")
    assert "ConnectError" in caught.value.detail


async def test_a_rejected_key_is_terminal_and_never_leaks_a_secret(
    server: FakeStorageServer, http: httpx.AsyncClient
) -> None:
    wrong_key = "wrong-service-key-0123456789"
    storage = await make_storage(server, http, key=wrong_key)

    with pytest.raises(TerminalError) as caught:
        await storage.download("a.jpg")

    assert caught.value.code == "storage_error"
    assert_no_secret(caught.value, wrong_key, server.service_key)


async def test_server_text_is_not_copied_into_errors(
    storage: SupabaseStorage, server: FakeStorageServer
) -> None:
    """A proxy that echoes request headers into its error page must not leak the key or a token."""
    await storage.upload(KEY, b"x", "image/jpeg")
    token = httpx.URL(await storage.url_for(KEY)).params["token"]
    server.fail_next(1, status=502, message=f"bad gateway; Bearer {server.service_key} {token}")

    with pytest.raises(StorageUnavailable) as caught:
        await storage.download(KEY)

    assert_no_secret(caught.value, server.service_key, token)


async def test_requests_go_through_the_injected_http_client(server: FakeStorageServer) -> None:
    seen: list[str] = []

    async def record(request: httpx.Request) -> None:
        seen.append(f"{request.method} {request.url.path}")

    async with httpx.AsyncClient(event_hooks={"request": [record]}) as http:
        storage = await make_storage(server, http)
        await storage.upload(KEY, b"x", "image/jpeg")
        assert await storage.download(KEY) == b"x"

    assert seen == [f"POST {OBJECT_API}/books/{KEY}", f"GET {OBJECT_API}/books/{KEY}"]


async def test_hostile_paths_are_refused_before_any_request(
    storage: SupabaseStorage, server: FakeStorageServer
) -> None:
    for path in ("../other-bucket/x.jpg", "/abs.jpg", "a/%2e%2e/b.jpg", "a\\b.jpg"):
        with pytest.raises(InvalidPath):
            await storage.download(path)
        with pytest.raises(InvalidPath):
            await storage.upload(path, b"x", "image/jpeg")
    assert not server.requests
