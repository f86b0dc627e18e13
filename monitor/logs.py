"""Logging: loguru everywhere, JSON lines for machines, secrets scrubbed at the sink.

The stdlib loggers of apscheduler, httpx, psycopg, aiohttp and google-genai are routed into loguru,
so one format and one redaction rule cover every line the process writes.
"""

from __future__ import annotations

import json
import logging
import sys
import traceback
from collections.abc import Iterable
from typing import Any, TextIO

from loguru import logger

ROUTED_STDLIB_LOGGERS = ("apscheduler", "httpx", "httpcore", "psycopg", "aiohttp", "google_genai")
REDACTED = "***"


class _InterceptHandler(logging.Handler):
    """Hands stdlib log records to loguru with the caller's depth preserved."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            level: str | int = logger.level(record.levelname).name
        except ValueError:
            level = record.levelno
        logger.patch(lambda r: r.update({"name": record.name})).opt(exception=record.exc_info).log(
            level, record.getMessage()
        )


class _Scrubber:
    def __init__(self, secrets: Iterable[str]) -> None:
        # Longest first, so a password inside a URL is caught as part of the URL too.
        self.secrets = sorted({s for s in secrets if len(s) >= 4}, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, REDACTED)
        return text


def _json_sink(stream: TextIO, scrub: _Scrubber):
    def sink(message: Any) -> None:
        record = message.record
        entry: dict[str, Any] = {
            "time": record["time"].isoformat(),
            "level": record["level"].name,
            "message": record["message"],
            "logger": record["name"],
        }
        entry.update(record["extra"])
        if record["exception"] is not None:
            exc = record["exception"]
            entry["exception"] = f"{exc.type.__name__}: {exc.value}" if exc.type else None
            entry["traceback"] = "".join(
                traceback.format_exception(exc.type, exc.value, exc.traceback)
            )
        stream.write(scrub(json.dumps(entry, default=str)) + "\n")
        stream.flush()

    return sink


def _pretty_sink(stream: TextIO, scrub: _Scrubber):
    def sink(message: Any) -> None:
        stream.write(scrub(str(message)))
        stream.flush()

    return sink


def setup_logging(
    *,
    level: str = "INFO",
    fmt: str = "auto",
    secrets: Iterable[str] = (),
    stream: TextIO | None = None,
) -> None:
    """Configure loguru once for the process.

    ``fmt`` is json, pretty, or auto (json unless a TTY)."""
    stream = stream or sys.stderr
    scrub = _Scrubber(secrets)
    if fmt == "auto":
        fmt = "pretty" if stream.isatty() else "json"
    logger.remove()
    if fmt == "json":
        logger.add(_json_sink(stream, scrub), level=level, backtrace=False, diagnose=False)
    else:
        logger.add(
            _pretty_sink(stream, scrub),
            level=level,
            colorize=stream.isatty(),
            backtrace=False,
            # diagnose would print local variables of a traceback: they can hold secrets and photos.
            diagnose=False,
            format=(
                "<green>{time:HH:mm:ss}</green> <level>{level: <7}</level> {message} "
                "<dim>{extra}</dim>"
            ),
        )
    logging.basicConfig(handlers=[_InterceptHandler()], level=0, force=True)
    for name in ROUTED_STDLIB_LOGGERS:
        stdlib_logger = logging.getLogger(name)
        stdlib_logger.handlers = []
        stdlib_logger.propagate = True
    # Their INFO lines are per-request noise (httpx logs every call); warnings still come through.
    for name in ("httpx", "httpcore", "apscheduler.executors.default"):
        logging.getLogger(name).setLevel(logging.WARNING)
