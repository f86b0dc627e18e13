"""The operations surface: an aiohttp server in the daemon's own event loop.

    GET  /health              200 when the scheduler runs, the database answers and the loop is
                              not stalled; 503 listing what is wrong (supervisors, healthcheck.py)
    GET  /monitor/status      what the worker is doing; the keys of the Node original first
    GET  /metrics             Prometheus exposition of :mod:`monitor.metrics`
    POST /monitor/stop        stop claiming (in-flight items finish)      } Authorization:
    POST /monitor/start       claim again                                 } Bearer $ADMIN_TOKEN
    POST /orders/{id}/retry   a failed order item back to pending         }
    POST /generate-cover      a personalized cover without an order (monitor/cover_endpoint.py)
    GET  /dashboard           the operators' page over all of this (monitor/dashboard.py)

Nothing here may reveal personal data: answers carry item ids, steps, progress and counters,
never a child's name, photo, URL or e-mail. Handlers only read the monitor's in-memory state,
except for one bounded database probe when the daemon's own evidence of the database is stale,
so a health probe every few seconds costs next to nothing and never blocks the loop.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import re
import time
import uuid
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

from aiohttp import web
from loguru import logger

from monitor import __version__
from monitor.cover_endpoint import add_cover_routes
from monitor.daemon import DATABASE_PROBLEM, Monitor
from monitor.dashboard import add_dashboard_routes
from monitor.runner import InFlight, utcnow
from monitor.store.base import RetryOutcome, StoreUnavailable

LOOP_LAG_INTERVAL_SECONDS = 0.5
#: A timer firing this late means something blocks the loop: heartbeats and requests starve.
LOOP_LAG_LIMIT_SECONDS = 2.0
#: The daemon's last successful database call counts as evidence for 3 poll intervals, within
#: these bounds: a long poll interval (LISTEN does the pickup) is no evidence at all.
DB_FRESH_MIN_SECONDS = 15.0
DB_FRESH_MAX_SECONDS = 60.0
DB_PROBE_TIMEOUT_SECONDS = 2.0
#: In-flight requests get this long to finish when the server stops; all of them are quick.
SHUTDOWN_TIMEOUT_SECONDS = 5.0

_RETRY_REFUSALS: dict[RetryOutcome, tuple[type[web.HTTPException], str]] = {
    RetryOutcome.NOT_FOUND: (web.HTTPNotFound, "no order item has this id"),
    RetryOutcome.NOT_FAILED: (web.HTTPConflict, "only a failed item can be retried"),
    RetryOutcome.ORDER_NOT_PAID: (web.HTTPConflict, "the order is no longer paid"),
}


def create_app(monitor: Monitor) -> web.Application:
    """The application, for :func:`start_server` and for aiohttp's test server."""
    api = _Api(monitor)
    app = web.Application()
    app.cleanup_ctx.append(api.measure_loop_lag)
    app.add_routes(
        [
            web.get("/health", api.health),
            web.get("/monitor/status", api.status),
            web.get("/metrics", api.metrics),
            web.post("/monitor/stop", api.stop),
            web.post("/monitor/start", api.start),
            web.post("/orders/{id}/retry", api.retry),
        ]
    )
    add_dashboard_routes(app, monitor)
    add_cover_routes(app, monitor, api._require_admin)
    return app


async def start_server(monitor: Monitor) -> web.AppRunner:
    """Listen on HOST:PORT; the caller awaits ``runner.cleanup()`` on shutdown.

    No access log: a probe every few seconds would drown the daemon's own lines. Admin actions
    log themselves.
    """
    settings = monitor.settings
    runner = web.AppRunner(
        create_app(monitor), access_log=None, shutdown_timeout=SHUTDOWN_TIMEOUT_SECONDS
    )
    await runner.setup()
    try:
        await web.TCPSite(runner, settings.host, settings.port).start()
    except OSError:
        await runner.cleanup()
        raise
    logger.info("status server listening", addresses=[f"{a[0]}:{a[1]}" for a in runner.addresses])
    return runner


class _Api:
    def __init__(self, monitor: Monitor) -> None:
        self.monitor = monitor
        self.settings = monitor.settings
        self.loop_lag = 0.0
        self._db_probe: asyncio.Task[str | None] | None = None

    # ------------------------------------------------------------------ health

    async def measure_loop_lag(self, app: web.Application) -> AsyncIterator[None]:
        """Runs for the application's lifetime: how late does a short sleep wake up?"""

        async def measure() -> None:
            while True:
                started = time.monotonic()
                await asyncio.sleep(LOOP_LAG_INTERVAL_SECONDS)
                self.loop_lag = max(0.0, time.monotonic() - started - LOOP_LAG_INTERVAL_SECONDS)
                self.monitor.metrics.set_loop_lag(self.loop_lag)

        task = asyncio.create_task(measure())
        yield
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    async def health(self, request: web.Request) -> web.Response:
        monitor, stats = self.monitor, self.monitor.stats
        problems: list[str] = []
        if not monitor.started:
            problems.append("starting: the scheduler is not running yet")
        elif not monitor.running:
            problems.append("scheduler stopped")
        if (db_problem := await self._database_problem()) is not None:
            problems.append(db_problem)
        # Whatever else a component reported (an unusable AI provider, ...): monitor.health.
        problems += [p.message for name, p in monitor.health.items() if name != DATABASE_PROBLEM]
        if self.loop_lag > LOOP_LAG_LIMIT_SECONDS:
            problems.append(f"event loop stalled: a timer fired {self.loop_lag:.1f}s late")
        body = {
            "status": "unhealthy" if problems else "ok",
            "problems": problems,
            "scheduler": "running" if monitor.running else "stopped",
            "claiming": monitor.claiming and monitor.ai_problem is None,
            "database": {
                "lastOkAt": _iso(stats.last_db_ok_at),
                "downSince": _iso(stats.db_down_since),
                "error": stats.db_error,
            },
            "eventLoopLagSeconds": round(self.loop_lag, 3),
        }
        return web.json_response(body, status=503 if problems else 200)

    async def _database_problem(self) -> str | None:
        """What is wrong with the database, if anything, from facts: the outcome of the daemon's
        own round trips (claims, heartbeats, writes: every store call reports it). When the last
        success is older than the freshness window, or the last call failed, one bounded probe
        asks the database itself; so /health turns 503 at most ``fresh_for +
        DB_PROBE_TIMEOUT_SECONDS`` after the database stops answering, busy or idle."""
        stats = self.monitor.stats
        last_ok = stats.last_db_ok_at
        recent = last_ok is not None and (utcnow() - last_ok).total_seconds() < self._fresh_for()
        if recent and self.monitor.health.get(DATABASE_PROBLEM) is None:
            return None
        unanswered = await self._probe_database()
        reported = self.monitor.health.get(DATABASE_PROBLEM)
        if reported is not None:
            return reported.message
        if unanswered is not None:
            return f"database not answering: {unanswered}"
        return None

    def _fresh_for(self) -> float:
        """How long a successful round trip counts as evidence: 3 poll intervals, 15-60 s."""
        return min(
            max(3 * self.settings.poll_interval_seconds, DB_FRESH_MIN_SECONDS), DB_FRESH_MAX_SECONDS
        )

    async def _probe_database(self) -> str | None:
        """One bounded probe shared by concurrent requests, so a burst of probes or scrapes
        costs the database one query; a client hanging up does not cancel it for the others."""
        if self._db_probe is None or self._db_probe.done():
            self._db_probe = asyncio.create_task(self._bounded_database_check())
        return await asyncio.shield(self._db_probe)

    async def _bounded_database_check(self) -> str | None:
        """None when the database answered, else why not."""
        try:
            if await asyncio.wait_for(self.monitor.check_database(), DB_PROBE_TIMEOUT_SECONDS):
                return None
        except TimeoutError:
            return f"no answer within {DB_PROBE_TIMEOUT_SECONDS:g}s"
        except Exception as exc:  # noqa: BLE001 - whatever keeps it from answering is the problem
            logger.warning("database probe failed", error=f"{type(exc).__name__}: {exc}")
            return type(exc).__name__
        return self.monitor.stats.db_error or "no answer"

    # ------------------------------------------------------------------ status and metrics

    async def status(self, request: web.Request) -> web.Response:
        return web.json_response(self._status())

    def _status(self) -> dict[str, Any]:
        monitor, stats = self.monitor, self.monitor.stats
        return {
            # The keys and meaning of the Node original's status, which clients rely on.
            "isRunning": monitor.claiming and monitor.running,
            "processingOrders": len(monitor.in_flight),
            "pollInterval": round(self.settings.poll_interval_seconds * 1000),
            "workerId": monitor.worker,
            "version": __version__,
            "startedAt": _iso(stats.started_at),
            "lastPollAt": _iso(stats.last_poll_at),
            "lastClaimAt": _iso(stats.last_claim_at),
            "completed": stats.completed,
            "failed": stats.failed,
            "retried": stats.retried,
            # USD per model spent by this process since it started (AI_PRICES_FILE prices it).
            "aiSpendUsd": monitor.metrics.spend_by_model(),
            "inFlight": [_describe_flight(f) for f in monitor.in_flight.values()],
        }

    async def metrics(self, request: web.Request) -> web.Response:
        metrics = self.monitor.metrics
        # The queue-depth query runs at most once per poll interval, however often scrapes come.
        if metrics.queue_depth_age() >= self.settings.poll_interval_seconds:
            await self._probe_database()
        body, content_type = metrics.render(request.headers.get("Accept"))
        return web.Response(body=body, headers={"Content-Type": content_type})

    # ------------------------------------------------------------------ admin actions

    async def stop(self, request: web.Request) -> web.Response:
        self._require_admin(request)
        self.monitor.stop_claiming()
        return web.json_response(self._status())

    async def start(self, request: web.Request) -> web.Response:
        self._require_admin(request)
        self.monitor.start_claiming()
        return web.json_response(self._status())

    async def retry(self, request: web.Request) -> web.Response:
        self._require_admin(request)
        try:
            item_id = str(uuid.UUID(request.match_info["id"]))
        except ValueError:
            raise _error(web.HTTPBadRequest, "invalid_id", "an order item id is a UUID") from None
        try:
            outcome = await self.monitor.store.retry_failed(item_id)
        except StoreUnavailable:
            raise _error(
                web.HTTPServiceUnavailable,
                "database_unavailable",
                "the database did not answer; try again",
            ) from None
        if outcome is not RetryOutcome.OK:
            status, message = _RETRY_REFUSALS[outcome]
            raise _error(status, outcome.value, message)
        logger.info("failed item sent back to the queue by an operator", item_id=item_id)
        self.monitor.wake_up()
        return web.json_response({"id": item_id, "status": "pending"})

    def _require_admin(self, request: web.Request) -> None:
        expected = self.settings.admin_token
        if not expected:
            raise _error(
                web.HTTPForbidden,
                "admin_disabled",
                "admin actions are disabled: set ADMIN_TOKEN to enable them",
            )
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        # aiohttp keeps header bytes that are not UTF-8 as surrogates: encode them back to the
        # bytes that were sent, so any token compares (and fails) instead of raising.
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            given.strip().encode("utf-8", "surrogateescape"), expected.encode()
        ):
            raise _error(
                web.HTTPUnauthorized,
                "unauthorized",
                "send Authorization: Bearer <ADMIN_TOKEN>",
                headers={"WWW-Authenticate": "Bearer"},
            )


def _error(
    status: type[web.HTTPException], code: str, message: str, **kwargs: Any
) -> web.HTTPException:
    return status(
        text=json.dumps({"error": code, "message": message}),
        content_type="application/json",
        **kwargs,
    )


def _describe_flight(flight: InFlight) -> dict[str, Any]:
    job = flight.job
    return {
        "id": job.item_id,
        "step": _without_child_name(job.step, job.item.get("child_name")),
        "progress": job.progress,
        "startedAt": _iso(flight.started_at),
    }


def _without_child_name(step: str, child_name: str | None) -> str:
    """Steps are written for the parent's app and may well say "Drawing Mia's cover"; the
    operators' endpoint is no place for the name."""
    if not child_name or not child_name.strip():
        return step
    return re.sub(rf"\b{re.escape(child_name.strip())}\b", "[child]", step, flags=re.IGNORECASE)


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment else None
