"""The operator commands against a real Postgres: output, --json and exit codes.

The commands run as an operator runs them, ``run_monitor.py <command>`` in a subprocess with
DATABASE_URL; the JSON shapes are also checked through both store adapters (the Supabase one via
the local PostgREST), since the commands work with either.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from monitor import ops
from monitor.store.base import OrderStore
from testkit.daemon_process import REPO
from tests.support.factories import insert_book, insert_item, item_row


def cli(database_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("GOOGLE_", "GEMINI_", "SUPABASE_"))
    }
    env.update({"DATABASE_URL": database_url, "LOG_LEVEL": "WARNING"})
    return subprocess.run(
        [sys.executable, str(REPO / "run_monitor.py"), "--env-file", os.devnull, *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def arrange_queue(db: psycopg.Connection) -> dict[str, str]:
    """One item in each state; the processing one is mid-book with a checkpointed cover and
    page 1 drafted (drawn again once, waiting for its judge)."""
    book = insert_book(db, pages=2, title="The Brave Explorer")
    items = {
        name: insert_item(db, book_id=book, child_name="Mia")
        for name in ("pending", "processing", "failed", "completed")
    }
    db.execute(
        """update order_items set generation_status = 'processing', claimed_by = 'w1',
                  lease_expires_at = now() + interval '5 minutes', attempts = 1, progress = 40,
                  pages_total = 2, current_step = 'Drawing Mia''s cover' where id = %s""",
        [items["processing"]],
    )
    db.execute(
        """insert into order_item_pages (order_item_id, page_number, image_path, model)
                  values (%s, 0, %s, 'gemini-x-image')""",
        [items["processing"], f"generated/{items['processing']}/cover.jpg"],
    )
    db.execute(
        """insert into order_item_page_drafts (order_item_id, page_number, image_path, redraws,
                                               model, sha256)
                  values (%s, 1, %s, 1, 'gemini-x-image', repeat('a', 64))""",
        [items["processing"], f"generated/{items['processing']}/pages/01.jpg"],
    )
    db.execute(
        """update order_items set generation_status = 'failed', error_code = 'no_face',
                  error_message = 'We could not find a face.', attempts = 1 where id = %s""",
        [items["failed"]],
    )
    db.execute(
        """update order_items set generation_status = 'completed', progress = 100,
                  pdf_path = 'generated/x/book.pdf', ai_usage = '{"calls": 4, "images": 3}'
                  where id = %s""",
        [items["completed"]],
    )
    return items


def test_status_counts_the_queue(db: psycopg.Connection, database_url: str) -> None:
    arrange_queue(db)
    text = cli(database_url, "status")
    assert text.returncode == 0, text.stderr
    assert "pending 1, processing 1, completed 1, failed 1" in text.stdout
    assert "failed in the last 24 h: no_face 1" in text.stdout

    report = json.loads(cli(database_url, "status", "--json").stdout)
    assert report["by_status"] == {"pending": 1, "processing": 1, "completed": 1, "failed": 1}
    assert report["in_flight"] == 1 and report["waiting"] == 1
    assert report["failed_last_24h"] == {"no_face": 1}
    assert report["oldest_waiting_since"] is not None


def test_list_filters_by_status_code_and_since(db: psycopg.Connection, database_url: str) -> None:
    items = arrange_queue(db)
    db.execute(
        "update order_items set updated_at = now() - interval '3 days' where id = %s",
        [items["completed"]],
    )

    failed = cli(database_url, "list", "--status", "failed")
    assert failed.returncode == 0
    assert items["failed"] in failed.stdout and items["pending"] not in failed.stdout
    assert "no_face" in failed.stdout

    by_code = json.loads(cli(database_url, "list", "--code", "no_face", "--json").stdout)
    assert [r["id"] for r in by_code] == [items["failed"]]
    recent = json.loads(cli(database_url, "list", "--since", "1d", "--json").stdout)
    assert {r["id"] for r in recent} == {items["pending"], items["processing"], items["failed"]}
    assert "Mia" not in cli(database_url, "list").stdout

    assert cli(database_url, "list", "--since", "yesterday").returncode == 2
    assert cli(database_url, "list", "--status", "lost").returncode == 2


def test_show_hides_personal_data_unless_asked(db: psycopg.Connection, database_url: str) -> None:
    items = arrange_queue(db)
    shown = cli(database_url, "show", items["processing"])
    assert shown.returncode == 0, shown.stderr
    assert "Drawing [child]'s cover" in shown.stdout
    assert "checkpoint cover: gemini-x-image" in shown.stdout
    assert "draft page 1: gemini-x-image after 1 redraw(s)" in shown.stdout
    assert "Mia" not in shown.stdout and "uploads/" not in shown.stdout
    assert "generated/" not in shown.stdout

    db.execute(
        "update order_items set print_interior_url = 'https://x/interior', "
        "print_cover_path = 'generated/x/print-cover.pdf' where id = %s",
        [items["processing"]],
    )
    detail = json.loads(cli(database_url, "show", items["processing"], "--json").stdout)
    assert "child_name" not in detail["item"] and "user_id" not in detail["order"]
    assert not [
        column
        for column in detail["item"]
        if column.startswith("print_") and (column.endswith("_url") or column.endswith("_path"))
    ]
    (cover,) = detail["pages"]
    assert cover == {
        "page_number": 0,
        "model": "gemini-x-image",
        "prompt_version": None,
        "created_at": cover["created_at"],
    }
    (draft,) = detail["drafts"]
    assert draft == {
        "page_number": 1,
        "model": "gemini-x-image",
        "redraws": 1,
        "created_at": draft["created_at"],
    }

    personal = json.loads(cli(database_url, "show", items["processing"], "--pii", "--json").stdout)
    assert personal["item"]["child_name"] == "Mia"
    assert personal["item"]["current_step"] == "Drawing Mia's cover"
    assert personal["pages"][0]["image_path"].endswith("/cover.jpg")
    assert personal["drafts"][0]["image_path"].endswith("/pages/01.jpg")
    assert "child_name Mia" in cli(database_url, "show", items["processing"], "--pii").stdout

    failed = cli(database_url, "show", items["failed"])
    assert "error no_face: We could not find a face." in failed.stdout
    completed = cli(database_url, "show", items["completed"])
    assert "usage calls 4, images 3" in completed.stdout


def test_show_unknown_and_invalid_ids(database_url: str) -> None:
    missing = cli(database_url, "show", str(uuid.uuid4()))
    assert missing.returncode == 3 and "no order item has this id" in missing.stderr
    assert cli(database_url, "show", "not-a-uuid").returncode == 2


def test_retry_sends_a_failed_item_back_and_refuses_others(
    db: psycopg.Connection, database_url: str
) -> None:
    items = arrange_queue(db)
    retried = cli(database_url, "retry", items["failed"], "--json")
    assert retried.returncode == 0, retried.stderr
    assert json.loads(retried.stdout) == {"id": items["failed"], "status": "pending"}
    row = item_row(db, items["failed"])
    assert (row["generation_status"], row["error_code"], row["attempts"]) == ("pending", None, 0)

    again = cli(database_url, "retry", items["failed"])
    assert again.returncode == 4 and "only a failed item can be retried" in again.stderr
    assert cli(database_url, "retry", str(uuid.uuid4())).returncode == 3

    db.execute(
        "update order_items set generation_status = 'failed' where id = %s", [items["completed"]]
    )
    db.execute(
        "update orders set payment_status = 'refunded' where id = %s",
        [item_row(db, items["completed"])["order_id"]],
    )
    refused = json.loads(cli(database_url, "retry", items["completed"], "--json").stdout)
    assert refused["error"] == "order_not_paid"


def test_database_down_exits_1(tmp_path) -> None:
    down = cli("postgresql://nobody@127.0.0.1:9/none?connect_timeout=1", "status")
    assert down.returncode == 1 and "database unreachable" in down.stderr


def test_since_accepts_relative_and_iso_times() -> None:
    now = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
    assert ops.since_timestamp("6h", now=now) == (now - timedelta(hours=6)).isoformat()
    assert ops.since_timestamp("2026-11-30T08:00") == "2026-11-30T08:00:00+00:00"
    with pytest.raises(argparse.ArgumentTypeError):
        ops.since_timestamp("last week")


async def test_both_store_adapters_answer_the_commands(
    store: OrderStore, db: psycopg.Connection
) -> None:
    items = arrange_queue(db)
    out = io.StringIO()
    args = argparse.Namespace(command="show", id=items["processing"], pii=False, json=True)
    assert await ops._dispatch(store, args, out) == ops.EXIT_OK
    assert json.loads(out.getvalue())["item"]["current_step"] == "Drawing [child]'s cover"
    out = io.StringIO()
    args = argparse.Namespace(
        command="list", status="failed", since=None, code=None, limit=10, json=True
    )
    assert await ops._dispatch(store, args, out) == ops.EXIT_OK
    assert [r["id"] for r in json.loads(out.getvalue())] == [items["failed"]]
