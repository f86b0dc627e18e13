"""Unit tests run without Postgres: a test here that asks for a database fails at collection."""

from __future__ import annotations

from pathlib import Path

import pytest

_HERE = Path(__file__).resolve().parent

#: The fixtures of tests/conftest.py that start or use the embedded Postgres.
POSTGRES_FIXTURES = frozenset(
    {"pg_cluster", "own_cluster", "database_url", "empty_database_url", "store", "db"}
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        wanted = POSTGRES_FIXTURES.intersection(getattr(item, "fixturenames", ()))
        if wanted and item.path.is_relative_to(_HERE):
            raise pytest.UsageError(
                f"{item.nodeid} is a unit test but uses {sorted(wanted)}: move it to "
                "tests/integration/"
            )
