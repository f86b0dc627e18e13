"""A local PostgREST for tests: ``POST /rest/v1/rpc/{function}`` answered from a real Postgres.

It speaks the subset of PostgREST's wire protocol that supabase-py's ``rpc()`` uses, so the
``supabase`` store runs the very SQL functions the ``postgres`` store runs:

- the JSON body's keys are the function's named arguments; like PostgREST, the overload whose
  argument names fit the keys is chosen from ``pg_proc``, and the values are converted to the
  declared argument types by ``jsonb_to_record`` (a non-uuid id fails with SQLSTATE 22P02);
- results are shaped by the declared return type: a JSON array for ``setof``, the bare JSON value
  for scalars (``null`` for a SQL null), ``204 No Content`` for ``void``;
- errors are PostgREST's ``{"code", "details", "hint", "message"}`` bodies: 404 ``PGRST202`` for
  an unknown function, the SQLSTATE with PostgREST's HTTP status for database errors, 503
  ``PGRST000`` when the database cannot be reached;
- the ``apikey`` must be one of the project's keys (else 401 with the body of Supabase's API
  gateway, which has no code); the bearer token must be a JWT signed with the project's JWT
  secret (else PostgREST's 401 ``PGRST301``). The keys are such JWTs, as Supabase's legacy
  ``anon`` and ``service_role`` keys are (supabase.com/docs/guides/api/api-keys: "The keys are
  both long-lived JWTs ... they contain the role");
- each call runs the way PostgREST runs it (docs.postgrest.org, references/auth.html "User
  Impersonation" and references/transactions.html; PostgREST's src/PostgREST/Query/PreQuery.hs):
  one transaction; the token's ``role`` claim as the transaction's role, the claims as
  ``request.jwt.claims`` (and ``request.method``, ``request.path``, ``request.headers``,
  ``request.cookies``, ``search_path``), each with ``set_config(..., true)``; READ ONLY for a
  STABLE or IMMUTABLE function and READ WRITE for a VOLATILE one, COMMIT unless it fails. So a
  function the role may not execute (a missing GRANT) fails as on Supabase, with 42501/403, and
  ``auth.uid()`` sees the token's ``sub``.

Usage::

    async with FakePostgrestServer(database_url) as server:
        client = await create_supabase_client(server.url, server.service_key, http)
        user_token = server.token("authenticated", sub=user_id)  # a signed-in app user's JWT
        server.fail_next(2, status=503)       # the next two requests fail before the database
        server.disconnect_next()              # then one connection is dropped unanswered
        ...
        assert server.calls[-1] == RpcCall("claim_order_items", {...}, 200)
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections import deque
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

import psycopg
from aiohttp import web
from psycopg import sql
from psycopg.rows import class_row
from psycopg.types.json import Jsonb

from testkit.fakes.base import LocalServer

_SCHEMA = "public"

#: PostgREST's HTTP status for a SQLSTATE (docs.postgrest.org, "Errors"): exact codes first,
#: then classes; anything else is 400. 42501 is 403 because requests always carry the key.
_STATUS_BY_SQLSTATE: tuple[tuple[str, int], ...] = (
    ("23503", 409), ("23505", 409), ("25006", 405), ("53400", 500), ("P0001", 400),
    ("42883", 404), ("42P01", 404), ("42P17", 500), ("42501", 403),
    ("08", 503), ("09", 500), ("0L", 403), ("0P", 403), ("25", 500), ("28", 403), ("2D", 500),
    ("38", 500), ("39", 500), ("3B", 500), ("40", 500), ("53", 503), ("54", 500), ("55", 500),
    ("57", 500), ("58", 500), ("F0", 500), ("HV", 500), ("P0", 500), ("XX", 500),
)  # fmt: skip

#: What Supabase's API gateway answers, before PostgREST, for a wrong ``apikey``: the body as
#: reported from the real service in github.com/supabase-community/supabase-csharp/issues/108
#: and github.com/nuxt-modules/supabase/issues/195 (HTTP 401, no ``code``).
_GATEWAY_INVALID_KEY = {
    "message": "Invalid API key",
    "hint": "Double check your Supabase `anon` or `service_role` API key.",
}

#: PostgREST's schema cache of callable functions: every function of the exposed schema
#: (docs.postgrest.org references/api/functions.html, "Functions as RPC"); of overloads, the
#: one whose argument names match the body's keys, arguments with defaults optional (same page,
#: "Overloaded functions"); ``read_only`` is the volatility that sets the access mode
#: (references/transactions.html, "Access Mode on Functions").
_FUNCTIONS = """
select p.proname as name,
       coalesce(p.proargnames[1:p.pronargs], '{}') as arg_names,
       array(select format_type(t, null)
               from unnest(p.proargtypes::oid[]) with ordinality as a(t, n)
              order by n) as arg_types,
       p.pronargs - p.pronargdefaults as required,
       p.proretset as returns_set,
       p.prorettype = 'void'::regtype as returns_void,
       p.provolatile <> 'v' as read_only
  from pg_proc p
 where p.pronamespace = %(schema)s::regnamespace
   and p.proname = %(name)s
   and p.prokind = 'f'
"""

#: One named argument, read from the JSON body and converted to its declared type the way
#: PostgREST does it: "Each key/value of the object will become an argument" (functions.html,
#: "Calling with POST"), read with ``json_to_recordset`` into ``pgrst_args`` (callPlanToQuery in
#: src/PostgREST/Query/QueryBuilder.hs), so a value the type refuses fails in the database with
#: that type's SQLSTATE. ``type`` comes from ``format_type()``, quoted by Postgres.
_ARGUMENT = sql.SQL("{name} => (select a.{name} from jsonb_to_record({args}) as a({name} {type}))")


@dataclass(frozen=True)
class RpcCall:
    """One request as the server saw it; ``status`` is None for a dropped connection."""

    function: str
    args: Any
    status: int | None


@dataclass(frozen=True)
class _Fault:
    """A canned failure, answered before the database is touched."""

    status: int | None = None
    body: Mapping[str, Any] | str | None = None

    def response(self) -> web.Response | None:
        """The answer, or None to drop the connection (a fault without a status)."""
        if self.status is None:
            return None
        if isinstance(self.body, Mapping):
            return web.json_response(dict(self.body), status=self.status)
        if self.body is not None:
            return web.Response(text=self.body, status=self.status)
        if self.status == HTTPStatus.SERVICE_UNAVAILABLE:
            # references/errors.html: PGRST001, an internal database client error (503).
            return _error(503, "PGRST001", "Database client error. Retrying the connection.")
        return web.Response(text=HTTPStatus(self.status).phrase, status=self.status)


@dataclass(frozen=True)
class _Function:
    """One overload of a database function, as PostgREST's schema cache knows it.

    Only IN arguments are expected, like every function in migrations/.
    """

    name: str
    arg_names: list[str]
    arg_types: list[str]
    required: int
    returns_set: bool
    returns_void: bool
    read_only: bool

    def accepts(self, keys: Collection[str]) -> bool:
        """Whether a body with these keys names this overload's arguments, as PostgREST matches."""
        required = set(self.arg_names[: self.required])
        return required <= set(keys) <= set(self.arg_names)

    def query(self, keys: Collection[str]) -> sql.Composed:
        """The statement PostgREST would run; its one parameter ``args`` is the JSON body.

        The result is shaped by the return type as PostgREST shapes it (functions.html): a set
        as a JSON array, a scalar as the bare JSON value, void as ``204 No Content``.
        """
        types = dict(zip(self.arg_names, self.arg_types))
        arguments = sql.SQL(", ").join(
            _ARGUMENT.format(
                name=sql.Identifier(key), args=sql.Placeholder("args"), type=sql.SQL(types[key])
            )
            for key in keys
        )
        call = sql.SQL("{}.{}({})").format(
            sql.Identifier(_SCHEMA), sql.Identifier(self.name), arguments
        )
        if self.returns_void:
            return sql.SQL("select {}").format(call)
        if self.returns_set:
            return sql.SQL("select coalesce(json_agg(r), '[]')::text from {} as r").format(call)
        return sql.SQL("select to_json({})::text").format(call)


class FakePostgrestServer(LocalServer):
    """PostgREST's RPC endpoint on 127.0.0.1 with an ephemeral port; ``url`` is the project URL.

    Each request runs on a connection of its own to ``dsn`` (PostgREST's authenticator; here
    the database owner, who may ``set role`` to any role), in one transaction as the token's role.
    ``calls`` records every request.
    """

    def __init__(
        self, dsn: str, *, jwt_secret: str = "super-secret-jwt-token-for-the-tests"
    ) -> None:
        self.calls: list[RpcCall] = []
        self._dsn = dsn
        self._jwt_secret = jwt_secret.encode()
        self._faults: deque[_Fault] = deque()
        self.service_key = self.token("service_role")
        self.anon_key = self.token("anon")

    def token(self, role: str, **claims: Any) -> str:
        """An HS256 JWT signed with the project's secret, as Supabase Auth issues them and as the
        project's API keys are (``{"role": ..., "iss": "supabase"}``)."""

        def part(data: dict[str, Any]) -> str:
            return _b64url(json.dumps(data, separators=(",", ":")).encode())

        header = part({"alg": "HS256", "typ": "JWT"})
        signing_input = f"{header}.{part({'iss': 'supabase', 'role': role, **claims})}"
        signature = hmac.new(self._jwt_secret, signing_input.encode(), hashlib.sha256).digest()
        return f"{signing_input}.{_b64url(signature)}"

    def _claims(self, token: str) -> dict[str, Any] | None:
        """The claims of a token signed with the project's secret, else None (PostgREST's
        ``JWSError JWSInvalidSignature``)."""
        try:
            header, payload, signature = token.split(".")
            expected = hmac.new(self._jwt_secret, f"{header}.{payload}".encode(), hashlib.sha256)
            if not hmac.compare_digest(_b64url(expected.digest()), signature):
                return None
            claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        except ValueError:
            return None
        return claims if isinstance(claims, dict) else None

    def build_app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/rest/v1/rpc/{function}", self._rpc)
        return app

    def fail_next(
        self, count: int = 1, *, status: int = 503, body: Mapping[str, Any] | str | None = None
    ) -> None:
        """Answer the next ``count`` requests with ``status``, whatever they ask.

        ``body`` is a JSON object or plain text. By default a 503 carries PostgREST's own body
        for a lost database connection (``PGRST001``) and other statuses a proxy's plain-text
        error page.
        """
        self._faults.extend(_Fault(status, body) for _ in range(count))

    def disconnect_next(self, count: int = 1) -> None:
        """Close the connection of the next ``count`` requests without answering."""
        self._faults.extend(_Fault() for _ in range(count))

    async def _rpc(self, request: web.Request) -> web.Response:
        function = request.match_info["function"]
        try:
            args = await request.json()
        except ValueError:
            args = None
        response = await self._answer(request, function, args)
        self.calls.append(RpcCall(function, args, response.status if response else None))
        if response is None:
            assert request.transport is not None
            request.transport.close()
            return web.Response()  # never sent: the connection is gone
        return response

    async def _answer(self, request: web.Request, function: str, args: Any) -> web.Response | None:
        if self._faults:
            return self._faults.popleft().response()
        # Supabase's API gateway checks the apikey before PostgREST sees the request; PostgREST
        # then verifies the bearer JWT (references/auth.html, "JWT Generation" / PGRST301 in
        # references/errors.html).
        if request.headers.get("apikey") not in (self.service_key, self.anon_key):
            return web.json_response(_GATEWAY_INVALID_KEY, status=401)
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        claims = self._claims(token) if scheme.lower() == "bearer" else None
        if claims is None:
            return _error(401, "PGRST301", "JWSError JWSInvalidSignature")
        if not isinstance(args, dict):
            # references/errors.html: PGRST102, "An invalid request body was sent".
            return _error(400, "PGRST102", "Empty or invalid json")
        # The role claim names the database role to become; without one, the anonymous role
        # (db-anon-role, "anon" on Supabase): docs.postgrest.org references/auth.html, "User
        # Impersonation". The transaction variables, in PostgREST's order and with its names
        # (txVarQuery in src/PostgREST/Query/PreQuery.hs): search_path, role, the claims with
        # "role" inserted, method, path, headers (names lower-cased, references/transactions.html
        # "Request Headers, Cookies and JWT claims"), cookies; each set_config(..., true).
        claims.setdefault("role", "anon")
        settings = {
            "search_path": _SCHEMA,
            "role": claims["role"],
            "request.jwt.claims": json.dumps(claims),
            "request.method": request.method,
            "request.path": request.path,
            "request.headers": json.dumps({k.lower(): v for k, v in request.headers.items()}),
            "request.cookies": json.dumps(dict(request.cookies)),
        }
        try:
            async with await psycopg.AsyncConnection.connect(self._dsn) as conn:
                return await self._call(conn, function, args, settings)
        except psycopg.Error as exc:
            return _database_error(exc)

    async def _call(
        self,
        conn: psycopg.AsyncConnection[Any],
        function: str,
        args: dict[str, Any],
        settings: dict[str, str],
    ) -> web.Response:
        cursor = conn.cursor(row_factory=class_row(_Function))
        await cursor.execute(_FUNCTIONS, {"schema": _SCHEMA, "name": function})
        overload = next((f for f in await cursor.fetchall() if f.accepts(args)), None)
        await conn.commit()  # that was the schema cache; the request's transaction starts now
        if overload is None:
            # references/errors.html: PGRST202, the function is not in the schema cache (404).
            signature = f"{_SCHEMA}.{function}({', '.join(args)})"
            return _error(
                404,
                "PGRST202",
                f"Could not find the function {signature} in the schema cache",
                details=f"Searched for the function {_SCHEMA}.{function} with parameters "
                f"{', '.join(args) or 'none'}, but no matches were found in the schema cache.",
            )
        # START TRANSACTION <access mode>; transaction-scoped settings; main query; COMMIT
        # (references/transactions.html). For RPC over POST the access mode follows the
        # function's volatility: VOLATILE is READ WRITE, STABLE and IMMUTABLE are READ ONLY.
        # psycopg opened the transaction with the first statement; any error rolls it back.
        if overload.read_only:
            await conn.execute("set transaction read only")
        # set_config('role', ..., true) is PostgREST's "set local role": a role that may not
        # execute the function gets 42501 from Postgres, which PostgREST answers with 403.
        for name, value in settings.items():
            await conn.execute("select set_config(%s, %s, true)", [name, value])
        result = await conn.execute(overload.query(args), {"args": Jsonb(args)})
        row = None if overload.returns_void else await result.fetchone()
        await conn.commit()
        if overload.returns_void:
            return web.Response(status=204)
        body = row[0] if row and row[0] is not None else "null"
        return web.Response(text=body, content_type="application/json", charset="utf-8")


def _b64url(raw: bytes) -> str:
    """Base64url without padding, the JWT encoding (RFC 7515 section 2)."""
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _error(
    status: int, code: str, message: str, *, details: str | None = None, hint: str | None = None
) -> web.Response:
    body = {"code": code, "details": details, "hint": hint, "message": message}
    return web.json_response(body, status=status)


def _database_error(exc: psycopg.Error) -> web.Response:
    if exc.sqlstate is None:
        # libpq could not reach the server: PostgREST answers 503 PGRST000 and keeps
        # reconnecting (references/errors.html: PGRST000, no connection to the database).
        return _error(
            503, "PGRST000", "Database connection error. Retrying the connection.", details=str(exc)
        )
    status = next(
        (status for prefix, status in _STATUS_BY_SQLSTATE if exc.sqlstate.startswith(prefix)), 400
    )
    return _error(
        status,
        exc.sqlstate,
        exc.diag.message_primary or str(exc),
        details=exc.diag.message_detail,
        hint=exc.diag.message_hint,
    )
