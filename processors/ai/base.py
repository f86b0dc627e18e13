"""The image-AI port: structured analysis of images and image editing.

Adapters: ``gemini`` (google-genai) and ``local`` (an offline compositor for the demo and tests).
Adapters raise ``processors.errors`` classes only, already classified as retryable or terminal.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

from pydantic import BaseModel

from processors.errors import RetryableError, TerminalError

ModelT = TypeVar("ModelT", bound=BaseModel)


@dataclass(frozen=True)
class ImagePart:
    data: bytes
    mime_type: str = "image/jpeg"


_COUNTS = ("calls", "images", "input_tokens", "output_tokens", "unpriced_calls")


@dataclass
class Usage:
    """What calls cost, summed per order item so cost per book is known.

    ``cost_usd`` is None until a price table priced a call (``processors.ai.pricing``): an
    unpriced usage says nothing about money rather than "free". Calls of models the table has no
    price for are counted in ``unpriced_calls``, so a total never hides them.
    """

    calls: int = 0
    images: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float | None = None
    unpriced_calls: int = 0

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> "Usage":
        """The usage an item row recorded (``order_items.ai_usage``); unknown keys are ignored."""
        data = data or {}
        counts = {k: int(data[k]) for k in _COUNTS if k in data}
        cost = data.get("cost_usd")
        return cls(**counts, cost_usd=float(cost) if cost is not None else None)

    def add(self, other: "Usage") -> None:
        self.calls += other.calls
        self.images += other.images
        self.input_tokens += other.input_tokens
        self.output_tokens += other.output_tokens
        if other.cost_usd is not None:
            self.cost_usd = (self.cost_usd or 0.0) + other.cost_usd
        self.unpriced_calls += other.unpriced_calls

    def as_dict(self) -> dict[str, int | float]:
        counts: dict[str, int | float] = {
            "calls": self.calls,
            "images": self.images,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
        }
        if self.cost_usd is not None:
            counts["cost_usd"] = round(self.cost_usd, 6)
        if self.unpriced_calls:
            counts["unpriced_calls"] = self.unpriced_calls
        return counts


@dataclass
class Analysis(Generic[ModelT]):
    value: ModelT
    model: str
    usage: Usage = field(default_factory=Usage)


@dataclass
class GeneratedImage:
    data: bytes
    mime_type: str
    model: str
    usage: Usage = field(default_factory=Usage)


class ContentBlocked(TerminalError):
    """The model refused the request or its output for safety reasons.

    The pipeline retries once with the softened prompt before letting this fail the item.
    """

    code = "content_blocked"
    parent_message = (
        "We could not create a picture for your book from this photo. "
        "Please try again with a different photo."
    )


class AIUnavailable(RetryableError):
    """Rate limits, 5xx, timeouts, a reply without an image: worth retrying later."""

    code = "ai_unavailable"


class AIBadResponse(RetryableError):
    """The model answered, but not with what was asked (unparsable JSON, text instead of image)."""

    code = "ai_bad_response"


class AIConfigError(RetryableError):
    """The operator's setup is wrong (key rejected, no access, no such model), not the order.

    Retryable, so paid orders wait for the fix instead of failing for parents; never retried
    in-process, because the next few seconds will not fix a key. The queue's backoff and
    ``max_attempts`` bound how long an item waits.
    """

    code = "ai_config_error"


@dataclass(frozen=True)
class EditRequest:
    """One personalized illustration: redraw ``base`` with the child from ``child_photo`` as hero.

    ``identity_reference`` is the generated cover when drawing pages, so the child looks the same
    throughout the book. ``child_name`` and ``character_box`` (fractions x, y, w, h of the base
    image) are the structured facts the offline compositor needs; generative adapters rely on the
    prompt, which already carries them.
    """

    prompt: str
    base: ImagePart
    child_photo: ImagePart
    aspect_ratio: str
    child_name: str
    identity_reference: ImagePart | None = None
    character_box: tuple[float, float, float, float] | None = None


class ImageAI(Protocol):
    async def check_models(self) -> None:
        """Fail fast at start if a configured model does not exist (raise ``ValueError``)."""

    async def analyze(
        self, *, prompt: str, images: list[ImagePart], schema: type[ModelT]
    ) -> Analysis[ModelT]:
        """Ask the analysis model for JSON matching ``schema``; validated, never silently None."""

    async def generate_image(self, request: EditRequest) -> GeneratedImage:
        """Draw one personalized illustration."""

    async def aclose(self) -> None:
        """Release connections."""
