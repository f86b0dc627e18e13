"""The offline compositor: honest analyses, deterministic pages, the portrait inside its box."""

from __future__ import annotations

from io import BytesIO
from typing import cast

import pytest
from PIL import Image, ImageChops, ImageDraw
from pydantic import BaseModel

from processors.ai.base import EditRequest, ImagePart
from processors.ai.local import DEFAULT_BOX, MODEL, UNKNOWN, LocalAI
from processors.analysis_models import ChildAnalysis, CoverAnalysis
from processors.errors import TerminalError

PAGE_SIZE = (400, 300)
PAGE_COLOR = (200, 200, 200)
CHILD_COLOR = (20, 160, 60)
# JPEG blocks are 8x8 (16x16 with chroma subsampling): the paste may bleed that far.
JPEG_BLEED = 16
CHANGED = 40  # a channel difference JPEG noise alone never reaches on flat colour


def encoded(image: Image.Image, fmt: str = "JPEG") -> bytes:
    buffer = BytesIO()
    image.save(buffer, fmt)
    return buffer.getvalue()


def decoded(data: bytes) -> Image.Image:
    with Image.open(BytesIO(data)) as image:
        return image.convert("RGB")


PAGE = ImagePart(encoded(Image.new("RGB", PAGE_SIZE, PAGE_COLOR), "PNG"), "image/png")
PHOTO = ImagePart(encoded(Image.new("RGB", (160, 120), CHILD_COLOR)))


def request(**changes: object) -> EditRequest:
    fields: dict[str, object] = {
        "prompt": "ignored offline",
        "base": PAGE,
        "child_photo": PHOTO,
        "aspect_ratio": "4:3",
        "child_name": "Mia",
        "character_box": (0.1, 0.2, 0.4, 0.6),
    }
    fields.update(changes)
    return EditRequest(**fields)  # type: ignore[arg-type]


def changed_area(data: bytes) -> tuple[int, int, int, int] | None:
    """The bounding box of pixels that differ clearly from the original flat page."""
    difference = ImageChops.difference(decoded(data), Image.new("RGB", PAGE_SIZE, PAGE_COLOR))
    return difference.convert("L").point(lambda v: 255 if v > CHANGED else 0).getbbox()


def box_pixels(box: tuple[float, float, float, float]) -> tuple[int, int, int, int]:
    x, y, w, h = box
    width, height = PAGE_SIZE
    return round(x * width), round(y * height), round((x + w) * width), round((y + h) * height)


def inside(area: tuple[int, int, int, int], box: tuple[int, int, int, int], margin: int) -> bool:
    return (
        area[0] >= box[0] - margin
        and area[1] >= box[1] - margin
        and area[2] <= box[2] + margin
        and area[3] <= box[3] + margin
    )


# --- analysis ------------------------------------------------------------------------------


async def test_cover_palette_lists_dominant_colours_first() -> None:
    cover = Image.new("RGB", (120, 80), (200, 30, 30))
    ImageDraw.Draw(cover).rectangle((0, 0, 29, 79), fill=(30, 30, 200))  # a quarter is blue

    result = await LocalAI().analyze(
        prompt="ignored", images=[ImagePart(encoded(cover, "PNG"))], schema=CoverAnalysis
    )

    assert result.value.palette == ["#c81e1e", "#1e1ec8"]
    assert result.value.art_style == UNKNOWN
    assert result.model == MODEL
    assert result.usage.calls == 1


async def test_child_analysis_reports_one_face_and_only_visible_issues() -> None:
    ai = LocalAI()
    bright = ImagePart(encoded(Image.new("RGB", (300, 300), (180, 140, 120))))
    dark_and_tiny = ImagePart(encoded(Image.new("RGB", (64, 64), (10, 10, 10))))

    fine = await ai.analyze(prompt="", images=[bright], schema=ChildAnalysis)
    poor = await ai.analyze(prompt="", images=[dark_and_tiny], schema=ChildAnalysis)

    assert (fine.value.face_count, fine.value.photo_issues) == (1, [])
    assert fine.value.hair == UNKNOWN
    assert poor.value.face_count == 1
    assert poor.value.photo_issues == ["the photo is very small", "the photo is very dark"]


async def test_unknown_schema_is_refused() -> None:
    class Other(BaseModel):
        x: int

    with pytest.raises(ValueError, match="Other"):
        await LocalAI().analyze(prompt="", images=[PHOTO], schema=Other)


# --- composition ---------------------------------------------------------------------------


async def test_output_is_deterministic_jpeg_of_the_page_size() -> None:
    ai = LocalAI()

    first = await ai.generate_image(request())
    second = await ai.generate_image(request())

    assert first.data == second.data
    assert first.mime_type == "image/jpeg"
    assert (first.usage.calls, first.usage.images) == (1, 1)
    with Image.open(BytesIO(first.data)) as image:
        assert (image.format, image.size) == ("JPEG", PAGE_SIZE)


async def test_portrait_and_name_stay_inside_the_character_box() -> None:
    box = (0.1, 0.2, 0.4, 0.6)

    result = await LocalAI().generate_image(request(character_box=box))

    left, top, right, bottom = box_pixels(box)
    area = changed_area(result.data)
    assert area is not None and inside(area, (left, top, right, bottom), JPEG_BLEED)
    page = decoded(result.data)
    centre_of_portrait = cast(
        tuple[int, int, int], page.getpixel(((left + right) // 2, top + (bottom - top) // 3))
    )
    assert all(abs(a - b) < CHANGED for a, b in zip(centre_of_portrait, CHILD_COLOR, strict=True))


async def test_without_a_box_the_portrait_goes_bottom_right() -> None:
    result = await LocalAI().generate_image(request(character_box=None))

    area = changed_area(result.data)
    assert area is not None and inside(area, box_pixels(DEFAULT_BOX), JPEG_BLEED)


async def test_the_child_name_is_printed() -> None:
    ai = LocalAI()

    mia = await ai.generate_image(request(child_name="Mia"))
    noah = await ai.generate_image(request(child_name="Noah"))

    difference = ImageChops.difference(decoded(mia.data), decoded(noah.data))
    changed = difference.convert("L").point(lambda v: 255 if v > CHANGED else 0).getbbox()
    left, top, right, bottom = box_pixels((0.1, 0.2, 0.4, 0.6))
    lower_half_of_box = (left, (top + bottom) // 2, right, bottom)  # where the banner is
    assert changed is not None and inside(changed, lower_half_of_box, JPEG_BLEED)


async def test_undecodable_page_fails_like_an_invalid_request() -> None:
    with pytest.raises(TerminalError) as caught:
        await LocalAI().generate_image(request(base=ImagePart(b"not an image")))
    assert caught.value.code == "ai_invalid_request"
