"""``generate-cover BOOK_ID PHOTO --name … --age … --gender … --out FILE [--json]``: a
personalized cover of a catalog book without an order, for support and sales.

Same configuration as the daemon, and the daemon's own processor built by the composition root
(``create_processor``), so the cover is drawn exactly as a book's first illustration is:
processors/cover_service.py. The book's cover analysis goes through the database cache the
daemon uses. Nothing is written but FILE (no row, no object in storage).

Exit codes (the daemon's table in the README):
  0  FILE written
  1  it failed at run time: the database or the AI did not answer, or the drawing failed
     (refused, or below the quality threshold; ``--json`` names the error_code)
  2  invalid configuration or command line: no usable model, PHOTO unreadable or not a usable
     photo (``photo_invalid``, ``photo_rejected``: not exactly one face), the child's details
     refused (``invalid_child_data``)
  3  no book in the catalog has BOOK_ID
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any, TextIO

from monitor.app import build_storage, build_store, cover_service, create_processor
from monitor.config import Settings
from monitor.metrics import Metrics
from monitor.ops import EXIT_CONFIG, EXIT_FAILURE, EXIT_NOT_FOUND, EXIT_OK, item_id
from monitor.store.base import StoreUnavailable
from processors.analysis import PhotoRejected
from processors.child import InvalidChildData
from processors.cover_service import Child, CoverResult
from processors.errors import OrderError, RetryableError
from processors.images import PhotoInvalid

COMMAND = "generate-cover"
#: The photo or the details are the operator's input: fix them and run again.
_INPUT_ERRORS = (PhotoInvalid, PhotoRejected, InvalidChildData)


def add_command(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    command = commands.add_parser(
        COMMAND, help="draw a catalog book's cover with a child from a photo, without an order"
    )
    command.add_argument("book_id", type=item_id, metavar="BOOK_ID", help="the book's uuid")
    command.add_argument("photo", type=Path, metavar="PHOTO", help="the child's photo")
    command.add_argument("--name", required=True, help="the child's name")
    command.add_argument("--age", help="the child's age in years")
    command.add_argument("--gender", help="girl, boy or child (default: child)")
    command.add_argument("--out", type=Path, required=True, help="where to write the JPEG")
    command.add_argument("--json", action="store_true", help="one JSON document on stdout")


async def run(settings: Settings, args: argparse.Namespace, out: TextIO = sys.stdout) -> int:
    try:
        photo = args.photo.read_bytes()
    except OSError as exc:
        return _fail(out, args, EXIT_CONFIG, "photo_unreadable", f"{args.photo}: {exc.strerror}")
    async with AsyncExitStack() as resources:
        store = await build_store(settings)
        try:
            await store.open()
            resources.push_async_callback(store.close)
            book = await store.catalog_book(args.book_id)
        except StoreUnavailable as exc:
            return _fail(out, args, EXIT_FAILURE, "database_unavailable", str(exc))
        if book is None:
            return _fail(
                out, args, EXIT_NOT_FOUND, "book_not_found", f"no book has the id {args.book_id}"
            )
        storage = await build_storage(settings, resources)
        resources.push_async_callback(storage.aclose)
        try:
            processor = await create_processor(settings, Metrics(), storage)
        except RetryableError as exc:
            return _fail(out, args, EXIT_FAILURE, exc.code, "the AI provider is unreachable")
        resources.push_async_callback(processor.aclose)
        if processor.ready_problem is not None:
            return _fail(out, args, EXIT_CONFIG, "ai_not_ready", processor.ready_problem)
        service = cover_service(processor)
        assert service is not None  # create_processor builds the book pipeline
        child = Child(photo, args.name, args.age, args.gender)
        try:
            result = await service.from_catalog(book, child, store)
        except StoreUnavailable as exc:
            return _fail(out, args, EXIT_FAILURE, "database_unavailable", str(exc))
        except OrderError as exc:
            code = EXIT_CONFIG if isinstance(exc, _INPUT_ERRORS) else EXIT_FAILURE
            return _fail(out, args, code, exc.code, exc.final_message)
    _write(args.out, result.jpeg)
    _report(out, args, result)
    return EXIT_OK


def _write(path: Path, data: bytes) -> None:
    """Whole or not at all: a half-written JPEG never sits under the name asked for."""
    partial = path.with_name(f".{path.name}.partial")
    partial.write_bytes(data)
    os.replace(partial, path)


def _report(out: TextIO, args: argparse.Namespace, result: CoverResult) -> None:
    usage = result.usage.as_dict()
    summary: dict[str, Any] = {
        "out": str(args.out),
        "bookId": args.book_id,
        "model": result.model,
        "needsReview": result.needs_review,
        "usage": usage,
    }
    if args.json:
        print(json.dumps(summary, indent=2, sort_keys=True), file=out)
        return
    cost = usage.get("cost_usd")
    print(
        f"wrote {args.out} ({result.model}, {usage.get('calls', 0)} calls, "
        + (f"${cost:.4f}" if cost is not None else "cost unknown: model not in the price table")
        + (", needs review" if result.needs_review else "")
        + ")",
        file=out,
    )


def _fail(out: TextIO, args: argparse.Namespace, exit_code: int, code: str, message: str) -> int:
    if args.json:
        print(json.dumps({"error": code, "message": message}), file=out)
    else:
        print(f"{COMMAND}: {code}: {message}", file=sys.stderr)
    return exit_code
