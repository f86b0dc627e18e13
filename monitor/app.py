"""The composition root: the one place that builds the adapters and the processor.

Everything else receives what it needs from here: the daemon gets a store, storage and a
processor; the processor gets the AI, storage, the catalog cache and metrics through the ports of
``processors/`` (docs/architecture.md, "Ports and adapters"). The default processor is named by
dotted path, like any other ``--processor``, so the daemon never imports the pipeline itself.
"""

from __future__ import annotations

import importlib
import inspect
from contextlib import AsyncExitStack
from typing import Any

import httpx

from monitor.config import Settings
from monitor.metrics import Metrics
from monitor.storage.cache import BookAssetCache
from monitor.store.base import OrderStore
from processors.ai.base import ImageAI, check_ai
from processors.ai.limits import LimitedAI
from processors.ai.pricing import PriceTable
from processors.analysis import Analyzer
from processors.book import BookProcessor
from processors.contract import Processor
from processors.cover_service import CoverService, MemoryAnalyses
from processors.ports import BlobStorage
from processors.prompts import PromptBook
from processors.qa import QualityGate

DEFAULT_PROCESSOR = "monitor.app:create_processor"


async def build_store(settings: Settings) -> OrderStore:
    if settings.store_backend == "postgres":
        assert settings.database_url  # what makes the backend postgres
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


def cover_service(processor: object, uploads: MemoryAnalyses | None = None) -> CoverService | None:
    """Covers without an order (``POST /generate-cover``, ``generate-cover``), drawn by the
    daemon's own processor, so they share its AI client, limits, metrics and checks; None when
    the processor is not the book pipeline (a custom ``--processor``) or not built yet."""
    return CoverService(processor, uploads) if isinstance(processor, BookProcessor) else None


async def build_storage(settings: Settings, resources: AsyncExitStack) -> BlobStorage:
    """The blob storage the settings ask for; connections it opens are closed by ``resources``."""
    if settings.storage_backend == "local":
        from monitor.storage.local import LocalStorage

        return LocalStorage(
            settings.local_storage_dir,
            bucket=settings.storage_bucket,
            supabase_url=settings.supabase_url,
        )
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
        supabase_url=settings.supabase_url,
    )


def build_ai(settings: Settings, metrics: Metrics, **limit_options: Any) -> tuple[ImageAI, str]:
    """The image AI within the process-wide limits, and the analysis model's name (cache key).

    ``limit_options`` override ``LimitedAI``'s arguments (tests use a tiny backoff).
    """
    inner: ImageAI
    if settings.ai_provider == "gemini":
        from processors.ai.gemini import GeminiAI

        assert settings.google_api_key  # validated by config
        inner = GeminiAI(
            settings.google_api_key,
            analysis_model=settings.gemini_analysis_model,
            image_models=list(settings.gemini_image_models),
            api_version=settings.gemini_api_version,
            image_size=settings.image_size,
            timeout_seconds=settings.gemini_timeout_seconds,
            base_url=settings.gemini_base_url,
        )
        model_name = settings.gemini_analysis_model
    else:
        from processors.ai.local import LocalAI

        inner, model_name = LocalAI(), "local"
    options: dict[str, Any] = dict(
        max_concurrency=settings.ai_max_concurrency,
        requests_per_minute=settings.ai_requests_per_minute,
        analysis_requests_per_minute=settings.ai_analysis_requests_per_minute,
        rate_window_s=settings.ai_rate_window_seconds,
        max_retries=settings.ai_max_retries,
        backoff_base=settings.ai_backoff_base_seconds,
        on_retry=metrics.ai_retry,
        on_call=metrics.observe_ai_call,
        prices=PriceTable.load(settings.ai_prices_file),
        on_spend=metrics.ai_spent,
    )
    return LimitedAI(inner, **{**options, **limit_options}), model_name


async def create_processor(
    settings: Settings,
    metrics: Metrics | None = None,
    storage: BlobStorage | None = None,
    **limit_options: Any,
) -> BookProcessor:
    """The processor, with its models checked: missing ones are skipped with a warning; with no
    usable model of a kind (or Gemini unreachable) the processor comes back with
    ``ready_problem`` set, so the daemon stays up, says why on /health and checks again later
    instead of exiting into a supervisor's restart loop.

    ``storage`` is the daemon's, shared with other jobs and closed by its owner; without it the
    processor builds and closes its own.
    """
    metrics = metrics or Metrics()
    resources = AsyncExitStack()
    if storage is None:
        storage = await build_storage(settings, resources)
        resources.push_async_callback(storage.aclose)
    ai, model_name = build_ai(settings, metrics, **limit_options)
    resources.push_async_callback(ai.aclose)
    try:
        problem = await check_ai(ai)
    except BaseException:
        await resources.aclose()
        raise
    prompts = PromptBook()
    return BookProcessor(
        ai=ai,
        storage=storage,
        assets=BookAssetCache(storage, settings.cache_dir / "books"),
        analyzer=Analyzer(ai, prompts, model_name),
        prompts=prompts,
        work_dir=settings.cache_dir / "work",
        page_input_cache_bytes=settings.page_input_cache_mb * 1024 * 1024,
        page_concurrency=settings.page_concurrency,
        cover_first=settings.cover_first,
        page_deadline_seconds=settings.page_deadline_seconds,
        aspect_tolerance=settings.output_aspect_tolerance,
        ready_problem=problem,
        metrics=metrics,
        resources=resources,
        quality=QualityGate(
            ai,
            prompts,
            mode=settings.qa_mode,
            max_redraws=settings.qa_max_redraws,
            on_fail=settings.qa_on_fail,
            min_likeness=settings.qa_min_likeness,
            on_verdict=metrics.quality_verdict if metrics else None,
        ),
        print_bleed_in=settings.print_bleed_in,
        print_ppi=settings.print_ppi,
    )
