"""migrations/schema/functions.sql is the current definition of every function: what the
migrations leave behind (a later file wins) and what a migrated database runs."""

from __future__ import annotations

import psycopg

from testkit.schema_snapshot import SNAPSHOT, latest_definitions, render


def test_the_snapshot_is_what_the_migrations_define() -> None:
    assert SNAPSHOT.read_text() == render(), "run: python -m testkit.schema_snapshot"


def test_the_database_runs_the_latest_definition_of_every_function(
    db: psycopg.Connection,
) -> None:
    latest = latest_definitions()
    assert {"claim_order_items", "fail_order_item", "complete_order_item"} <= {
        name for name, _ in latest
    }
    stored: dict[str, set[str]] = {}
    for name, body in db.execute(
        "select p.proname, p.prosrc from pg_proc p join pg_namespace n on n.oid = p.pronamespace"
        " where n.nspname = 'public'"
    ):
        stored.setdefault(name, set()).add(body)
    stale = sorted(
        f"{d.name}({d.args}) from {d.source}"
        for d in latest.values()
        if d.body not in stored.get(d.name, set())
    )
    assert stale == []
