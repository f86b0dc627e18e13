"""The connector port: how a SQL function is called, and what an absent database looks like.

It knows nothing of orders: the named operations (``monitor/store/base.py``) are written once on
top of :meth:`Connector.rpc`, and each adapter (``postgres`` over psycopg, ``supabase`` over
PostgREST) only differs in how it calls a function and what it raises when the database is away.
See docs/architecture.md, "Ports and adapters".
"""

from __future__ import annotations

import abc
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from tenacity import AsyncRetrying, retry_if_exception_type, wait_exponential
from tenacity.stop import stop_base

from processors.errors import RetryableError

T = TypeVar("T")


class StoreUnavailable(RetryableError):
    """The database did not answer (outage, restart, network): the daemon backs off and retries."""

    code = "database_unavailable"


SCHEMA_NOT_MIGRATED = "schema not migrated: run `run_monitor.py migrate`"


class SchemaNotMigrated(StoreUnavailable):
    """The database answered but lacks a queue function or table: the migrations have not been
    applied (or not all of them). Waited out like an outage, so the daemon starts working as soon
    as the operator runs ``migrate``; the message says so."""

    def __init__(self, missing: str) -> None:
        super().__init__(f"{SCHEMA_NOT_MIGRATED} ({missing})")


#: Told the outcome of every database round trip: None when it succeeded, else the
#: StoreUnavailable it raised.
RoundTripObserver = Callable[[StoreUnavailable | None], None]


async def through_outages(
    call: Callable[[], Awaitable[T]],
    *,
    stop: stop_base,
    first_wait: float = 0.25,
    max_wait: float = 8.0,
) -> T:
    """``call()``, tried again with backoff while the database is unavailable, until ``stop``.

    A write that waits out a restart of the database keeps the work it records; failing at the
    first refused connection would throw away paid image calls whose results are already stored.
    Once ``stop`` says enough, the last :class:`StoreUnavailable` is raised.
    """
    async for attempt in AsyncRetrying(
        retry=retry_if_exception_type(StoreUnavailable),
        stop=stop,
        wait=wait_exponential(multiplier=first_wait, max=max_wait),
        reraise=True,
    ):
        with attempt:
            return await call()
    raise AssertionError("unreachable: tenacity either returns or re-raises")


class Connector(abc.ABC):
    """Calls SQL functions with named arguments; results are JSON-shaped Python values."""

    #: Whether :meth:`listen` delivers wake-ups; without it the daemon relies on polling alone.
    supports_listen: bool = False
    #: Set by the daemon: every call's outcome is evidence for ``/health``.
    observer: RoundTripObserver | None = None

    @abc.abstractmethod
    async def rpc(self, function: str, params: dict[str, Any], *, returns_set: bool = False) -> Any:
        """Call a SQL function with named arguments; a list of rows when ``returns_set``.

        Raises StoreUnavailable when the database does not answer, SchemaNotMigrated when it
        lacks the function."""

    async def _call(
        self, function: str, params: dict[str, Any], *, returns_set: bool = False
    ) -> Any:
        """:meth:`rpc`, with its outcome told to :attr:`observer`: every named operation goes
        through here, so /health sees each round trip."""
        try:
            result = await self.rpc(function, params, returns_set=returns_set)
        except StoreUnavailable as exc:
            if self.observer is not None:
                self.observer(exc)
            raise
        # Any other error is no evidence either way (it may not have reached the database).
        if self.observer is not None:
            self.observer(None)
        return result

    async def open(self) -> None:  # noqa: B027 - a no-op is the right default for most adapters
        """Connect. Must not fail when the database is down: the daemon reports and retries."""

    async def close(self) -> None:  # noqa: B027 - a no-op is the right default for most adapters
        """Release connections."""

    async def listen(self, on_ready: Callable[[], None]) -> None:
        """Call ``on_ready`` whenever an item becomes claimable; runs until cancelled or the
        connection drops (then it raises, and the caller falls back to polling)."""
        raise NotImplementedError("this store does not support LISTEN")
