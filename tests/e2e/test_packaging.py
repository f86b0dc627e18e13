"""The package as an operator installs it: metadata, requirements, the wheel in a fresh venv.

``test_fresh_venv_*`` is slow (it builds the wheel and installs every dependency into a new
virtualenv, about 20-60 s with pip's local cache); it is marked ``slow``. Skip it with
``-m 'not slow'``.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
import venv
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from monitor import __version__
from monitor.mailer import TEMPLATES_DIR
from monitor.migrate import MIGRATIONS_DIR
from processors.prompts import PROMPTS_DIR
from processors.resources import data_dir

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def requirement_lines(path: Path) -> list[str]:
    """Requirement specifiers of a requirements file, following ``-r`` includes."""
    lines: list[str] = []
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if line.startswith("-r "):
            lines += requirement_lines(path.parent / line[3:].strip())
        else:
            lines.append(line)
    return lines


def normalized(specs: list[str]) -> set[str]:
    return {re.sub(r"\s+", "", spec).lower() for spec in specs}


def test_requirements_txt_is_the_project_dependencies() -> None:
    assert normalized(requirement_lines(ROOT / "requirements.txt")) == normalized(
        PYPROJECT["project"]["dependencies"]
    )


def test_requirements_dev_is_runtime_plus_demo_and_dev_extras() -> None:
    extras = PYPROJECT["project"]["optional-dependencies"]
    expected = PYPROJECT["project"]["dependencies"] + extras["demo"] + extras["dev"]
    assert normalized(requirement_lines(ROOT / "requirements-dev.txt")) == normalized(expected)


def test_pgserver_only_in_the_demo_extra() -> None:
    assert not any(d.startswith("pgserver") for d in PYPROJECT["project"]["dependencies"])
    assert [d for d in PYPROJECT["project"]["optional-dependencies"]["demo"]] == [
        d for d in requirement_lines(ROOT / "requirements-dev.txt") if d.startswith("pgserver")
    ]


def test_psutil_is_declared_where_it_is_imported() -> None:
    importers = [p for p in (ROOT / "bench").glob("*.py") if "import psutil" in p.read_text()]
    assert importers, "bench no longer uses psutil: drop it from the dev extra"
    assert any(d.startswith("psutil") for d in PYPROJECT["project"]["optional-dependencies"]["dev"])


def test_lock_pins_every_dependency_within_its_range_with_hashes() -> None:
    from packaging.requirements import Requirement  # pytest's own dependency

    text = (ROOT / "requirements.lock").read_text(encoding="utf-8")
    pins = dict(re.findall(r"^([A-Za-z0-9_.\-]+)==(\S+) \\$", text, re.MULTILINE))
    entries = re.split(r"\n(?=[A-Za-z0-9])", text.split("\n", 2)[2])
    assert pins and all("--hash=sha256:" in entry for entry in entries if "==" in entry)
    for spec in PYPROJECT["project"]["dependencies"]:
        requirement = Requirement(spec)
        pinned = pins[requirement.name]
        assert requirement.specifier.contains(pinned), (spec, pinned)
    assert "pgserver" not in pins  # production lock: the demo extra stays out


def test_version_of_a_checkout_is_the_pyproject_version() -> None:
    result = subprocess.run(
        [sys.executable, "run_monitor.py", "--version"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    assert result.stdout.strip() == f"run_monitor.py {PYPROJECT['project']['version']}"
    assert __version__ == PYPROJECT["project"]["version"]


def test_old_python_gets_one_sentence_before_any_311_import() -> None:
    # Pretend to be 3.10 before the package is imported: the guard must speak before StrEnum.
    code = (
        "import sys; sys.version_info = (3, 10, 12, 'final', 0); "
        "import runpy; runpy.run_path('run_monitor.py', run_name='__main__')"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, "--help"], cwd=ROOT, capture_output=True, text=True
    )
    assert result.returncode == 1
    assert "needs Python 3.11 or newer; this is Python 3.10" in result.stderr
    assert "Traceback" not in result.stderr


def test_checkout_finds_data_at_the_repository_top(tmp_path: Path) -> None:
    assert MIGRATIONS_DIR == ROOT / "migrations"
    assert PROMPTS_DIR == ROOT / "prompts"
    assert TEMPLATES_DIR == ROOT / "templates" / "email"
    # An installed layout: the package's own _data copy wins over anything beside the package.
    package = tmp_path / "pkg"
    (package / "_data" / "prompts").mkdir(parents=True)
    (tmp_path / "prompts").mkdir()
    assert data_dir(str(package / "mod.py"), "prompts") == package / "_data" / "prompts"


@pytest.fixture(scope="module")
def fresh_venv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A new virtualenv with only ``pip install <checkout>``: no demo extra, no test tools."""
    home = tmp_path_factory.mktemp("fresh-venv")
    venv.EnvBuilder(with_pip=True).create(home)
    # Build from a copy of the tracked files, so the checkout's .venv and caches stay out.
    source = home / "src"
    files = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    for name in files:
        if (ROOT / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            (source / name).write_bytes((ROOT / name).read_bytes())
    subprocess.run(
        [str(home / "bin" / "python"), "-m", "pip", "install", "--quiet", str(source)],
        check=True,
        capture_output=True,
        timeout=540,
    )
    yield home


@pytest.mark.slow
def test_fresh_venv_version_and_demo_without_the_extra(fresh_venv: Path, tmp_path: Path) -> None:
    script = fresh_venv / "bin" / "book-monitor"
    version = subprocess.run(
        [str(script), "--version"], cwd=tmp_path, capture_output=True, text=True, check=True
    )
    assert version.stdout.strip() == f"book-monitor {PYPROJECT['project']['version']}"

    demo = subprocess.run(
        [str(script), "demo", "--home", str(tmp_path / "demo")],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert demo.returncode == 2
    assert "pip install 'book-order-monitor[demo]'" in demo.stderr
    assert "Traceback" not in demo.stderr
    assert not (tmp_path / "demo" / "pg").exists()


@pytest.mark.slow
def test_fresh_venv_migrates_and_renders_prompts_from_the_wheel(
    fresh_venv: Path, empty_database_url: str, tmp_path: Path
) -> None:
    python = fresh_venv / "bin" / "python"
    where = subprocess.run(
        [
            str(python),
            "-c",
            "from monitor.migrate import MIGRATIONS_DIR as m; "
            "from processors.prompts import PROMPTS_DIR as p, PromptBook; "
            "from processors.ai.pricing import DEFAULT_PRICES, PriceTable; "
            "print(m); print(p); print(DEFAULT_PRICES); print(PromptBook().version); "
            "print(len(PriceTable.load().prices)); "
            "from monitor.mailer import TEMPLATES_DIR as t, EmailTemplates; EmailTemplates(); "
            "print(t)",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert all("site-packages" in line for line in where[:3]), where
    assert int(where[4]) > 0  # the default price table travels with the wheel
    assert "site-packages" in where[5]  # and so do the email templates
    assert sorted(p.name for p in Path(where[0]).glob("*.sql")) == sorted(
        p.name for p in MIGRATIONS_DIR.glob("*.sql")
    )
    # The dashboard's page, stylesheet and script travel as package data and load from there.
    dashboard = subprocess.run(
        [
            str(python),
            "-c",
            "from importlib import resources; import monitor.dashboard as d; "
            "f = resources.files('monitor') / 'dashboard'; print(f); "
            "print(all((f / n).read_bytes() for n in d._FILES))",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert "site-packages" in dashboard[0] and dashboard[1] == "True", dashboard

    env = {k: v for k, v in os.environ.items() if not k.startswith(("SUPABASE_", "GOOGLE_"))}
    env["DATABASE_URL"] = empty_database_url
    migrate = subprocess.run(
        [str(fresh_venv / "bin" / "book-monitor"), "migrate"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert migrate.returncode == 0, migrate.stderr
    with psycopg.connect(empty_database_url) as conn:
        applied = [r[0] for r in conn.execute("select version from schema_migrations order by 1")]
    assert applied == sorted(
        p.name for p in MIGRATIONS_DIR.glob("*.sql") if p.name != "000_schema_migrations.sql"
    )
