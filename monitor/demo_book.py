"""The demo's sample book and child photo, drawn here so the project ships no third-party art.

Simple flat illustrations: a sky, hills, a few props, and a hero whose place is recorded as the
page's ``character_box``, which is where the offline compositor puts the child. The story is
a template with the child's name and pronouns (processors/story.py); each page leaves a light
band for it, recorded as the page's ``text_box``, where the PDFs set it as a text layer.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass

from PIL import Image, ImageDraw, ImageFont

SIZE = 1200
TITLE = "The Lantern Walk"

# (sky top, sky bottom, hills) per page, from afternoon to night.
_PALETTES = [
    ((126, 200, 240), (214, 240, 250), (104, 170, 92)),
    ((120, 190, 235), (230, 240, 220), (96, 160, 86)),
    ((250, 180, 120), (255, 225, 170), (120, 150, 80)),
    ((240, 150, 120), (255, 205, 160), (110, 135, 80)),
    ((120, 110, 180), (240, 170, 150), (80, 110, 80)),
    ((60, 60, 130), (150, 120, 170), (60, 90, 70)),
    ((30, 35, 90), (80, 70, 140), (45, 70, 60)),
    ((15, 20, 60), (50, 50, 110), (35, 55, 50)),
]

STORY = [
    "One afternoon, ${name} found an old paper lantern in the attic.",
    "Grandma said: tonight the lanterns walk to the top of the hill, and ${name} may carry one.",
    "${name} painted ${their} lantern with stars and moons.",
    "At sunset, friends from the whole street came out to walk with ${them}.",
    "The path was long, but the lantern glowed a little brighter with every step.",
    "A small fox followed ${name}'s light through the tall grass.",
    "On top of the hill, all the lanterns shone together like a river of light.",
    "Back home, ${name} fell asleep, still smiling at the stars. ${They} dreamed of lanterns.",
]
_BAND = (40, 40, SIZE - 40, 170)
TEXT_BOX = {
    "x": (_BAND[0] + 20) / SIZE,
    "y": (_BAND[1] + 8) / SIZE,
    "w": (_BAND[2] - _BAND[0] - 40) / SIZE,
    "h": (_BAND[3] - _BAND[1] - 16) / SIZE,
}
"""The light band at the top of every page, where the story text is set."""


@dataclass(frozen=True)
class SamplePage:
    number: int
    jpeg: bytes
    text: str
    character_box: dict[str, float]
    text_box: dict[str, float]


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    return ImageFont.load_default(size=size)


def _jpeg(img: Image.Image) -> bytes:
    buffer = io.BytesIO()
    img.save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def _scene(index: int) -> Image.Image:
    top, bottom, hills = _PALETTES[index % len(_PALETTES)]
    img = Image.new("RGB", (SIZE, SIZE))
    draw = ImageDraw.Draw(img)
    for y in range(SIZE):
        t = y / SIZE
        draw.line(
            [(0, y), (SIZE, y)], fill=tuple(int(a + (b - a) * t) for a, b in zip(top, bottom))
        )
    night = index >= 5
    if night:
        for n in range(60):
            x, y = (n * 197) % SIZE, (n * 113) % (SIZE // 2)
            draw.ellipse([x, y, x + 5, y + 5], fill=(255, 250, 210))
        draw.ellipse([930, 230, 1050, 350], fill=(250, 245, 220))
    else:
        draw.ellipse([930, 210, 1080, 360], fill=(255, 226, 110))
    for n, (cx, r) in enumerate([(200, 520), (800, 600), (1250, 480)]):
        shade = tuple(max(0, c - 18 * n) for c in hills)
        draw.ellipse([cx - r, 820 - r // 3, cx + r, 820 + r], fill=shade)
    draw.rectangle([0, 1000, SIZE, SIZE], fill=tuple(max(0, c - 30) for c in hills))
    for x in (90, 1080):
        draw.rectangle([x, 700, x + 30, 880], fill=(110, 80, 50))
        draw.ellipse([x - 70, 560, x + 100, 740], fill=tuple(max(0, c - 40) for c in hills))
    return img


def _hero(draw: ImageDraw.ImageDraw, box: tuple[int, int, int, int], lantern: bool) -> None:
    """A simple child figure filling ``box``: the part the personalization replaces."""
    x0, y0, x1, y1 = box
    w, h = x1 - x0, y1 - y0
    cx = x0 + w // 2
    head = int(w * 0.32)
    draw.rounded_rectangle(
        [cx - w // 4, y0 + int(h * 0.36), cx + w // 4, y0 + int(h * 0.8)],
        radius=20,
        fill=(220, 70, 70),
    )
    draw.rectangle([cx - w // 5, y0 + int(h * 0.8), cx - 8, y1], fill=(60, 60, 120))
    draw.rectangle([cx + 8, y0 + int(h * 0.8), cx + w // 5, y1], fill=(60, 60, 120))
    draw.ellipse(
        [cx - head, y0 + int(h * 0.04), cx + head, y0 + int(h * 0.04) + 2 * head],
        fill=(240, 200, 160),
    )
    draw.chord([cx - head, y0, cx + head, y0 + 2 * head], 180, 360, fill=(120, 70, 40))
    eye_y = y0 + int(h * 0.04) + head
    for dx in (-head // 3, head // 3):
        draw.ellipse([cx + dx - 6, eye_y - 6, cx + dx + 6, eye_y + 6], fill=(40, 40, 40))
    draw.arc(
        [cx - head // 3, eye_y, cx + head // 3, eye_y + head // 2],
        20,
        160,
        fill=(150, 60, 60),
        width=4,
    )
    if lantern:
        lx, ly = cx + w // 2, y0 + int(h * 0.5)
        draw.line([cx + w // 4, ly - 40, lx, ly - 40], fill=(80, 60, 40), width=5)
        draw.ellipse([lx - 40, ly - 40, lx + 40, ly + 50], fill=(255, 190, 80))
        draw.ellipse([lx - 22, ly - 20, lx + 22, ly + 30], fill=(255, 240, 170))


def _text_band(img: Image.Image) -> None:
    """The light band the story text is set on (the text itself is the PDF's text layer)."""
    draw = ImageDraw.Draw(img, "RGBA")
    draw.rounded_rectangle(_BAND, radius=24, fill=(255, 255, 255, 200))


def _box(index: int) -> tuple[int, int, int, int]:
    x = 220 + int(520 * (0.5 + 0.5 * math.sin(index * 1.3)))
    return x, 560, x + 260, 1060


def draw_cover() -> bytes:
    img = _scene(5)
    draw = ImageDraw.Draw(img)
    _hero(draw, (470, 520, 730, 1020), lantern=True)
    font = _font(96)
    width = draw.textlength(TITLE, font=font)
    draw.text(((SIZE - width) / 2 + 4, 144), TITLE, font=font, fill=(30, 20, 60))
    draw.text(((SIZE - width) / 2, 140), TITLE, font=font, fill=(255, 220, 120))
    return _jpeg(img)


COVER_BOX = {"x": 470 / SIZE, "y": 520 / SIZE, "w": 260 / SIZE, "h": 500 / SIZE}


def draw_pages() -> list[SamplePage]:
    pages = []
    for index, text in enumerate(STORY):
        img = _scene(index)
        box = _box(index)
        _hero(ImageDraw.Draw(img), box, lantern=index >= 2)
        _text_band(img)
        x0, y0, x1, y1 = box
        pages.append(
            SamplePage(
                number=index + 1,
                jpeg=_jpeg(img),
                text=text,
                character_box={
                    "x": x0 / SIZE,
                    "y": y0 / SIZE,
                    "w": (x1 - x0) / SIZE,
                    "h": (y1 - y0) / SIZE,
                },
                text_box=TEXT_BOX,
            )
        )
    return pages


def draw_child_photo() -> bytes:
    """A drawn stand-in for a child's photo (no real child's picture ships with the project)."""
    img = Image.new("RGB", (900, 900), (170, 205, 230))
    draw = ImageDraw.Draw(img)
    draw.ellipse([170, 560, 730, 1200], fill=(70, 140, 200))
    draw.ellipse([250, 150, 650, 610], fill=(236, 190, 150))
    draw.chord([230, 110, 670, 560], 180, 360, fill=(230, 170, 60))
    draw.rectangle([230, 300, 270, 520], fill=(230, 170, 60))
    draw.rectangle([630, 300, 670, 520], fill=(230, 170, 60))
    for x in (360, 540):
        draw.ellipse([x - 24, 360, x + 24, 408], fill=(255, 255, 255))
        draw.ellipse([x - 13, 371, x + 13, 397], fill=(60, 110, 60))
    draw.arc([370, 430, 530, 540], 20, 160, fill=(180, 70, 70), width=8)
    draw.text((20, 860), "sample photo (drawn)", font=_font(24), fill=(40, 40, 60))
    return _jpeg(img)
