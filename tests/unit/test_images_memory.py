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
from PIL import Image, ImageChops, ImageCms, ImageDraw, ImageOps, ImageStat

import processors.images as images
from processors.images import (
    Original,
    OutputInvalid,
    check_output,
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


def size_of(jpeg: bytes) -> tuple[int, int]:
    with Image.open(io.BytesIO(jpeg)) as image:
        assert image.format == "JPEG"
        return image.size


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
    assert size_of(fitted) == original.size


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
    assert size_of(fitted) == (600, 800)


def test_a_jpeg_reply_of_the_result_size_is_kept_as_sent_and_checked_at_an_eighth(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A square 2K reply for a square page whose print needs more than 2K: nothing to crop or
    # resize, so the reply's own bytes are the page, not a decode and a re-encode of them.
    original = picture(1024, 1024)
    answer = to_jpeg(reply(2048, 2048))
    seen = decoded_sizes(monkeypatch, "_decode")

    assert fit_output(answer, original=original, keep=(2625, 2625)) == answer
    assert seen == [(256, 256)]  # the checks' decode: 1/8 scale, never the full 2048 px


def test_a_kept_reply_is_still_read_to_its_end() -> None:
    # The small decode goes through every byte of the file: a cut-off reply fails it.
    answer = to_jpeg(reply(2048, 2048))
    with pytest.raises(OutputInvalid, match="does not decode"):
        fit_output(answer[: len(answer) * 2 // 3], original=picture(1024, 1024), keep=(2048, 2048))


def test_a_kept_reply_still_meets_the_blank_and_unchanged_checks() -> None:
    original = picture(1024, 1024)
    with pytest.raises(OutputInvalid, match="blank"):
        fit_output(to_jpeg(Image.new("RGB", (2048, 2048), (90, 90, 90))), original=original)
    echoed = to_jpeg(original.resize((2048, 2048), Image.Resampling.BICUBIC))
    with pytest.raises(OutputInvalid, match="unchanged"):
        fit_output(echoed, original=original, keep=(2048, 2048))


def test_a_reply_of_the_result_size_with_a_profile_or_an_orientation_is_redone() -> None:
    # Its own bytes would print differently from what was checked: through sRGB, upright.
    original = picture(1024, 1024)
    drawn = reply(2048, 2048)
    profiled, turned = io.BytesIO(), io.BytesIO()
    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    drawn.save(profiled, "JPEG", quality=90, icc_profile=srgb)
    exif = Image.Exif()
    exif[ORIENTATION] = 3  # upside down: same size upright
    drawn.save(turned, "JPEG", quality=90, exif=exif)

    for answer in (profiled.getvalue(), turned.getvalue()):
        fitted = fit_output(answer, original=original, keep=(2048, 2048))
        assert fitted != answer
        assert size_of(fitted) == (2048, 2048)
        with Image.open(io.BytesIO(fitted)) as image:
            assert "icc_profile" not in image.info and "exif" not in image.info


@pytest.mark.parametrize(
    ("reply_size", "keep", "page"),
    [((4096, 4096), (2625, 2625), (1024, 1024)), ((1344, 768), None, (1600, 900))],
)
def test_the_fit_resizes_one_axis_at_a_time_and_matches_imageops_fit(
    monkeypatch: pytest.MonkeyPatch,
    reply_size: tuple[int, int],
    keep: tuple[int, int] | None,
    page: tuple[int, int],
) -> None:
    # A 4K reply for a 2625 px print need cannot be drafted; the first pass's result replaces
    # the decoded reply before the second pass, so both never live beside a third buffer.
    original = picture(*page)
    drawn = reply(*reply_size)
    passes: list[tuple[int, int]] = []
    real = Image.Image.resize

    def spy(self: Image.Image, size: tuple[int, int], *args: object, **kwargs: object) -> object:
        if self.size == reply_size or self.size[0] == reply_size[0]:
            passes.append(size)
        return real(self, size, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(Image.Image, "resize", spy)
    fitted = fit_output(to_jpeg(drawn, quality=95), original=original, keep=keep)
    monkeypatch.undo()

    wanted = size_of(fitted)
    # The checks' small copy first, from the reply itself, then the fit's two passes.
    assert passes == [Original.of(original).look.size, (reply_size[0], wanted[1]), wanted]
    with Image.open(io.BytesIO(fitted)) as ours:
        theirs = ImageOps.fit(drawn, wanted, Image.Resampling.LANCZOS)
        difference = ImageChops.difference(ours.convert("RGB"), theirs)
        assert max(ImageStat.Stat(difference).mean) < 2.0  # JPEG noise, not another picture


def test_the_checks_need_only_the_pages_size_and_a_small_copy() -> None:
    # What a page waiting for its reply keeps of a 2550 x 3300 catalog page: a quarter of a
    # megabyte, and the same verdicts and result as with the decoded page.
    page = picture(2550, 3300)
    kept = Original.of(page)
    assert kept.size == (2550, 3300)
    assert max(kept.look.size) <= 256

    drawn = to_jpeg(reply(2550, 3300))
    assert fit_output(drawn, original=kept) == fit_output(drawn, original=page)
    echoed = to_jpeg(page.resize((1275, 1650)))
    with pytest.raises(OutputInvalid, match="unchanged"):
        fit_output(echoed, original=kept)


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


def test_the_judges_preview_of_a_4k_reply_is_decoded_at_half_scale_and_is_the_pages_crop(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    page = Original.of(picture(1200, 1600))
    drawn = reply(3600, 4800)  # 3:4, as the page
    seen = decoded_sizes(monkeypatch, "_decode")

    preview = check_output(to_jpeg(drawn), original=page, preview_side=1536).preview

    assert seen == [(1800, 2400)]  # half of 4800 still covers 1536
    assert preview.size == (1152, 1536)
    fitted = fit_output(to_jpeg(drawn), original=page, checked=True)
    with Image.open(io.BytesIO(fitted)) as page_jpeg:
        shrunk = page_jpeg.convert("RGB").resize(preview.size, Image.Resampling.LANCZOS)
    assert max(ImageStat.Stat(ImageChops.difference(preview, shrunk)).mean) < 3


def screen_of(page_jpeg: bytes, side: int) -> Image.Image:
    """The screen copy made from the fitted page, as processors/pdf.py ``screen_copy`` does."""
    with Image.open(io.BytesIO(page_jpeg)) as page:
        return images.downscale(page.convert("RGB"), side)


@pytest.mark.parametrize(
    ("page_size", "reply_size", "print_pixels", "decoded"),
    [
        # A square 4K reply for an 8.5 in book (2625 px print): its half-scale decode is the
        # 2048 px copy itself.
        ((1200, 1200), (4096, 4096), (2625, 2625), (2048, 2048)),
        # A 3:4 reply for a 3:4 page: the half-scale decode covers the 1536 x 2048 copy.
        ((1200, 1600), (3600, 4800), (2625, 3450), (1800, 2400)),
    ],
)
def test_the_checks_of_a_reply_larger_than_the_screen_side_make_its_screen_copy(
    monkeypatch: pytest.MonkeyPatch,
    page_size: tuple[int, int],
    reply_size: tuple[int, int],
    print_pixels: tuple[int, int],
    decoded: tuple[int, int],
) -> None:
    page = Original.of(picture(*page_size))
    drawn = to_jpeg(reply(*reply_size))
    seen = decoded_sizes(monkeypatch, "_decode")

    checked = check_output(
        drawn, original=page, preview_side=1536, keep=print_pixels, screen_side=2048
    )
    monkeypatch.undo()

    assert seen == [decoded]  # one decode, at half scale, for the checks, preview and copy
    assert checked.screen is not None
    fitted = fit_output(drawn, original=page, keep=print_pixels, checked=True)
    expected = screen_of(fitted, 2048)
    with Image.open(io.BytesIO(checked.screen)) as screen:
        assert screen.format == "JPEG"
        assert screen.size == expected.size
        difference = ImageChops.difference(screen.convert("RGB"), expected)
    assert max(ImageStat.Stat(difference).mean) < 2.0
    assert max(checked.preview.size) == 1536


def test_a_page_within_the_screen_side_gets_no_screen_copy_from_the_checks() -> None:
    # A 2K reply for a book whose print needs 2625 px: the page keeps the 2048 px it has, and
    # is its own screen copy.
    page = Original.of(picture(1200, 1200))
    drawn = to_jpeg(reply(2048, 2048))

    checked = check_output(
        drawn, original=page, preview_side=1536, keep=(2625, 2625), screen_side=2048
    )

    assert checked.screen is None
    assert size_of(fit_output(drawn, original=page, keep=(2625, 2625), checked=True)) == (
        2048,
        2048,
    )
    without_side = check_output(to_jpeg(reply(4096, 4096)), original=page, preview_side=1536)
    assert without_side.screen is None


def test_the_judges_preview_frees_the_decoded_reply_before_its_second_pass(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A 2K reply for a 2K page cannot be drafted to 1536 px: its whole decode, the first pass
    # and the preview would otherwise all be alive at once (38 MB in a picture thread).
    page = Original.of(picture(2048, 2048))
    sources: list[Image.Image] = []
    real = Image.Image.resize

    def spy(self: Image.Image, size: tuple[int, int], *args: object, **kwargs: object) -> object:
        if size[0] == 1536 or size[1] == 1536:
            if sources:  # the second pass: the reply the first one read is closed by now
                with pytest.raises(ValueError, match="closed image"):
                    sources[0].getpixel((0, 0))
            sources.append(self)
        return real(self, size, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(Image.Image, "resize", spy)
    preview = check_output(to_jpeg(reply(2048, 2048)), original=page, preview_side=1536).preview
    monkeypatch.undo()

    assert len(sources) == 2
    assert preview.size == (1536, 1536)
    expected = reply(2048, 2048).resize((1536, 1536), Image.Resampling.LANCZOS)
    assert max(ImageStat.Stat(ImageChops.difference(preview, expected)).mean) < 2.0


def test_the_judges_preview_shows_the_centre_crop_of_a_wider_reply() -> None:
    page = Original.of(picture(1000, 1000))
    drawn = reply(1030, 1000)  # 3 % wider: within the tolerance, cropped to the square page
    drawn.paste((255, 0, 0), (0, 0, 15, 1000))

    preview = check_output(to_jpeg(drawn), original=page, preview_side=1536).preview

    assert preview.size == (1000, 1000)  # never enlarged
    red, green, _ = preview.getpixel((0, 500))
    assert not (red > 200 and green < 60)  # the red band is outside the page


def test_the_judges_preview_meets_the_same_checks_as_the_fit() -> None:
    original = picture(1024, 1024)
    page = Original.of(original)
    blank = to_jpeg(Image.new("RGB", (2048, 2048), (90, 90, 90)))
    echoed = to_jpeg(original.resize((2048, 2048), Image.Resampling.BICUBIC))
    answer = to_jpeg(reply(2048, 2048))
    for data, problem in [
        (blank, "blank"),
        (echoed, "unchanged"),
        (answer[: len(answer) * 2 // 3], "does not decode"),
        (to_jpeg(reply(2048, 1024)), "ratio"),
    ]:
        with pytest.raises(OutputInvalid, match=problem):
            check_output(data, original=page, preview_side=1536)
        with pytest.raises(OutputInvalid, match=problem):
            fit_output(data, original=page)


def test_a_checked_reply_is_fitted_without_being_checked_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    checks: list[object] = []
    monkeypatch.setattr(images, "_check_drawing", lambda *args, **kwargs: checks.append(args))
    page = Original.of(picture(1000, 1000))

    fitted = fit_output(to_jpeg(reply(2048, 2048)), original=page, checked=True)

    assert checks == [] and size_of(fitted) == (1000, 1000)
    fit_output(to_jpeg(reply(2048, 2048)), original=page)
    assert len(checks) == 1
