"""The migration runner on a real Postgres: fresh, over the app's partial schema, twice, at once."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import psycopg
import pytest

from monitor.migrate import MIGRATIONS_DIR, MigrationError, discover, migrate


def columns(conn: psycopg.Connection, table: str) -> set[str]:
    rows = conn.execute(
        "select column_name from information_schema.columns where table_name = %s", [table]
    ).fetchall()
    return {r[0] for r in rows}


async def test_fresh_database_gets_every_table_and_function(empty_database_url: str) -> None:
    applied = await migrate(empty_database_url)
    assert applied == [m.version for m in discover()]
    with psycopg.connect(empty_database_url) as conn:
        for table in (
            "books",
            "book_pages",
            "orders",
            "order_items",
            "order_item_pages",
            "book_analyses",
            "notifications",
        ):
            assert columns(conn, table), table
        contract = {
            "generation_status",
            "progress",
            "current_step",
            "pages_total",
            "pages_done",
            "pdf_url",
            "pdf_path",
            "cover_image_url",
            "cover_image_path",
            "generated_at",
            "error_code",
            "error_message",
            "attempts",
            "max_attempts",
            "next_attempt_at",
            "claimed_by",
            "lease_expires_at",
            "child_name",
            "child_age",
            "child_gender",
            "child_photo_path",
        }
        assert contract <= columns(conn, "order_items")
        index = conn.execute(
            "select indexdef from pg_indexes where indexname = 'order_items_claimable_idx'"
        ).fetchone()
        assert index is not None and "WHERE" in index[0]


async def test_second_run_applies_nothing(empty_database_url: str) -> None:
    await migrate(empty_database_url)
    assert await migrate(empty_database_url) == []


async def test_concurrent_runs_apply_each_file_once(empty_database_url: str) -> None:
    results = await asyncio.gather(*(migrate(empty_database_url) for _ in range(4)))
    applied = [version for result in results for version in result]
    assert sorted(applied) == [m.version for m in discover()]


async def test_partial_app_schema_keeps_its_rows(empty_database_url: str) -> None:
    with psycopg.connect(empty_database_url, autocommit=True) as conn:
        conn.execute("create table orders (id uuid primary key, user_id uuid, payment_status text)")
        conn.execute(
            """create table order_items (id uuid primary key, order_id uuid references orders(id),
                   book_id uuid, generation_status text, pdf_url text)"""
        )
        conn.execute(
            "insert into orders values ('00000000-0000-0000-0000-000000000001', null, 'paid')"
        )
        # A finished item, an item of a book the catalog never had, and one with no status.
        conn.execute(
            """insert into order_items values
               ('00000000-0000-0000-0000-00000000000a', '00000000-0000-0000-0000-000000000001',
                '00000000-0000-0000-0000-0000000000bb', 'completed', 'https://old/book.pdf'),
               ('00000000-0000-0000-0000-00000000000b', '00000000-0000-0000-0000-000000000001',
                '00000000-0000-0000-0000-0000000000cc', null, null)"""
        )
    await migrate(empty_database_url)
    with psycopg.connect(empty_database_url) as conn:
        rows = conn.execute(
            "select id::text, generation_status, pdf_url, attempts from order_items order by id"
        ).fetchall()
        assert rows == [
            ("00000000-0000-0000-0000-00000000000a", "completed", "https://old/book.pdf", 0),
            ("00000000-0000-0000-0000-00000000000b", "pending", None, 0),
        ]
        assert "lease_expires_at" in columns(conn, "order_items")
        # New writes are held to the contract even though old rows were not re-checked.
        with pytest.raises(psycopg.errors.CheckViolation):
            conn.execute(
                "update order_items set generation_status = 'bogus' where id = %s",
                ["00000000-0000-0000-0000-00000000000b"],
            )


async def test_failing_file_rolls_back_and_names_itself(
    empty_database_url: str, tmp_path: Path
) -> None:
    directory = tmp_path / "migrations"
    shutil.copytree(MIGRATIONS_DIR, directory)
    (directory / "999_broken.sql").write_text(
        "create table half_done (id int);\nselect * from no_such_table;\n"
    )
    with pytest.raises(MigrationError) as excinfo:
        await migrate(empty_database_url, directory)
    assert excinfo.value.filename == "999_broken.sql"
    assert "999_broken.sql" in str(excinfo.value)
    with psycopg.connect(empty_database_url) as conn:
        assert not columns(conn, "half_done")
        versions = {r[0] for r in conn.execute("select version from schema_migrations")}
    assert "999_broken.sql" not in versions
    assert {m.version for m in discover()} <= versions
