"""The operators' dashboard: one page on the status server, the queue at a glance.

    GET /dashboard                 the page (plain HTML, CSS and JS from monitor/dashboard/)
    GET /dashboard/static/{file}   its stylesheet and script
    GET /dashboard/data            what the page shows, as JSON; the page polls it

Read-only for anyone who can reach the port, like /monitor/status; the one action, retrying a
failed item, is the existing ``POST /orders/{id}/retry`` with ``Authorization: Bearer
$ADMIN_TOKEN``, which the page sends with the token the operator typed (kept in the tab's
sessionStorage, never in a cookie or the URL). Nothing personal is shown: the data come from
``ops_dashboard`` (migrations/016_dashboard.sql), which hands out ids, states, progress, codes
and counts and replaces a child's name in a step or message with "[child]". Unlike the other
handlers of the status server, the data cost one database round trip per request.

The files are package data (``monitor/dashboard/`` travels in the wheel), served from memory
with a strict Content-Security-Policy: the page loads nothing from anywhere else.
"""

from __future__ import annotations

from datetime import UTC, datetime
from importlib import resources
from typing import Any

from aiohttp import web

from monitor import __version__
from monitor.daemon import Monitor
from monitor.store.base import StoreUnavailable

#: How many items of each list the page shows; the counts above them are complete.
IN_FLIGHT_LIMIT = 50
FAILURES_LIMIT = 20

_FILES = {
    "index.html": "text/html",
    "dashboard.css": "text/css",
    "dashboard.js": "text/javascript",
    "favicon.svg": "image/svg+xml",
}
_HEADERS = {
    "Cache-Control": "no-store",
    # Everything from this server, nothing inline, no framing: no CDN and no injected script.
    "Content-Security-Policy": "default-src 'self'; frame-ancestors 'none'; base-uri 'none'; "
    "form-action 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


def add_dashboard_routes(app: web.Application, monitor: Monitor) -> None:
    """Register the dashboard's routes on the status server's application."""
    dashboard = _Dashboard(monitor)
    app.add_routes(
        [
            web.get("/dashboard", dashboard.page),
            web.get("/dashboard/static/{name}", dashboard.static),
            web.get("/dashboard/data", dashboard.data),
        ]
    )


class _Dashboard:
    def __init__(self, monitor: Monitor) -> None:
        self.monitor = monitor
        folder = resources.files("monitor") / "dashboard"
        self._files = {name: (folder / name).read_bytes() for name in _FILES}

    async def page(self, request: web.Request) -> web.Response:
        return self._file("index.html")

    async def static(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name == "index.html" or name not in _FILES:
            raise web.HTTPNotFound()
        return self._file(name)

    def _file(self, name: str) -> web.Response:
        return web.Response(
            body=self._files[name], content_type=_FILES[name], charset="utf-8", headers=_HEADERS
        )

    async def data(self, request: web.Request) -> web.Response:
        body: dict[str, Any] = {
            "generatedAt": datetime.now(UTC).isoformat(),
            "daemon": self._daemon(),
        }
        try:
            body["database"] = await self.monitor.store.dashboard(
                in_flight=IN_FLIGHT_LIMIT, failures=FAILURES_LIMIT
            )
        except StoreUnavailable:
            # The page stays up and says so; the counts are unknown, not zero.
            body["database"] = None
            return web.json_response(body, status=503, headers=_HEADERS)
        return web.json_response(body, headers=_HEADERS)

    def _daemon(self) -> dict[str, Any]:
        """This process: who it is, whether it claims, what /health would complain about."""
        monitor = self.monitor
        return {
            "workerId": monitor.worker,
            "version": __version__,
            "claiming": monitor.claiming and monitor.running and monitor.ai_problem is None,
            "problems": [problem.message for _, problem in monitor.health.items()],
            "inFlightHere": len(monitor.in_flight),
            "adminEnabled": bool(monitor.settings.admin_token),
            # USD by model spent by this process since it started (the Prometheus counter's).
            "spendSinceStartUsd": monitor.metrics.spend_by_model(),
        }
