"""Wiring: which adapters and which processor the settings ask for."""

from __future__ import annotations

import importlib
import inspect
from contextlib import AsyncExitStack
from typing import Any

import httpx

from monitor.config import Settings
from monitor.job import Processor
from monitor.metrics import Metrics
from monitor.storage.base import BlobStorage
from monitor.store.base import OrderStore

DEFAULT_PROCESSOR = "processors.factory:create_processor"


async def build_store(settings: Settings) -> OrderStore:
    if settings.database_url:
        from monitor.store.postgres import PostgresStore

        return PostgresStore(
            settings.database_url,
            # Claims, heartbeats and progress of every in-flight item, plus headroom for health.
            max_connections=settings.max_concurrent_orders + 4,
        )
    from monitor.store.supabase import SupabaseStore

    assert settings.supabase_url and settings.supabase_service_role_key  # validated by config
    return await SupabaseStore.connect(
        settings.supabase_url,
        settings.supabase_service_role_key,
        http_client=httpx.AsyncClient(timeout=httpx.Timeout(30.0, connect=5.0)),
    )


async def load_processor(
    spec: str, settings: Settings, metrics: Metrics, storage: BlobStorage
) -> Processor:
    """Import ``module:factory`` and build the processor: ``factory(settings, metrics, storage)``.

    The factory may be sync or async; the result may have an async ``aclose``.
    """
    module_name, _, attr = spec.partition(":")
    if not attr:
        raise ValueError(f"processor must look like module:factory, got {spec!r}")
    factory: Any = getattr(importlib.import_module(module_name), attr)
    processor = factory(settings, metrics, storage)
    if inspect.isawaitable(processor):
        processor = await processor
    return processor


async def close_processor(processor: Processor) -> None:
    aclose = getattr(processor, "aclose", None)
    if aclose is not None:
        await aclose()


async def build_storage(settings: Settings, resources: AsyncExitStack) -> BlobStorage:
    """The blob storage the settings ask for; connections it opens are closed by ``resources``."""
    if settings.storage_backend == "local":
        from monitor.storage.local import LocalStorage

        return LocalStorage(settings.local_storage_dir)
    from monitor.storage.supabase import SupabaseStorage
    from monitor.supabase_client import create_supabase_client

    assert settings.supabase_url and settings.supabase_service_role_key  # validated by config
    http_client = httpx.AsyncClient(timeout=httpx.Timeout(60.0, connect=5.0))
    resources.push_async_callback(http_client.aclose)
    client = await create_supabase_client(
        settings.supabase_url, settings.supabase_service_role_key, http_client
    )
    return SupabaseStorage(
        client,
        settings.storage_bucket,
        public=settings.storage_public,
        signed_url_ttl=settings.signed_url_ttl_seconds,
    )
