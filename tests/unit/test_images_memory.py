"""How many pixels the image helpers decode: no more than the result needs (issue 15, memory).

Pillow counts every pixel buffer it creates (``Image.core.get_stats()["new_count"]``), which lets
these tests see a hidden full-size copy; decoded sizes are seen through the JPEG draft, which a
spy on the next step records. Quality and sizes of the results are asserted too, so a smaller
decode that changed what comes out would fail here.
"""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from PIL import Image, ImageDraw

import processors.images as images
from processors.images import (
    OutputInvalid,
    fit_output,
    load_page_image,
    model_input_file,
    normalize_photo,
    to_jpeg,
)

ORIENTATION = 0x0112


def picture(width: int, height: int) -> Image.Image:
    """A non-uniform RGB picture (crossing gradients) with a disc drawn on it."""
    horizontal = Image.linear_gradient("L").rotate(90).resize((width, height))
    vertical = Image.linear_gradient("L").resize((width, height))
    img = Image.merge("RGB", (horizontal, vertical, Image.eval(horizontal, lambda v: 255 - v)))
    ImageDraw.Draw(img).ellipse(
        (width // 3, height // 3, width * 2 // 3, height * 2 // 3), fill=(250, 200, 160)
    )
    return img


def reply(width: int, height: int) -> Image.Image:
    """``picture`` with a figure drawn over a fifth of it, as a model's edit of the page."""
    img = picture(width, height)
    ImageDraw.Draw(img).rectangle((0, 0, width // 2, height * 2 // 5), fill=(40, 60, 200))
    return img


def new_buffers(action: object) -> int:
    """Pixel buffers Pillow created while ``action()`` ran."""
    before = Image.core.get_stats()["new_count"]
    action()  # type: ignore[operator]
    return Image.core.get_stats()["new_count"] - before


def decoded_sizes(monkeypatch: pytest.MonkeyPatch, name: str) -> list[tuple[int, int]]:
    """Record the size of the image handed to ``processors.images.<name>`` (calls through)."""
    seen: list[tuple[int, int]] = []
    real = getattr(images, name)

    def spy(image: Image.Image, *args: object, **kwargs: object) -> object:
        seen.append(image.size)
        return real(image, *args, **kwargs)

    monkeypatch.setattr(images, name, spy)
    return seen


def test_decoding_makes_one_pixel_buffer_not_a_copy() -> None:
    data = to_jpeg(picture(800, 600))
    # Without an orientation tag, ImageOps.exif_transpose would return a full copy.
    assert new_buffers(lambda: load_page_image(data)) == 1
    photo = to_jpeg(picture(900, 700))
    assert new_buffers(lambda: normalize_photo(photo)) == 1


def test_a_jpeg_output_larger_than_the_page_is_decoded_at_a_reduced_scale(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    original = picture(1000, 1000)
    answer = to_jpeg(reply(4096, 4096))
    seen = decoded_sizes(monkeypatch, "_decode")

    fitted = fit_output(answer, original=original)

    assert seen == [(1024, 1024)]  # 1/4 scale: the smallest that still covers 1000 px
    assert fitted.size == original.size


def test_the_reduced_decode_still_covers_the_centre_crop() -> None:
    # A 16:9 reply for a square page keeps only its centre: the crop, not the whole reply,
    # must keep the page's pixels.
    assert images._fit_source_size((4096, 2304), (1000, 1000)) == (1778, 1000)
    assert images._fit_source_size((1024, 1024), (2000, 2000)) == (1024, 1024)  # no enlarging


def test_a_reply_no_larger_than_the_page_is_decoded_whole(monkeypatch: pytest.MonkeyPatch) -> None:
    original = picture(1200, 1200)
    seen = decoded_sizes(monkeypatch, "_decode")

    fit_output(to_jpeg(reply(2048, 2048)), original=original)

    assert seen == [(2048, 2048)]  # half of 2048 is under 1200: no draft


def test_a_sideways_output_is_judged_and_drafted_upright(monkeypatch: pytest.MonkeyPatch) -> None:
    # Stored 4096x3072 with "rotate 90°": displayed 3072x4096, a 3:4 picture for a 3:4 page.
    stored = reply(3072, 4096).transpose(Image.Transpose.ROTATE_90)
    exif = Image.Exif()
    exif[ORIENTATION] = 6
    out = io.BytesIO()
    stored.save(out, "JPEG", quality=90, exif=exif)
    original = picture(600, 800)
    seen = decoded_sizes(monkeypatch, "_decode")

    fitted = fit_output(out.getvalue(), original=original, requested_ratio="3:4")

    assert seen == [(1024, 768)]  # stored size at 1/4 scale: upright 768x1024 covers 600x800
    assert fitted.size == (600, 800)


def test_the_wrong_shape_is_rejected_from_the_header_before_any_decode() -> None:
    # A PNG header with no pixel data behind it: the shape alone must decide.
    import struct
    import zlib

    def chunk(kind: bytes, payload: bytes) -> bytes:
        return (
            struct.pack(">I", len(payload))
            + kind
            + payload
            + struct.pack(">I", zlib.crc32(kind + payload))
        )

    header = struct.pack(">IIBBBBB", 2048, 1024, 8, 2, 0, 0, 0)
    data = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b"")

    with pytest.raises(OutputInvalid, match="2048x1024, not the 1:1 ratio"):
        fit_output(data, original=picture(800, 800), requested_ratio="1:1")


def test_the_unchanged_check_still_sees_a_large_echo() -> None:
    original = picture(1000, 750)
    echoed = to_jpeg(original.resize((4000, 3000), Image.Resampling.BICUBIC))
    with pytest.raises(OutputInvalid, match="unchanged"):
        fit_output(echoed, original=original)


def test_model_input_of_a_file_decodes_only_what_the_model_gets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    page = tmp_path / "page.jpg"
    page.write_bytes(to_jpeg(picture(4096, 3072)))
    seen = decoded_sizes(monkeypatch, "image_part_bytes")

    part = model_input_file(page, 1536)

    assert seen == [(2048, 1536)]  # 1/2 scale, not the 4096x3072 file
    with Image.open(io.BytesIO(part)) as sent:
        assert sent.format == "JPEG"
        assert sent.size == (1536, 1152)
    assert Image.open(io.BytesIO(model_input_file(page.read_bytes(), 1536))).size == (1536, 1152)
