"""``POST /generate-cover``: a personalized cover without an order, for support and sales.

The Node original's endpoint took JSON ``{originalCoverImage, childImage, bookData, childData}``
with base64 images and answered ``{success, coverImage, message}``; this one takes the same JSON
(data: URIs accepted too), or ``bookId`` instead of ``originalCoverImage`` for a catalog book,
or the same as ``multipart/form-data``:

    JSON                              multipart/form-data
    childImage         base64         childImage            file
    originalCoverImage base64    or   originalCoverImage    file    (or)
    bookId             uuid           bookId                field
    childData {name, age, gender}     childName, childAge, childGender
    bookData {name|title, genre}      bookTitle, bookGenre  (uploaded covers only)

It answers JSON ``{success, coverImage (base64 JPEG), mimeType, model, needsReview, usage,
message}`` to a JSON request and the JPEG itself (``image/jpeg``, usage in ``X-AI-Usage``, model in
``X-Cover-Model``) to a multipart one; ``?format=json`` or ``?format=jpeg`` chooses either way.

Admin only (``Authorization: Bearer $ADMIN_TOKEN``; 403 while ADMIN_TOKEN is unset, like the
other admin actions). ``COVER_MAX_CONCURRENT`` covers are drawn at once per process; one more
answers 429 at once rather than queueing behind paid orders' calls. Bad input answers 400 (a
body that is not what is described above, a photo or cover that does not decode) or 422 (the
child's details, a photo without exactly one face, a drawing refused or below the quality
threshold) with ``{"error": code, "message": ...}``; an unknown ``bookId`` 404; the AI or the
database unavailable 503. The drawing is processors/cover_service.py, the daemon's own code.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import uuid
from collections.abc import Callable
from typing import Any

from aiohttp import BodyPartReader, web
from loguru import logger

from monitor.app import cover_service
from monitor.daemon import Monitor
from monitor.store.base import StoreUnavailable
from processors.book import BookNotFound
from processors.contract import Row
from processors.cover_service import Child, CoverResult, CoverService, MemoryAnalyses
from processors.errors import OrderError, RetryableError
from processors.images import MAX_PHOTO_BYTES, BookImageInvalid, PhotoInvalid

#: Two images of at most MAX_PHOTO_BYTES each, base64-encoded, plus the fields (the Node
#: original allowed 50 MB of JSON).
MAX_BODY_BYTES = 3 * MAX_PHOTO_BYTES
_DATA_URI = re.compile(r"^data:[\w/+.-]+;base64,", re.IGNORECASE)
#: Decoding problems are the request's: 400. Other refusals of the input: 422.
_UNREADABLE = (PhotoInvalid, BookImageInvalid)

RequireAdmin = Callable[[web.Request], None]


def add_cover_routes(app: web.Application, monitor: Monitor, require_admin: RequireAdmin) -> None:
    """Register ``POST /generate-cover`` on the status server's application."""
    app.router.add_post("/generate-cover", _CoverEndpoint(monitor, require_admin).generate)


class BadRequest(Exception):
    """The request is not what the endpoint takes; the message says what is wrong."""


class _CoverEndpoint:
    def __init__(self, monitor: Monitor, require_admin: RequireAdmin) -> None:
        self.monitor = monitor
        self.require_admin = require_admin
        self.slots = monitor.settings.cover_max_concurrent
        self.drawing = 0
        self._service: CoverService | None = None
        self._uploads = MemoryAnalyses()

    async def generate(self, request: web.Request) -> web.Response:
        self.require_admin(request)
        # Counted, not queued: a caller over the limit hears so at once (no await before this).
        if self.drawing >= self.slots:
            raise _error(
                web.HTTPTooManyRequests,
                "too_many_requests",
                f"{self.slots} cover(s) are being drawn by this process; try again shortly",
                headers={"Retry-After": "30"},
            )
        self.drawing += 1
        try:
            return await self._generate(request)
        finally:
            self.drawing -= 1

    async def _generate(self, request: web.Request) -> web.Response:
        service = self._current_service()
        try:
            fields, as_json = await _read(request)
            answer_json = _answer_as_json(request, as_json)
            result = await self._draw(service, fields)
        except BadRequest as exc:
            raise _error(web.HTTPBadRequest, "bad_request", str(exc)) from None
        except StoreUnavailable:
            raise _error(
                web.HTTPServiceUnavailable, "database_unavailable", "the database did not answer"
            ) from None
        except OrderError as exc:
            raise _order_error(exc) from None
        if answer_json:
            return web.json_response(
                {
                    "success": True,
                    "coverImage": base64.b64encode(result.jpeg).decode("ascii"),
                    "mimeType": "image/jpeg",
                    "model": result.model,
                    "needsReview": result.needs_review,
                    "usage": result.usage.as_dict(),
                    "message": "Personalized cover generated successfully",
                },
                headers={"Cache-Control": "no-store"},
            )
        return web.Response(body=result.jpeg, content_type="image/jpeg", headers=_headers(result))

    def _current_service(self) -> CoverService:
        """The service over the daemon's processor as it is now: 503 while there is none (still
        starting, a custom processor) or it has no usable model."""
        processor = self.monitor.processor
        if self._service is None or self._service.processor is not processor:
            self._service = cover_service(processor, self._uploads)
        if self._service is None:
            raise _error(
                web.HTTPServiceUnavailable,
                "ai_not_ready",
                "no cover can be drawn now: the book processor is not running here",
            )
        if self._service.processor.ready_problem is not None:
            raise _error(
                web.HTTPServiceUnavailable,
                "ai_not_ready",
                f"no cover can be drawn now: {self._service.processor.ready_problem}",
            )
        return self._service

    async def _draw(self, service: CoverService, fields: dict[str, Any]) -> CoverResult:
        child = Child(
            photo=_image(fields, "childImage"),
            name=fields.get("childName"),
            age=fields.get("childAge"),
            gender=fields.get("childGender"),
        )
        book_id, cover = fields.get("bookId"), fields.get("originalCoverImage")
        if (book_id is None) == (cover is None):
            raise BadRequest("send either originalCoverImage or bookId")
        if book_id is not None:
            try:
                book_id = str(uuid.UUID(str(book_id)))
            except ValueError:
                raise BadRequest("bookId is a UUID") from None
            book = await self.monitor.store.catalog_book(book_id)
            if book is None:
                raise BookNotFound(f"book {book_id} is not in the catalog")
            return await service.from_catalog(book, child, self.monitor.store)
        description = {"title": fields.get("bookTitle"), "genre": fields.get("bookGenre")}
        return await service.from_upload(_image(fields, "originalCoverImage"), child, description)


async def _read(request: web.Request) -> tuple[dict[str, Any], bool]:
    """The request's fields in one vocabulary (the multipart names), and whether it was JSON.

    Bodies are read in chunks up to MAX_BODY_BYTES, so an oversized upload costs no more."""
    if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
        raise BadRequest(f"the body is over {MAX_BODY_BYTES} bytes")
    if request.content_type == "multipart/form-data":
        return await _read_multipart(request), False
    if request.content_type != "application/json":
        raise BadRequest("send application/json or multipart/form-data")
    body = await _capped(request.content.read)
    try:
        document = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise BadRequest("the body is not JSON") from None
    if not isinstance(document, dict):
        raise BadRequest("the body is a JSON object")
    child = document.get("childData") or {}
    book = document.get("bookData") or {}
    if not isinstance(child, dict) or not isinstance(book, dict):
        raise BadRequest("childData and bookData are JSON objects")
    fields = {
        "childImage": document.get("childImage"),
        "originalCoverImage": document.get("originalCoverImage"),
        "bookId": document.get("bookId"),
        "childName": child.get("name"),
        "childAge": child.get("age"),
        "childGender": child.get("gender"),
        "bookTitle": book.get("title") or book.get("name"),
        "bookGenre": book.get("genre"),
    }
    for name in ("childImage", "originalCoverImage"):
        if fields[name] is not None:
            fields[name] = _base64(fields[name], name)
    return {k: v for k, v in fields.items() if v is not None}, True


async def _read_multipart(request: web.Request) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    total = 0
    reader = await request.multipart()
    while (part := await reader.next()) is not None:
        if not isinstance(part, BodyPartReader) or not part.name:
            raise BadRequest("nested multipart bodies are not taken")
        data = await _capped(part.read_chunk, MAX_BODY_BYTES - total)
        total += len(data)
        if part.name in ("childImage", "originalCoverImage"):
            fields[part.name] = data
        else:
            try:
                fields[part.name] = data.decode("utf-8")
            except UnicodeDecodeError:
                raise BadRequest(f"{part.name} is not UTF-8 text") from None
    return fields


async def _capped(read: Callable[[int], Any], limit: int = MAX_BODY_BYTES) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while chunk := await read(65536):
        size += len(chunk)
        if size > limit:
            raise BadRequest(f"the body is over {MAX_BODY_BYTES} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _base64(value: object, name: str) -> bytes:
    """Standard or URL-safe base64 (the Node original's clients send either), or a data: URI."""
    if not isinstance(value, str):
        raise BadRequest(f"{name} is a base64 string")
    text = _DATA_URI.sub("", value.strip()).replace("-", "+").replace("_", "/")
    try:
        return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise BadRequest(f"{name} is not valid base64") from None


def _image(fields: dict[str, Any], name: str) -> bytes:
    data = fields.get(name)
    if not data:
        raise BadRequest(f"{name} is required")
    assert isinstance(data, bytes)
    return data


def _answer_as_json(request: web.Request, request_was_json: bool) -> bool:
    wanted = request.query.get("format")
    if wanted is None:
        return request_was_json
    if wanted not in ("json", "jpeg"):
        raise BadRequest("format is json or jpeg")
    return wanted == "json"


def _headers(result: CoverResult) -> dict[str, str]:
    return {
        "Cache-Control": "no-store",
        "X-Cover-Model": result.model,
        "X-Cover-Needs-Review": "true" if result.needs_review else "false",
        "X-AI-Usage": json.dumps(result.usage.as_dict(), separators=(",", ":")),
    }


def _order_error(exc: OrderError) -> web.HTTPException:
    """The error's code and its parent-facing sentence (never its detail, which is for logs)."""
    logger.info("cover not generated", error_code=exc.code, error=exc.detail)
    if isinstance(exc, RetryableError):
        headers = {"Retry-After": str(round(exc.retry_after))} if exc.retry_after else {}
        return _error(web.HTTPServiceUnavailable, exc.code, exc.parent_message, headers=headers)
    if isinstance(exc, BookNotFound):
        return _error(web.HTTPNotFound, exc.code, "no book in the catalog has this bookId")
    status = web.HTTPBadRequest if isinstance(exc, _UNREADABLE) else web.HTTPUnprocessableEntity
    return _error(status, exc.code, exc.final_message)


def _error(
    status: type[web.HTTPException], code: str, message: str, **kwargs: Any
) -> web.HTTPException:
    """The status server's error shape (monitor/server.py), with the Node original's flag."""
    body: Row = {"success": False, "error": code, "message": message}
    return status(text=json.dumps(body), content_type="application/json", **kwargs)
