"""The ``supabase`` store adapter: the queue functions called through PostgREST with supabase-py.

Used when ``DATABASE_URL`` is not set: the daemon then needs nothing but ``SUPABASE_URL`` and the
service-role key. Every operation is one ``rpc()`` call of a function from migrations/; PostgREST
shapes the JSON from the function's declared return type (an array for ``setof``, the bare value
for scalars, ``null`` for a SQL null), which is what :class:`OrderStore` expects.

Supabase Realtime is not used: polling is the source of truth (docs/architecture.md, "The queue
protocol"), so this adapter has no LISTEN and the daemon simply polls.

Errors are classified here, once. The database or the way to it being away (network errors,
timeouts, HTTP 429 and 5xx, PostgREST's connection errors) raises :class:`StoreUnavailable`, which
the daemon retries with backoff. Everything else is a bug or a misconfiguration that retrying
cannot fix and is raised as such. Messages carry the function, the error code and the server's
message, never request headers, so the service-role key cannot leak into logs.
"""

from __future__ import annotations

from typing import Any

import httpx
from postgrest import APIError

from monitor.store.base import OrderStore, SchemaNotMigrated, StoreUnavailable
from monitor.supabase_client import create_supabase_client
from supabase import AsyncClient

#: SQLSTATE classes of conditions that pass: connection exceptions, transaction rollbacks
#: (serialization failures, deadlocks), insufficient resources, operator intervention (shutdown,
#: restart) and system errors.
_TRANSIENT_SQLSTATE_CLASSES = frozenset({"08", "40", "53", "57", "58"})
#: SQLSTATE classes of arguments the database refused: data exceptions (``22P02`` invalid input
#: syntax, say a non-uuid id) and integrity constraint violations.
_INVALID_INPUT_SQLSTATE_CLASSES = frozenset({"22", "23"})
_MISSING_FUNCTION_CODES = frozenset({"PGRST202", "42883"})


class SupabaseStore(OrderStore):
    """The order-store port over Supabase's PostgREST (``rpc()`` calls only)."""

    supports_listen = False

    def __init__(
        self, client: AsyncClient, *, http_client: httpx.AsyncClient | None = None
    ) -> None:
        """``client`` comes from :func:`monitor.supabase_client.create_supabase_client`.

        Pass ``http_client`` (the one ``client`` was built on) only when this store owns it:
        :meth:`close` then closes it. Leave it out when it is shared, with the blob storage say,
        and its creator closes it.
        """
        self._client = client
        self._http_client = http_client

    @classmethod
    async def connect(
        cls, url: str, service_role_key: str, http_client: httpx.AsyncClient
    ) -> SupabaseStore:
        """A store on its own ``http_client``, which it owns and closes in :meth:`close`."""
        client = await create_supabase_client(url, service_role_key, http_client)
        return cls(client, http_client=http_client)

    async def close(self) -> None:
        if self._http_client is not None:
            await self._http_client.aclose()

    async def rpc(self, function: str, params: dict[str, Any], *, returns_set: bool = False) -> Any:
        # PostgREST shapes the JSON from the function's declared return type (an array for
        # ``setof``), so ``returns_set`` needs no handling here.
        try:
            response = await self._client.rpc(function, params).execute()
        except httpx.TransportError as exc:
            raise StoreUnavailable(
                f"Supabase unreachable during {function}: {type(exc).__name__}"
            ) from exc
        except APIError as exc:
            raise _classify(function, exc) from exc
        return response.data


def _classify(function: str, error: APIError) -> Exception:
    """The exception to raise for an error answer of PostgREST or of the gateway before it."""
    code = error.code or ""
    what = f"{function} failed ({code or 'gateway error'}): {error.message}"
    if _is_key_refused(error):
        return PermissionError(f"{what}. Check SUPABASE_SERVICE_ROLE_KEY")
    if _is_transient(code):
        return StoreUnavailable(f"Supabase unavailable: {what}")
    if code in _MISSING_FUNCTION_CODES:
        return SchemaNotMigrated(f"{function}: {code}")
    if code[:2] in _INVALID_INPUT_SQLSTATE_CLASSES:
        return ValueError(what)
    return RuntimeError(what)


def _is_key_refused(error: APIError) -> bool:
    """Whether the service-role key was refused, by PostgREST (its ``PGRST3xx`` JWT errors) or
    by Supabase's API gateway, whose 401 body has no code: ``{"message": "Invalid API key",
    "hint": "Double check your Supabase `anon` or `service_role` API key."}``."""
    if error.code:
        return error.code.startswith("PGRST3")
    return "api key" in f"{error.message} {error.hint}".lower()


def _is_transient(code: str) -> bool:
    """Whether an error ``code`` as postgrest-py reports it means "try again later".

    postgrest-py keeps the body, not the HTTP status: ``code`` is a SQLSTATE for database errors,
    ``PGRSTxxx`` for PostgREST's own, the HTTP status when the body was not JSON (a proxy's error
    page), and empty for JSON from the API gateway in front of PostgREST, which, a refused key
    aside, answers for itself only when rate limiting or when PostgREST is away.
    """
    if not code:
        return True
    if len(code) == 3 and code.isdigit():
        return code == "429" or code.startswith("5")
    return code.startswith("PGRST0") or code[:2] in _TRANSIENT_SQLSTATE_CLASSES
