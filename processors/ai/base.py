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


USAGE_COUNTS = ("calls", "images", "input_tokens", "output_tokens", "unanswered", "unpriced_calls")


@dataclass
class Usage:
    """What calls cost, summed per order item (and per model) so cost per book is known.

    ``calls`` counts calls Google answered, which it bills whatever the answer was worth to us
    (a blocked, text-only or wrong-shaped reply costs the same as a good one). ``unanswered``
    counts calls sent but never answered to us (client timeout, cancelled by the page
    deadline): Google may still have generated, and billed, them. HTTP errors (429, 5xx, 4xx)
    are not billed and not counted. Adapters add to the sink passed to each call the moment an
    answer arrives, so no later failure, retry or cancellation can lose it.

    ``cost_usd`` is None until a price table priced a call (``processors.ai.pricing``): an
    unpriced usage says nothing about money rather than "free". Calls of models the table has no
    price for are counted in ``unpriced_calls``, so a total never hides them.
    """

    calls: int = 0
    images: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    unanswered: int = 0
    unpriced_calls: int = 0
    cost_usd: float | None = None
    by_model: dict[str, dict[str, int]] = field(default_factory=dict)

    def add(self, other: Usage) -> None:
        for name in USAGE_COUNTS:
            setattr(self, name, getattr(self, name) + getattr(other, name))
        if other.cost_usd is not None:
            self.cost_usd = (self.cost_usd or 0.0) + other.cost_usd
        for model, counts in other.by_model.items():
            mine = self.by_model.setdefault(model, {})
            for name, value in counts.items():
                mine[name] = mine.get(name, 0) + value

    def add_call(self, model: str, **counts: int) -> None:
        """One call to ``model``: ``counts`` are the totals it adds (calls=1, images=1...)."""
        self.add(Usage(**counts, by_model={model: dict(counts)}))

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {name: getattr(self, name) for name in USAGE_COUNTS}
        if self.cost_usd is not None:
            out["cost_usd"] = round(self.cost_usd, 6)
        if self.by_model:
            out["by_model"] = {m: dict(c) for m, c in self.by_model.items()}
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> Usage:
        """What ``as_dict`` wrote (an item's ``ai_usage``); unknown keys are ignored."""
        data = data or {}
        by_model = data.get("by_model")
        if not isinstance(by_model, dict):
            by_model = {}
        cost = data.get("cost_usd")
        return cls(
            **{name: int(data.get(name) or 0) for name in USAGE_COUNTS},
            cost_usd=float(cost) if cost is not None else None,
            by_model={
                str(m): {str(k): int(v) for k, v in c.items()}
                for m, c in by_model.items()
                if isinstance(c, dict)
            },
        )


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
    #: The ratio the model was asked for (nearest the page it accepts); None: the page's own.
    aspect_ratio: str | None = None


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
    #: The daemon releases the item and pauses claiming until the models check out again:
    #: the next order would meet the same wall (docs/architecture.md, "Error classes"; issue 17).
    pauses_claiming = True


class AIRecitation(TerminalError):
    """finishReason RECITATION / IMAGE_RECITATION: the output resembled a source too closely.

    The same request repeats it (FinishReason docs in google-genai ``types.FinishReason``), so
    it is neither retried nor redrawn.
    """

    code = "ai_recitation"
    parent_message = (
        "We could not create a picture for your book from this photo. "
        "Please try again with a different photo."
    )


class NoUsableModel(Exception):
    """No usable model of a kind (analysis or image) is left: the daemon cannot draw books.

    Raised by ``check_models``; the daemon stays up, reports it on /health and retries the check.
    """


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
    #: The page's own ratio, ``"width:height"`` in pixels (e.g. ``"1275:1650"``); adapters
    #: request the ratio their model accepts nearest to it.
    aspect_ratio: str
    child_name: str
    identity_reference: ImagePart | None = None
    character_box: tuple[float, float, float, float] | None = None
    #: Pixels (width, height) the print files need of this picture: the book's trim + 2 x
    #: bleed at its print PPI. Adapters that can choose an output size (``IMAGE_SIZE=auto``)
    #: ask for the smallest that reaches it; None states no need.
    print_pixels: tuple[int, int] | None = None


class ImageAI(Protocol):
    async def check_models(self) -> list[str]:
        """Check the configured models at start; return warnings about models skipped.

        Raises ``NoUsableModel`` when no usable model of a kind is left.
        """

    async def analyze(
        self,
        *,
        prompt: str,
        images: list[ImagePart],
        schema: type[ModelT],
        usage: Usage | None = None,
    ) -> Analysis[ModelT]:
        """Ask the analysis model for JSON matching ``schema``; validated, never silently None.

        Every answered call is added to ``usage`` as it arrives, even when it then fails.
        """

    async def generate_image(
        self, request: EditRequest, usage: Usage | None = None
    ) -> GeneratedImage:
        """Draw one personalized illustration (``usage`` as for ``analyze``)."""

    async def aclose(self) -> None:
        """Release connections."""


def ratio_of(label: str) -> tuple[int, int]:
    """``"1275:1650"`` as (1275, 1650)."""
    w, h = label.split(":")
    return int(w), int(h)


async def check_ai(ai: ImageAI) -> str | None:
    """Why no book can be drawn with ``ai`` now, or None when its models check out."""
    try:
        await ai.check_models()
    except NoUsableModel as exc:
        return str(exc)
    except AIUnavailable as exc:
        return f"AI provider unreachable: Gemini did not answer the model check: {exc.detail}"
    return None
