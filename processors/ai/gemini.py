"""The ``gemini`` adapter of the image-AI port, on google-genai's async client.

Every failure leaves this module classified (docs/architecture.md, "Error classes"):

==================================================  =========================================
what Gemini did                                      raised
==================================================  =========================================
HTTP 429 RESOURCE_EXHAUSTED                          AIUnavailable ``ai_rate_limited``,
                                                     ``retry_after`` from google.rpc.RetryInfo
HTTP 408, 5xx; client timeout; connection failure    AIUnavailable (``ai_timeout`` for timeouts)
HTTP 401, 403, 400 API_KEY_INVALID or                AIConfigError ``ai_config_error``
FAILED_PRECONDITION, 404 on the last model
other HTTP 4xx (INVALID_ARGUMENT...)                 TerminalError ``ai_invalid_request``
promptFeedback.blockReason (any)                     ContentBlocked
finishReason SAFETY, PROHIBITED_CONTENT, BLOCKLIST,  ContentBlocked
SPII, IMAGE_SAFETY, IMAGE_PROHIBITED_CONTENT
finishReason RECITATION, IMAGE_RECITATION            AIRecitation (terminal: it repeats)
finishReason PUP_LIMITED_DISABLED                    AIConfigError (the account is limited)
no image (NO_IMAGE, IMAGE_OTHER, OTHER, text only),  AIBadResponse
undecodable image, analysis JSON that cannot be used
==================================================  =========================================

The finish reasons are those of google-genai's ``types.FinishReason`` (3.6.1, checked
2026-12-01); PUP_LIMITED_DISABLED means "the user account is limited or disabled due to
Prohibited Use Policy violations", an account state no retry of the order can fix.

Image models are tried in order: the next one is used when a model answers 404 NOT_FOUND or
503 UNAVAILABLE (overloaded). A model that answered 404 is skipped for the rest of the process,
so a shut-down primary costs one request, not one per call. A 429 does not move on: rate
limits are handled by pacing and backoff (``limits.py``), and switching models on every 429
would mix drawing styles within one book for no gain. Each request carries only the image
settings its model accepts (``processors.ai.models``).

Usage is added to the caller's sink as soon as Google answers (``Usage``), and a call cut off
by the timeout or a cancellation counts as ``unanswered``.

The SDK's own retries are switched off (``attempts=1``) so that ``LimitedAI`` alone decides
when to retry, and SDK exceptions are never chained into ours: they hold the HTTP request,
whose headers carry the API key.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Callable, Iterator, Sequence
from io import BytesIO
from typing import Any

import aiohttp
from google import genai
from google.genai import errors as genai_errors
from google.genai import types
from loguru import logger
from PIL import Image, UnidentifiedImageError
from pydantic import ValidationError

from processors.ai import models as catalog
from processors.ai.base import (
    AIBadResponse,
    AIConfigError,
    AIRecitation,
    AIUnavailable,
    Analysis,
    ContentBlocked,
    EditRequest,
    GeneratedImage,
    ImagePart,
    ModelT,
    NoUsableModel,
    Usage,
    ratio_of,
)
from processors.errors import OrderError, TerminalError

_BLOCKING_FINISH_REASONS = frozenset(
    {
        "SAFETY",
        "PROHIBITED_CONTENT",
        "BLOCKLIST",
        "SPII",
        "IMAGE_SAFETY",
        "IMAGE_PROHIBITED_CONTENT",
    }
)
_RECITATION_FINISH_REASONS = frozenset({"RECITATION", "IMAGE_RECITATION"})
_ACCOUNT_FINISH_REASONS = frozenset({"PUP_LIMITED_DISABLED"})
# 404: the model is gone or not served on this API version; 503: the model is overloaded.
_FALLBACK_HTTP_CODES = frozenset({404, 503})
# The SDK's automatic function calling logs "AFC is enabled" at INFO on every call
# (google/genai/models.py, AsyncModels.generate_content); we declare no tools, so switch it off.
_NO_AFC = types.AutomaticFunctionCallingConfig(disable=True)
_MAX_MESSAGE_CHARS = 300
_RETRY_INFO_TYPE = "type.googleapis.com/google.rpc.RetryInfo"
_ERROR_INFO_TYPE = "type.googleapis.com/google.rpc.ErrorInfo"
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)s\s*$")


class GeminiAI:
    """Analysis and image editing with Gemini models.

    ``image_models`` are tried in order (module docstring). ``image_size`` (1K, 2K, 4K) is
    sent only to models that take that size; ``"auto"`` asks each model for the smallest of
    its sizes that gives the request's ``print_pixels`` (its largest when none does).
    ``base_url`` is left unset unless given, so the SDK's own ``GOOGLE_GEMINI_BASE_URL`` keeps
    working for proxies and test servers.
    """

    def __init__(
        self,
        api_key: str,
        *,
        analysis_model: str,
        image_models: Sequence[str],
        api_version: str = "v1beta",
        image_size: str | None = catalog.AUTO_SIZE,
        timeout_seconds: float = 120,
        base_url: str | None = None,
    ) -> None:
        if not api_key:
            raise ValueError("a Gemini API key is required")
        if not image_models:
            raise ValueError("at least one Gemini image model is required")
        self._api_key = api_key
        self._analysis_model = analysis_model
        self._image_models = list(dict.fromkeys(image_models))
        self._api_version = api_version
        self._image_size = image_size
        self._timeout = timeout_seconds
        #: Models that answered 404 NOT_FOUND: skipped for the rest of the process.
        self._missing: set[str] = set()
        http_options = types.HttpOptions(
            api_version=api_version,
            timeout=max(1, round(timeout_seconds * 1000)),
            retry_options=types.HttpRetryOptions(attempts=1),
            base_url=base_url,
        )
        self._client = genai.Client(api_key=api_key, http_options=http_options)

    async def check_models(self) -> list[str]:
        """Ask Gemini for every configured model; skip the missing ones with a warning.

        Raises ``NoUsableModel`` when the analysis model or every image model is missing, or
        the key is rejected; outages come out as ``AIUnavailable``. A model found again after
        an earlier 404 is usable again.
        """
        warnings: list[str] = []
        self._missing.clear()
        roles = {self._analysis_model: "analysis"}
        for model in self._image_models:
            roles.setdefault(model, "image")
        for model, role in roles.items():
            try:
                with self._call_failures(model):
                    async with asyncio.timeout(self._timeout):
                        await self._client.aio.models.get(model=model)
            except genai_errors.APIError as err:
                classified = self._classify(err, model)
                if err.code != 404:
                    if isinstance(classified, AIConfigError):
                        raise NoUsableModel(
                            f"Gemini rejected the configuration while checking {role} model "
                            f"{model!r}: {classified.detail}"
                        ) from None
                    raise classified from None
                self._missing.add(model)
                warnings.append(
                    catalog.retired_message(model, role)
                    or f"Gemini {role} model {model!r} was not found on API version "
                    f"{self._api_version}; check the configured model names"
                )
            else:
                if (retired := catalog.retired_message(model, role)) is not None:
                    warnings.append(f"{retired} (it still answers for now)")
        for warning in warnings:
            logger.warning(warning)
        if self._analysis_model in self._missing:
            raise NoUsableModel(warnings[0])
        if all(model in self._missing for model in self._image_models):
            raise NoUsableModel(
                "no configured Gemini image model is available: " + "; ".join(warnings)
            )
        return warnings

    async def analyze(
        self,
        *,
        prompt: str,
        images: list[ImagePart],
        schema: type[ModelT],
        usage: Usage | None = None,
    ) -> Analysis[ModelT]:
        """Ask for JSON matching ``schema``; parts are the prompt text, then ``images`` in order."""
        config = types.GenerateContentConfig(
            response_mime_type="application/json",
            response_schema=schema,
            automatic_function_calling=_NO_AFC,
        )
        parts = [types.Part.from_text(text=prompt), *map(_image_part, images)]
        sink = usage if usage is not None else Usage()
        model, response = await self._generate(
            [self._analysis_model], parts, lambda _model: config, sink, images=False
        )
        candidate = _accepted_candidate(response, model)
        value = _parsed(response, candidate, schema, model)
        return Analysis(value=value, model=model, usage=_usage(response, model, images=0))

    async def generate_image(
        self, request: EditRequest, usage: Usage | None = None
    ) -> GeneratedImage:
        """Draw one illustration.

        The parts go in this order, which the prompts refer to: the prompt text, the original
        page (``base``), the child photo, and the identity reference when there is one.
        """
        width, height = ratio_of(request.aspect_ratio)

        def config(model: str) -> types.GenerateContentConfig:
            return types.GenerateContentConfig(
                response_modalities=["IMAGE"],
                image_config=types.ImageConfig(
                    **catalog.image_config(
                        model, width, height, self._image_size, request.print_pixels
                    )
                ),
                automatic_function_calling=_NO_AFC,
            )

        images = [request.base, request.child_photo]
        if request.identity_reference is not None:
            images.append(request.identity_reference)
        parts = [types.Part.from_text(text=request.prompt), *map(_image_part, images)]
        sink = usage if usage is not None else Usage()
        models = [m for m in self._image_models if m not in self._missing]
        model, response = await self._generate(models, parts, config, sink, images=True)
        candidate = _accepted_candidate(response, model)
        image = _final_image(candidate, model)
        _check_decodes(image.data, model)
        return GeneratedImage(
            data=image.data,
            mime_type=image.mime_type,
            model=model,
            usage=_usage(response, model, images=1),
            aspect_ratio=catalog.image_config(model, width, height, None)["aspect_ratio"],
        )

    async def aclose(self) -> None:
        await self._client.aio.aclose()

    async def _generate(
        self,
        models: Sequence[str],
        parts: list[types.Part],
        config: Callable[[str], types.GenerateContentConfig],
        usage: Usage,
        *,
        images: bool,
    ) -> tuple[str, types.GenerateContentResponse]:
        """Call the first model that can serve, moving on after 404 and 503 (module docstring).

        The answer's usage goes into ``usage`` before anything else can fail.
        """
        failure: OrderError = AIConfigError(
            "every configured Gemini image model answered 404 NOT_FOUND in this process"
        )
        for model in models:
            try:
                # Our own bound as well as the SDK's: google-genai 1.49's async client does not
                # apply HttpOptions.timeout (make test-floors), and a call must never hang.
                with self._call_failures(model, usage):
                    async with asyncio.timeout(self._timeout):
                        response = await self._client.aio.models.generate_content(
                            model=model,
                            contents=types.Content(role="user", parts=parts),
                            config=config(model),
                        )
            except genai_errors.APIError as err:
                failure = self._classify(err, model)
                if err.code not in _FALLBACK_HTTP_CODES:
                    raise failure from None
                if err.code == 404:
                    self._missing.add(model)
                    logger.warning(
                        "Gemini model {} answered 404 NOT_FOUND; skipping it from now on",
                        model,
                        model_name=model,
                    )
                else:
                    logger.warning(
                        "Gemini model {} cannot serve: {} {}",
                        model,
                        err.code,
                        err.status,
                        model_name=model,
                    )
                continue
            usage.add(_usage(response, model, images=int(images and _has_image(response))))
            return model, response
        raise failure from None

    @contextlib.contextmanager
    def _call_failures(self, model: str, usage: Usage | None = None) -> Iterator[None]:
        """Classify what the SDK lets through raw: timeouts, connection errors, non-JSON replies.

        A call cut off (timeout, cancellation) counts as ``unanswered`` in ``usage``.
        """
        try:
            yield
        except TimeoutError:
            if usage is not None:
                usage.add_call(model, unanswered=1)
            raise AIUnavailable(
                f"{model}: no reply within the timeout", code="ai_timeout"
            ) from None
        except asyncio.CancelledError:
            if usage is not None:
                usage.add_call(model, unanswered=1)
            raise
        except aiohttp.ClientError as err:
            raise AIUnavailable(f"{model}: connection failed: {self._redact(str(err))}") from None
        except genai_errors.UnknownApiResponseError:
            raise AIBadResponse(f"{model}: the reply was not JSON") from None

    def _classify(self, err: genai_errors.APIError, model: str) -> OrderError:
        """Turn an HTTP error from Gemini into one of our classes (table in module docstring)."""
        detail = f"{model}: HTTP {err.code} {err.status or ''}: {self._redact(err.message or '')}"
        body = err.details if isinstance(err.details, dict) else {}
        if err.code == 429:
            return AIUnavailable(detail, code="ai_rate_limited", retry_after=_retry_delay(body))
        if err.code == 408 or err.code >= 500:
            return AIUnavailable(detail, retry_after=_retry_delay(body))
        if (
            err.code in (401, 403, 404)
            or err.status == "FAILED_PRECONDITION"
            or "API_KEY_INVALID" in _error_reasons(body)
        ):
            return AIConfigError(detail)
        return TerminalError(detail, code="ai_invalid_request")

    def _redact(self, text: str) -> str:
        return text.replace(self._api_key, "***")[:_MAX_MESSAGE_CHARS]


def _image_part(image: ImagePart) -> types.Part:
    return types.Part.from_bytes(data=image.data, mime_type=image.mime_type)


def _accepted_candidate(response: types.GenerateContentResponse, model: str) -> types.Candidate:
    """The first candidate, unless the prompt or the output was blocked for safety."""
    feedback = response.prompt_feedback
    if feedback is not None and feedback.block_reason is not None:
        raise ContentBlocked(
            f"{model}: prompt blocked: {_name(feedback.block_reason)} "
            f"{feedback.block_reason_message or ''}".rstrip()
        )
    if not response.candidates:
        raise AIBadResponse(f"{model}: the reply has no candidates")
    candidate = response.candidates[0]
    reason = _name(candidate.finish_reason)
    if reason in _BLOCKING_FINISH_REASONS:
        raise ContentBlocked(f"{model}: output blocked: finishReason {reason}")
    if reason in _RECITATION_FINISH_REASONS:
        raise AIRecitation(f"{model}: finishReason {reason}")
    if reason in _ACCOUNT_FINISH_REASONS:
        raise AIConfigError(
            f"{model}: finishReason {reason}: the Gemini account is limited or "
            "disabled (Prohibited Use Policy); see Google AI Studio"
        )
    return candidate


def _answer_parts(candidate: types.Candidate) -> list[types.Part]:
    """The candidate's parts without the model's thoughts (interim text and draft images)."""
    parts = candidate.content.parts if candidate.content and candidate.content.parts else []
    return [part for part in parts if not part.thought]


def _answer_text(candidate: types.Candidate) -> str:
    return "".join(part.text for part in _answer_parts(candidate) if part.text)


def _parsed(
    response: types.GenerateContentResponse,
    candidate: types.Candidate,
    schema: type[ModelT],
    model: str,
) -> ModelT:
    """The SDK's ``parsed`` value, which it silently leaves None when the JSON does not fit."""
    if isinstance(response.parsed, schema):
        return response.parsed
    text = _answer_text(candidate)
    try:
        return schema.model_validate_json(text)
    except ValidationError as err:
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or '<root>'}: {e['msg']}" for e in err.errors()[:3]
        )
        raise AIBadResponse(
            f"{model}: analysis is not a valid {schema.__name__} "
            f"(finishReason {_name(candidate.finish_reason)}): {problems}"
        ) from None


def _final_image(candidate: types.Candidate, model: str) -> ImagePart:
    """The last non-thought inline image: thinking image models send drafts as thoughts first."""
    images = [
        ImagePart(part.inline_data.data, part.inline_data.mime_type or "image/png")
        for part in _answer_parts(candidate)
        if part.inline_data is not None and part.inline_data.data
    ]
    if images:
        return images[-1]
    said = _answer_text(candidate)[:200]
    raise AIBadResponse(
        f"{model}: no image in the reply (finishReason {_name(candidate.finish_reason)})"
        + (f"; it said: {said!r}" if said else "")
    )


def _has_image(response: types.GenerateContentResponse) -> bool:
    candidate = response.candidates[0] if response.candidates else None
    return candidate is not None and any(
        part.inline_data is not None and part.inline_data.data for part in _answer_parts(candidate)
    )


def _check_decodes(data: bytes, model: str) -> None:
    """Reject replies that are not images. Whether its shape fits the page is the pipeline's
    check (processors.images.fit_output), which knows the page."""
    try:
        with Image.open(BytesIO(data)) as image:
            image.verify()
    except (UnidentifiedImageError, OSError):
        raise AIBadResponse(f"{model}: the returned image cannot be decoded") from None


def _usage(response: types.GenerateContentResponse, model: str, *, images: int) -> Usage:
    """One answered call, tokens as billed: output includes the model's thinking tokens."""
    meta = response.usage_metadata
    usage = Usage()
    usage.add_call(
        model,
        calls=1,
        images=images,
        input_tokens=(meta.prompt_token_count or 0) if meta else 0,
        output_tokens=((meta.candidates_token_count or 0) + (meta.thoughts_token_count or 0))
        if meta
        else 0,
    )
    return usage


def _details(body: dict[str, Any]) -> list[dict[str, Any]]:
    details = body.get("error", body).get("details")
    return [d for d in details if isinstance(d, dict)] if isinstance(details, list) else []


def _retry_delay(body: dict[str, Any]) -> float | None:
    """Seconds from a google.rpc.RetryInfo detail; its retryDelay is a Duration like "17s"."""
    for detail in _details(body):
        if detail.get("@type") == _RETRY_INFO_TYPE:
            match = _DURATION.match(str(detail.get("retryDelay", "")))
            if match:
                return float(match.group(1))
    return None


def _error_reasons(body: dict[str, Any]) -> set[str]:
    return {str(d.get("reason")) for d in _details(body) if d.get("@type") == _ERROR_INFO_TYPE}


def _name(value: object) -> str:
    """An SDK enum member or plain string as its wire name (unknown values arrive as strings)."""
    return str(getattr(value, "value", value))
