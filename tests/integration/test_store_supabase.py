"""What only the supabase store adds: error classification over PostgREST, and its HTTP client.

The queue semantics themselves are tested once for both adapters in test_queue.py (its ``store``
fixture runs every test through the postgres store and through this one). Here the real
supabase-py client talks to a local PostgREST backed by the test's migrated database.
"""

from __future__ import annotations

import socket
import traceback
from collections.abc import AsyncIterator, Callable

import httpx
import psycopg
import pytest

from monitor.store.base import SchemaNotMigrated, StoreUnavailable
from monitor.store.supabase import SupabaseStore
from monitor.supabase_client import create_supabase_client
from supabase import AsyncClient, AsyncClientOptions
from testkit.fakes.postgrest_server import FakePostgrestServer


@pytest.fixture
async def postgrest(database_url: str) -> AsyncIterator[FakePostgrestServer]:
    async with FakePostgrestServer(database_url) as server:
        yield server


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=5) as http:
        yield http


async def make_store(
    server: FakePostgrestServer, http: httpx.AsyncClient, key: str | None = None
) -> SupabaseStore:
    return SupabaseStore(await create_supabase_client(server.url, key or server.service_key, http))


def assert_no_secret(error: BaseException, *secrets: str) -> None:
    """Nothing of the key in the traceback a log would show, causes included."""
    logged = "".join(traceback.format_exception(error))
    for secret in secrets:
        assert secret not in logged
    assert "Bearer" not in logged


def unreachable_database_url() -> str:
    """A Postgres URL whose port nothing listens on, as when the database is down."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"postgresql://postgres@127.0.0.1:{port}/postgres?connect_timeout=2"


@pytest.mark.parametrize(
    ("inject", "status"),
    [
        pytest.param(lambda s: s.fail_next(status=503), 503, id="postgrest-503"),
        pytest.param(lambda s: s.fail_next(status=500), 500, id="proxy-500-page"),
        pytest.param(
            lambda s: s.fail_next(status=429, body={"message": "API rate limit exceeded"}),
            429,
            id="gateway-429",
        ),
        pytest.param(lambda s: s.disconnect_next(), None, id="dropped-connection"),
    ],
)
async def test_outages_raise_store_unavailable_and_the_next_call_goes_through(
    postgrest: FakePostgrestServer,
    http: httpx.AsyncClient,
    inject: Callable[[FakePostgrestServer], None],
    status: int | None,
) -> None:
    store = await make_store(postgrest, http)
    inject(postgrest)
    with pytest.raises(StoreUnavailable) as caught:
        await store.queue_depth()
    assert caught.value.retryable
    assert "order_queue_depth" in str(caught.value)
    assert_no_secret(caught.value, postgrest.service_key)

    assert await store.queue_depth() == 0
    # One request per call: the daemon's backoff, not the client, decides about retries.
    assert [call.status for call in postgrest.calls] == [status, 200]


async def test_database_down_behind_postgrest_is_unavailable(http: httpx.AsyncClient) -> None:
    async with FakePostgrestServer(unreachable_database_url()) as server:
        store = await make_store(server, http)
        with pytest.raises(StoreUnavailable, match="PGRST000"):
            await store.claim("w", 1, 60)
        assert server.calls[-1].status == 503


async def test_a_wrong_key_is_a_clear_error_without_the_key(
    postgrest: FakePostgrestServer, http: httpx.AsyncClient
) -> None:
    wrong_key = "not-the-service-role-key"
    store = await make_store(postgrest, http, key=wrong_key)
    with pytest.raises(PermissionError, match="SUPABASE_SERVICE_ROLE_KEY") as caught:
        await store.queue_depth()
    assert "Invalid API key" in str(caught.value)  # the gateway's words, not a retryable outage
    assert_no_secret(caught.value, wrong_key, postgrest.service_key)


async def test_a_token_postgrest_refuses_is_a_clear_error_without_the_token(
    postgrest: FakePostgrestServer, http: httpx.AsyncClient
) -> None:
    forged = "eyJhbGciOiJIUzI1NiJ9.eyJyb2xlIjoic2VydmljZV9yb2xlIn0.forged"
    options = AsyncClientOptions(headers={"Authorization": f"Bearer {forged}"}, httpx_client=http)
    client = await AsyncClient.create(postgrest.url, postgrest.service_key, options)
    with pytest.raises(PermissionError, match="PGRST301") as caught:
        await SupabaseStore(client).queue_depth()
    assert_no_secret(caught.value, forged, postgrest.service_key)


async def test_an_id_that_is_not_a_uuid_is_a_value_error(
    postgrest: FakePostgrestServer, http: httpx.AsyncClient
) -> None:
    store = await make_store(postgrest, http)
    with pytest.raises(ValueError, match="22P02"):
        await store.heartbeat("not-a-uuid", "w", 60)


async def test_a_missing_function_asks_for_the_migrations(
    postgrest: FakePostgrestServer, http: httpx.AsyncClient, db: psycopg.Connection
) -> None:
    db.execute("drop function order_queue_depth()")
    store = await make_store(postgrest, http)
    with pytest.raises(SchemaNotMigrated, match="run `run_monitor.py migrate`"):
        await store.queue_depth()
    assert postgrest.calls[-1].status == 404


async def test_close_closes_the_http_client_only_when_the_store_owns_it(
    postgrest: FakePostgrestServer, http: httpx.AsyncClient
) -> None:
    shared = await make_store(postgrest, http)
    await shared.close()
    assert not http.is_closed

    owned_http = httpx.AsyncClient()
    owned = await SupabaseStore.connect(postgrest.url, postgrest.service_key, owned_http)
    assert await owned.queue_depth() == 0
    await owned.close()
    assert owned_http.is_closed


# --- each call as PostgREST runs it: one transaction, the token's role and claims ---------------

WHOAMI = """
create function {name}() returns jsonb language sql {volatility} as $$
    select jsonb_build_object(
        'user', current_user,
        'claims', current_setting('request.jwt.claims', true)::jsonb,
        'method', current_setting('request.method', true),
        'read_only', current_setting('transaction_read_only'),
        'uid', auth.uid())
$$
"""


@pytest.mark.parametrize(("volatility", "read_only"), [("stable", "on"), ("volatile", "off")])
async def test_a_call_runs_as_the_tokens_role_with_its_claims(
    postgrest: FakePostgrestServer,
    http: httpx.AsyncClient,
    db: psycopg.Connection,
    volatility: str,
    read_only: str,
) -> None:
    db.execute(WHOAMI.format(name="whoami", volatility=volatility))
    db.execute("grant execute on function whoami() to service_role")
    client = await create_supabase_client(postgrest.url, postgrest.service_key, http)
    seen = (await client.rpc("whoami", {}).execute()).data
    assert seen["user"] == "service_role" and seen["claims"]["role"] == "service_role"
    assert (seen["method"], seen["read_only"], seen["uid"]) == ("POST", read_only, None)


async def test_a_function_without_a_grant_is_refused_as_on_supabase(
    postgrest: FakePostgrestServer, http: httpx.AsyncClient, db: psycopg.Connection
) -> None:
    """The migrations' grants are what make the daemon's calls work: one taken back fails."""
    db.execute("revoke execute on function order_queue_depth() from service_role")
    store = await make_store(postgrest, http)
    with pytest.raises(RuntimeError, match="42501"):
        await store.queue_depth()
    assert postgrest.calls[-1].status == 403


async def test_an_app_users_token_cannot_run_the_queue(
    postgrest: FakePostgrestServer, http: httpx.AsyncClient, db: psycopg.Connection
) -> None:
    """The anon key plus a signed-in user's JWT, as the app sends them: 403 for the queue, and
    ``auth.uid()`` is the token's ``sub`` where the user may call something."""
    user = "00000000-0000-0000-0000-0000000000aa"
    db.execute(WHOAMI.format(name="whoami", volatility="stable"))
    db.execute("grant execute on function whoami() to authenticated")
    options = AsyncClientOptions(
        headers={"Authorization": f"Bearer {postgrest.token('authenticated', sub=user)}"},
        httpx_client=http,
    )
    client = await AsyncClient.create(postgrest.url, postgrest.anon_key, options)
    assert (await client.rpc("whoami", {}).execute()).data["uid"] == user
    with pytest.raises(RuntimeError, match="42501"):
        await SupabaseStore(client).claim("w", 10, 60)
    assert postgrest.calls[-1].status == 403
