"""The commands of ``run_monitor.py``.

Exit codes (documented in the README, relied on by supervisors and cron):
  0  the command finished (``run``: stopped by SIGTERM/SIGINT after draining)
  1  it failed at run time (database unreachable for ``migrate``/``once``, a migration failed, ...)
  2  the configuration or the command line is invalid (a missing ``--env-file``, ``demo`` without
     the ``[demo]`` extra, ``once`` with no usable Gemini model)
  3  ``show``/``retry``: no order item has this id; ``generate-cover``: no book has this id
  4  ``retry`` refused: the item is not failed or its order is no longer paid

Every failure is one log line (JSON when not a terminal, secrets scrubbed), never a traceback:
a supervisor's log shows what to fix. What may pass by itself (the database or the AI provider
unreachable) does not end ``run``: it waits, with ``/health`` answering 503 saying why.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from collections.abc import Mapping
from contextlib import AsyncExitStack
from functools import partial
from pathlib import Path

import psycopg
from loguru import logger

from monitor import __version__, cover_command, ops
from monitor.app import (
    DEFAULT_PROCESSOR,
    build_storage,
    build_store,
    close_processor,
    load_processor,
)
from monitor.config import ConfigError, Settings, merged_environ, raw_secrets
from monitor.daemon import AI_PROVIDER_PROBLEM, AINotReady, Monitor
from monitor.health import HealthProblems
from monitor.logs import setup_logging
from monitor.mailer import Mailer
from monitor.malloc import map_large_blocks
from monitor.metrics import Metrics
from monitor.retention import purge_expired_photos
from monitor.server import start_server
from monitor.store.base import SchemaNotMigrated, StoreUnavailable
from monitor.url_refresh import refresh_expiring_urls
from monitor.webhook import OpsWebhook
from processors.errors import RetryableError
from processors.ports import BlobStorage

EXIT_OK, EXIT_FAILURE, EXIT_CONFIG = 0, 1, 2
AI_WAIT_MAX_SECONDS = 60.0


def _program_name() -> str:
    """``book-monitor`` when started by the console script, else ``run_monitor.py``."""
    invoked = Path(sys.argv[0]).name if sys.argv and sys.argv[0] else ""
    return invoked if invoked == "book-monitor" else "run_monitor.py"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=_program_name(), description="Turns paid book orders into finished personalized books."
    )
    parser.add_argument(
        "--env-file",
        default=None,
        help="dotenv file to read; must exist (default: .env, when it exists)",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command")
    for name, help_text in (
        ("run", "run the daemon until SIGTERM (default)"),
        (
            "once",
            "claim and process until nothing is claimable, run the photo retention, "
            "then exit (for cron)",
        ),
    ):
        command = commands.add_parser(name, help=help_text)
        command.add_argument(
            "--processor",
            default=DEFAULT_PROCESSOR,
            help="module:factory building the item processor (default: %(default)s)",
        )
    commands.add_parser("migrate", help="apply pending SQL migrations (needs only DATABASE_URL)")
    commands.add_parser(
        "retention",
        help="delete children's photos and page images past "
        "PHOTO_RETENTION_DAYS, then exit (for a cron line)",
    )
    export = commands.add_parser(
        "export-migrations",
        help="write migrations/ in the Supabase CLI layout (supabase/migrations/) for db push",
    )
    export.add_argument("--out", type=Path, help="target directory (default: supabase/migrations)")
    export.add_argument(
        "--check", action="store_true", help="write nothing; exit 1 when the target is out of date"
    )

    demo = commands.add_parser(
        "demo", help="make one book end to end on an embedded Postgres, no account needed"
    )
    demo.add_argument("--photo", type=Path, help="the child's photo (default: a drawn sample)")
    demo.add_argument("--name", default="Mia", help="the child's name (default: %(default)s)")
    demo.add_argument("--age", type=int, default=5, help="the child's age (default: %(default)s)")
    demo.add_argument("--gender", default="girl", help="girl, boy or child (default: %(default)s)")
    demo.add_argument(
        "--home",
        type=Path,
        default=Path(".demo"),
        help="where the demo keeps its database and files (default: %(default)s)",
    )

    book = commands.add_parser(
        "import-book", help="add a book (cover + numbered pages) to the catalog"
    )
    book.add_argument("directory", type=Path)
    book.add_argument("--title", required=True)
    book.add_argument("--book-id", help="uuid to use (re-importing an id replaces its pages)")
    book.add_argument("--genre")
    book.add_argument("--age-min", type=int)
    book.add_argument("--age-max", type=int)
    book.add_argument(
        "--trim", default="8.5x8.5", help="trim size in inches, WxH (default: %(default)s)"
    )
    book.add_argument(
        "--bleed-in",
        type=float,
        help="bleed per edge of the print files, inches, 0-0.5 (default: PRINT_BLEED_IN)",
    )
    book.add_argument(
        "--ppi",
        type=int,
        help="minimum effective PPI of the print files, 150-1200 (default: PRINT_PPI)",
    )
    ops.add_commands(commands)
    cover_command.add_command(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    command = args.command or "run"
    if command == "demo":
        return _demo(args)
    if command == "export-migrations":
        return _export_migrations(args)
    if args.env_file is not None and not Path(args.env_file).exists():
        return _start_failure({}, f"--env-file {args.env_file}: no such file", EXIT_CONFIG)
    env_file = args.env_file or ".env"
    try:
        if command == "migrate":
            settings = Settings.for_database_only(env_file=env_file)
        else:
            settings = Settings.from_env(env_file=env_file)
    except ConfigError as exc:
        return _start_failure(
            merged_environ(None, env_file),
            "invalid configuration: " + "; ".join(exc.problems),
            EXIT_CONFIG,
            problems=exc.problems,
        )
    setup_logging(level=settings.log_level, fmt=settings.log_format, secrets=settings.secrets())
    processor_spec = getattr(args, "processor", DEFAULT_PROCESSOR)
    try:
        if command == "migrate":
            return asyncio.run(_migrate(settings))
        if command == "import-book":
            return asyncio.run(_import_book(settings, args, parser))
        if command in ops.COMMANDS:
            return asyncio.run(ops.run(settings, args))
        if command == cover_command.COMMAND:
            return asyncio.run(cover_command.run(settings, args))
        if command == "retention":
            return asyncio.run(_retention(settings))
        # Decoded pictures freed by the pipeline go back to the OS (monitor/malloc.py).
        map_large_blocks()
        return asyncio.run(_serve(settings, processor_spec, once=command == "once"))
    except KeyboardInterrupt:
        return EXIT_OK
    except Exception as exc:  # noqa: BLE001 - the last line of defence: one line, no traceback
        logger.error("stopped by an unexpected error", error=f"{type(exc).__name__}: {exc}")
        return EXIT_FAILURE


def _start_failure(environ: Mapping[str, str], message: str, code: int, **fields: object) -> int:
    """Report a failure before Settings exist: one line in the format LOG_FORMAT asks for
    (JSON when not a terminal), with every secret value of ``environ`` scrubbed."""
    raw_format = (
        (environ.get("LOG_FORMAT") or os.environ.get("LOG_FORMAT") or "auto").strip().lower()
    )
    setup_logging(
        fmt=raw_format if raw_format in ("json", "pretty") else "auto",
        secrets=raw_secrets({**environ, **os.environ}),
    )
    logger.error(message, exit_code=code, **fields)
    return code


def _demo(args: argparse.Namespace) -> int:
    from monitor.demo import DemoExtraMissing, run_demo

    # The demo talks to a person: readable warnings only, the progress goes to stdout.
    setup_logging(level="WARNING", fmt="pretty")
    try:
        return asyncio.run(
            run_demo(
                home=args.home, photo=args.photo, name=args.name, age=args.age, gender=args.gender
            )
        )
    except (ConfigError, DemoExtraMissing) as exc:
        print(f"{_program_name()} demo: {exc}", file=sys.stderr)
        return EXIT_CONFIG


def _export_migrations(args: argparse.Namespace) -> int:
    """Needs no configuration: it only turns one directory of files into another."""
    from monitor.supabase_migrations import SUPABASE_MIGRATIONS_DIR, differences, export

    target = args.out or SUPABASE_MIGRATIONS_DIR
    if args.check:
        stale = differences(target=target)
        for name in stale:
            print(f"out of date: {target / name}", file=sys.stderr)
        return EXIT_FAILURE if stale else EXIT_OK
    for name in export(target=target):
        print(target / name)
    return EXIT_OK


async def _import_book(
    settings: Settings, args: argparse.Namespace, parser: argparse.ArgumentParser
) -> int:
    from monitor.catalog import CatalogError, check_print_profile, import_book, read_book_dir

    try:
        width, height = (float(v) for v in args.trim.lower().split("x"))
    except ValueError:
        parser.error(f"--trim must look like 8.5x11, got {args.trim!r}")
    try:
        check_print_profile(args.bleed_in, args.ppi)
    except CatalogError as exc:
        parser.error(f"--bleed-in/--ppi: {exc}")
    store = await build_store(settings)
    async with AsyncExitStack() as resources:
        storage = await build_storage(settings, resources)
        resources.push_async_callback(storage.aclose)
        await store.open()
        resources.push_async_callback(store.close)
        try:
            book_id = await import_book(
                store,
                storage,
                read_book_dir(args.directory, args.title),
                book_id=args.book_id,
                genre=args.genre,
                age_min=args.age_min,
                age_max=args.age_max,
                trim_width_in=width,
                trim_height_in=height,
                print_bleed_in=args.bleed_in,
                print_ppi=args.ppi,
            )
        except CatalogError as exc:
            logger.error(str(exc))
            return EXIT_CONFIG
        except StoreUnavailable as exc:
            logger.error("database unreachable", error=str(exc))
            return EXIT_FAILURE
    print(book_id)
    return EXIT_OK


async def _migrate(settings: Settings) -> int:
    from monitor.migrate import MigrationError, migrate

    assert settings.database_url  # Settings.for_database_only requires it
    try:
        applied = await migrate(settings.database_url)
    except MigrationError as exc:
        logger.error(str(exc), file=exc.filename)
        return EXIT_FAILURE
    except (OSError, psycopg.OperationalError) as exc:
        logger.error("database unreachable", error=f"{type(exc).__name__}: {exc}")
        return EXIT_FAILURE
    logger.info("migrations up to date", applied=applied)
    return EXIT_OK


async def _serve(settings: Settings, processor_spec: str, *, once: bool) -> int:
    """The composition root: one metrics registry, one storage and one health registry, shared
    by every part."""
    metrics = Metrics()
    health = HealthProblems()
    async with AsyncExitStack() as resources:
        storage = await build_storage(settings, resources)
        resources.push_async_callback(storage.aclose)
        webhook = None
        if settings.notify_webhook_url and settings.notify_webhook_secret:
            webhook = OpsWebhook(settings.notify_webhook_url, settings.notify_webhook_secret)
            resources.push_async_callback(webhook.aclose)
        store = await build_store(settings)
        retention = None
        if settings.photo_retention_days > 0:
            retention = partial(
                purge_expired_photos,
                store,
                storage,
                days=settings.photo_retention_days,
                metrics=metrics,
            )
        url_refresh = None
        if storage.url_ttl_seconds is not None:
            url_refresh = partial(
                refresh_expiring_urls,
                store,
                storage,
                margin_seconds=settings.signed_url_refresh_margin_seconds,
            )
        mailer = (
            Mailer(settings, store, metrics=metrics).send_due if settings.email_enabled else None
        )
        monitor = Monitor(
            settings,
            store,
            None,
            metrics=metrics,
            webhook=webhook,
            retention=retention,
            url_refresh=url_refresh,
            mailer=mailer,
            health=health,
        )
        if once:
            try:
                monitor.processor = await load_processor(processor_spec, settings, metrics, storage)
            except RetryableError as exc:
                logger.error(
                    "the AI provider is unreachable; the next run tries again",
                    error_code=exc.code,
                    error=exc.detail,
                )
                return EXIT_FAILURE
            except (ImportError, AttributeError, ValueError) as exc:
                return _bad_processor(processor_spec, exc)
            resources.push_async_callback(close_processor, monitor.processor)
            try:
                processed = await monitor.run_once()
                logger.info("once: nothing left to claim", processed=processed)
            except SchemaNotMigrated:
                return EXIT_FAILURE  # the monitor has said so, once, when it found out
            except StoreUnavailable as exc:
                logger.error("database unreachable", error=str(exc))
                return EXIT_FAILURE
            except AINotReady as exc:
                logger.error("AI not usable; nothing claimed", error=str(exc))
                return EXIT_CONFIG
            return EXIT_OK
        return await _run_with_server(monitor, processor_spec, storage, resources)
    return EXIT_OK


def _bad_processor(spec: str, exc: Exception) -> int:
    logger.error("cannot load the processor", processor=spec, error=str(exc))
    return EXIT_CONFIG


async def _load_processor_patiently(monitor: Monitor, spec: str, storage: BlobStorage) -> bool:
    """Build the processor; while the AI provider is unreachable (a transient failure), wait
    with /health saying so instead of exiting into a supervisor's restart loop. False when a
    stop was requested meanwhile. ImportError/ValueError (a wrong model, a refused key) raise."""
    delay = 1.0
    while True:
        try:
            monitor.processor = await load_processor(
                spec, monitor.settings, monitor.metrics, storage
            )
        except RetryableError as exc:
            if monitor.health.report(
                AI_PROVIDER_PROBLEM, f"AI provider unreachable at start ({exc.code}); retrying"
            ):
                logger.warning(
                    "the AI provider is unreachable; waiting for it",
                    error_code=exc.code,
                    error=exc.detail,
                )
            if await monitor.wait_for_stop(delay):
                return False
            delay = min(delay * 2, AI_WAIT_MAX_SECONDS)
            continue
        if monitor.health.clear(AI_PROVIDER_PROBLEM):
            logger.info("the AI provider is reachable")
        return True


async def _retention(settings: Settings) -> int:
    """``run_monitor.py retention``: one photo-retention sweep, for a cron line of its own."""
    if settings.photo_retention_days <= 0:
        logger.info("photo retention is switched off (PHOTO_RETENTION_DAYS=0)")
        return EXIT_OK
    async with AsyncExitStack() as resources:
        storage = await build_storage(settings, resources)
        resources.push_async_callback(storage.aclose)
        store = await build_store(settings)
        await store.open()
        resources.push_async_callback(store.close)
        try:
            deleted = await purge_expired_photos(store, storage, days=settings.photo_retention_days)
        except StoreUnavailable as exc:
            logger.error("database unreachable", error=str(exc))
            return EXIT_FAILURE
    logger.info("photo retention done", days=settings.photo_retention_days, objects=deleted)
    return EXIT_OK


async def _run_with_server(
    monitor: Monitor, processor_spec: str, storage: BlobStorage, resources: AsyncExitStack
) -> int:
    """The daemon with its status server, which comes up first (so /health can say what start-up
    waits for) and outlives the drain so health stays observable."""
    settings = monitor.settings
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, monitor.request_stop)
    try:
        runner = await start_server(monitor)
    except OSError as exc:
        logger.error(
            "cannot listen for the status server",
            host=settings.host,
            port=settings.port,
            error=str(exc),
        )
        return EXIT_FAILURE
    # Open now, so /health's database probes are real round trips while start-up waits.
    await monitor.store.open()
    resources.push_async_callback(monitor.store.close)
    try:
        try:
            if not await _load_processor_patiently(monitor, processor_spec, storage):
                logger.info("stopped before start-up finished")
                return EXIT_OK
        except (ImportError, AttributeError, ValueError) as exc:
            return _bad_processor(processor_spec, exc)
        if monitor.processor is not None:
            resources.push_async_callback(close_processor, monitor.processor)
        await monitor.run()
    finally:
        await runner.cleanup()
    return EXIT_OK
