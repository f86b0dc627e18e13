"""The commands of ``run_monitor.py``.

Exit codes (documented in the README, relied on by supervisors and cron):
  0  the command finished (``run``: stopped by SIGTERM/SIGINT after draining)
  1  it failed at run time (database unreachable for ``migrate``, a migration failed, ...)
  2  the configuration or the command line is invalid
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from loguru import logger

from monitor.app import DEFAULT_PROCESSOR, build_store, close_processor, load_processor
from monitor.config import ConfigError, Settings
from monitor.daemon import Monitor
from monitor.logs import setup_logging
from monitor.store.base import StoreUnavailable

EXIT_OK, EXIT_FAILURE, EXIT_CONFIG = 0, 1, 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="run_monitor.py", description="Turns paid book orders into finished personalized books."
    )
    parser.add_argument("--env-file", default=".env", help="dotenv file to read (default: .env)")
    commands = parser.add_subparsers(dest="command")
    for name, help_text in (
        ("run", "run the daemon until SIGTERM (default)"),
        ("once", "claim and process until nothing is claimable, then exit (for cron)"),
    ):
        command = commands.add_parser(name, help=help_text)
        command.add_argument(
            "--processor", default=DEFAULT_PROCESSOR,
            help="module:factory building the item processor (default: %(default)s)",
        )
    commands.add_parser("migrate", help="apply pending SQL migrations (needs DATABASE_URL)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    command = args.command or "run"
    try:
        settings = Settings.from_env(env_file=args.env_file)
    except ConfigError as exc:
        print(f"run_monitor.py: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    setup_logging(level=settings.log_level, fmt=settings.log_format, secrets=settings.secrets())
    processor_spec = getattr(args, "processor", DEFAULT_PROCESSOR)
    try:
        if command == "migrate":
            return asyncio.run(_migrate(settings))
        return asyncio.run(_serve(settings, processor_spec, once=command == "once"))
    except KeyboardInterrupt:
        return EXIT_OK


async def _migrate(settings: Settings) -> int:
    from monitor.migrate import MigrationError, migrate

    if not settings.database_url:
        logger.error("migrate needs DATABASE_URL; with only the Supabase SQL editor, paste the files "
                     "of migrations/ in order")
        return EXIT_CONFIG
    try:
        applied = await migrate(settings.database_url)
    except MigrationError as exc:
        logger.error(str(exc), file=exc.filename)
        return EXIT_FAILURE
    except OSError as exc:
        logger.error("database unreachable", error=str(exc))
        return EXIT_FAILURE
    logger.info("migrations up to date", applied=applied)
    return EXIT_OK


async def _serve(settings: Settings, processor_spec: str, *, once: bool) -> int:
    try:
        processor = await load_processor(processor_spec, settings)
    except (ImportError, AttributeError, ValueError) as exc:
        logger.error("cannot load the processor", processor=processor_spec, error=str(exc))
        return EXIT_CONFIG
    monitor = Monitor(settings, build_store(settings), processor)
    try:
        if once:
            processed = await monitor.run_once()
            logger.info("once: nothing left to claim", processed=processed)
        else:
            await monitor.run()
    except StoreUnavailable as exc:
        logger.error("database unreachable", error=str(exc))
        return EXIT_FAILURE
    finally:
        await close_processor(processor)
    return EXIT_OK
