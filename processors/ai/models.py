"""The Gemini models this project supports, as data: what each accepts and whether it still runs.

A request carries only what its model accepts (``image_config`` below), and a configured model
that Google has shut down is named at start with its documented replacement. Sources, read on
2026-12-01:

- https://ai.google.dev/gemini-api/docs/deprecations (shutdown dates and recommended
  replacements: gemini-2.5-flash June 17, 2026; gemini-2.5-flash-image October 2, 2026; the
  ``-preview`` Gemini 3 image names June 25, 2026);
- https://ai.google.dev/gemini-api/docs/image-generation and the ``ImageConfig`` reference
  (https://ai.google.dev/api/generate-content#ImageConfig): aspect ratios and ``imageSize``
  values per model. gemini-2.5-flash-image takes no ``imageSize``; gemini-3-pro-image takes
  1K/2K/4K; gemini-3.1-flash-image adds the extreme ratios 1:4, 4:1, 1:8, 8:1. Its smallest
  size is written "512" in some sources and "512px" in others (googleapis/python-genai#2110),
  so it is left out until checked against the live API;
- https://ai.google.dev/gemini-api/docs/pricing (price per image, in README.md).

Update this table, not the code, when Google adds or retires a model.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

_TEN_RATIOS = ("1:1", "2:3", "3:2", "3:4", "4:3", "4:5", "5:4", "9:16", "16:9", "21:9")
_FOURTEEN_RATIOS = (*_TEN_RATIOS, "1:4", "4:1", "1:8", "8:1")


@dataclass(frozen=True)
class ModelInfo:
    name: str
    kind: str  # "image" or "analysis"
    aspect_ratios: tuple[str, ...] = ()
    #: ``imageSize`` values the model takes; empty: the field must not be sent at all.
    image_sizes: tuple[str, ...] = ()
    retired: bool = False
    replacement: str | None = None


CATALOG: dict[str, ModelInfo] = {
    m.name: m
    for m in (
        # Current GA models (deprecations page, 2026-12-01).
        ModelInfo("gemini-3.5-flash", "analysis"),
        ModelInfo("gemini-3.1-flash-image", "image", _FOURTEEN_RATIOS, ("1K", "2K", "4K")),
        ModelInfo("gemini-3-pro-image", "image", _TEN_RATIOS, ("1K", "2K", "4K")),
        # Shut down: named at start with their replacement.
        ModelInfo("gemini-2.5-flash", "analysis", retired=True, replacement="gemini-3.5-flash"),
        ModelInfo("gemini-2.5-pro", "analysis", retired=True, replacement="gemini-3.5-flash"),
        ModelInfo(
            "gemini-2.5-flash-image",
            "image",
            _TEN_RATIOS,
            retired=True,
            replacement="gemini-3.1-flash-image",
        ),
        ModelInfo(
            "gemini-3-pro-image-preview",
            "image",
            _TEN_RATIOS,
            ("1K", "2K", "4K"),
            retired=True,
            replacement="gemini-3-pro-image",
        ),
        ModelInfo(
            "gemini-3.1-flash-image-preview",
            "image",
            _FOURTEEN_RATIOS,
            ("1K", "2K", "4K"),
            retired=True,
            replacement="gemini-3.1-flash-image",
        ),
    )
}

DEFAULT_ANALYSIS_MODEL = "gemini-3.5-flash"
DEFAULT_IMAGE_MODELS = ("gemini-3.1-flash-image", "gemini-3-pro-image")

# A model missing from the table (a proxy's alias, a newer release) is sent the ten ratios every
# Gemini image model has accepted so far and no imageSize, the one setting models disagree on.
_UNKNOWN_IMAGE_MODEL = ModelInfo("", "image", _TEN_RATIOS)


def info(model: str, kind: str) -> ModelInfo:
    """The catalog entry of ``model``, or the conservative guess for a model the table lacks."""
    known = CATALOG.get(model)
    if known is not None:
        return known
    return _UNKNOWN_IMAGE_MODEL if kind == "image" else ModelInfo(model, kind)


def nearest_ratio(width: int, height: int, ratios: Iterable[str]) -> str:
    """The ratio of ``ratios`` nearest ``width``:``height`` on a log scale (2:1 and 1:2 are
    equally far from 1:1)."""
    if width <= 0 or height <= 0:
        raise ValueError(f"image size must be positive, got {width}x{height}")
    target = math.log(width / height)
    return min(ratios, key=lambda label: abs(ratio_log(label) - target))


def ratio_log(label: str) -> float:
    w, h = label.split(":")
    return math.log(int(w) / int(h))


def image_config(model: str, width: int, height: int, image_size: str | None) -> dict[str, Any]:
    """``aspect_ratio`` (nearest the page the model accepts) and ``image_size`` when the model
    takes that size; never a field the model would answer 400 INVALID_ARGUMENT to."""
    entry = info(model, "image")
    config = {"aspect_ratio": nearest_ratio(width, height, entry.aspect_ratios)}
    if image_size is not None and image_size in entry.image_sizes:
        config["image_size"] = image_size
    return config


def retired_message(model: str, role: str) -> str | None:
    """Why ``model`` cannot be used, naming its replacement, or None when it is not retired."""
    entry = CATALOG.get(model)
    if entry is None or not entry.retired:
        return None
    return (
        f"Gemini {role} model {model!r} has been shut down by Google; "
        f"use {entry.replacement!r} instead"
    )
