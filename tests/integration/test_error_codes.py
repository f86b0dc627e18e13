"""Every error_code of the README, walked through the real queue functions to what the parent
finally reads: a failure for good never says "we will keep trying", a pending retry does not say
it failed, and the README's "retried?" column is what the code does."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import psycopg
import pytest

from monitor.store.base import FailOutcome, OrderStore
from processors.errors import OrderError, RetryableError, TerminalError
from tests.support.factories import insert_book, insert_item, item_row

README = Path(__file__).resolve().parents[2] / "README.md"
#: Where failures are raised; importing them registers their OrderError subclasses.
RAISING_MODULES = (
    "processors.book",
    "processors.ai.base",
    "processors.ai.gemini",
    "processors.images",
    "processors.prompts",
    "processors.child",
    "processors.analysis",
    "processors.pdf",
    "processors.layout",
    "processors.ports",
    "monitor.store.base",
)
#: Codes only the SQL queue functions write (claim's dead letter, the payment check).
SQL_CODES = {"order_not_paid", "max_attempts", "crash_loop"}
RETRY_WORDS = ("keep trying", "little longer")


def documented_codes() -> dict[str, bool]:
    """error_code -> retried?, from the README's table."""
    table = README.read_text().split("| error_code | retried? | cause |", 1)[1].split("\n\n", 1)[0]
    codes: dict[str, bool] = {}
    for row in table.splitlines()[2:]:
        cells = [c.strip() for c in row.strip().strip("|").split("|")]
        for code in re.findall(r"`([a-z_]+)`", cells[0]):
            codes[code] = cells[1] == "yes"
    return codes


def error_classes() -> dict[str, type[OrderError]]:
    for module in RAISING_MODULES:
        importlib.import_module(module)
    found: dict[str, type[OrderError]] = {}
    pending = [OrderError]
    while pending:
        cls = pending.pop()
        pending += cls.__subclasses__()
        if cls not in (OrderError, RetryableError, TerminalError) and cls.__module__ != __name__:
            found.setdefault(cls.code, cls)
    return found


def error_for(code: str, retried: bool) -> OrderError:
    cls = error_classes().get(code)
    if cls is not None:
        return cls("test")
    # Raised with code= on a base class (ai_timeout, ai_rate_limited, storage_error, ...).
    return RetryableError("test", code=code) if retried else TerminalError("test", code=code)


def test_every_error_class_is_documented() -> None:
    assert set(error_classes()) - set(documented_codes()) == set()


CODES = sorted(set(documented_codes()) - SQL_CODES)


@pytest.mark.parametrize("code", CODES)
async def test_each_code_ends_with_a_message_true_to_the_state(
    store: OrderStore, db: psycopg.Connection, code: str
) -> None:
    retried = documented_codes()[code]
    exc = error_for(code, retried)
    assert exc.retryable is retried, f"README says retried={retried} for {code}"
    item = insert_item(db, book_id=insert_book(db), max_attempts=2)

    async def fail() -> FailOutcome:
        await store.claim("w", 1, 60)
        return await store.fail(
            item,
            "w",
            error_code=exc.code,
            error_message=exc.parent_message,
            final_error_message=exc.final_message,
            retryable=exc.retryable,
        )

    if retried:
        assert await fail() is FailOutcome.RETRY
        row = item_row(db, item)
        assert (row["generation_status"], row["error_message"]) == ("pending", exc.parent_message)
        db.execute("update order_items set next_attempt_at = now() where id = %s", [item])
    assert await fail() is FailOutcome.FAILED
    row = item_row(db, item)
    notes = db.execute(
        "select kind, body from notifications where order_item_id = %s", [item]
    ).fetchall()
    assert (row["generation_status"], row["error_code"]) == ("failed", code)
    assert notes == [("book_failed", row["error_message"])]
    assert not any(word in row["error_message"] for word in RETRY_WORDS), row["error_message"]


async def test_the_codes_the_queue_writes_end_with_a_final_message(
    store: OrderStore, db: psycopg.Connection
) -> None:
    book = insert_book(db)
    ended = {}
    unpaid = insert_item(db, book_id=book)
    await store.claim("w", 1, 60)
    db.execute(
        "update orders set payment_status = 'refunded' where id = "
        "(select order_id from order_items where id = %s)",
        [unpaid],
    )
    assert not await store.set_progress(unpaid, "w", 10, "Drawing")
    ended["order_not_paid"] = unpaid
    exhausted = insert_item(db, book_id=book, max_attempts=1)
    db.execute("update order_items set attempts = 1 where id = %s", [exhausted])
    looping = insert_item(db, book_id=book)
    db.execute(
        "update order_items set generation_status = 'processing', claimed_by = 'dead', "
        "crash_count = max_crashes, lease_expires_at = now() - interval '1 s' where id = %s",
        [looping],
    )
    assert await store.claim("w", 5, 60) == []
    ended["max_attempts"], ended["crash_loop"] = exhausted, looping
    assert set(ended) == SQL_CODES and SQL_CODES <= set(documented_codes())
    for code, item in ended.items():
        row = item_row(db, item)
        assert (row["generation_status"], row["error_code"]) == ("failed", code)
        notes = db.execute(
            "select kind, body from notifications where order_item_id = %s", [item]
        ).fetchall()
        assert notes == [("book_failed", row["error_message"])]
        assert not any(word in row["error_message"] for word in RETRY_WORDS)
