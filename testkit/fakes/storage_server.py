"""A local Supabase Storage API for tests: the subset storage3 uses, spoken over real HTTP.

It mirrors the wire behaviour the adapter depends on: multipart uploads that refuse to overwrite
unless ``x-upsert: true``, errors as HTTP 400 carrying the real status in the body's
``statusCode`` (Storage's legacy error format), signed URLs whose token is an HS256 JWT naming
the object and its expiry, public URLs only for public buckets, bulk delete by ``prefixes``.
Requests must carry the service key as ``apikey`` and as the bearer token, as supabase-py sends it.

Every behaviour below cites what it imitates: the Storage API's own source (github.com/
supabase/storage, ``src/http/routes/object/*.ts`` and ``src/http/error-handler.ts``) or the
client that speaks it (supabase-py's storage3, ``storage3/_async/file_api.py``).

Usage::

    async with FakeStorageServer(buckets={"books": False}) as server:
        client = await create_supabase_client(server.url, server.service_key, http)
        ...
        assert server.objects[("books", "a/b.jpg")].data == b"..."
        assert server.requests["GET /storage/v1/object/books/a/b.jpg"] == 1
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any
from urllib.parse import quote

from aiohttp import BodyPartReader, web

from testkit.fakes.base import LocalServer

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_API = "/storage/v1"
#: Supabase's default per-file upload limit: 50 MB on the Free plan and in self-hosted Storage
#: (supabase.com/docs/guides/storage/uploads/file-limits;
#: github.com/orgs/supabase/discussions/21903).
_MAX_UPLOAD_BYTES = 50 * 1024 * 1024


@dataclass
class StoredObject:
    data: bytes
    content_type: str
    cache_control: str


@dataclass
class _Fault:
    status: int
    message: str
    retry_after: str | None


class FakeStorageServer(LocalServer):
    """Supabase Storage on 127.0.0.1 with an ephemeral port; ``url`` is the project URL.

    ``objects`` maps ``(bucket, key)`` to what was stored; ``requests`` counts requests by
    ``"METHOD /decoded/path"``. :meth:`fail_next` makes the next requests fail like an
    overloaded gateway; :meth:`advance_clock` moves the server's clock for expiry tests.
    """

    def __init__(
        self,
        *,
        service_key: str = "service-role-key-for-tests",
        buckets: Mapping[str, bool] | None = None,
    ) -> None:
        self.service_key = service_key
        #: bucket name -> public
        self.buckets: dict[str, bool] = dict(buckets if buckets is not None else {"books": False})
        self.objects: dict[tuple[str, str], StoredObject] = {}
        self.requests: Counter[str] = Counter()
        self._jwt_secret = uuid.uuid4().bytes
        self._clock_offset = 0.0
        self._faults: deque[_Fault] = deque()

    def build_app(self) -> web.Application:
        app = web.Application(
            middlewares=[self._count, self._inject_faults, self._authenticate],
            client_max_size=_MAX_UPLOAD_BYTES,
        )
        api = f"{_API}/object"
        # The routes of supabase/storage src/http/routes/object/: getSignedURL.ts (POST sign),
        # getSignedObject.ts (GET sign), getPublicObject.ts, getObject.ts (authenticated and
        # plain), createObject.ts (POST), updateObject.ts (PUT), deleteObjects.ts (DELETE with
        # a JSON body of prefixes).
        app.router.add_post(f"{api}/sign/{{bucket}}/{{key:.+}}", self._sign)
        app.router.add_get(f"{api}/sign/{{bucket}}/{{key:.+}}", self._get_signed)
        app.router.add_get(f"{api}/public/{{bucket}}/{{key:.+}}", self._get_public)
        app.router.add_get(f"{api}/authenticated/{{bucket}}/{{key:.+}}", self._get)
        app.router.add_get(f"{api}/{{bucket}}/{{key:.+}}", self._get)
        app.router.add_post(f"{api}/{{bucket}}/{{key:.+}}", self._create)
        app.router.add_put(f"{api}/{{bucket}}/{{key:.+}}", self._update)
        app.router.add_delete(f"{api}/{{bucket}}", self._remove)
        return app

    def put(self, bucket: str, key: str, data: bytes, content_type: str = "image/jpeg") -> None:
        """Seed an object, as the catalog import or the app would have uploaded it."""
        self.objects[(bucket, key)] = StoredObject(data, content_type, "3600")

    def fail_next(
        self,
        count: int = 1,
        *,
        status: int = 503,
        message: str = "upstream unavailable",
        retry_after: str | None = None,
    ) -> None:
        """Answer the next ``count`` requests with ``status`` (503, 429, ...), whatever they ask."""
        self._faults.extend(_Fault(status, message, retry_after) for _ in range(count))

    def advance_clock(self, seconds: float) -> None:
        self._clock_offset += seconds

    def token_claims(self, token: str) -> dict[str, Any]:
        """The claims of a signed-URL token this server issued (signature not checked)."""
        return json.loads(_b64decode(token.split(".")[1]))

    # -- middlewares -------------------------------------------------------------------------

    @web.middleware
    async def _count(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        self.requests[f"{request.method} {request.path}"] += 1
        return await handler(request)

    @web.middleware
    async def _inject_faults(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if not self._faults:
            return await handler(request)
        fault = self._faults.popleft()
        # What a gateway or an overloaded Storage answers: the status as HTTP status (a 429 or
        # 5xx from in front of the renderer), the error-handler's body shape, Retry-After when
        # the test gives one.
        body = {
            "statusCode": str(fault.status),
            "error": HTTPStatus(fault.status).phrase,
            "message": fault.message,
        }
        headers = {"Retry-After": fault.retry_after} if fault.retry_after is not None else None
        return web.json_response(body, status=fault.status, headers=headers)

    @web.middleware
    async def _authenticate(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        # Public and signed object URLs are opened by the app without the service key
        # (getPublicObject.ts and getSignedObject.ts take no authorization; the signed URL's
        # token is the credential). Everything else needs the JWT, which supabase-py sends as
        # ``apikey`` and ``Authorization: Bearer`` (the real client runs against this fake in
        # tests/unit/test_storage_supabase.py, so a client that sent less would fail there).
        if request.method in ("GET", "HEAD") and request.path.startswith(
            (f"{_API}/object/public/", f"{_API}/object/sign/")
        ):
            return await handler(request)
        bearer = f"Bearer {self.service_key}"
        if (
            request.headers.get("apikey") != self.service_key
            or request.headers.get("Authorization") != bearer
        ):
            return _error(403, "InvalidJWT", "Unauthorized", "invalid signature")
        return await handler(request)

    # -- handlers ----------------------------------------------------------------------------

    async def _create(self, request: web.Request) -> web.StreamResponse:
        bucket, key = self._target(request)
        if bucket not in self.buckets:
            return _no_such_bucket()
        # createObject.ts: an existing object is overwritten only with ``x-upsert: true``
        # (storage3's upload sends it from file_options["upsert"]); otherwise 409 Duplicate.
        upsert = request.headers.get("x-upsert", "false").lower() == "true"
        if (bucket, key) in self.objects and not upsert:
            return _error(409, "ResourceAlreadyExists", "Duplicate", "The resource already exists")
        return await self._store(request, bucket, key)

    async def _update(self, request: web.Request) -> web.StreamResponse:
        bucket, key = self._target(request)
        if bucket not in self.buckets:
            return _no_such_bucket()
        # updateObject.ts replaces an existing object only: NoSuchKey otherwise.
        if (bucket, key) not in self.objects:
            return _no_such_key()
        return await self._store(request, bucket, key)

    async def _store(self, request: web.Request, bucket: str, key: str) -> web.StreamResponse:
        # storage3 uploads as multipart form data: the file part plus cacheControl
        # (file_api.py _upload_or_update); the answer names the object as {"Id", "Key"}.
        if not request.content_type.startswith("multipart/"):
            return _error(400, "InvalidRequest", "InvalidRequest", "expected a multipart upload")
        data: bytes | None = None
        content_type = "application/octet-stream"
        cache_control = "no-cache"
        async for part in await request.multipart():
            if not isinstance(part, BodyPartReader):
                continue
            if part.name == "file":
                content_type = part.headers.get("Content-Type", content_type)
                data = bytes(await part.read())
            elif part.name == "cacheControl":
                cache_control = await part.text()
        if data is None:
            return _error(400, "InvalidRequest", "InvalidRequest", "No content provided")
        self.objects[(bucket, key)] = StoredObject(data, content_type, cache_control)
        return web.json_response({"Id": str(uuid.uuid4()), "Key": f"{bucket}/{key}"})

    async def _get(self, request: web.Request) -> web.StreamResponse:
        bucket, key = self._target(request)
        return self._serve(bucket, key)

    async def _get_public(self, request: web.Request) -> web.StreamResponse:
        bucket, key = self._target(request)
        # getPublicObject.ts serves only buckets marked public; a private one is "not found".
        if not self.buckets.get(bucket, False):
            return _no_such_bucket()
        return self._serve(bucket, key)

    async def _sign(self, request: web.Request) -> web.StreamResponse:
        bucket, key = self._target(request)
        if bucket not in self.buckets:
            return _no_such_bucket()
        if (bucket, key) not in self.objects:
            return _no_such_key()
        body = await request.json()
        try:
            expires_in = int(body["expiresIn"])
        except (KeyError, TypeError, ValueError):
            return _error(400, "InvalidParameter", "InvalidParameter", "expiresIn is required")
        # getSignedURL.ts: body {"expiresIn"} (an integer >= 1), answer {"signedURL":
        # "/object/sign/{bucket}/{key}?token=<JWT>"}, the token's claims {"url": "{bucket}/{key}",
        # "iat", "exp"} as in that route's schema example.
        now = int(self._now())
        token = self._encode_jwt({"url": f"{bucket}/{key}", "iat": now, "exp": now + expires_in})
        signed = f"/object/sign/{quote(bucket)}/{quote(key)}?token={token}"
        return web.json_response({"signedURL": signed})

    async def _get_signed(self, request: web.Request) -> web.StreamResponse:
        bucket, key = self._target(request)
        # getSignedObject.ts: the token must be ours and name this object; an expired one fails.
        claims = self._decode_jwt(request.query.get("token", ""))
        if claims is None or claims.get("url") != f"{bucket}/{key}":
            return _error(400, "InvalidSignature", "InvalidSignature", "invalid signature")
        if claims.get("exp", 0) <= self._now():
            return _error(400, "InvalidJWT", "InvalidJWT", "jwt expired")
        return self._serve(bucket, key)

    async def _remove(self, request: web.Request) -> web.StreamResponse:
        bucket = request.match_info["bucket"]
        if bucket not in self.buckets:
            return _no_such_bucket()
        # deleteObjects.ts: {"prefixes": [keys]}; the answer lists the objects that were deleted,
        # missing ones are simply absent (storage3's remove() returns that list).
        body = await request.json()
        removed = []
        for key in body.get("prefixes", []):
            if self.objects.pop((bucket, key), None) is not None:
                removed.append({"name": key, "bucket_id": bucket, "id": str(uuid.uuid4())})
        return web.json_response(removed)

    # -- helpers -----------------------------------------------------------------------------

    def _target(self, request: web.Request) -> tuple[str, str]:
        return request.match_info["bucket"], request.match_info["key"]

    def _serve(self, bucket: str, key: str) -> web.StreamResponse:
        if bucket not in self.buckets:
            return _no_such_bucket()
        stored = self.objects.get((bucket, key))
        if stored is None:
            return _no_such_key()
        # getObject.ts streams the object with its stored content type and cache-control.
        return web.Response(
            body=stored.data,
            content_type=stored.content_type.split(";")[0],
            headers={"Cache-Control": f"max-age={stored.cache_control}"},
        )

    def _now(self) -> float:
        return time.time() + self._clock_offset

    def _encode_jwt(self, claims: dict[str, Any]) -> str:
        header = _b64encode(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
        payload = _b64encode(json.dumps(claims).encode())
        signature = hmac.new(self._jwt_secret, f"{header}.{payload}".encode(), hashlib.sha256)
        return f"{header}.{payload}.{_b64encode(signature.digest())}"

    def _decode_jwt(self, token: str) -> dict[str, Any] | None:
        """The claims if the signature is ours, else None."""
        try:
            header, payload, signature = token.split(".")
            expected = hmac.new(self._jwt_secret, f"{header}.{payload}".encode(), hashlib.sha256)
            if not hmac.compare_digest(_b64decode(signature), expected.digest()):
                return None
            return json.loads(_b64decode(payload))
        except ValueError:
            return None


def _error(status: int, code: str, error: str, message: str) -> web.Response:
    """Storage's error body; like Storage, HTTP 400 unless the status is 500 (src/http/
    error-handler.ts: ``reply.status(renderableError.statusCode === '500' ? 500 : 400)``)."""
    body = {"statusCode": str(status), "code": code, "error": error, "message": message}
    return web.json_response(body, status=500 if status == 500 else 400)


# The codes and messages of src/storage/errors.ts (ERRORS.NoSuchKey, ERRORS.NoSuchBucket).
def _no_such_key() -> web.Response:
    return _error(404, "NoSuchKey", "not_found", "Object not found")


def _no_such_bucket() -> web.Response:
    return _error(404, "NoSuchBucket", "Bucket not found", "Bucket not found")


def _b64encode(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _b64decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
