"""The daemon over DATABASE_URL as a member of ``book_monitor`` (migrations/011): execute on the
queue functions and read on the catalog are enough to run the queue, and nothing more is given."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
from psycopg import errors, sql

from monitor.config import Secret, Settings
from monitor.daemon import Monitor
from monitor.store.postgres import PostgresStore
from tests.support.factories import insert_book, insert_item, item_row
from tests.support.processors import Recording
from tests.support.waiting import eventually


def as_user(url: str, user: str, password: str) -> str:
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{user}:{password}@{host}"))


RECIPE = Path(__file__).resolve().parents[2] / "docs" / "daemon_role.sql"


@pytest.fixture
def daemon_url(database_url: str) -> Iterator[str]:
    """A login role made by the README's recipe (docs/daemon_role.sql), under a name and password
    of this test's own (roles are shared by the cluster's databases)."""
    name, password = f"daemon_{uuid.uuid4().hex[:10]}", uuid.uuid4().hex
    recipe = RECIPE.read_text()
    assert "'change-me'" in recipe and "book_monitor_daemon" in recipe
    statement = recipe.replace("book_monitor_daemon", name).replace("change-me", password)
    with psycopg.connect(database_url, autocommit=True) as owner:
        owner.execute(statement)
    try:
        yield as_user(database_url, name, password)
    finally:
        with psycopg.connect(database_url, autocommit=True) as owner:
            owner.execute(sql.SQL("drop owned by {}").format(sql.Identifier(name)))
            owner.execute(sql.SQL("drop role {}").format(sql.Identifier(name)))


async def test_the_daemon_runs_the_queue_as_the_least_privileged_role(
    daemon_url: str, db: psycopg.Connection
) -> None:
    item = insert_item(db, book_id=insert_book(db))
    settings = Settings(database_url=Secret(daemon_url), poll_interval_seconds=0.2)
    monitor = Monitor(settings, PostgresStore(daemon_url), Recording(steps=2))
    await monitor.start()
    try:
        await eventually(
            lambda: item_row(db, item)["generation_status"] == "completed",
            what="the item completed by the book_monitor role",
        )
    finally:
        await monitor.shutdown()
    row = item_row(db, item)
    assert row["attempts"] == 1 and row["pages_done"] == 2 and row["claimed_by"] is None
    assert (
        db.execute(
            "select count(*) from notifications where order_item_id = %s", [item]
        ).fetchone()[0]
        == 1
    )


def test_the_role_reads_the_catalog_and_nothing_else(
    daemon_url: str, db: psycopg.Connection
) -> None:
    book = insert_book(db, pages=2)
    insert_item(db, book_id=book)
    with psycopg.connect(daemon_url, autocommit=True) as conn:
        assert conn.execute("select count(*) from books").fetchone()[0] == 1
        assert conn.execute("select count(*) from book_pages").fetchone()[0] == 2
        assert conn.execute("select order_queue_depth()").fetchone()[0] == 1
        for statement in (
            "select * from orders",
            "select * from order_items",
            "select * from notifications",
            "select * from book_analyses",
            "update books set title = 'x'",
            "delete from order_items",
            "select import_book('{\"title\": \"x\"}', '[]')",
            "select record_migration('999_evil.sql', 'x')",
            "select create_paid_order_item(gen_random_uuid(), 'x', 1, 'x', null)",
        ):
            with pytest.raises(errors.InsufficientPrivilege):
                conn.execute(statement)


# Called by the store only for the catalog import and the demo, both run with the owner's URL.
OWNER_ONLY = {"import_book", "set_book_layout", "create_paid_order_item", "order_item_summary"}
STORE_SOURCE = Path(__file__).resolve().parents[2] / "monitor" / "store" / "base.py"


def test_every_function_the_store_calls_is_secured_for_the_role(db: psycopg.Connection) -> None:
    """A migration that redefines a queue function without ``_secure_daemon_functions`` would
    leave the least-privileged daemon refused at run time: this names the function instead."""
    called = set(re.findall(r'_call\(\s*"(\w+)"', STORE_SOURCE.read_text())) - OWNER_ONLY
    assert {"claim_order_items", "complete_order_item", "ops_queue_status"} <= called
    rows = db.execute(
        "select p.proname, p.prosecdef, has_function_privilege('book_monitor', p.oid, 'execute')"
        "  from pg_proc p where p.pronamespace = 'public'::regnamespace"
        "   and p.proname = any(%s)",
        [sorted(called)],
    ).fetchall()
    assert {name for name, _, _ in rows} == called
    insecure = sorted(name for name, definer, granted in rows if not (definer and granted))
    assert insecure == []
