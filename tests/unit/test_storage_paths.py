"""Which storage paths and URLs the daemon accepts, and the names of what it writes."""

from __future__ import annotations

import uuid
from urllib.parse import urlsplit

import pytest

from monitor.storage.paths import object_path, validate_key
from processors.layout import (
    InvalidPath,
    canonical_uuid,
    generated_cover_path,
    generated_page_path,
    generated_pdf_path,
)

PROJECT = "https://abcd.supabase.co"
ITEM = "0b7c9d7e-3f0a-4c55-9f51-6a2f1e7d8c90"


def normalise(value: str) -> str:
    return object_path(value, bucket="books", supabase_url=PROJECT)


@pytest.mark.parametrize(
    ("value", "key"),
    [
        ("catalog/abc/cover.jpg", "catalog/abc/cover.jpg"),
        # A leading bucket name in a plain path is a folder of that name, not the bucket.
        ("books/abc/cover.jpg", "books/abc/cover.jpg"),
        ("u/Emma's photo (1).HEIC", "u/Emma's photo (1).HEIC"),
        ("u/Zoë/été.png", "u/Zoë/été.png"),
        (f"{PROJECT}/storage/v1/object/public/books/catalog/p1.png", "catalog/p1.png"),
        (f"{PROJECT}/storage/v1/object/authenticated/books/catalog/p1.png", "catalog/p1.png"),
        (f"{PROJECT}/storage/v1/object/sign/books/a/b%20c.png?token=eyJ.x.y", "a/b c.png"),
        ("HTTPS://ABCD.supabase.co:443/storage/v1/object/public/books/x.png", "x.png"),
    ],
)
def test_accepted_paths_normalise_to_object_keys(value: str, key: str) -> None:
    assert normalise(value) == key


@pytest.mark.parametrize(
    "value",
    [
        "",
        "/etc/passwd",
        "../secrets.txt",
        "catalog/../../etc/passwd",
        "catalog/./cover.jpg",
        "catalog//cover.jpg",
        "catalog/",
        "catalog\\..\\cover.jpg",
        "catalog/cover.jpg\x00.png",
        "catalog/cover\n.jpg",
        "catalog/%2e%2e/cover.jpg",
        "catalog/#cover.jpg",
        "x" * 1025,
        "file:///etc/passwd",
        "//evil.example/x.png",
        "data:image/png;base64,iVBORw0KGgo=",
        # Other hosts, schemes, ports and user info.
        "https://evil.example/storage/v1/object/public/books/x.png",
        "https://abcd.supabase.co.evil.example/storage/v1/object/public/books/x.png",
        "https://evil.example@abcd.supabase.co/storage/v1/object/public/books/x.png",
        "http://abcd.supabase.co/storage/v1/object/public/books/x.png",
        "https://abcd.supabase.co:8443/storage/v1/object/public/books/x.png",
        "https://abcd.supabase.co:bad/storage/v1/object/public/books/x.png",
        "ftp://abcd.supabase.co/storage/v1/object/public/books/x.png",
        # This project, but not an object of the bucket.
        f"{PROJECT}/storage/v1/object/public/avatars/x.png",
        f"{PROJECT}/storage/v1/object/public/books",
        f"{PROJECT}/storage/v1/object/public/books/",
        f"{PROJECT}/storage/v1/object/upload/sign/books/x.png",
        f"{PROJECT}/storage/v1/render/image/public/books/x.png",
        f"{PROJECT}/rest/v1/books",
        f"{PROJECT}/storage/v1/object/public/books/a/../../avatars/x.png",
        f"{PROJECT}/storage/v1/object/public/books/a/%2e%2e/%2e%2e/x.png",
        f"{PROJECT}/storage/v1/object/public/books/a/%252e%252e/x.png",
        f"{PROJECT}/storage/v1/object/public/books/a/%ff.png",
    ],
)
def test_hostile_or_foreign_paths_are_refused(value: str) -> None:
    with pytest.raises(InvalidPath) as caught:
        normalise(value)
    assert caught.value.code == "invalid_path"
    assert not caught.value.retryable


def test_urls_are_refused_when_no_project_is_configured() -> None:
    url = f"{PROJECT}/storage/v1/object/public/books/x.png"
    with pytest.raises(InvalidPath):
        object_path(url, bucket="books", supabase_url=None)
    assert object_path("x.png", bucket="books", supabase_url=None) == "x.png"


def test_a_project_behind_a_path_prefix_is_matched_with_it() -> None:
    base = "http://127.0.0.1:8000/supabase"
    url = f"{base}/storage/v1/object/public/books/x.png"
    assert object_path(url, bucket="books", supabase_url=base + "/") == "x.png"
    with pytest.raises(InvalidPath):
        object_path(url.replace("/supabase", ""), bucket="books", supabase_url=base)


@pytest.mark.parametrize(
    "url",
    [
        "https://evil.example/storage/v1/object/sign/books/x.png?token=secret-token",
        "https://user:secret-token@evil.example/storage/v1/object/public/books/x.png",
        f"{PROJECT}/storage/v1/object/sign/avatars/x.png?token=secret-token",
    ],
)
def test_error_details_never_echo_a_token_or_password(url: str) -> None:
    with pytest.raises(InvalidPath) as caught:
        normalise(url)
    assert "secret-token" not in str(caught.value)
    assert "secret-token" not in caught.value.parent_message
    # It names the host, not the path: a path can hold a user's id (issue 11).
    assert urlsplit(url).hostname in caught.value.detail
    assert "x.png" not in caught.value.detail


@pytest.mark.parametrize(
    "key",
    [
        "uploads/5ded9801-4c9f-4873-b3c2-322434e7fbfe/../x.jpg",
        "uploads/5ded9801-4c9f-4873-b3c2-322434e7fbfe/a\\b.jpg",
        "/uploads/5ded9801-4c9f-4873-b3c2-322434e7fbfe/x.jpg",
    ],
)
def test_error_details_never_echo_an_uploads_user_id(key: str) -> None:
    with pytest.raises(InvalidPath) as caught:
        validate_key(key)
    assert "5ded9801" not in str(caught.value)


def test_validate_key_returns_the_key_unchanged() -> None:
    assert validate_key("generated/x/pages/01.jpg") == "generated/x/pages/01.jpg"


def test_generated_paths_follow_the_layout() -> None:
    assert generated_cover_path(ITEM) == f"generated/{ITEM}/cover.jpg"
    assert generated_page_path(ITEM, 3) == f"generated/{ITEM}/pages/03.jpg"
    assert generated_page_path(ITEM, 12) == f"generated/{ITEM}/pages/12.jpg"
    assert generated_pdf_path(ITEM) == f"generated/{ITEM}/book.pdf"


def test_generated_paths_are_the_same_for_every_spelling_of_one_item_id() -> None:
    assert generated_pdf_path(ITEM.upper()) == generated_pdf_path(uuid.UUID(ITEM))
    assert generated_pdf_path(ITEM.replace("-", "")) == f"generated/{ITEM}/book.pdf"


@pytest.mark.parametrize("item_id", ["", "../../etc", "abc", f"{ITEM}/../x", "generated"])
def test_generated_paths_require_a_uuid_item_id(item_id: str) -> None:
    with pytest.raises(InvalidPath):
        generated_cover_path(item_id)


@pytest.mark.parametrize("page_number", [0, -1, True, 1.0])
def test_generated_page_paths_require_a_positive_page_number(page_number: object) -> None:
    with pytest.raises(InvalidPath):
        generated_page_path(ITEM, page_number)  # type: ignore[arg-type]


def test_canonical_uuid_names_what_was_wrong() -> None:
    with pytest.raises(InvalidPath, match="book id"):
        canonical_uuid("nope", what="book id")
