"""Operator commands: ``status``, ``list``, ``show``, ``retry`` (of run_monitor.py / book-monitor).

They read the same configuration as the daemon and go through the same store, so they work with
``DATABASE_URL`` and with the Supabase store alike, from cron mode too (no status server needed).
Every query is a function of ``migrations/013_operator_queries.sql``; ``retry`` is the admin
endpoint's ``retry_failed_order_item``. Output is for a terminal; ``--json`` prints one JSON
document for scripts. Personal data (the child's details, photo and result paths) only with
``show --pii``.

Exit codes (the daemon's, plus two of their own):
  0  done
  1  the database did not answer
  2  invalid configuration or command line
  3  no order item has this id (``show``, ``retry``)
  4  ``retry`` refused: the item is not failed, or its order is no longer paid
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, TextIO

from monitor.app import build_store
from monitor.config import Settings
from monitor.store.base import OrderStore, RetryOutcome, StoreUnavailable
from processors.contract import Row

EXIT_OK, EXIT_FAILURE, EXIT_CONFIG, EXIT_NOT_FOUND, EXIT_REFUSED = 0, 1, 2, 3, 4
COMMANDS = ("status", "list", "show", "retry")
STATUSES = ("pending", "processing", "completed", "failed")
_RELATIVE = re.compile(r"^(\d+)([mhd])$")
_UNITS = {"m": "minutes", "h": "hours", "d": "days"}
_RETRY_MESSAGES = {
    RetryOutcome.NOT_FOUND: "no order item has this id",
    RetryOutcome.NOT_FAILED: "only a failed item can be retried",
    RetryOutcome.ORDER_NOT_PAID: "the order is no longer paid",
}


def add_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register the operator commands on the main parser's subcommands."""
    status = commands.add_parser("status", help="the queue at a glance")
    listing = commands.add_parser("list", help="order items, newest change first")
    listing.add_argument("--status", choices=STATUSES, help="only items in this state")
    listing.add_argument(
        "--since",
        type=since_timestamp,
        metavar="WHEN",
        help="changed since: an ISO 8601 time or 30m, 6h, 7d",
    )
    listing.add_argument("--code", help="only items that failed with this error_code")
    listing.add_argument("--limit", type=int, default=50, help="at most this many (default: 50)")
    show = commands.add_parser("show", help="one order item: row, pages, usage, error")
    show.add_argument("id", type=item_id)
    show.add_argument(
        "--pii", action="store_true", help="include the child's details, photo and result paths"
    )
    retry = commands.add_parser("retry", help="send a failed order item back to the queue")
    retry.add_argument("id", type=item_id)
    for command in (status, listing, show, retry):
        command.add_argument("--json", action="store_true", help="one JSON document on stdout")


def item_id(text: str) -> str:
    try:
        return str(uuid.UUID(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"an order item id is a UUID, got {text!r}") from None


def since_timestamp(text: str, *, now: datetime | None = None) -> str:
    """``30m``/``6h``/``7d`` ago or an ISO 8601 time (UTC when it names no zone), as ISO 8601."""
    if match := _RELATIVE.match(text.strip()):
        amount, unit = match.groups()
        moment = (now or datetime.now(UTC)) - timedelta(**{_UNITS[unit]: int(amount)})
        return moment.isoformat()
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--since takes an ISO 8601 time or 30m, 6h, 7d; got {text!r}"
        ) from None
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).isoformat()


async def run(settings: Settings, args: argparse.Namespace, out: TextIO = sys.stdout) -> int:
    store = await build_store(settings)
    await store.open()
    try:
        return await _dispatch(store, args, out)
    except StoreUnavailable as exc:
        print(f"database unreachable: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    finally:
        await store.close()


async def _dispatch(store: OrderStore, args: argparse.Namespace, out: TextIO) -> int:
    if args.command == "status":
        report = await store.queue_report()
        _emit(out, args.json, report, format_status)
        return EXIT_OK
    if args.command == "list":
        rows = await store.list_items(
            status=args.status, since=args.since, error_code=args.code, limit=args.limit
        )
        _emit(out, args.json, rows, format_list)
        return EXIT_OK
    if args.command == "show":
        detail = await store.item_detail(args.id, pii=args.pii)
        if detail is None:
            return _refuse(out, args.json, args.id, RetryOutcome.NOT_FOUND)
        _emit(out, args.json, detail, format_detail)
        return EXIT_OK
    outcome = await store.retry_failed(args.id)
    if outcome is not RetryOutcome.OK:
        return _refuse(out, args.json, args.id, outcome)
    _emit(
        out,
        args.json,
        {"id": args.id, "status": "pending"},
        lambda r: f"{r['id']}: back in the queue (pending, attempts reset)",
    )
    return EXIT_OK


def _refuse(out: TextIO, as_json: bool, item: str, outcome: RetryOutcome) -> int:
    message = _RETRY_MESSAGES[outcome]
    if as_json:
        print(json.dumps({"id": item, "error": outcome.value, "message": message}), file=out)
    else:
        print(f"{item}: {message}", file=sys.stderr)
    return EXIT_NOT_FOUND if outcome is RetryOutcome.NOT_FOUND else EXIT_REFUSED


def _emit(out: TextIO, as_json: bool, data: Any, formatter: Callable[[Any], str]) -> None:
    print(json.dumps(data, indent=2, sort_keys=True) if as_json else formatter(data), file=out)


def format_status(report: Row) -> str:
    by_status = report.get("by_status") or {}
    lines = [
        "order items: " + ", ".join(f"{s} {by_status.get(s, 0)}" for s in STATUSES),
        f"in flight: {report['in_flight']} (expired leases, to be reclaimed: "
        f"{report['expired_leases']})",
        f"waiting: {report['waiting']} due now, {report['retry_scheduled']} scheduled for retry, "
        f"{report['pending_unpaid']} not paid",
        f"oldest waiting since: {report.get('oldest_waiting_since') or '-'}",
    ]
    unpriced = report.get("unpriced_calls_last_24h") or 0
    spend = float(report["cost_last_24h_usd"])
    lines.append(
        f"AI spend on items changed in the last 24 h: ${spend:.4f}"
        + (f" (+{unpriced} calls of models without a price)" if unpriced else "")
    )
    failed = report.get("failed_last_24h") or {}
    lines.append(
        "failed in the last 24 h: "
        + (
            ", ".join(f"{code} {n}" for code, n in sorted(failed.items(), key=lambda kv: -kv[1]))
            or "none"
        )
    )
    return "\n".join(lines)


LIST_COLUMNS = (
    "id",
    "generation_status",
    "progress",
    "pages",
    "attempts",
    "error_code",
    "updated_at",
)


def format_list(rows: list[Row]) -> str:
    if not rows:
        return "no order items match"
    table = [LIST_COLUMNS] + [
        (
            r["id"],
            r["generation_status"],
            f"{r['progress']}%",
            f"{r['pages_done']}/{r['pages_total'] if r['pages_total'] is not None else '?'}",
            f"{r['attempts']}/{r['max_attempts']}",
            r["error_code"] or "-",
            r["updated_at"],
        )
        for r in rows
    ]
    widths = [max(len(str(row[i])) for row in table) for i in range(len(LIST_COLUMNS))]
    return "\n".join(
        "  ".join(str(v).ljust(w) for v, w in zip(row, widths, strict=True)).rstrip()
        for row in table
    )


def format_detail(detail: Row) -> str:
    item, order, book = detail["item"], detail["order"], detail["book"]
    lines = [
        f"item {item['id']}  order {order['id']} ({order['payment_status']})",
        f"book {book['id']}  {book.get('title') or '(not in the catalog)'}",
        f"status {item['generation_status']}  {item['progress']}%  "
        f"{item.get('current_step') or ''}",
        f"pages {item['pages_done']}/{item.get('pages_total') or '?'}  attempts "
        f"{item['attempts']}/{item['max_attempts']}  claimed by {item.get('claimed_by') or '-'}",
        f"created {item['created_at']}  updated {item['updated_at']}",
    ]
    if item.get("error_code"):
        lines.append(f"error {item['error_code']}: {item.get('error_message') or ''}")
    usage = item.get("ai_usage") or {}
    if usage:
        lines.append("usage " + ", ".join(f"{k} {v}" for k, v in sorted(usage.items())))
    personal = [
        k
        for k in (
            "child_name",
            "child_age",
            "child_gender",
            "child_photo_path",
            "pdf_path",
            "cover_image_path",
        )
        if k in item
    ]
    lines += [f"{k} {item[k]}" for k in personal]
    if "user_id" in order:
        lines.append(f"user_id {order['user_id']}")
    lines += [
        _page_line("checkpoint", page, f"at {page['created_at']}") for page in detail["pages"]
    ]
    # Drawn and stored, not yet passed by the judge: waiting for it, or failed at it for good.
    lines += [
        _page_line("draft", draft, f"after {draft['redraws']} redraw(s) at {draft['created_at']}")
        for draft in detail.get("drafts") or []
    ]
    return "\n".join(lines)


def _page_line(kind: str, entry: Row, when: str) -> str:
    """One checkpoint or draft of ``show``; its object's path only when ``--pii`` returned it."""
    name = "cover" if entry["page_number"] == 0 else f"page {entry['page_number']}"
    where = f"  {entry['image_path']}" if "image_path" in entry else ""
    return f"  {kind} {name}: {entry.get('model') or '?'} {when}{where}"
