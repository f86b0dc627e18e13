"""The offline quality judge of the ``local`` adapter: only what image statistics can tell.

It is not a vision model, and its verdict says so (``notes``). From [original, result, photo,
identity?] it checks, deterministically:

- ``hero_present``: the result differs from the original in a region of at least
  ``_MIN_CHANGED`` of the picture (the compositor pasted something in), and is not blank;
- ``scene_kept``: at most ``_MAX_CHANGED`` of the picture changed (the rest is the original);
- ``likeness_score``: 10 x the colour-histogram intersection of the changed region with the
  child's photo: the pasted portrait is the photo, so a high score means the photo really is
  in the picture, a low one that something else is;
- ``hero_count``, ``extra_limbs_or_faces``, ``text_garbled``: ``None``, not checked (it cannot
  see faces or read text), which decides nothing.
"""

from __future__ import annotations

from typing import Any

from PIL import Image, ImageChops, ImageStat

_SIDE = 128  # statistics do not need more pixels than this
_DIFF_LEVEL = 24  # a pixel changed when a channel moved more than this (JPEG noise stays below)
_MIN_CHANGED, _MAX_CHANGED = 0.002, 0.6
_BLANK_STDDEV = 2.0
_BINS = 4  # per channel: 64 colour bins


def judge_fields(images: list[Image.Image]) -> dict[str, Any]:
    """The verdict's fields for [original, result, photo, ...] (module docstring)."""
    if len(images) < 3:
        raise ValueError("the offline judge needs the original, the result and the photo")
    original, result, photo = (_small(img) for img in images[:3])
    if result.size != original.size:
        result = result.resize(original.size)
    changed = ImageChops.difference(original, result).convert("L").point(
        lambda v: 255 if v > _DIFF_LEVEL else 0)
    share = sum(1 for v in changed.getdata() if v) / (changed.width * changed.height)
    blank = max(ImageStat.Stat(result).stddev) < _BLANK_STDDEV
    box = changed.getbbox()
    likeness = 0.0
    if box is not None:
        likeness = 10 * _intersection(result.crop(box), photo)
    return {
        "hero_present": share >= _MIN_CHANGED and not blank,
        "likeness_score": round(likeness, 1),
        "hero_count": None,
        "extra_limbs_or_faces": None,
        "text_garbled": None,
        "scene_kept": share <= _MAX_CHANGED,
        "problems": [],
        "notes": f"offline judge: {share:.1%} of the picture changed; faces and text not checked",
    }


def _small(image: Image.Image) -> Image.Image:
    small = image.convert("RGB")
    small.thumbnail((_SIDE, _SIDE))
    return small


def _histogram(image: Image.Image) -> list[float]:
    quantized = image.point(lambda v: v * _BINS // 256)
    counts = [0] * _BINS**3
    for r, g, b in quantized.getdata():
        counts[(r * _BINS + g) * _BINS + b] += 1
    total = sum(counts) or 1
    return [c / total for c in counts]


def _intersection(a: Image.Image, b: Image.Image) -> float:
    """Histogram intersection in [0, 1]: 1 when both have the same colour distribution."""
    return sum(min(x, y) for x, y in zip(_histogram(a), _histogram(b)))
