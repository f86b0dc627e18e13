"""Nothing private ends up in git, and the docs warn about the keys that can expose it."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from urllib.parse import urlsplit

import pytest

ROOT = Path(__file__).resolve().parents[2]


def ignored(*paths: str) -> set[str]:
    """The paths git would ignore in this checkout (``git check-ignore``)."""
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    result = subprocess.run(
        ["git", "check-ignore", "--no-index", *paths],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode in (0, 1), result.stderr
    return set(result.stdout.split())


def test_photos_caches_and_env_files_are_ignored_by_git() -> None:
    private = [
        "storage/uploads/x.jpg",
        ".env.local",
        ".env.production",
        ".cache/books/a.jpg",
        ".demo/pg/base",
        ".env",
    ]
    assert ignored(*private) == set(private)


def test_the_code_and_the_example_config_are_not_ignored() -> None:
    assert (
        ignored(
            ".env.example",
            "monitor/storage/paths.py",
            "migrations/011_photo_ownership.sql",
            "docs/daemon_role.sql",
        )
        == set()
    )


@pytest.mark.parametrize("doc", ["README.md", ".env.example"])
def test_the_service_role_key_warning_is_there(doc: str) -> None:
    text = " ".join((ROOT / doc).read_text().split())
    assert re.search(
        r"(service-role key|SUPABASE_SERVICE_ROLE_KEY\W*) bypasses row-level security",
        text,
        re.IGNORECASE,
    )
    assert re.search(r"never ship it in the mobile app|never in the mobile app", text)


def test_the_example_database_url_is_the_least_privileged_role() -> None:
    # DATABASE_URL= itself is empty (no preset); its example is the comment line above it.
    line = next(
        l
        for l in (ROOT / ".env.example").read_text().splitlines()
        if l.startswith("# Example: postgresql://")
    )
    user = urlsplit(line.partition(": ")[2]).username
    assert user != "postgres"
    assert f"create role {user} login" in (ROOT / "docs" / "daemon_role.sql").read_text()
