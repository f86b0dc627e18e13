"""A real Postgres for the tests: pgserver's embedded binaries, a cluster per need.

Databases are cloned from a migrated template, so each test gets a clean schema in milliseconds.
"""

from __future__ import annotations

import shutil
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pgserver
import psycopg


class Cluster:
    """One embedded Postgres cluster that tests may stop and start (to simulate an outage)."""

    def __init__(self, pgdata: Path) -> None:
        self.pgdata = pgdata
        self.server = pgserver.get_server(pgdata, cleanup_mode="stop")

    def url(self, database: str = "postgres") -> str:
        return self.server.get_uri(database)

    def create_database(self, template: str | None = None) -> str:
        name = f"t_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.url(), autocommit=True) as conn:
            if template:
                conn.execute(f'create database "{name}" template "{template}"')
            else:
                conn.execute(f'create database "{name}"')
        return name

    def drop_database(self, name: str) -> None:
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'drop database if exists "{name}" with (force)')

    def stop(self) -> None:
        pgserver.pg_ctl(
            ["-m", "fast", "-w", "stop"], pgdata=self.pgdata, user=self.server.system_user
        )

    def start(self) -> None:
        self.server.ensure_postgres_running()

    def cleanup(self) -> None:
        self.server.cleanup()


@contextmanager
def temporary_cluster(prefix: str) -> Iterator[Cluster]:
    """A cluster in a fresh directory, stopped and removed afterwards.

    Not under pytest's tmp_path: pgserver runs postgres as an unprivileged user that must be able
    to traverse the directory, and pytest's own dirs are private to the current user.
    """
    root = Path(tempfile.mkdtemp(prefix=prefix))
    cluster = Cluster(root / "data")
    try:
        yield cluster
    finally:
        cluster.cleanup()
        shutil.rmtree(root, ignore_errors=True)
