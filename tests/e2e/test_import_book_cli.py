"""``run_monitor.py import-book --bleed-in --ppi``: the book's own print profile, validated
before anything is written, as an operator runs it (a subprocess against a real Postgres)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import psycopg
import pytest

from monitor.store.base import OrderStore
from testkit.daemon_process import REPO
from tests.support.factories import insert_book
from tests.support.pipeline_env import draw_scene


def import_book(database_url: str, storage: Path, directory: Path, *flags: str):
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("GOOGLE_", "GEMINI_", "SUPABASE_"))
    }
    env.update(
        {
            "DATABASE_URL": database_url,
            "STORAGE_BACKEND": "local",
            "LOCAL_STORAGE_DIR": str(storage),
            "LOG_LEVEL": "WARNING",
        }
    )
    return subprocess.run(
        [sys.executable, str(REPO / "run_monitor.py"), "--env-file", os.devnull, "import-book",
         str(directory), "--title", "The Lantern Walk", *flags],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


@pytest.fixture
def book_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "book"
    directory.mkdir()
    (directory / "cover.jpg").write_bytes(draw_scene(0))
    (directory / "01.jpg").write_bytes(draw_scene(1))
    (directory / "pages.json").write_text(json.dumps({"1": {"text": "A walk."}}))
    return directory


def profile(db: psycopg.Connection, book_id: str) -> tuple[object, object]:
    row = db.execute("select print_bleed_in, print_ppi from books where id = %s", [book_id])
    return row.fetchone()


def test_the_flags_are_stored_on_the_book(
    database_url: str, db: psycopg.Connection, book_dir: Path, tmp_path: Path
) -> None:
    book_id = str(uuid.uuid4())
    done = import_book(
        database_url, tmp_path / "s", book_dir, "--book-id", book_id, "--bleed-in", "0.25",
        "--ppi", "600",
    )  # fmt: skip

    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == book_id
    bleed, ppi = profile(db, book_id)
    assert (float(bleed), ppi) == (0.25, 600)


def test_without_the_flags_the_settings_apply(
    database_url: str, db: psycopg.Connection, book_dir: Path, tmp_path: Path
) -> None:
    done = import_book(database_url, tmp_path / "s", book_dir)

    assert done.returncode == 0, done.stderr
    assert profile(db, done.stdout.strip()) == (None, None)


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (("--ppi", "100"), "ppi must be 150 to 1200, got 100"),
        (("--ppi", "2400"), "ppi must be 150 to 1200, got 2400"),
        (("--bleed-in", "0.75"), "bleed must be 0 to 0.5 in per edge, got 0.75"),
        (("--bleed-in", "-0.1"), "bleed must be 0 to 0.5 in per edge, got -0.1"),
        (("--ppi", "300dpi"), "invalid int value"),
    ],
)
def test_a_value_outside_print_practice_is_refused_before_anything_is_written(
    database_url: str,
    db: psycopg.Connection,
    book_dir: Path,
    tmp_path: Path,
    flags: tuple[str, ...],
    message: str,
) -> None:
    book_id = str(uuid.uuid4())
    done = import_book(database_url, tmp_path / "s", book_dir, "--book-id", book_id, *flags)

    assert done.returncode == 2
    assert message in done.stderr
    assert db.execute("select count(*) from books where id = %s", [book_id]).fetchone() == (0,)
    assert not (tmp_path / "s").exists()  # nothing uploaded either


async def test_both_stores_write_a_books_own_bleed(
    store: OrderStore, db: psycopg.Connection
) -> None:
    """A float bleed once went to Postgres as double precision, which set_book_layout does not
    take: every book with its own bleed failed to import."""
    book = insert_book(db)

    assert await store.set_book_layout(book, bleed_in=0.2, ppi=450, pages=[])

    bleed, ppi = profile(db, book)
    assert (float(bleed), ppi) == (0.2, 450)
