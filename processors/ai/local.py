"""The ``local`` adapter: an offline compositor for the demo, development and tests.

It is not generative AI, and its answers say so:

- cover analysis reads the dominant colours with Pillow; every descriptive field is
  ``"unknown (offline analysis)"``;
- child analysis is not a face detector: it always reports one face, so orders pass the face
  gate, and only flags what simple image statistics show (a very dark or tiny photo);
- "regeneration" pastes a round, framed portrait of the child into the page, inside the
  catalog's character box or the bottom-right third, and prints the child's name on a banner
  under it. The prompt and the identity reference are not used;
- the quality verdict comes from ``local_judge``: image statistics, never a claim about faces.

No network, no randomness: the same request always gives the same bytes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from io import BytesIO
from typing import Any, cast

from PIL import Image, ImageDraw, ImageFont, ImageOps, ImageStat, UnidentifiedImageError
from pydantic import BaseModel

from processors.ai.base import Analysis, EditRequest, GeneratedImage, ImagePart, ModelT, Usage
from processors.ai.local_judge import judge_fields
from processors.analysis_models import ChildAnalysis, CoverAnalysis
from processors.errors import TerminalError
from processors.qa import QualityVerdict
from processors.text_layer import FONT_FILE

MODEL = "local-compositor"
UNKNOWN = "unknown (offline analysis)"
DEFAULT_BOX = (0.64, 0.64, 0.32, 0.32)
"""Where the portrait goes when the catalog gives no character box: the bottom-right third."""

_PALETTE_COLORS = 5
_ANALYSIS_SIDE = 128  # colours and brightness do not need more pixels than this
_DARK_MEAN, _BRIGHT_MEAN, _TINY_SIDE = 40, 225, 128
_MIN_BANNER, _MIN_PORTRAIT = 12, 8  # pixels, for very small boxes
_FRAME_COLOR = (255, 252, 245)
_INK_COLOR = (52, 38, 30)
_SUPERSAMPLE = 4  # draw masks larger, then shrink, for smooth edges without randomness
_JPEG_QUALITY = 90


class LocalAI:
    """The offline ``ImageAI`` (module docstring)."""

    async def check_models(self) -> list[str]:
        """Nothing to check: there are no models."""
        return []

    async def analyze(
        self,
        *,
        prompt: str,
        images: list[ImagePart],
        schema: type[ModelT],
        usage: Usage | None = None,
    ) -> Analysis[ModelT]:
        if schema is QualityVerdict:
            fields = await asyncio.to_thread(lambda: judge_fields([_open(i) for i in images]))
        else:
            analyzer = _ANALYZERS.get(schema)
            if analyzer is None:
                raise ValueError(f"the local adapter cannot answer with {schema.__name__}")
            if not images:
                raise ValueError("the local adapter analyzes images[0], and none was given")
            fields = await asyncio.to_thread(analyzer, _open(images[0]))
        spent = Usage()
        spent.add_call(MODEL, calls=1)
        if usage is not None:
            usage.add(spent)
        return Analysis(value=schema.model_validate(fields), model=MODEL, usage=spent)

    async def generate_image(
        self, request: EditRequest, usage: Usage | None = None
    ) -> GeneratedImage:
        data = await asyncio.to_thread(_compose, request)
        spent = Usage()
        spent.add_call(MODEL, calls=1, images=1)
        if usage is not None:
            usage.add(spent)
        return GeneratedImage(data=data, mime_type="image/jpeg", model=MODEL, usage=spent)

    async def aclose(self) -> None:
        """Nothing to release."""


def _open(part: ImagePart) -> Image.Image:
    """Decode any format Pillow reads, upright; undecodable input fails like a 400 from Gemini."""
    try:
        with Image.open(BytesIO(part.data)) as image:
            return ImageOps.exif_transpose(image).convert("RGB")
    except (UnidentifiedImageError, OSError) as err:
        raise TerminalError(
            f"local: cannot decode a {part.mime_type} input: {err}", code="ai_invalid_request"
        ) from None


def _cover_fields(image: Image.Image) -> dict[str, Any]:
    return {
        "art_style": UNKNOWN,
        "medium": UNKNOWN,
        "palette": _palette(image),
        "line_work": UNKNOWN,
        "lighting": UNKNOWN,
        "composition": UNKNOWN,
        "main_character": UNKNOWN,
        "character_position": UNKNOWN,
        "mood": UNKNOWN,
    }


def _child_fields(image: Image.Image) -> dict[str, Any]:
    return {
        "face_count": 1,
        "apparent_age": None,
        "hair": UNKNOWN,
        "eyes": UNKNOWN,
        "skin_tone": UNKNOWN,
        "glasses": False,
        "distinctive_features": [],
        "photo_issues": _photo_issues(image),
    }


_ANALYZERS: dict[type[BaseModel], Callable[[Image.Image], dict[str, Any]]] = {
    CoverAnalysis: _cover_fields,
    ChildAnalysis: _child_fields,
}


def _palette(image: Image.Image) -> list[str]:
    """The dominant colours as #rrggbb, most used first (median-cut quantization)."""
    small = image.copy()
    small.thumbnail((_ANALYSIS_SIDE, _ANALYSIS_SIDE))
    quantized = small.quantize(colors=_PALETTE_COLORS, method=Image.Quantize.MEDIANCUT)
    palette = quantized.getpalette() or []
    counts = sorted(
        ((count, cast(int, index)) for count, index in quantized.getcolors() or []),
        key=lambda pair: (-pair[0], pair[1]),
    )
    return [
        "#{:02x}{:02x}{:02x}".format(*palette[3 * index : 3 * index + 3]) for _, index in counts
    ]


def _photo_issues(image: Image.Image) -> list[str]:
    issues = []
    if min(image.size) < _TINY_SIDE:
        issues.append("the photo is very small")
    small = image.copy()
    small.thumbnail((_ANALYSIS_SIDE, _ANALYSIS_SIDE))
    brightness = ImageStat.Stat(small.convert("L")).mean[0]
    if brightness < _DARK_MEAN:
        issues.append("the photo is very dark")
    elif brightness > _BRIGHT_MEAN:
        issues.append("the photo is overexposed")
    return issues


def _compose(request: EditRequest) -> bytes:
    """The page with the portrait at the top of the box and the name banner under it."""
    page = _open(request.base)
    left, top, right, bottom = _box_pixels(request.character_box or DEFAULT_BOX, page.size)
    name = request.child_name.strip()
    banner_height = max(_MIN_BANNER, (bottom - top) // 6) if name else 0
    side = max(_MIN_PORTRAIT, min(right - left, bottom - top - banner_height))
    portrait = _framed_portrait(_open(request.child_photo), side)
    portrait_left = left + (right - left - side) // 2
    page.paste(portrait, (portrait_left, top), portrait)
    if banner_height:
        banner = (left, top + side, right, top + side + banner_height)
        _draw_banner(page, name, banner)
    buffer = BytesIO()
    page.save(buffer, "JPEG", quality=_JPEG_QUALITY)
    return buffer.getvalue()


def _box_pixels(
    box: tuple[float, float, float, float], size: tuple[int, int]
) -> tuple[int, int, int, int]:
    """Fractions (x, y, w, h) as pixel edges, clamped to the page."""
    width, height = size
    x, y, w, h = box
    left = min(max(0, round(x * width)), width - 1)
    top = min(max(0, round(y * height)), height - 1)
    right = min(width, max(left + 1, round((x + w) * width)))
    bottom = min(height, max(top + 1, round((y + h) * height)))
    return left, top, right, bottom


def _framed_portrait(photo: Image.Image, side: int) -> Image.Image:
    """The photo centre-cropped to a square, cut round, in a light ring with a thin ink edge."""
    ring = max(2, side // 24)
    portrait = Image.new("RGBA", (side, side), (*_INK_COLOR, 255))
    inner = side - 2
    portrait.paste(Image.new("RGBA", (inner, inner), (*_FRAME_COLOR, 255)), (1, 1), _circle(inner))
    face_side = max(1, side - 2 * ring)
    face = ImageOps.fit(photo, (face_side, face_side), method=Image.Resampling.LANCZOS)
    portrait.paste(face, (ring, ring), _circle(face_side))
    portrait.putalpha(_circle(side))
    return portrait


def _circle(side: int) -> Image.Image:
    big = Image.new("L", (side * _SUPERSAMPLE, side * _SUPERSAMPLE), 0)
    ImageDraw.Draw(big).ellipse((0, 0, big.width - 1, big.height - 1), fill=255)
    return big.resize((side, side), Image.Resampling.LANCZOS)


def _draw_banner(page: Image.Image, name: str, box: tuple[int, int, int, int]) -> None:
    """The name, as large as fits, on a rounded light banner."""
    left, top, right, bottom = box
    draw = ImageDraw.Draw(page)
    draw.rounded_rectangle(
        box, radius=(bottom - top) // 3, fill=_FRAME_COLOR, outline=_INK_COLOR, width=1
    )
    room = max(1, right - left - (bottom - top) // 2)
    size = max(6.0, (bottom - top) * 0.7)
    # The bundled Unicode font: Pillow's default covers ASCII only ("Zoë" would get a box).
    font = ImageFont.truetype(str(FONT_FILE), size=size)
    text_width = draw.textlength(name, font=font)
    if text_width > room:
        font = ImageFont.truetype(str(FONT_FILE), size=max(6.0, size * room / text_width))
    centre = ((left + right) / 2, (top + bottom) / 2)
    draw.text(centre, name, font=font, fill=_INK_COLOR, anchor="mm")
