"""Every recipe the README gives is a file, and these tests read and run it: ``.env.example``
under systemd's, Docker's and python-dotenv's rules, the systemd unit, the cron line and the
Procfile, each run against the embedded Postgres (with ``once`` in place of ``run``, so it ends)."""

from __future__ import annotations

import io
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest
from dotenv import dotenv_values

from monitor.config import Settings
from testkit.daemon_process import REPO
from tests.support.envfile import parse_docker, parse_systemd
from tests.support.factories import insert_book, insert_item, item_row

ENV_EXAMPLE = REPO / ".env.example"
UNIT = REPO / "deploy" / "systemd" / "book-monitor.service"
CRON = REPO / "deploy" / "cron" / "book-monitor.cron"
PROCFILE = REPO / "Procfile"
INSTALL_DIR = "/srv/book-monitor"
#: Run in place of the real processor: the recipes are under test, not the pipeline.
TEST_PROCESSOR = ["--processor", "tests.support.processors:recording"]


# ------------------------------------------------------------------------- the envfile parsers


def test_the_systemd_parser_follows_env_file_c() -> None:
    text = (
        "# comment\n; also a comment\nA=auto   # not a comment\n  B = spaced  \n"
        'C="x \\"y\\" \\n"\nD=\'$z \\\'\nE=one\\\ntwo\nno separator line\nF=\n'
    )
    assert parse_systemd(text) == {
        "A": "auto   # not a comment",
        "B": "spaced",
        "C": 'x "y" \\n',
        "D": "$z \\",
        "E": "onetwo",
        "F": "",
    }


def test_the_docker_parser_keeps_values_verbatim() -> None:
    assert parse_docker('# c\nA="q" # x\n\nB=\n') == {"A": '"q" # x', "B": ""}
    with pytest.raises(ValueError):
        parse_docker("JUST_A_NAME\n")


# ------------------------------------------------------------------------- .env.example


def example_values() -> dict[str, str]:
    text = ENV_EXAMPLE.read_text()
    systemd, docker = parse_systemd(text), parse_docker(text)
    dotenv = {k: v or "" for k, v in dotenv_values(stream=io.StringIO(text)).items()}
    assert systemd == docker == dotenv, (systemd, docker, dotenv)
    return systemd


def test_env_example_reads_the_same_under_systemd_docker_and_dotenv() -> None:
    values = example_values()
    assert values, "no variable is set at all"
    for name, value in values.items():
        assert "#" not in value and not value.startswith(("'", '"')), (name, value)


def test_env_example_filled_in_is_the_readmes_complete_configuration() -> None:
    values = example_values()
    # "DATABASE_URL alone is a complete configuration": nothing else may be required or preset
    # against it (a STORAGE_BACKEND=supabase would demand Supabase credentials).
    assert [name for name, value in values.items() if value] == []
    filled = {**values, "DATABASE_URL": "postgresql://app:pw@localhost:5432/app"}
    settings = Settings.from_env(filled)
    assert (settings.store_backend, settings.storage_backend, settings.ai_provider) == (
        "postgres",
        "local",
        "local",
    )


def test_env_example_mentions_every_documented_variable() -> None:
    readme = (REPO / "README.md").read_text()
    table = readme.split("| variable | default | meaning |", 1)[1].split("\n\n", 1)[0]
    documented = set()
    for row in table.splitlines()[2:]:
        names = re.findall(r"`([A-Z_]+)`", row.split("|")[1])
        for name in names:
            if name.startswith("_"):  # `RETRY_BACKOFF_BASE_SECONDS` / `_MAX_SECONDS`
                words = names[0].split("_")
                name = "_".join(words[: len(words) - name.count("_")]) + name
            documented.add(name)
    text = ENV_EXAMPLE.read_text()
    missing = {n for n in documented if not re.search(rf"^#? ?{n}=", text, re.M)}
    assert missing == set()


# ------------------------------------------------------------------------- running the recipes


@pytest.fixture
def install(tmp_path: Path, database_url: str) -> Path:
    """An install directory laid out as the recipes expect /srv/book-monitor: the code, the venv
    and a .env made from .env.example with DATABASE_URL filled in."""
    home = tmp_path / "book-monitor"
    home.mkdir()
    for name in ("run_monitor.py", "monitor", "processors", "prompts", "migrations", "tests"):
        (home / name).symlink_to(REPO / name)
    (home / ".venv").symlink_to(sys.prefix)  # the venv running the tests
    env = ENV_EXAMPLE.read_text().replace("DATABASE_URL=\n", f"DATABASE_URL={database_url}\n")
    env += f"POLL_INTERVAL_SECONDS=0.2\nPORT=0\nLOCAL_STORAGE_DIR={home / 'storage'}\n"
    (home / ".env").write_text(env)
    return home


def localised(line: str, home: Path) -> str:
    return line.replace(INSTALL_DIR, str(home))


def unit_entries(text: str) -> dict[str, list[str]]:
    """Key -> values of a unit file (keys may repeat); comments and sections skipped."""
    entries: dict[str, list[str]] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line[0] in "#;[":
            continue
        key, _, value = line.partition("=")
        entries.setdefault(key.strip(), []).append(value.strip())
    return entries


def systemd_env(entries: dict[str, list[str]], home: Path) -> dict[str, str]:
    """The environment systemd gives ExecStart: its own PATH, the EnvironmentFile, then
    Environment= lines with the %H specifier (systemd.unit(5): the host name) expanded."""
    env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
    for path in entries["EnvironmentFile"]:
        env.update(parse_systemd(Path(localised(path.lstrip("-"), home)).read_text()))
    for assignment in entries.get("Environment", []):
        name, _, value = assignment.partition("=")
        env[name] = value.replace("%H", socket.gethostname())
    return env


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
def test_the_systemd_unit_verifies(install: Path, tmp_path: Path) -> None:
    unit = tmp_path / "book-monitor.service"
    unit.write_text(localised(UNIT.read_text(), install))
    done = subprocess.run(
        ["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert str(unit) not in done.stderr, done.stderr  # no warning about the unit's own lines


def test_the_systemd_units_exec_start_runs_a_book(install: Path, db: psycopg.Connection) -> None:
    entries = unit_entries(UNIT.read_text())
    [exec_start] = entries["ExecStart"]
    argv = shlex.split(localised(exec_start, install))
    assert argv[-1] == "run"
    item = insert_item(db, book_id=insert_book(db))
    done = subprocess.run(
        [*argv[:-1], "once", *TEST_PROCESSOR],
        cwd=localised(entries["WorkingDirectory"][0], install),
        env=systemd_env(entries, install),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    row = item_row(db, item)
    assert row["generation_status"] == "completed"
    assert row["claimed_by"] is None
    assert "Traceback" not in done.stderr


def test_the_cron_line_runs_a_book_and_the_retention(
    install: Path, db: psycopg.Connection, tmp_path: Path
) -> None:
    [line] = [l for l in CRON.read_text().splitlines() if l.strip() and not l.startswith("#")]
    fields = line.split(None, 5)
    assert fields[:5] == ["*/5", "*", "*", "*", "*"]
    command = localised(fields[5], install)
    command = command.replace("/tmp/book-monitor.lock", str(tmp_path / "lock"))
    command = command.replace("/var/log/book-monitor.log", str(tmp_path / "cron.log"))
    command = command.replace(" once ", f" once {' '.join(TEST_PROCESSOR)} ")
    item = insert_item(db, book_id=insert_book(db))
    # A finished item past retention, so the sweep has work.
    old = insert_item(db, book_id=insert_book(db))
    db.execute(
        "update order_items set generation_status = 'completed', generated_at = now() - "
        "interval '40 days' where id = %s",
        [old],
    )
    # cron's environment (crontab(5)): SHELL=/bin/sh, HOME, LOGNAME and a minimal PATH.
    cron_env = {
        "SHELL": "/bin/sh",
        "HOME": str(tmp_path),
        "LOGNAME": "cron",
        "PATH": "/usr/bin:/bin",
    }
    done = subprocess.run(
        ["/bin/sh", "-c", command], env=cron_env, capture_output=True, text=True, timeout=120
    )
    log = (tmp_path / "cron.log").read_text()
    assert done.returncode == 0, log
    assert item_row(db, item)["generation_status"] == "completed"
    assert item_row(db, old)["photo_deleted_at"] is not None, log
    assert "Traceback" not in log


def test_the_procfile_worker_runs(install: Path, db: psycopg.Connection) -> None:
    [worker] = [l for l in PROCFILE.read_text().splitlines() if l.startswith("worker:")]
    argv = shlex.split(worker.split(":", 1)[1])
    assert argv == ["python", "run_monitor.py"]  # run is the default command
    item = insert_item(db, book_id=insert_book(db))
    env = {"PATH": os.environ["PATH"], **parse_systemd((install / ".env").read_text())}
    done = subprocess.run(
        [sys.executable, *argv[1:], "once", *TEST_PROCESSOR],
        cwd=install,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert item_row(db, item)["generation_status"] == "completed"


def test_the_readme_shows_the_recipe_files() -> None:
    readme = (REPO / "README.md").read_text()
    for path in (UNIT, CRON, PROCFILE, ENV_EXAMPLE):
        assert f"]({path.relative_to(REPO)})" in readme, path
    [cron_line] = [l for l in CRON.read_text().splitlines() if l.startswith("*/5")]
    assert cron_line in readme  # the inline copy is the file's line
