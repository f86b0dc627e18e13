"""The offline judge says only what image statistics show, and what it says can fail."""

from __future__ import annotations

import io

from PIL import Image

from processors.ai.base import EditRequest, ImagePart
from processors.ai.local import LocalAI
from processors.qa import QualityVerdict, problems_of
from tests.support.pipeline_env import draw_child_photo, draw_scene


def _part(data: bytes) -> ImagePart:
    return ImagePart(data)


async def _verdict(original: bytes, result: bytes, photo: bytes) -> QualityVerdict:
    answer = await LocalAI().analyze(
        prompt="", images=[_part(original), _part(result), _part(photo)], schema=QualityVerdict
    )
    return answer.value


async def test_a_composited_page_passes_and_says_what_it_did_not_check() -> None:
    page, photo = draw_scene(2), draw_child_photo()
    drawn = await LocalAI().generate_image(
        EditRequest(
            prompt="",
            base=_part(page),
            child_photo=_part(photo),
            aspect_ratio="1:1",
            child_name="Zoë",
            character_box=(0.2, 0.4, 0.3, 0.5),
        )
    )
    verdict = await _verdict(page, drawn.data, photo)
    assert verdict.hero_present and verdict.scene_kept
    assert verdict.likeness_score >= 6
    assert verdict.hero_count is None and verdict.text_garbled is None
    assert problems_of(verdict, 6.0) == []


async def test_an_unchanged_or_foreign_picture_fails() -> None:
    page, photo = draw_scene(2), draw_child_photo()
    unchanged = await _verdict(page, page, photo)
    assert "hero_missing" in problems_of(unchanged, 6.0)
    other = Image.open(io.BytesIO(page)).convert("RGB")
    other.paste((20, 200, 20), (120, 240, 300, 540))  # something green pasted, not the child
    out = io.BytesIO()
    other.save(out, "JPEG")
    assert "likeness" in problems_of(await _verdict(page, out.getvalue(), photo), 6.0)
    blank = io.BytesIO()
    Image.new("RGB", (600, 600), (250, 250, 250)).save(blank, "JPEG")
    assert "scene_changed" in problems_of(await _verdict(page, blank.getvalue(), photo), 6.0)
