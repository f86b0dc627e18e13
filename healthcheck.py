#!/usr/bin/env python3
"""Exit 0 when the local order monitor answers /health healthy, else 1 with one line saying why.

For supervisors: a Docker ``HEALTHCHECK CMD python healthcheck.py``, a Kubernetes exec probe, a
systemd ``ExecStartPost=``/watchdog helper. It uses the standard library only and imports nothing
of the daemon, so it starts in milliseconds and works even when the daemon's code is broken.

The port is ``--port``, else ``PORT`` from the environment, else from ``.env`` (as the daemon
reads it), else 5000.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import urllib.error
import urllib.request
from pathlib import Path

DEFAULT_PORT = 5000
DEFAULT_TIMEOUT_SECONDS = 5.0
EXIT_HEALTHY, EXIT_UNHEALTHY = 0, 1
_DOTENV_PORT = re.compile(
    r"""^\s*(?:export\s+)?PORT\s*=\s*["']?(\d+)["']?\s*(?:#.*)?$""", re.MULTILINE
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Probe the local order monitor's /health.")
    parser.add_argument("--port", type=int, help="the daemon's PORT (default: as it reads it)")
    parser.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_TIMEOUT_SECONDS,
        help="seconds to wait for an answer (default: %(default)s)",
    )
    parser.add_argument(
        "--env-file",
        type=Path,
        default=Path(".env"),
        help="dotenv file the daemon reads (default: .env)",
    )
    args = parser.parse_args(argv)
    try:
        port = args.port or _configured_port(args.env_file)
    except ValueError as exc:
        return _report(False, str(exc))
    return _report(*check(f"http://127.0.0.1:{port}/health", args.timeout))


def _report(healthy: bool, why: str) -> int:
    verdict = "healthy" if healthy else "unhealthy"
    print(f"{verdict}: {why}", file=sys.stdout if healthy else sys.stderr)
    return EXIT_HEALTHY if healthy else EXIT_UNHEALTHY


def check(url: str, timeout: float) -> tuple[bool, str]:
    """Whether ``url`` answers healthy, and a one-line reason."""
    # No proxy: an HTTP_PROXY meant for the outside world must not intercept a loopback probe.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=timeout) as response:
            status, body = response.status, response.read()
    except urllib.error.HTTPError as exc:  # 503 and friends still carry the health document
        status, body = exc.code, exc.read()
    except (urllib.error.URLError, OSError) as exc:  # refused, timed out, reset
        reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
        return False, f"no answer from {url}: {reason}"
    try:
        document = json.loads(body)
    except ValueError:
        document = None
    if not isinstance(document, dict):
        return False, f"{url} answered HTTP {status} without a health document"
    if status == 200 and document.get("status") == "ok":
        return True, f"{url} answered ok"
    problems = document.get("problems") or [f"status {document.get('status')!r}"]
    return False, f"HTTP {status}: " + "; ".join(str(p) for p in problems)


def _configured_port(env_file: Path) -> int:
    if port := os.environ.get("PORT", "").strip():
        if not port.isdigit():
            raise ValueError(f"PORT={port!r} is not a port number")
        return int(port)
    try:
        found = _DOTENV_PORT.findall(env_file.read_text())
    except OSError:
        found = []
    return int(found[-1]) if found else DEFAULT_PORT


if __name__ == "__main__":
    raise SystemExit(main())
