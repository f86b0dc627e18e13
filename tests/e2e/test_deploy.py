"""The files in deploy/ as far as this machine can run them (no Docker daemon, no PM2 here).

What is run: the compose file's ``migrate`` and daemon commands, through the Dockerfile's
ENTRYPOINT, against the embedded Postgres; the Dockerfile's HEALTHCHECK command against that
daemon; SIGTERM to it, as ``docker stop`` sends it; the PM2 app's interpreter + script + args, with
the SIGINT PM2 sends. What is read: the image's shape (slim base, non-root user, exec forms, the
production install without the demo extra) and the stop timeouts against the shutdown grace.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml

from monitor.config import Settings
from tests.e2e.test_healthcheck import free_port
from tests.support.waiting import eventually_sync

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
GRACE_DEFAULT = Settings.__dataclass_fields__["shutdown_grace_seconds"].default


def dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of deploy/Dockerfile, continuation lines joined."""
    text = re.sub(r"\\\n\s*", " ", (DEPLOY / "Dockerfile").read_text(encoding="utf-8"))
    lines = [line.strip() for line in text.splitlines()]
    return [
        (line.split(None, 1)[0].upper(), line.split(None, 1)[1])
        for line in lines
        if line and not line.startswith("#")
    ]


def instructions(name: str) -> list[str]:
    return [args for instruction, args in dockerfile() if instruction == name]


def compose() -> dict[str, Any]:
    return yaml.safe_load((DEPLOY / "docker-compose.yml").read_text(encoding="utf-8"))


def seconds(duration: str) -> float:
    """A compose duration such as ``45s`` or ``1m30s``."""
    units = {"h": 3600, "m": 60, "s": 1, "ms": 0.001}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|h|m|s)", duration)
    assert parts and "".join(n + u for n, u in parts) == duration, duration
    return sum(float(n) * units[u] for n, u in parts)


def console_script(argv: list[str]) -> list[str]:
    """``book-monitor ...`` as this checkout runs it: the [project.scripts] target, via python."""
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    module, _, function = scripts[argv[0]].partition(":")
    code = (
        f"import sys; sys.argv[0] = {argv[0]!r}; from {module} import {function}; "
        f"raise SystemExit({function}())"
    )
    return [sys.executable, "-c", code, *argv[1:]]


def test_image_is_slim_non_root_and_installs_production_only() -> None:
    assert all("-slim" in base for base in instructions("FROM"))
    user = instructions("USER")[-1]
    assert user not in {"root", "0"}
    assert any("useradd" in run and user in run for run in instructions("RUN"))
    runs = " ".join(instructions("RUN"))
    assert "--require-hashes -r /tmp/requirements.lock" in runs
    assert "pgserver" not in runs and "[demo]" not in runs and "requirements-dev" not in runs
    assert "pgserver" not in (ROOT / "requirements.lock").read_text()


def test_every_copied_path_exists_in_the_build_context() -> None:
    for args in instructions("COPY"):
        if args.startswith("--from="):
            continue
        *sources, _destination = shlex.split(args)
        for source in sources:
            assert (ROOT / source).exists(), source


def test_entrypoint_and_healthcheck_are_exec_form() -> None:
    # Exec form (a JSON array): the process is PID 1 and gets SIGTERM; a shell form would wrap
    # it in /bin/sh -c, which does not forward signals.
    entrypoint = json.loads(instructions("ENTRYPOINT")[-1])
    assert entrypoint == ["book-monitor"]
    assert json.loads(instructions("CMD")[-1]) == ["run"]
    assert instructions("STOPSIGNAL") == ["SIGTERM"]
    health = instructions("HEALTHCHECK")[-1]
    probe = json.loads(health.split(" CMD ", 1)[1])
    assert probe == ["python", "/app/healthcheck.py"]
    assert any(
        shlex.split(c)[-1] == "/app/healthcheck.py" and "healthcheck.py" in c
        for c in instructions("COPY")
    )


def test_compose_runs_migrate_then_the_daemon_with_a_long_enough_stop() -> None:
    services = compose()["services"]
    assert services["migrate"]["command"] == ["migrate"]
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    daemon = services["monitor"]
    assert daemon["command"] == ["run"]
    assert daemon["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    assert seconds(daemon["stop_grace_period"]) > GRACE_DEFAULT
    assert "@postgres:5432/" in daemon["environment"]["DATABASE_URL"]
    postgres = services["postgres"]["environment"]
    assert daemon["environment"]["DATABASE_URL"] == (
        f"postgresql://{postgres['POSTGRES_USER']}:{postgres['POSTGRES_PASSWORD']}"
        f"@postgres:5432/{postgres['POSTGRES_DB']}"
    )
    assert daemon["ports"] == ["5000:5000"]  # the daemon's default PORT


def service_env(name: str, database_url: str, tmp_path: Path, port: int) -> dict[str, str]:
    """The service's environment with the compose host names swapped for this machine's."""
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("GOOGLE_", "GEMINI_", "SUPABASE_"))
    }
    env.update({k: str(v) for k, v in compose()["services"][name]["environment"].items()})
    env.update(
        {
            "DATABASE_URL": database_url,
            "LOCAL_STORAGE_DIR": str(tmp_path / "storage"),
            "CACHE_DIR": str(tmp_path / "cache"),
            "HOST": "127.0.0.1",
            "PORT": str(port),
            "PYTHONPATH": str(ROOT),
        }
    )
    return env


def probe(port: int, tmp_path: Path) -> int:
    """The image's HEALTHCHECK command, with the checkout's healthcheck.py for /app's."""
    argv = json.loads(instructions("HEALTHCHECK")[-1].split(" CMD ", 1)[1])
    argv = [
        sys.executable if argv[0] == "python" else argv[0],
        *[str(ROOT / "healthcheck.py") if a == "/app/healthcheck.py" else a for a in argv[1:]],
    ]
    return subprocess.run(
        argv, cwd=tmp_path, env={"PORT": str(port)}, capture_output=True, timeout=30
    ).returncode


def wait_healthy_then_stop(
    process: subprocess.Popen[bytes], port: int, tmp_path: Path, stop_signal: signal.Signals
) -> int:
    try:
        eventually_sync(
            lambda: process.poll() is not None or probe(port, tmp_path) == 0,
            timeout=60,
            what="the daemon to answer its healthcheck",
        )
        assert process.poll() is None, "the daemon exited before it was healthy"
        process.send_signal(stop_signal)
        return process.wait(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_compose_commands_run_through_the_entrypoint(
    empty_database_url: str, tmp_path: Path
) -> None:
    entrypoint = json.loads(instructions("ENTRYPOINT")[-1])
    services = compose()["services"]
    port = free_port()

    migrate = subprocess.run(
        console_script(entrypoint + services["migrate"]["command"]),
        cwd=tmp_path,
        env=service_env("migrate", empty_database_url, tmp_path, port),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert migrate.returncode == 0, migrate.stderr
    with psycopg.connect(empty_database_url) as conn:
        assert conn.execute("select count(*) from schema_migrations").fetchone()[0] > 0

    log = (tmp_path / "daemon.log").open("wb")
    daemon = subprocess.Popen(
        console_script(entrypoint + services["monitor"]["command"]),
        cwd=tmp_path,
        stdout=log,
        stderr=subprocess.STDOUT,
        env=service_env("monitor", empty_database_url, tmp_path, port),
    )
    assert wait_healthy_then_stop(daemon, port, tmp_path, signal.SIGTERM) == 0
    log.close()


def pm2_app() -> dict[str, Any]:
    """The ecosystem file as PM2 evaluates it (it is JavaScript: node runs it)."""
    node = subprocess.run(
        [
            "node",
            "-e",
            "console.log(JSON.stringify(require(process.argv[1])))",
            str(DEPLOY / "ecosystem.config.js"),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    (app,) = json.loads(node.stdout)["apps"]
    return app


needs_node = pytest.mark.skipif(
    subprocess.run(["which", "node"], capture_output=True).returncode != 0,
    reason="node is needed to evaluate the PM2 ecosystem file (apt-get install nodejs)",
)


@needs_node
def test_pm2_kill_timeout_outlasts_the_shutdown_grace() -> None:
    app = pm2_app()
    assert app["kill_timeout"] / 1000 > GRACE_DEFAULT
    assert app["autorestart"] is True and app["exec_mode"] == "fork"


@needs_node
def test_pm2_app_runs_and_drains_on_sigint(database_url: str, tmp_path: Path) -> None:
    app = pm2_app()
    assert app["cwd"] == str(ROOT) and Path(app["script"]).is_file()
    port = free_port()
    env = service_env("monitor", database_url, tmp_path, port)
    env.update(app["env"])
    log = (tmp_path / "pm2.log").open("wb")
    daemon = subprocess.Popen(
        [app["interpreter"], app["script"], "--env-file", os.devnull, *app["args"]],
        cwd=app["cwd"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    # PM2's stop signal is SIGINT (pm2.keymetrics.io/docs/usage/signals-clean-restart/).
    assert wait_healthy_then_stop(daemon, port, tmp_path, signal.SIGINT) == 0
    log.close()
