"""One supabase-py client for the daemon, shared by the order store and the blob storage.

Both adapters talk to the same project, so they share one ``httpx.AsyncClient``: one connection
pool, one place to set timeouts and limits, one thing to close on shutdown.
"""

from __future__ import annotations

import httpx

from supabase import AsyncClient, AsyncClientOptions


async def create_supabase_client(
    url: str, service_role_key: str, http_client: httpx.AsyncClient
) -> AsyncClient:
    """Build supabase-py's async client on ``http_client``.

    PostgREST, Storage, Auth and Functions all send their requests through ``http_client``, so its
    timeout and pool limits are the ones that apply (supabase-py's own timeout options are ignored
    once a client is injected). The caller owns ``http_client`` and closes it on shutdown; the
    supabase client holds nothing else that needs closing (Realtime is never connected).

    The daemon acts with the service-role key and never signs a user in, so there is no session
    to persist or refresh. PostgREST's built-in retry of GET requests is turned off: retries are
    the daemon's job (docs/architecture.md, "Error classes"), and two layers of them would hide
    outages from its backoff and metrics.
    """
    options = AsyncClientOptions(
        auto_refresh_token=False,
        persist_session=False,
        postgrest_client_retry=False,
        httpx_client=http_client,
    )
    return await AsyncClient.create(url, service_role_key, options)
