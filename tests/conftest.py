"""Shared fixtures: a real embedded Postgres and migrated databases cloned per test."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack

import httpx
import psycopg
import pytest

from monitor.migrate import migrate
from monitor.store.base import OrderStore
from monitor.store.postgres import PostgresStore
from monitor.store.supabase import SupabaseStore
from testkit.fakes.postgrest_server import FakePostgrestServer
from testkit.postgres import Cluster, temporary_cluster

MIGRATED_TEMPLATE = "migrated_template"


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[Cluster]:
    with temporary_cluster("book-monitor-pg-") as cluster:
        with psycopg.connect(cluster.url(), autocommit=True) as conn:
            conn.execute(f'create database "{MIGRATED_TEMPLATE}"')
        asyncio.run(migrate(cluster.url(MIGRATED_TEMPLATE)))
        yield cluster


@pytest.fixture
def own_cluster() -> Iterator[Cluster]:
    """A cluster of its own, for tests that stop it without disturbing the others."""
    with temporary_cluster("book-monitor-pg-own-") as cluster:
        yield cluster


@pytest.fixture
def database_url(pg_cluster: Cluster) -> Iterator[str]:
    """A freshly migrated database of its own for one test."""
    name = pg_cluster.create_database(template=MIGRATED_TEMPLATE)
    yield pg_cluster.url(name)
    pg_cluster.drop_database(name)


@pytest.fixture
def empty_database_url(pg_cluster: Cluster) -> Iterator[str]:
    name = pg_cluster.create_database()
    yield pg_cluster.url(name)
    pg_cluster.drop_database(name)


@pytest.fixture(params=["postgres", "supabase"])
async def store(request: pytest.FixtureRequest, database_url: str) -> AsyncIterator[OrderStore]:
    """The order store, once per adapter; ``supabase`` goes through a local PostgREST."""
    async with AsyncExitStack() as stack:
        if request.param == "postgres":
            store: OrderStore = PostgresStore(database_url)
        else:
            server = await stack.enter_async_context(FakePostgrestServer(database_url))
            store = await SupabaseStore.connect(server.url, server.service_key, httpx.AsyncClient())
        await store.open()
        stack.push_async_callback(store.close)
        yield store


@pytest.fixture
def db(database_url: str) -> Iterator[psycopg.Connection]:
    """A plain connection for arranging rows and checking them, as the app would."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        yield conn
