"""The ``postgres`` store adapter: psycopg 3 async pool on ``DATABASE_URL``, plus LISTEN.

Works with any Postgres, including Supabase's direct or session-pooler connection strings.
Prepared statements are off so Supabase's transaction pooler (PgBouncer) works too, though it
cannot carry LISTEN: the daemon then falls back to polling.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from monitor.store.base import OrderStore, SchemaNotMigrated, StoreUnavailable

NOTIFY_CHANNEL = "order_items_ready"


class PostgresStore(OrderStore):
    supports_listen = True

    def __init__(
        self, dsn: str, *, max_connections: int = 10, connect_timeout: float = 5.0
    ) -> None:
        self._dsn = dsn
        self._connect_timeout = connect_timeout
        self._pool = AsyncConnectionPool(
            dsn,
            min_size=1,
            max_size=max_connections,
            open=False,
            timeout=connect_timeout,
            # After a database restart the pooled connections are dead; check them on checkout
            # instead of failing one request per stale connection.
            check=AsyncConnectionPool.check_connection,
            kwargs={
                "autocommit": True,
                "prepare_threshold": None,
                "connect_timeout": max(int(connect_timeout), 1),
            },
        )

    async def open(self) -> None:
        await self._pool.open(wait=False)

    async def close(self) -> None:
        await self._pool.close()

    async def rpc(self, function: str, params: dict[str, Any], *, returns_set: bool = False) -> Any:
        call = sql.SQL("{}({})").format(
            sql.Identifier(function),
            sql.SQL(", ").join(
                sql.SQL("{} => {}").format(sql.Identifier(name), sql.Placeholder(name))
                for name in params
            ),
        )
        # Results are converted to JSON in the database so both adapters return the same shapes.
        if returns_set:
            query = sql.SQL("select coalesce(jsonb_agg(r), '[]'::jsonb) from {} r").format(call)
        else:
            query = sql.SQL("select to_jsonb({})").format(call)
        values = {k: Jsonb(v) if isinstance(v, (dict, list)) else v for k, v in params.items()}
        try:
            async with self._pool.connection() as conn:
                cursor = await conn.execute(query, values)
                row = await cursor.fetchone()
        except (psycopg.OperationalError, PoolTimeout) as exc:
            raise StoreUnavailable(
                f"database unavailable during {function}: {type(exc).__name__}"
            ) from exc
        except (psycopg.errors.UndefinedFunction, psycopg.errors.UndefinedTable) as exc:
            # SQLSTATE 42883 / 42P01: the migrations (or the newest of them) are not applied.
            raise SchemaNotMigrated(f"{function}: {type(exc).__name__}") from exc
        return row[0] if row else None

    async def listen(self, on_ready: Callable[[], None]) -> None:
        try:
            conn = await psycopg.AsyncConnection.connect(
                self._dsn, autocommit=True, connect_timeout=max(int(self._connect_timeout), 1)
            )
        except psycopg.OperationalError as exc:
            raise StoreUnavailable(f"LISTEN connection failed: {type(exc).__name__}") from exc
        async with conn:
            await conn.execute(sql.SQL("listen {}").format(sql.Identifier(NOTIFY_CHANNEL)))
            try:
                async for _ in conn.notifies():
                    on_ready()
            except psycopg.OperationalError as exc:
                raise StoreUnavailable(f"LISTEN connection lost: {type(exc).__name__}") from exc
