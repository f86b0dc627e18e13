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
- https://ai.google.dev/gemini-api/docs/pricing (price per image, in README.md);
- the pixels each ``imageSize`` gives per ratio (``OUTPUT_PIXELS`` below, read 2026-12-02): the
  image-generation page's "Aspect ratios and image size" table as transcribed for
  gemini-3-pro-image by https://doc.ai.soraliststudio.com/en/docs/best-practices/nano-banana-pro-aspect-ratio
  (Google's page itself was not reachable from here). 1K/2K/4K are about 1, 4 and 16 megapixels
  at every ratio (1:1 is 1024, 2048, 4096 px square in every source); other transcriptions
  differ by a few percent at the wide ratios (16:9 at 1K: 1376x768 or 1408x768), so a ratio
  the table lacks (3.1-flash-image's 1:4, 4:1, 1:8, 8:1) is estimated from the megapixels.

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


#: ``IMAGE_SIZE=auto``: the size is chosen per request from what the print needs.
AUTO_SIZE = "auto"
#: Pixels (width, height) a model returns per ``imageSize`` and ratio (module docstring).
OUTPUT_PIXELS: dict[str, dict[str, tuple[int, int]]] = {
    "1K": {
        "1:1": (1024, 1024), "2:3": (816, 1232), "3:2": (1232, 816), "3:4": (896, 1200),
        "4:3": (1200, 896), "4:5": (896, 1136), "5:4": (1136, 896), "9:16": (768, 1376),
        "16:9": (1376, 768), "21:9": (1584, 672),
    },
    "2K": {
        "1:1": (2048, 2048), "2:3": (1632, 2464), "3:2": (2464, 1632), "3:4": (1792, 2400),
        "4:3": (2400, 1792), "4:5": (1792, 2272), "5:4": (2272, 1792), "9:16": (1536, 2752),
        "16:9": (2752, 1536), "21:9": (3168, 1344),
    },
    "4K": {
        "1:1": (4096, 4096), "2:3": (3264, 4928), "3:2": (4928, 3264), "3:4": (3584, 4800),
        "4:3": (4800, 3584), "4:5": (3584, 4544), "5:4": (4544, 3584), "9:16": (3072, 5504),
        "16:9": (5504, 3072), "21:9": (6336, 2688),
    },
}  # fmt: skip
_SIDE = {"1K": 1024, "2K": 2048, "4K": 4096}


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


def image_config(
    model: str,
    width: int,
    height: int,
    image_size: str | None,
    needed: tuple[int, int] | None = None,
) -> dict[str, Any]:
    """``aspect_ratio`` (nearest the page the model accepts) and ``image_size`` when the model
    takes that size; never a field the model would answer 400 INVALID_ARGUMENT to.

    ``image_size`` ``"auto"`` is the size ``needed`` pixels call for (``size_for_print``), or no
    size at all (the model's default) when the request states no need."""
    entry = info(model, "image")
    if image_size == AUTO_SIZE:
        image_size = size_for_print(model, width, height, needed) if needed else None
    config = {"aspect_ratio": nearest_ratio(width, height, entry.aspect_ratios)}
    if image_size is not None and image_size in entry.image_sizes:
        config["image_size"] = image_size
    return config


def output_pixels(size: str, ratio: str) -> tuple[int, int]:
    """The pixels ``size`` gives at ``ratio``: the table, else the size's megapixels at that
    ratio (module docstring)."""
    known = OUTPUT_PIXELS.get(size, {}).get(ratio)
    if known is not None:
        return known
    side, r = _SIDE[size], math.exp(ratio_log(ratio))
    return round(side * math.sqrt(r)), round(side / math.sqrt(r))


def size_for_print(model: str, width: int, height: int, needed: tuple[int, int]) -> str | None:
    """The smallest ``imageSize`` of ``model`` whose picture, cropped to the page's
    ``width``:``height`` (as ``fit_output`` does), still has ``needed`` pixels (width, height);
    the model's largest when none has; None when the model takes no size.

    The picture comes back at the model's ratio nearest the page, so the crop to the page can
    cost a few percent of one side: that is counted, never hoped away."""
    entry = info(model, "image")
    if not entry.image_sizes:
        return None
    ratio = nearest_ratio(width, height, entry.aspect_ratios)
    sizes = sorted(entry.image_sizes, key=lambda s: _SIDE.get(s, 0))
    for size in sizes:
        out_w, out_h = output_pixels(size, ratio)
        scale = min(out_w / width, out_h / height)  # the page-ratio box inside the picture
        if width * scale >= needed[0] - 0.5 and height * scale >= needed[1] - 0.5:
            return size
    return sizes[-1]


def retired_message(model: str, role: str) -> str | None:
    """Why ``model`` cannot be used, naming its replacement, or None when it is not retired."""
    entry = CATALOG.get(model)
    if entry is None or not entry.retired:
        return None
    return (
        f"Gemini {role} model {model!r} has been shut down by Google; "
        f"use {entry.replacement!r} instead"
    )
