"""The directory adapter of the blob-storage port."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from monitor.storage.local import LocalStorage
from processors.layout import InvalidPath
from processors.ports import ObjectNotFound, StorageUnavailable

KEY = "generated/0b7c9d7e-3f0a-4c55-9f51-6a2f1e7d8c90/pages/01.jpg"


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "storage"


@pytest.fixture
def storage(root: Path) -> LocalStorage:
    return LocalStorage(root)


def files_under(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


async def test_upload_then_download_round_trips(storage: LocalStorage, root: Path) -> None:
    await storage.upload(KEY, b"page one", "image/jpeg")

    assert await storage.download(KEY) == b"page one"
    assert (root / KEY).read_bytes() == b"page one"


async def test_upload_replaces_and_leaves_no_temporary_files(
    storage: LocalStorage, root: Path
) -> None:
    await storage.upload(KEY, b"first", "image/jpeg")
    await storage.upload(KEY, b"second", "image/jpeg")

    assert await storage.download(KEY) == b"second"
    assert files_under(root) == [KEY]


async def test_upload_file_copies_a_large_file(storage: LocalStorage, tmp_path: Path) -> None:
    source = tmp_path / "book.pdf"
    source.write_bytes(os.urandom(3 * 1024 * 1024 + 17))

    await storage.upload_file("generated/x/book.pdf", source, "application/pdf")

    assert await storage.download("generated/x/book.pdf") == source.read_bytes()


async def test_a_failed_write_keeps_the_old_object(
    storage: LocalStorage, root: Path, tmp_path: Path
) -> None:
    await storage.upload(KEY, b"good", "image/jpeg")

    with pytest.raises(StorageUnavailable):
        await storage.upload_file(KEY, tmp_path / "missing.pdf", "application/pdf")

    assert await storage.download(KEY) == b"good"
    assert files_under(root) == [KEY]


async def test_missing_object_raises_object_not_found(storage: LocalStorage) -> None:
    with pytest.raises(ObjectNotFound):
        await storage.download("catalog/nothing.jpg")
    with pytest.raises(ObjectNotFound):
        await storage.download("catalog")  # a directory is not an object
    with pytest.raises(ObjectNotFound):
        await storage.download(f"{KEY}/below-a-file")


async def test_delete_is_idempotent(storage: LocalStorage, root: Path) -> None:
    await storage.upload(KEY, b"x", "image/jpeg")
    await storage.upload("keep.jpg", b"y", "image/jpeg")

    await storage.delete([KEY, "never-existed.jpg"])
    await storage.delete([KEY])

    assert files_under(root) == ["keep.jpg"]


async def test_url_for_gives_a_file_url_or_one_under_base_url(root: Path) -> None:
    assert await LocalStorage(root).url_for("a b/c.jpg") == (root / "a b" / "c.jpg").as_uri()
    served = LocalStorage(root, base_url="https://cdn.example/books/")
    assert await served.url_for("a b/c&d.jpg") == "https://cdn.example/books/a%20b/c%26d.jpg"


@pytest.mark.parametrize("path", ["../outside.jpg", "/etc/passwd", "a/../../x", "a\\..\\x", ""])
async def test_paths_cannot_leave_the_root(
    storage: LocalStorage, root: Path, tmp_path: Path, path: str
) -> None:
    with pytest.raises(InvalidPath):
        await storage.upload(path, b"x", "image/jpeg")
    with pytest.raises(InvalidPath):
        await storage.download(path)
    assert not (tmp_path / "outside.jpg").exists()


async def test_symlinks_out_of_the_root_are_not_followed(
    storage: LocalStorage, root: Path, tmp_path: Path
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("secret")
    root.mkdir()
    (root / "link").symlink_to(outside)

    with pytest.raises(InvalidPath):
        await storage.download("link/secret.txt")
    with pytest.raises(InvalidPath):
        await storage.upload("link/planted.txt", b"x", "text/plain")
    assert sorted(p.name for p in outside.iterdir()) == ["secret.txt"]
