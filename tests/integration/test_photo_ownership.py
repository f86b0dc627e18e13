"""One rule, two statements of it: ``photo_path_in_user_uploads`` (migrations/011, for every
writer of the database) and ``processors/ownership.py`` (for the daemon before it reads).
Both run on the same table of cases and must agree."""

from __future__ import annotations

import psycopg
import pytest

from monitor.storage.paths import object_path
from processors.layout import InvalidPath
from processors.ownership import PhotoNotOwned, require_user_upload

A = "0d9a3f6e-2b1c-4e8f-9a7d-5c6b4a3e2f10"
B = "7f1e2d3c-4b5a-4968-8776-a5b4c3d2e1f0"
PROJECT = "https://project-ref.supabase.co"
OBJECT = f"{PROJECT}/storage/v1/object"

#: (path, whether it is a photo of user A)
CASES: list[tuple[str, bool]] = [
    (f"uploads/{A}/photo.jpg", True),
    (f"uploads/{A}/2026/leo 2.jpg", True),
    (f"{OBJECT}/public/books/uploads/{A}/photo.jpg", True),
    (f"{OBJECT}/sign/books/uploads/{A}/photo.jpg?token=abc", True),
    (f"{OBJECT}/authenticated/books/uploads/{A}/photo.jpg", True),
    (f"uploads/{B}/photo.jpg", False),
    (f"{OBJECT}/public/books/uploads/{B}/photo.jpg", False),
    (f"uploads/{A}", False),
    (f"uploads/{A}/", False),
    (f"uploads/{A}/../{B}/photo.jpg", False),
    (f"uploads/{A}/./photo.jpg", False),
    (f"uploads//{A}/photo.jpg", False),
    (f"/uploads/{A}/photo.jpg", False),
    (f"uploads/{A.upper()}/photo.jpg", False),
    (f"uploads/{A}x/photo.jpg", False),
    (f"generated/{A}/cover.jpg", False),
    ("generated/5b0c1a8e-3d2f-4a6b-9c8d-7e6f5a4b3c2d/pages/01.jpg", False),
    ("catalog/5b0c1a8e-3d2f-4a6b-9c8d-7e6f5a4b3c2d/cover.jpg", False),
    (f"{OBJECT}/public/books/catalog/x/cover.jpg", False),
    (f"photos/{A}/photo.jpg", False),
]
#: URLs the database cannot judge (it knows neither the project nor the bucket): it lets them
#: through, and the daemon refuses them as invalid_path.
DAEMON_ONLY: list[str] = [
    f"https://attacker.example/storage/v1/object/public/books/uploads/{A}/photo.jpg",
    f"{OBJECT}/public/secrets/uploads/{A}/photo.jpg",
]


def daemon_accepts(path: str, user: str | None) -> bool:
    try:
        require_user_upload(object_path(path, bucket="books", supabase_url=PROJECT), user)
    except (PhotoNotOwned, InvalidPath):
        return False
    return True


def database_accepts(db: psycopg.Connection, path: str, user: str | None) -> bool:
    return db.execute("select photo_path_in_user_uploads(%s, %s)", [path, user]).fetchone()[0]


@pytest.mark.parametrize(("path", "owned"), CASES)
def test_the_database_and_the_daemon_agree(db: psycopg.Connection, path: str, owned: bool) -> None:
    assert database_accepts(db, path, A) is owned
    assert daemon_accepts(path, A) is owned


@pytest.mark.parametrize("path", [p for p, owned in CASES if owned])
def test_an_order_without_a_user_owns_no_photo(db: psycopg.Connection, path: str) -> None:
    assert database_accepts(db, path, None) is False
    assert daemon_accepts(path, None) is False
    assert daemon_accepts(path, B) is False


@pytest.mark.parametrize("path", DAEMON_ONLY)
def test_urls_of_another_project_or_bucket_are_the_daemons_to_refuse(
    db: psycopg.Connection, path: str
) -> None:
    assert database_accepts(db, path, A) is True
    with pytest.raises(InvalidPath):
        object_path(path, bucket="books", supabase_url=PROJECT)


def test_the_error_names_neither_the_path_nor_the_user() -> None:
    with pytest.raises(PhotoNotOwned) as caught:
        require_user_upload(f"uploads/{B}/photo.jpg", A)
    assert A not in str(caught.value) and B not in str(caught.value)
    assert caught.value.code == "photo_not_owned" and caught.value.retryable is False
