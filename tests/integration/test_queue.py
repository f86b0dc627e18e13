"""The queue protocol (migrations/002_queue.sql) on a real Postgres, through both store adapters
(the ``store`` fixture is parametrized: psycopg directly, and supabase-py via the PostgREST shim)."""

from __future__ import annotations

import asyncio

import psycopg
import pytest

from monitor.store.base import FailOutcome, LeaseState, OrderStore, RetryOutcome, SchemaNotMigrated
from tests.support.factories import insert_book, insert_item, item_row


def expire_lease(db: psycopg.Connection, item_id: str) -> None:
    db.execute(
        "update order_items set lease_expires_at = now() - interval '1 second' where id = %s",
        [item_id],
    )


async def test_concurrent_claimers_claim_each_paid_item_exactly_once(
    store: OrderStore, db: psycopg.Connection
) -> None:
    book = insert_book(db)
    db.execute(
        """with o as (insert into orders (payment_status) select 'paid' from generate_series(1, 500)
                      returning id)
           insert into order_items (order_id, book_id) select id, %s from o""",
        [book],
    )
    unpaid = [insert_item(db, book_id=book, paid=False) for _ in range(20)]

    async def claimer(n: int) -> list[str]:
        claimed: list[str] = []
        while batch := await store.claim(f"worker-{n}", 7, 300):
            claimed += [row["id"] for row in batch]
        return claimed

    results = await asyncio.gather(*(claimer(n) for n in range(8)))
    everything = [item for result in results for item in result]
    assert len(everything) == 500
    assert len(set(everything)) == 500
    assert not set(unpaid) & set(everything)
    statuses = dict(
        db.execute("select generation_status, count(*) from order_items group by 1").fetchall()
    )
    assert statuses == {"processing": 500, "pending": 20}


async def test_claim_sets_bookkeeping_and_respects_the_limit(
    store: OrderStore, db: psycopg.Connection
) -> None:
    book = insert_book(db)
    for _ in range(3):
        insert_item(db, book_id=book)
    claimed = await store.claim("w1", 2, 60)
    assert len(claimed) == 2
    row = item_row(db, claimed[0]["id"])
    assert row["generation_status"] == "processing"
    assert row["claimed_by"] == "w1"
    assert row["attempts"] == 1
    assert row["lease_expires_at"] is not None
    assert await store.claim("w1", 0, 60) == []


async def test_expired_lease_moves_item_and_fences_the_old_worker(
    store: OrderStore, db: psycopg.Connection
) -> None:
    item = insert_item(db, book_id=insert_book(db))
    [claimed] = await store.claim("old", 1, 60)
    assert await store.claim("new", 1, 60) == []  # lease still valid
    expire_lease(db, item)

    [reclaimed] = await store.claim("new", 1, 60)
    # A reclaimed lease is a crash, not a failure: it spends the crash budget only.
    assert reclaimed["id"] == item
    assert (reclaimed["attempts"], reclaimed["crash_count"]) == (1, 1)

    assert await store.heartbeat(item, "old", 60) is LeaseState.LOST
    assert not await store.checkpoint_page(item, "old", 1, "generated/x/pages/01.jpg")
    assert not await store.save_page_draft(
        item, "old", 1, "generated/x/pages/01.jpg", redraws=0, model="m", sha256="0" * 64
    )
    assert not await store.set_progress(item, "old", 50, "Drawing")
    assert not await store.complete(
        item, "old", pdf_path="p", pdf_url="u", cover_path="c", cover_url="cu"
    )
    assert (
        await store.fail(item, "old", error_code="x", error_message="y", retryable=True)
        is FailOutcome.LOST
    )
    assert not await store.release(item, "old")
    assert await store.load_context(item, "old") is None

    row = item_row(db, item)
    assert row["claimed_by"] == "new" and row["generation_status"] == "processing"
    assert await store.heartbeat(item, "new", 60) is LeaseState.OK


async def test_a_released_item_keeps_its_place_ahead_of_newer_orders(
    store: OrderStore, db: psycopg.Connection
) -> None:
    book = insert_book(db)
    older = insert_item(db, book_id=book)
    [claimed] = await store.claim("w1", 1, 60)
    assert claimed["id"] == older
    newer = insert_item(db, book_id=book)

    assert await store.release(older, "w1")

    # The half-finished book of the longest-waiting customer resumes first.
    [resumed] = await store.claim("w2", 1, 60)
    assert resumed["id"] == older
    [after] = await store.claim("w2", 1, 60)
    assert after["id"] == newer


async def test_checkpoints_survive_release_and_are_in_the_context(
    store: OrderStore, db: psycopg.Connection
) -> None:
    book = insert_book(db, pages=3)
    item = insert_item(db, book_id=book)
    await store.claim("w1", 1, 60)
    assert await store.checkpoint_page(item, "w1", 0, f"generated/{item}/cover.jpg")
    assert await store.checkpoint_page(
        item, "w1", 1, f"generated/{item}/pages/01.jpg", prompt_version="v1", model="m"
    )
    # A repeated step upserts instead of failing.
    assert await store.checkpoint_page(item, "w1", 1, f"generated/{item}/pages/01.jpg")
    assert item_row(db, item)["pages_done"] == 1

    assert await store.release(item, "w1")
    row = item_row(db, item)
    assert row["generation_status"] == "pending"
    assert row["attempts"] == 0  # a release is not an attempt
    assert row["claimed_by"] is None

    [again] = await store.claim("w2", 1, 60)
    assert again["attempts"] == 1
    context = await store.load_context(item, "w2")
    assert context is not None
    assert context.book is not None and context.book["id"] == book
    assert [p["page_number"] for p in context.pages] == [1, 2, 3]
    assert [c["page_number"] for c in context.checkpoints] == [0, 1]
    assert context.order["payment_status"] == "paid"


async def test_a_draft_is_in_the_context_with_its_usage_until_its_checkpoint(
    store: OrderStore, db: psycopg.Connection
) -> None:
    item = insert_item(db, book_id=insert_book(db, pages=2))
    await store.claim("w1", 1, 60)
    page = f"generated/{item}/pages/01.jpg"
    usage = {"calls": 3, "images": 1}
    assert await store.save_page_draft(
        item, "w1", 1, page, redraws=0, model="m", sha256="a" * 64, usage=usage
    )
    # A redraw replaces the page's draft.
    assert await store.save_page_draft(item, "w1", 1, page, redraws=1, model="m", sha256="b" * 64)
    assert item_row(db, item)["ai_usage"]["images"] == 1  # the image call is on the row
    assert await store.release(item, "w1")
    await store.claim("w2", 1, 60)
    context = await store.load_context(item, "w2")
    assert context is not None
    assert [(d["page_number"], d["redraws"], d["sha256"]) for d in context.drafts] == [
        (1, 1, "b" * 64)
    ]

    assert await store.checkpoint_page(item, "w2", 1, page)

    context = await store.load_context(item, "w2")
    assert context is not None and context.drafts == []


async def test_retryable_failure_backs_off_exponentially_then_dead_letters(
    store: OrderStore, db: psycopg.Connection
) -> None:
    item = insert_item(db, book_id=insert_book(db), max_attempts=3)
    delays = []
    for attempt in (1, 2):
        [claimed] = await store.claim("w", 1, 60)
        assert claimed["attempts"] == attempt
        outcome = await store.fail(
            item,
            "w",
            error_code="ai_unavailable",
            error_message="Later.",
            retryable=True,
            backoff_base_seconds=10,
            backoff_max_seconds=1000,
        )
        assert outcome is FailOutcome.RETRY
        row = item_row(db, item)
        assert row["generation_status"] == "pending"
        assert row["error_code"] == "ai_unavailable"
        delay = db.execute(
            "select extract(epoch from next_attempt_at - now()) from order_items where id = %s",
            [item],
        ).fetchone()[0]
        delays.append(float(delay))
        # Not due yet: nobody may claim it during the backoff.
        assert await store.claim("w", 1, 60) == []
        db.execute("update order_items set next_attempt_at = now() where id = %s", [item])
    # base * 2^(attempt-1) with jitter in [50 %, 100 %].
    assert 4 <= delays[0] <= 10.5
    assert 9 <= delays[1] <= 20.5

    [claimed] = await store.claim("w", 1, 60)
    assert claimed["attempts"] == 3
    outcome = await store.fail(
        item, "w", error_code="ai_unavailable", error_message="Later.", retryable=True
    )
    assert outcome is FailOutcome.FAILED
    row = item_row(db, item)
    assert row["generation_status"] == "failed" and row["error_code"] == "ai_unavailable"


async def test_server_requested_delay_is_honoured(
    store: OrderStore, db: psycopg.Connection
) -> None:
    item = insert_item(db, book_id=insert_book(db))
    await store.claim("w", 1, 60)
    await store.fail(
        item,
        "w",
        error_code="ai_unavailable",
        error_message="Later.",
        retryable=True,
        retry_after=600,
        backoff_base_seconds=1,
    )
    delay = db.execute(
        "select extract(epoch from next_attempt_at - now()) from order_items where id = %s", [item]
    ).fetchone()[0]
    assert 590 <= float(delay) <= 600.5


async def test_crashes_spend_the_crash_budget_not_the_attempts(
    store: OrderStore, db: psycopg.Connection
) -> None:
    item = insert_item(db, book_id=insert_book(db), max_attempts=1)
    db.execute("update order_items set max_crashes = 3 where id = %s", [item])
    # Three crashes (a deploy, an OOM kill, ...) on an item with one attempt: it still gets made.
    for crash in range(1, 4):
        [claimed] = await store.claim("w", 1, 60)
        assert (claimed["attempts"], claimed["crash_count"]) == (1, crash - 1)
        expire_lease(db, item)  # the worker died mid-item
    [claimed] = await store.claim("w", 1, 60)
    assert (claimed["attempts"], claimed["crash_count"]) == (1, 3)
    assert await store.complete(
        item, "w", pdf_path="p", pdf_url="u", cover_path="c", cover_url="cu"
    )


async def test_a_crash_loop_ends_as_crash_loop_with_a_notification(
    store: OrderStore, db: psycopg.Connection
) -> None:
    item = insert_item(db, book_id=insert_book(db))
    assert item_row(db, item)["max_crashes"] == 5  # the documented default
    db.execute("update order_items set max_crashes = 2 where id = %s", [item])
    for _ in range(3):  # the first claim and two reclaims, each killing its worker
        assert len(await store.claim("w", 1, 60)) == 1
        expire_lease(db, item)
    assert await store.claim("w", 1, 60) == []
    row = item_row(db, item)
    assert (row["generation_status"], row["error_code"]) == ("failed", "crash_loop")
    assert (row["attempts"], row["crash_count"]) == (1, 2)
    notes = db.execute(
        "select kind, body from notifications where order_item_id = %s", [item]
    ).fetchall()
    assert [n[0] for n in notes] == ["book_failed"]
    assert "keep trying" not in notes[0][1]
    # The operator's retry gives both budgets back.
    assert await store.retry_failed(item) is RetryOutcome.OK
    row = item_row(db, item)
    assert (row["attempts"], row["crash_count"]) == (0, 0)


async def test_exhausted_attempts_of_a_due_item_end_as_max_attempts(
    store: OrderStore, db: psycopg.Connection
) -> None:
    item = insert_item(db, book_id=insert_book(db), max_attempts=2)
    db.execute("update order_items set attempts = 2 where id = %s", [item])  # max lowered meanwhile
    assert await store.claim("w", 1, 60) == []
    row = item_row(db, item)
    assert (row["generation_status"], row["error_code"]) == ("failed", "max_attempts")


async def test_a_crashed_workers_refunded_item_ends_order_not_paid(
    store: OrderStore, db: psycopg.Connection
) -> None:
    item = insert_item(db, book_id=insert_book(db))
    await store.claim("w", 1, 60)
    expire_lease(db, item)
    refund(db, item)
    assert await store.claim("w2", 1, 60) == []
    row = item_row(db, item)
    assert (row["generation_status"], row["error_code"]) == ("failed", "order_not_paid")


async def test_terminal_failure_fails_at_once_and_notifies(
    store: OrderStore, db: psycopg.Connection
) -> None:
    item = insert_item(db, book_id=insert_book(db))
    await store.claim("w", 1, 60)
    outcome = await store.fail(
        item,
        "w",
        error_code="photo_rejected",
        error_message="Please upload a photo with one child.",
        retryable=False,
    )
    assert outcome is FailOutcome.FAILED
    row = item_row(db, item)
    assert (row["generation_status"], row["error_code"], row["attempts"]) == (
        "failed",
        "photo_rejected",
        1,
    )
    assert row["claimed_by"] is None
    body = db.execute("select body from notifications where order_item_id = %s", [item]).fetchone()
    assert body == ("Please upload a photo with one child.",)


def refund(db: psycopg.Connection, item: str) -> None:
    db.execute(
        "update orders set payment_status = 'refunded' where id = "
        "(select order_id from order_items where id = %s)",
        [item],
    )


async def test_refund_mid_processing_ends_the_item_as_order_not_paid(
    store: OrderStore, db: psycopg.Connection
) -> None:
    item = insert_item(db, book_id=insert_book(db))
    await store.claim("w", 1, 60)
    refund(db, item)
    assert await store.heartbeat(item, "w", 60) is LeaseState.ORDER_NOT_PAID
    row = item_row(db, item)
    assert (row["generation_status"], row["error_code"]) == ("failed", "order_not_paid")
    assert not await store.complete(
        item, "w", pdf_path="p", pdf_url="u", cover_path="c", cover_url="cu"
    )


@pytest.mark.parametrize("write", ["progress", "checkpoint", "draft", "complete"])
async def test_every_write_that_spends_or_delivers_refuses_a_refunded_order(
    store: OrderStore, db: psycopg.Connection, write: str
) -> None:
    item = insert_item(db, book_id=insert_book(db))
    await store.claim("w", 1, 60)
    refund(db, item)  # between two heartbeats
    if write == "progress":
        written = await store.set_progress(item, "w", 50, "Drawing page 2 of 3")
    elif write == "checkpoint":
        written = await store.checkpoint_page(item, "w", 2, f"generated/{item}/pages/02.jpg")
    elif write == "draft":
        written = await store.save_page_draft(
            item, "w", 2, f"generated/{item}/pages/02.jpg", redraws=0, model="m", sha256="0" * 64
        )
    else:
        written = await store.complete(
            item, "w", pdf_path="p", pdf_url="u", cover_path="c", cover_url="cu"
        )
    assert written is False  # the worker stops
    row = item_row(db, item)
    assert (row["generation_status"], row["error_code"]) == ("failed", "order_not_paid")
    assert row["pdf_url"] is None and row["pages_done"] == 0
    kinds = [
        k
        for (k,) in db.execute(
            "select kind from notifications where order_item_id = %s", [item]
        ).fetchall()
    ]
    assert kinds == ["book_failed"]


async def test_progress_never_goes_backwards_across_attempts(
    store: OrderStore, db: psycopg.Connection
) -> None:
    item = insert_item(db, book_id=insert_book(db))
    await store.claim("w1", 1, 60)
    assert await store.set_progress(item, "w1", 60, "Drawing page 6 of 10")
    assert await store.release(item, "w1")
    await store.claim("w2", 1, 60)
    assert await store.set_progress(item, "w2", 10, "Drawing the cover")
    row = item_row(db, item)
    assert (row["progress"], row["current_step"]) == (60, "Drawing the cover")


async def test_a_final_failure_says_so_and_a_pending_retry_says_we_keep_trying(
    store: OrderStore, db: psycopg.Connection
) -> None:
    item = insert_item(db, book_id=insert_book(db), max_attempts=2)
    texts = dict(error_message="We will keep trying.", final_error_message="We could not.")
    await store.claim("w", 1, 60)
    assert (
        await store.fail(item, "w", error_code="ai_unavailable", retryable=True, **texts)
        is FailOutcome.RETRY
    )
    row = item_row(db, item)
    assert (row["generation_status"], row["error_message"]) == ("pending", "We will keep trying.")
    assert (
        db.execute(
            "select count(*) from notifications where order_item_id = %s", [item]
        ).fetchone()[0]
        == 0
    )
    db.execute("update order_items set next_attempt_at = now() where id = %s", [item])
    await store.claim("w", 1, 60)
    assert (
        await store.fail(item, "w", error_code="ai_unavailable", retryable=True, **texts)
        is FailOutcome.FAILED
    )
    row = item_row(db, item)
    assert (row["generation_status"], row["error_message"]) == ("failed", "We could not.")
    assert db.execute(
        "select kind, body from notifications where order_item_id = %s", [item]
    ).fetchall() == [("book_failed", "We could not.")]


async def test_complete_writes_results_and_notification_atomically(
    store: OrderStore, db: psycopg.Connection
) -> None:
    item = insert_item(db, book_id=insert_book(db, title="Space Pirates"))
    await store.claim("w", 1, 60)
    assert await store.set_progress(
        item, "w", 40, "Drawing page 2 of 3", pages_total=3, usage={"calls": 4}
    )
    row = item_row(db, item)
    assert (row["progress"], row["current_step"], row["pages_total"]) == (
        40,
        "Drawing page 2 of 3",
        3,
    )
    assert await store.complete(
        item,
        "w",
        pdf_path=f"generated/{item}/book.pdf",
        pdf_url="https://x/book.pdf",
        cover_path=f"generated/{item}/cover.jpg",
        cover_url="https://x/cover.jpg",
        usage={"calls": 5, "images": 4},
    )
    row = item_row(db, item)
    assert row["generation_status"] == "completed" and row["progress"] == 100
    assert row["generated_at"] is not None and row["pdf_url"] == "https://x/book.pdf"
    assert row["ai_usage"] == {"calls": 5, "images": 4}
    assert row["claimed_by"] is None
    note = db.execute(
        "select kind, title, body from notifications where order_item_id = %s", [item]
    ).fetchone()
    assert note[0] == "book_ready" and "Space Pirates" in note[2]


async def test_operator_retry_of_failed_items(store: OrderStore, db: psycopg.Connection) -> None:
    item = insert_item(db, book_id=insert_book(db))
    assert await store.retry_failed(item) is RetryOutcome.NOT_FAILED
    await store.claim("w", 1, 60)
    await store.fail(item, "w", error_code="x", error_message="y", retryable=False)
    assert await store.retry_failed(item) is RetryOutcome.OK
    row = item_row(db, item)
    assert (row["generation_status"], row["attempts"], row["error_code"]) == ("pending", 0, None)
    assert (
        await store.retry_failed("00000000-0000-0000-0000-000000000000") is RetryOutcome.NOT_FOUND
    )


async def test_queue_depth_counts_paid_due_items(store: OrderStore, db: psycopg.Connection) -> None:
    book = insert_book(db)
    insert_item(db, book_id=book)
    insert_item(db, book_id=book)
    insert_item(db, book_id=book, paid=False)
    assert await store.queue_depth() == 2


async def test_book_analysis_cache_round_trip(store: OrderStore, db: psycopg.Connection) -> None:
    book = insert_book(db)
    assert await store.get_book_analysis(book, "v1", "m") is None
    await store.put_book_analysis(book, "v1", "m", {"art_style": "watercolor"})
    await store.put_book_analysis(book, "v1", "m", {"art_style": "ignored second write"})
    assert await store.get_book_analysis(book, "v1", "m") == {"art_style": "watercolor"}
    assert await store.get_book_analysis(book, "v2", "m") is None


@pytest.mark.parametrize("event", ["insert_paid", "pay_order", "retry_backoff_release"])
async def test_trigger_notifies_when_an_item_becomes_claimable(
    database_url: str, db: psycopg.Connection, event: str
) -> None:
    book = insert_book(db)
    listener = await psycopg.AsyncConnection.connect(database_url, autocommit=True)
    async with listener:
        await listener.execute("listen order_items_ready")
        if event == "insert_paid":
            item = insert_item(db, book_id=book)
        elif event == "pay_order":
            item = insert_item(db, book_id=book, paid=False)
            await _drain(listener)
            db.execute(
                "update orders set payment_status = 'paid' where id = "
                "(select order_id from order_items where id = %s)",
                [item],
            )
        else:
            item = insert_item(db, book_id=book)
            db.execute(
                "update order_items set generation_status = 'processing', "
                "claimed_by = 'w' where id = %s",
                [item],
            )
            await _drain(listener)
            db.execute("select release_order_item(%s, 'w')", [item])
        received = await _drain(listener)
    assert item in received


async def _drain(conn: psycopg.AsyncConnection) -> list[str]:
    payloads = []
    async for notify in conn.notifies(timeout=0.5):
        payloads.append(notify.payload)
    return payloads


async def test_expire_leases_of_frees_only_that_workers_items(
    store: OrderStore, db: psycopg.Connection
) -> None:
    book = insert_book(db)
    first, second = insert_item(db, book_id=book), insert_item(db, book_id=book)
    [a] = await store.claim("crashed", 1, 300)
    [b] = await store.claim("alive", 1, 300)

    assert await store.expire_leases_of("crashed") == 1
    assert await store.expire_leases_of("crashed") == 0  # already expired: nothing more to do

    [resumed] = await store.claim("restarted", 5, 300)
    # The takeover is a crash of the predecessor: no attempt spent.
    assert resumed["id"] == a["id"]
    assert (resumed["attempts"], resumed["crash_count"]) == (1, 1)
    assert item_row(db, b["id"])["claimed_by"] == "alive"
    assert {first, second} == {a["id"], b["id"]}


async def test_a_missing_queue_function_says_run_migrate(
    store: OrderStore, db: psycopg.Connection
) -> None:
    db.execute("drop function order_queue_depth()")
    with pytest.raises(
        SchemaNotMigrated, match=r"schema not migrated: run `run_monitor.py migrate`"
    ):
        await store.queue_depth()
