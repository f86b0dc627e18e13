"""Applies the numbered SQL files in ``migrations/`` in order, each once, each in a transaction.

A session-level advisory lock serialises concurrent runs (two replicas starting at once, or an
operator and a deploy hook), so the second run waits and then finds nothing left to do.

When a run applied anything, PostgREST is told to reload its schema cache (``NOTIFY pgrst,
'reload schema'``, https://docs.postgrest.org/en/v13/references/schema_cache.html): a
self-hosted PostgREST without the DDL event trigger would otherwise answer PGRST202 for a new
function until it restarts. Without a PostgREST listening, the notification is simply dropped.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import psycopg
from loguru import logger

from processors.resources import data_dir

MIGRATIONS_DIR = data_dir(__file__, "migrations")
BOOKKEEPING_FILE = "000_schema_migrations.sql"
# pg_advisory_lock key: any constant unique to this project; "bookmig" in ASCII.
ADVISORY_LOCK_KEY = 0x626F6F6B6D6967
#: PostgREST's default ``db-channel`` and its schema-reload message.
POSTGREST_CHANNEL = "pgrst"
POSTGREST_RELOAD = "reload schema"


class MigrationError(RuntimeError):
    """A migration file failed; its transaction was rolled back."""

    def __init__(self, filename: str, cause: Exception) -> None:
        super().__init__(f"migration {filename} failed and was rolled back: {cause}")
        self.filename = filename


@dataclass(frozen=True)
class Migration:
    path: Path

    @property
    def version(self) -> str:
        return self.path.name

    @property
    def sql(self) -> str:
        return self.path.read_text(encoding="utf-8")

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.path.read_bytes()).hexdigest()


def discover(directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    """Every migration file except the bookkeeping one, in the order they must be applied."""
    return [Migration(p) for p in sorted(directory.glob("*.sql")) if p.name != BOOKKEEPING_FILE]


async def migrate(dsn: str, directory: Path = MIGRATIONS_DIR) -> list[str]:
    """Apply pending migrations; return the versions applied by this run."""
    applied_now: list[str] = []
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        await conn.execute("select pg_advisory_lock(%s)", [ADVISORY_LOCK_KEY])
        try:
            await _apply(conn, Migration(directory / BOOKKEEPING_FILE), record=False)
            cursor = await conn.execute("select version, checksum from applied_migrations()")
            applied: dict[str, str] = dict(await cursor.fetchall())
            for migration in discover(directory):
                if migration.version in applied:
                    if applied[migration.version] != migration.checksum:
                        logger.warning(
                            "migration {} changed after it was applied; not re-applied",
                            migration.version,
                        )
                    continue
                await _apply(conn, migration, record=True)
                applied_now.append(migration.version)
                logger.info("applied migration {}", migration.version)
        finally:
            # Also after a failing file: what was applied before it is committed and visible.
            if applied_now:
                await conn.execute(
                    "select pg_notify(%s, %s)", [POSTGREST_CHANNEL, POSTGREST_RELOAD]
                )
            await conn.execute("select pg_advisory_unlock(%s)", [ADVISORY_LOCK_KEY])
    return applied_now


async def _apply(conn: psycopg.AsyncConnection, migration: Migration, *, record: bool) -> None:
    try:
        async with conn.transaction():
            # No parameters: psycopg sends the file as one simple query, several statements allowed.
            await conn.execute(migration.sql.encode())
            if record:
                await conn.execute(
                    "select record_migration(%s, %s)", [migration.version, migration.checksum]
                )
    except psycopg.Error as exc:
        raise MigrationError(migration.version, exc) from exc
