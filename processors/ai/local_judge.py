"""The offline quality judge of the ``local`` adapter: only what image statistics can tell.

It is not a vision model, and its verdict says so (``notes``). From [original, result, photo,
identity?] it checks, deterministically:

- ``hero_present``: the result differs from the original in a region of at least
  ``_MIN_CHANGED`` of the picture (the compositor pasted something in), and is not blank;
- ``scene_kept``: at most ``_MAX_CHANGED`` of the picture changed (the rest is the original);
- ``likeness_score``: 10 x the share of the photo's main colours found among the changed
  pixels (``_likeness``): the pasted portrait is the photo, so a high score means the photo
  really is in the picture, a low one that something else is;
- ``hero_count``, ``extra_limbs_or_faces``, ``text_garbled``: ``None``, not checked (it cannot
  see faces or read text), which decides nothing.
"""

from __future__ import annotations

from typing import Any, cast

from PIL import Image, ImageChops, ImageStat

_SIDE = 128  # statistics do not need more pixels than this
_DIFF_LEVEL = 24  # a pixel changed when a channel moved more than this (JPEG noise stays below)
_MIN_CHANGED, _MAX_CHANGED = 0.002, 0.6
_BLANK_STDDEV = 2.0
_BINS = 4  # per channel: 64 colour bins
_MAIN_COLOUR = 0.03  # a bin with at least this share of the photo is one of its main colours
_PRESENT = 0.002  # ...and is present in the change with at least this share of its pixels


def judge_fields(images: list[Image.Image]) -> dict[str, Any]:
    """The verdict's fields for [original, result, photo, ...] (module docstring)."""
    if len(images) < 3:
        raise ValueError("the offline judge needs the original, the result and the photo")
    original, result, photo = (_small(img) for img in images[:3])
    if result.size != original.size:
        result = result.resize(original.size)
    changed = (
        ImageChops.difference(original, result)
        .convert("L")
        .point(lambda v: 255 if v > _DIFF_LEVEL else 0)
    )
    share = sum(1 for v in changed.get_flattened_data() if v) / (changed.width * changed.height)
    blank = max(ImageStat.Stat(result).stddev) < _BLANK_STDDEV
    # RGB images: every pixel is an (r, g, b) tuple.
    pixels = cast("list[tuple[int, int, int]]", list(result.get_flattened_data()))
    photo_pixels = cast("list[tuple[int, int, int]]", list(photo.get_flattened_data()))
    likeness = _likeness(
        [p for p, c in zip(pixels, changed.get_flattened_data()) if c], _histogram(photo_pixels)
    )
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


def _likeness(changed: list[tuple[int, int, int]], photo: list[float]) -> float:
    """0-10: the share of the photo's main colours (bins of at least ``_MAIN_COLOUR`` of it)
    that are among the changed pixels. A pasted or redrawn portrait of the photo carries its
    colours; something else does not. Frames and banners around it cost nothing."""
    if not changed:
        return 0.0
    present = _histogram(changed)
    main = [n for n, share in enumerate(photo) if share >= _MAIN_COLOUR]
    found = sum(1 for n in main if present[n] >= _PRESENT)
    return 10 * found / max(1, len(main))


def _bin(pixel: tuple[int, int, int]) -> int:
    r, g, b = (v * _BINS // 256 for v in pixel)
    return (r * _BINS + g) * _BINS + b


def _histogram(pixels: list[tuple[int, int, int]]) -> list[float]:
    counts = [0] * _BINS**3
    for pixel in pixels:
        counts[_bin(pixel)] += 1
    total = sum(counts) or 1
    return [c / total for c in counts]
