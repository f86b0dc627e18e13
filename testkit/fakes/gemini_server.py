"""A local stand-in for the Gemini API, speaking generateContent to the real google-genai client.

It serves ``POST /{v1|v1beta}/models/{model}:generateContent`` and
``GET /{v1|v1beta}/models/{model}`` on an ephemeral port of 127.0.0.1, in the wire format of
generativelanguage.googleapis.com: camelCase JSON, base64 image bytes (the SDK sends the URL-safe
alphabet; both are accepted), the ``x-goog-api-key`` header, and
``{"error": {code, message, status, details}}`` bodies.

Use::

    async with FakeGemini() as fake:
        ai = GeminiAI(fake.api_key, analysis_model=fake.ANALYSIS_MODEL,
                      image_models=[fake.IMAGE_MODEL], base_url=fake.base_url)
        fake.enqueue(rate_limited("1s"), unavailable())   # the next two requests fail
        ...
        fake.requests[-1].images                           # what the client sent

Each generateContent request is answered by the next queued behaviour, or by ``fake.default``
when the queue is empty. A behaviour is any ``async (fake, request) -> web.Response``; the
functions below build the usual ones, and ``delayed`` wraps any of them, so a latency model can
be installed as ``fake.default`` without touching the selection logic.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import copy
import json
import math
from collections import Counter, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import lru_cache
from io import BytesIO
from typing import Any

from aiohttp import web
from PIL import Image, ImageChops, ImageOps

from testkit.fakes.base import LocalServer

Behaviour = Callable[["FakeGemini", "RecordedRequest"], Awaitable[web.Response]]
ImageMaker = Callable[["RecordedRequest"], tuple[bytes, str]]

# Per-model behaviour, as the Gemini API documents it (read 2026-12-01). The fake does not import
# the project's own catalog (processors/ai/models.py): it is the service, the catalog our guess.
#
# - Aspect ratios and imageSize per model: https://ai.google.dev/gemini-api/docs/image-generation
#   ("Aspect ratios and image size") and the ImageConfig reference
#   https://ai.google.dev/api/generate-content#ImageConfig. Gemini 3.1 Flash Image adds the
#   1:4, 4:1, 1:8, 8:1 ratios to Gemini 3 Pro Image's ten ratios; both take 1K/2K/4K (its 512
#   tier is spelled differently by different sources, so the fake leaves it out);
#   gemini-2.5-flash-image has the ten ratios and takes no imageSize.
# - Shut-down models: https://ai.google.dev/gemini-api/docs/deprecations ("Once a model is shut
#   down, it is completely turned off, and the endpoint is no longer available"): both
#   models.get and generateContent answer 404 NOT_FOUND.
TEN_RATIOS = frozenset({"1:1", "2:3", "3:2", "3:4", "4:3", "4:5", "5:4", "9:16", "16:9", "21:9"})
FOURTEEN_RATIOS = TEN_RATIOS | {"1:4", "4:1", "1:8", "8:1"}


@dataclass(frozen=True)
class ModelSpec:
    """What one model accepts in ``generationConfig.imageConfig``; ``sizes`` empty: no imageSize."""

    ratios: frozenset[str] = TEN_RATIOS
    sizes: frozenset[str] = frozenset()


MODEL_SPECS: dict[str, ModelSpec] = {
    "gemini-3.5-flash": ModelSpec(),
    "gemini-3.1-flash-image": ModelSpec(FOURTEEN_RATIOS, frozenset({"1K", "2K", "4K"})),
    "gemini-3-pro-image": ModelSpec(TEN_RATIOS, frozenset({"1K", "2K", "4K"})),
    # Shut down on October 2, 2026 (so not served by default); a test that needs a model that
    # takes no imageSize serves it again with ``fake.models.add``.
    "gemini-2.5-flash-image": ModelSpec(TEN_RATIOS, frozenset()),
}
# Shut down per the deprecations page: 404 on models.get and generateContent.
RETIRED_MODELS = frozenset(
    {
        "gemini-2.5-flash",
        "gemini-2.5-pro",
        "gemini-2.5-flash-image",
        "gemini-3-pro-image-preview",
        "gemini-3.1-flash-image-preview",
    }
)
_REPLY_LONG_SIDE = 256
_RETRY_INFO_TYPE = "type.googleapis.com/google.rpc.RetryInfo"
_ERROR_INFO_TYPE = "type.googleapis.com/google.rpc.ErrorInfo"

DEFAULT_ANALYSIS_JSON: dict[str, dict[str, Any]] = {
    "cover": {
        "art_style": "soft watercolor picture book",
        "medium": "watercolor",
        "palette": ["#f2c14e", "#5b8e7d", "#f78154"],
        "line_work": "thin brown ink",
        "lighting": "warm morning light from the left",
        "composition": "hero centered, title at the top",
        "main_character": "a girl in a yellow raincoat",
        "character_position": "center, lower half",
        "mood": "cheerful",
    },
    "child": {
        "face_count": 1,
        "apparent_age": 6,
        "hair": "short curly brown hair",
        "eyes": "brown, round",
        "skin_tone": "light olive",
        "glasses": False,
        "distinctive_features": ["freckles"],
        "photo_issues": [],
    },
    # The quality judge (processors/qa.py): a passing verdict.
    "judge": {
        "hero_present": True,
        "likeness_score": 8.5,
        "hero_count": 1,
        "extra_limbs_or_faces": False,
        "text_garbled": False,
        "scene_kept": True,
        "problems": [],
        "notes": "",
    },
}


@dataclass(frozen=True)
class RecordedPart:
    """One part of a request: either text or a decoded inline image."""

    text: str | None = None
    data: bytes | None = None
    mime_type: str | None = None


@dataclass
class RecordedRequest:
    api_version: str
    model: str
    action: str  # "generateContent" or "get"
    parts: list[RecordedPart] = field(default_factory=list)
    generation_config: dict[str, Any] = field(default_factory=dict)
    status: int | None = None  # the HTTP status the fake answered with

    @property
    def texts(self) -> list[str]:
        return [p.text for p in self.parts if p.text is not None]

    @property
    def images(self) -> list[bytes]:
        return [p.data for p in self.parts if p.data is not None]

    @property
    def schema_kind(self) -> str | None:
        """The analysis kind, ``cover``, ``child`` or ``judge``, told by the responseSchema's
        properties."""
        properties = self.generation_config.get("responseSchema", {}).get("properties", {})
        if "face_count" in properties:
            return "child"
        if "likeness_score" in properties:
            return "judge"
        if "art_style" in properties:
            return "cover"
        return None

    @property
    def aspect_ratio(self) -> str | None:
        ratio: str | None = self.generation_config.get("imageConfig", {}).get("aspectRatio")
        return ratio

    @property
    def image_size(self) -> str | None:
        size: str | None = self.generation_config.get("imageConfig", {}).get("imageSize")
        return size


class FakeGemini(LocalServer):
    """The fake server: programmable replies, recorded requests, in-flight counters."""

    ANALYSIS_MODEL = "gemini-3.5-flash"
    IMAGE_MODEL = "gemini-3.1-flash-image"
    SECOND_IMAGE_MODEL = "gemini-3-pro-image"
    NO_SIZE_IMAGE_MODEL = "gemini-2.5-flash-image"

    def __init__(self, *, api_key: str = "fake-api-key-0123456789") -> None:
        self.api_key = api_key
        #: The models served now; any other name answers 404 NOT_FOUND.
        self.models: set[str] = set(MODEL_SPECS) - RETIRED_MODELS
        self.analysis_json: dict[str, dict[str, Any] | str] = {
            kind: copy.deepcopy(answer) for kind, answer in DEFAULT_ANALYSIS_JSON.items()
        }
        self.image_maker: ImageMaker = tinted_copy
        self.default: Behaviour = succeed()
        self.requests: list[RecordedRequest] = []
        self.statuses: Counter[int] = Counter()
        self.in_flight = 0
        self.peak_in_flight = 0
        self._queue: deque[Behaviour] = deque()
        self._stopping = asyncio.Event()

    def enqueue(self, *behaviours: Behaviour) -> None:
        """Answer the next generateContent requests with ``behaviours``, in order.

        Requests the real API would reject first (wrong key, unknown model, bad image settings)
        are answered so without using up a queued behaviour.
        """
        self._queue.extend(behaviours)

    def retire(self, model: str) -> None:
        """Shut ``model`` down as Google does: 404 on models.get and generateContent from now."""
        self.models.discard(model)

    def answered(self, requests: list[RecordedRequest] | None = None) -> list[RecordedRequest]:
        """generateContent requests answered 200: the calls Google bills (pricing page: errors
        are not charged, https://ai.google.dev/gemini-api/docs/pricing)."""
        return [
            r
            for r in (self.requests if requests is None else requests)
            if r.action == "generateContent" and r.status == 200
        ]

    def generate_requests(self, model: str | None = None) -> list[RecordedRequest]:
        return [
            r
            for r in self.requests
            if r.action == "generateContent" and (model is None or r.model == model)
        ]

    async def sleep(self, seconds: float) -> None:
        """Wait, but end early when the server stops, so slow replies never hold up teardown."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)

    @property
    def base_url(self) -> str:
        return self.url

    def build_app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/{version:v1|v1beta}/models/{target}", self._generate_content)
        app.router.add_get("/{version:v1|v1beta}/models/{model}", self._get_model)
        return app

    async def stop(self) -> None:
        self._stopping.set()
        await super().stop()

    async def _get_model(self, request: web.Request) -> web.Response:
        """models.get: the Model resource, or 404 NOT_FOUND for a name not served
        (https://ai.google.dev/api/models#method:-models.get)."""
        version, model = request.match_info["version"], request.match_info["model"]
        recorded = RecordedRequest(api_version=version, model=model, action="get")
        self.requests.append(recorded)
        response = self._auth_error(request) or (
            web.json_response({"name": f"models/{model}", "displayName": model})
            if model in self.models
            else error_response(
                404, "NOT_FOUND", f"Model is not found: models/{model} for api version {version}"
            )
        )
        recorded.status = response.status
        return response

    async def _generate_content(self, request: web.Request) -> web.Response:
        version = request.match_info["version"]
        model, _, action = request.match_info["target"].partition(":")
        body = await request.json()
        recorded = RecordedRequest(
            api_version=version,
            model=model,
            action=action,
            parts=[_recorded_part(p) for c in body.get("contents", []) for p in c.get("parts", [])],
            generation_config=_camel_config(body.get("generationConfig", {})),
        )
        self.requests.append(recorded)
        self.in_flight += 1
        self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
        try:
            response = self._auth_error(request) or self._request_error(recorded)
            if response is None:
                behaviour = self._queue.popleft() if self._queue else self.default
                response = await behaviour(self, recorded)
        finally:
            self.in_flight -= 1
        recorded.status = response.status
        self.statuses[response.status] += 1
        return response

    def _auth_error(self, request: web.Request) -> web.Response | None:
        """No key: 403 PERMISSION_DENIED; a wrong key: 400 INVALID_ARGUMENT with ErrorInfo
        reason API_KEY_INVALID (troubleshooting guide, https://ai.google.dev/gemini-api/docs/troubleshooting;
        the header is the SDK's, google/genai/_api_client.py ``x-goog-api-key``)."""
        key = request.headers.get("x-goog-api-key")
        if key is None:
            return error_response(
                403, "PERMISSION_DENIED", "Method doesn't allow unregistered callers."
            )
        if key != self.api_key:
            return error_response(
                400,
                "INVALID_ARGUMENT",
                "API key not valid. Please pass a valid API key.",
                [{"@type": _ERROR_INFO_TYPE, "reason": "API_KEY_INVALID"}],
            )
        return None

    def _request_error(self, request: RecordedRequest) -> web.Response | None:
        """What the real API rejects before generating: unknown models and bad image settings."""
        if request.action != "generateContent":
            return error_response(404, "NOT_FOUND", f"Unknown method {request.action!r}.")
        if request.model not in self.models:
            return error_response(
                404,
                "NOT_FOUND",
                f"models/{request.model} is not found for API version {request.api_version}, "
                "or is not supported for generateContent.",
            )
        image_config = request.generation_config.get("imageConfig")
        if image_config is None:
            return None
        spec = MODEL_SPECS.get(request.model, ModelSpec())
        # An unsupported value of an enum-like field is 400 INVALID_ARGUMENT, before any
        # generation (API troubleshooting guide, https://ai.google.dev/gemini-api/docs/troubleshooting).
        ratio = image_config.get("aspectRatio")
        if ratio is not None and ratio not in spec.ratios:
            return error_response(
                400,
                "INVALID_ARGUMENT",
                f"Aspect ratio {ratio} is not supported by {request.model}.",
            )
        size = image_config.get("imageSize")
        if size is not None and size not in spec.sizes:
            return error_response(
                400, "INVALID_ARGUMENT", f"Image size {size} is not supported by {request.model}."
            )
        return None


# --- replies -------------------------------------------------------------------------------


def error_response(
    code: int, status: str, message: str, details: list[dict[str, Any]] | None = None
) -> web.Response:
    """The google.rpc.Status error body the API answers with
    (https://cloud.google.com/apis/design/errors#http_mapping)."""
    error: dict[str, Any] = {"code": code, "message": message, "status": status}
    if details:
        error["details"] = details
    return web.json_response({"error": error}, status=code)


def candidate_response(
    parts: list[dict[str, Any]] | None, finish_reason: str = "STOP"
) -> web.Response:
    """A 200 reply with one candidate; ``parts=None`` leaves the content out, as blocks do.

    Shape of GenerateContentResponse (https://ai.google.dev/api/generate-content#v1beta.GenerateContentResponse);
    usageMetadata counts thinking separately (thoughtsTokenCount), and an output image costs
    1120 tokens at 1K-2K (pricing page, image output).
    """
    candidate: dict[str, Any] = {"finishReason": finish_reason, "index": 0}
    if parts is not None:
        candidate["content"] = {"role": "model", "parts": parts}
    return web.json_response(
        {
            "candidates": [candidate],
            "usageMetadata": {
                "promptTokenCount": 1290,
                "candidatesTokenCount": 1120,
                "thoughtsTokenCount": 30,
                "totalTokenCount": 2440,
            },
            "modelVersion": "fake",
        }
    )


def image_part(data: bytes, mime_type: str, *, thought: bool = False) -> dict[str, Any]:
    part: dict[str, Any] = {
        "inlineData": {"mimeType": mime_type, "data": base64.b64encode(data).decode("ascii")}
    }
    if thought:
        part["thought"] = True
    return part


def answer_parts(fake: FakeGemini, request: RecordedRequest) -> list[dict[str, Any]]:
    """What a healthy model answers: schema-valid JSON for analyses, ``fake.image_maker`` else.

    An analysis schema the fake has no JSON for is a mistake in the test: it raises, so the
    server answers 500 and logs which schema it was.
    """
    if request.generation_config.get("responseMimeType") == "application/json":
        kind = request.schema_kind
        if kind is None or kind not in fake.analysis_json:
            raise LookupError(f"the fake has no analysis JSON for schema kind {kind!r}")
        answer = fake.analysis_json[kind]
        return [{"text": answer if isinstance(answer, str) else json.dumps(answer)}]
    data, mime_type = fake.image_maker(request)
    return [image_part(data, mime_type)]


def succeed() -> Behaviour:
    async def reply(fake: FakeGemini, request: RecordedRequest) -> web.Response:
        return candidate_response(answer_parts(fake, request))

    return reply


def with_thoughts(*, final: bool = True) -> Behaviour:
    """A thinking model: a thought text and a draft image, then the answer (unless not final).

    Gemini 3 image models send interim "thought" images before the final one
    (image-generation page, "Thinking process"; ``Part.thought`` in the API reference).
    """

    async def reply(fake: FakeGemini, request: RecordedRequest) -> web.Response:
        thoughts = [
            {"text": "Planning the composition.", "thought": True},
            image_part(fake.image_maker(request)[0], "image/jpeg", thought=True),
        ]
        return candidate_response(thoughts + (answer_parts(fake, request) if final else []))

    return reply


def http_error(
    code: int, status: str, message: str, details: list[dict[str, Any]] | None = None
) -> Behaviour:
    async def reply(fake: FakeGemini, request: RecordedRequest) -> web.Response:
        return error_response(code, status, message, details)

    return reply


def rate_limited(retry_delay: str = "2s") -> Behaviour:
    """429 as Gemini sends it, with a QuotaFailure and the RetryInfo delay (a Duration string):
    https://ai.google.dev/gemini-api/docs/rate-limits and the google.rpc error model
    (https://cloud.google.com/apis/design/errors#error_details)."""
    return http_error(
        429,
        "RESOURCE_EXHAUSTED",
        "You exceeded your current quota, please check your plan and billing details.",
        [
            {
                "@type": "type.googleapis.com/google.rpc.QuotaFailure",
                "violations": [{"quotaMetric": "generate_content_requests", "quotaValue": "10"}],
            },
            {"@type": _RETRY_INFO_TYPE, "retryDelay": retry_delay},
        ],
    )


def unavailable() -> Behaviour:
    """503 UNAVAILABLE "The model is overloaded" (troubleshooting guide, error codes table)."""
    return http_error(503, "UNAVAILABLE", "The model is overloaded. Please try again later.")


def delayed(seconds: float, then: Behaviour | None = None) -> Behaviour:
    """Answer like ``then`` (default: success) after ``seconds``: for timeouts and latency.

    The API sets no deadline of its own on a generation; bounding it is the client's job
    (google-genai ``types.HttpOptions.timeout``)."""
    inner = then or succeed()

    async def reply(fake: FakeGemini, request: RecordedRequest) -> web.Response:
        await fake.sleep(seconds)
        return await inner(fake, request)

    return reply


def finish_reason(reason: str) -> Behaviour:
    """A candidate that stopped for ``reason`` (IMAGE_SAFETY, NO_IMAGE...) without content.

    The reasons are the FinishReason enum of the API reference
    (https://ai.google.dev/api/generate-content#FinishReason) and of google-genai's
    ``types.FinishReason`` (3.6.1), which also lists IMAGE_RECITATION and PUP_LIMITED_DISABLED.
    """

    async def reply(fake: FakeGemini, request: RecordedRequest) -> web.Response:
        return candidate_response(None, reason)

    return reply


def prompt_blocked(reason: str = "SAFETY") -> Behaviour:
    """promptFeedback.blockReason without candidates (API reference, PromptFeedback; values of
    google-genai ``types.BlockedReason``). The prompt's tokens are still reported, and billed."""

    async def reply(fake: FakeGemini, request: RecordedRequest) -> web.Response:
        return web.json_response(
            {
                "promptFeedback": {"blockReason": reason},
                "usageMetadata": {"promptTokenCount": 1290, "totalTokenCount": 1290},
            }
        )

    return reply


def text_only(text: str = "I can't draw that, but here is a description instead.") -> Behaviour:
    """An image model answering text only: image-generation page, "Limitations" (the model may
    answer with text instead of an image)."""

    async def reply(fake: FakeGemini, request: RecordedRequest) -> web.Response:
        return candidate_response([{"text": text}])

    return reply


def malformed_json(text: str = '{"art_style": "watercolor", "palette": [') -> Behaviour:
    """JSON cut off mid-way, as a reply stopped early can be (structured-output page:
    "validate the output"; FinishReason MAX_TOKENS in the API reference)."""

    async def reply(fake: FakeGemini, request: RecordedRequest) -> web.Response:
        return candidate_response([{"text": text}])

    return reply


def wrong_aspect_ratio(ratio: str | None = None) -> Behaviour:
    """A good-looking redraw (the first input, tinted) of the wrong shape: ``ratio`` when given,
    else the requested sides swapped (16:9 for a square). The docs promise the requested ratio
    only approximately ("Gemini may not always follow it", image-generation page, "Aspect
    ratios"); in practice a model sometimes answers a quite different shape."""

    async def reply(fake: FakeGemini, request: RecordedRequest) -> web.Response:
        if ratio is not None:
            size = reply_size(ratio)
        else:
            width, height = reply_size(request.aspect_ratio)
            size = (height, width) if width != height else reply_size("16:9")
        if request.images:
            with Image.open(BytesIO(request.images[0])) as source:
                fitted = ImageOps.fit(source.convert("RGB"), size)
            picture = Image.blend(fitted, Image.new("RGB", size, (0, 120, 255)), 0.35)
        else:
            picture = Image.new("RGB", size, (200, 60, 60))
        return candidate_response([image_part(_jpeg(picture), "image/jpeg")])

    return reply


# Descriptive fields in the shapes models drift into when the responseSchema is only a hint
# (structured-output page, https://ai.google.dev/gemini-api/docs/structured-output: "the model
# may not always follow the schema exactly"; validate the output): a string for a list, an
# object for a string, a list for a string, fields missing, an extra field.
DRIFTED_ANALYSIS_JSON: dict[str, dict[str, Any]] = {
    "cover": {
        "art_style": {"style": "watercolor", "era": "modern picture book"},
        "palette": "#f2c14e, #5b8e7d",
        "lighting": ["warm", "from the left"],
        "main_character": "a girl in a yellow raincoat",
        "notes": "extra field the schema does not have",
    },
    "child": {
        "face_count": 1,
        "apparent_age": "about 6",
        "hair": {"color": "brown", "length": "short", "style": "curly"},
        "glasses": "no",
        "distinctive_features": "freckles",
        "photo_issues": None,
    },
}


def drifting_analysis() -> Behaviour:
    """An analysis reply whose descriptive fields drift in shape (``DRIFTED_ANALYSIS_JSON``)."""

    async def reply(fake: FakeGemini, request: RecordedRequest) -> web.Response:
        kind = request.schema_kind
        if kind is None:
            return await succeed()(fake, request)
        return candidate_response([{"text": json.dumps(DRIFTED_ANALYSIS_JSON[kind])}])

    return reply


def judge_verdict(**fields: Any) -> Behaviour:
    """A quality-judge reply (``DEFAULT_ANALYSIS_JSON["judge"]`` with ``fields`` changed), e.g.
    ``judge_verdict(likeness_score=2)`` for a low score.

    Imitates a structured-output answer: with ``responseMimeType: application/json`` and a
    ``responseSchema`` the model's reply is one text part holding the JSON object
    (https://ai.google.dev/gemini-api/docs/structured-output, read 2026-12-01: "the response
    ... will be a JSON string that conforms to the schema", in ``candidates[0].content.parts[0]
    .text``). Used on a request that is not a judge call, it is a mistake in the test: 500.
    """

    async def reply(fake: FakeGemini, request: RecordedRequest) -> web.Response:
        if request.schema_kind != "judge":
            raise LookupError(f"judge_verdict answered a {request.schema_kind!r} request")
        verdict = {**copy.deepcopy(fake.analysis_json["judge"]), **fields}  # type: ignore[dict-item]
        return candidate_response([{"text": json.dumps(verdict)}])

    return reply


def hang() -> Behaviour:
    """Never answer (until the server stops): a call stuck on Google's side. The request's
    ``status`` stays None, so it is never counted as answered."""

    async def reply(fake: FakeGemini, request: RecordedRequest) -> web.Response:
        await fake.sleep(3600)
        return error_response(503, "UNAVAILABLE", "The server is shutting down.")

    return reply


# --- images --------------------------------------------------------------------------------


# The pixels a real reply has per imageSize: "Supported values are 1K, 2K, 4K. If not specified,
# the model will use default value 1K" (ImageConfig in the SDK reference,
# https://googleapis.github.io/js-genai/release_docs/interfaces/types.ImageConfig.html, read
# 2026-12-03), and the image-generation page's "Aspect ratios and image size" table gives each
# size about the same megapixels at every ratio: 1:1 is 1024, 2048 and 4096 px square, 3:4 at
# 4K 3584 x 4800 (https://ai.google.dev/gemini-api/docs/image-generation, as transcribed by
# third parties; the page itself is not reachable from here). The fake keeps the megapixels at
# the exact ratio, in multiples of 16 px, rather than copy anyone's table.
_SIZE_SIDE = {"1K": 1024, "2K": 2048, "4K": 4096}


def requested_pixels(request: RecordedRequest) -> tuple[int, int]:
    """The (width, height) the real model's reply to ``request`` has: its imageSize (1K when
    none) at its aspect ratio (1:1 when none)."""
    side = _SIZE_SIDE.get(request.image_size or "1K", _SIZE_SIDE["1K"])
    w, h = (int(part) for part in (request.aspect_ratio or "1:1").split(":"))
    root = math.sqrt(w / h)
    return 16 * round(side * root / 16), 16 * round(side / root / 16)


def reply_size(aspect_ratio: str | None) -> tuple[int, int]:
    """A small image size with exactly the requested ratio, long side ``_REPLY_LONG_SIDE``: the
    tests' default, which keeps a suite of thousands of image calls fast; ``requested_pixels``
    is what the real service answers, for the benchmark."""
    w, h = (int(side) for side in (aspect_ratio or "1:1").split(":"))
    if w >= h:
        return _REPLY_LONG_SIDE, round(_REPLY_LONG_SIDE * h / w)
    return round(_REPLY_LONG_SIDE * w / h), _REPLY_LONG_SIDE


def tinted_copy(request: RecordedRequest) -> tuple[bytes, str]:
    """The first input image, fitted to the requested ratio and tinted: deterministic, traceable."""
    size = reply_size(request.aspect_ratio)
    if not request.images:
        return solid_jpeg(size, (128, 128, 128)), "image/jpeg"
    with Image.open(BytesIO(request.images[0])) as source:
        fitted = ImageOps.fit(source.convert("RGB"), size)
    tinted = Image.blend(fitted, Image.new("RGB", size, (255, 180, 0)), 0.3)
    return _jpeg(tinted), "image/jpeg"


def full_size_copy(request: RecordedRequest) -> tuple[bytes, str]:
    """``tinted_copy`` at the pixels the real model answers with (``requested_pixels``), encoded
    as the real model encodes (``like_a_reply``): 4K is 16 megapixels and about 6 MB, so only a
    test about the size pays for it."""
    data, mime_type = tinted_copy(request)
    with Image.open(BytesIO(data)) as small:
        return like_a_reply(small.convert("RGB").resize(requested_pixels(request))), mime_type


# What a real reply weighs: gemini-3.1-flash-image-preview answers "mime=image/jpeg,
# bytes=3667955", JPEG "with very high quality (likely close to 100)"
# (https://github.com/googleapis/python-genai/issues/2346, 2026-04-27), and a 4K 16:9 picture
# of gemini-3-pro-image-preview was 7.8 MB (https://github.com/Chevey339/kelivo/issues/161,
# 2025-12-08). A scaled-up tinted copy is smooth and would encode to a tenth of that (423 KB at
# 4096 px), so the client would decode and carry far less than in production. Grain of sigma
# 6 at quality 95 gives 0.36 bytes a pixel: 6.1 MB at 4096 px square, between the two reports.
_REPLY_GRAIN_SIGMA = 6
_REPLY_QUALITY = 95


def like_a_reply(image: Image.Image) -> bytes:
    """``image`` (RGB) as the real image model's JPEG of its size: its detail (grain) and its
    quality, so its bytes and its decode cost are a real reply's."""
    grained = ImageChops.add(image, _grain(image.size), 1.0, -128)
    buffer = BytesIO()
    grained.save(buffer, "JPEG", quality=_REPLY_QUALITY)
    return buffer.getvalue()


@lru_cache(maxsize=2)
def _grain(size: tuple[int, int]) -> Image.Image:
    """Gaussian grain around 128 per channel (one noise field, turned, for each): made once per
    size, as it takes longer than the encode."""
    noise = Image.effect_noise(size, _REPLY_GRAIN_SIGMA)
    turned = noise.transpose(Image.Transpose.ROTATE_180)
    mirrored = noise.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return Image.merge("RGB", (noise, turned, mirrored))


def solid_jpeg(size: tuple[int, int], color: tuple[int, int, int]) -> bytes:
    return _jpeg(Image.new("RGB", size, color))


def _jpeg(image: Image.Image) -> bytes:
    buffer = BytesIO()
    image.save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(word.title() for word in rest)


def _camel_config(config: dict[str, Any]) -> dict[str, Any]:
    """generationConfig with its own and imageConfig's field names in lowerCamelCase.

    The API parses proto3 JSON, whose parsers "accept both the lowerCamelCase name and the
    original proto field name" (https://protobuf.dev/programming-guides/json/); older SDKs
    (google-genai 1.49) send ``image_config.aspect_ratio`` in snake_case. The schema's own
    property names (``face_count``) are data, not field names, and are left alone.
    """
    out = {_camel(k): v for k, v in config.items()}
    if isinstance(out.get("imageConfig"), dict):
        out["imageConfig"] = {_camel(k): v for k, v in out["imageConfig"].items()}
    return out


def _recorded_part(part: dict[str, Any]) -> RecordedPart:
    inline = part.get("inlineData") or part.get("inline_data")
    if inline is None:
        return RecordedPart(text=part.get("text"))
    return RecordedPart(
        data=decode_base64(inline["data"]),
        mime_type=inline.get("mimeType") or inline.get("mime_type"),
    )


def decode_base64(text: str) -> bytes:
    """Decode either base64 alphabet (standard or URL-safe), as the real API accepts both
    (proto3 JSON bytes fields, https://protobuf.dev/programming-guides/json/; google-genai
    sends URL-safe, google/genai/_common.py ``encode_unserializable_types``)."""
    normalized = text.replace("-", "+").replace("_", "/")
    try:
        return base64.b64decode(normalized + "=" * (-len(normalized) % 4), validate=True)
    except binascii.Error as err:
        error = {"code": 400, "message": f"Invalid base64: {err}", "status": "INVALID_ARGUMENT"}
        raise web.HTTPBadRequest(
            text=json.dumps({"error": error}), content_type="application/json"
        ) from err
