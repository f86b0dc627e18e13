"""Image validation and normalization against a generated hostile-photo corpus.

Every input is made in code, so the corpus documents itself: each case says what a parent (or an
attacker) uploads and what the pipeline does with it.
"""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass

import pytest
from PIL import Image, ImageCms, ImageDraw

from processors.ai.models import CATALOG, nearest_ratio
from processors.errors import RetryableError, TerminalError
from processors.images import (
    BookImageInvalid,
    OutputInvalid,
    PhotoInvalid,
    downscale,
    fit_output,
    image_part_bytes,
    load_page_image,
    normalize_photo,
    to_jpeg,
)

RED = (255, 0, 0)
GREEN = (0, 255, 0)
BLUE = (0, 0, 255)
WHITE = (255, 255, 255)
ORIENTATION = 0x0112
GPS_IFD = 0x8825


def encode(image: Image.Image, fmt: str, **params: object) -> bytes:
    out = io.BytesIO()
    image.save(out, fmt, **params)
    return out.getvalue()


def picture(width: int = 800, height: int = 600) -> Image.Image:
    """A non-uniform RGB test picture (three crossing gradients); nowhere pure green."""
    horizontal = Image.linear_gradient("L").rotate(90).resize((width, height))
    vertical = Image.linear_gradient("L").resize((width, height))
    return Image.merge("RGB", (horizontal, vertical, Image.eval(horizontal, lambda v: 255 - v)))


def png_header_only(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims ``width`` x ``height`` pixels: a decompression bomb shape."""

    def chunk(kind: bytes, payload: bytes) -> bytes:
        crc = zlib.crc32(kind + payload)
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )


def jpeg_with_comments(base: bytes, count: int, size: int) -> bytes:
    """Insert ``count`` COM segments of ``size`` bytes right after the JPEG's SOI marker."""
    segment = b"\xff\xfe" + struct.pack(">H", size + 2) + b"c" * size
    return base[:2] + segment * count + base[2:]


def close_to(actual: tuple[int, ...], expected: tuple[int, ...], tolerance: int = 12) -> bool:
    return all(abs(a - e) <= tolerance for a, e in zip(actual, expected, strict=True))


# --- the hostile corpus --------------------------------------------------------------------


def _truncated_jpeg() -> bytes:
    data = encode(picture(), "JPEG")
    return data[: len(data) // 2]


def _cmyk_jpeg() -> bytes:
    return encode(Image.new("CMYK", (800, 600), (0, 255, 255, 0)), "JPEG", quality=95)


def _png_16bit() -> bytes:
    return encode(Image.new("I;16", (600, 600), 0x8000), "PNG")


def _rgba_png() -> bytes:
    image = Image.new("RGBA", (800, 600), (0, 0, 0, 0))
    ImageDraw.Draw(image).rectangle((0, 0, 399, 599), fill=(*BLUE, 255))
    return encode(image, "PNG")


def _palette_png() -> bytes:
    return encode(Image.new("RGB", (800, 600), RED).convert("P"), "PNG")


def _animated_gif() -> bytes:
    frames = [Image.new("RGB", (800, 600), colour).convert("P") for colour in (RED, BLUE)]
    return encode(frames[0], "GIF", save_all=True, append_images=frames[1:])


def _animated_webp() -> bytes:
    frames = [Image.new("RGB", (800, 600), colour) for colour in (RED, BLUE)]
    return encode(frames[0], "WEBP", save_all=True, append_images=frames[1:], lossless=True)


def _heic() -> bytes:
    return encode(Image.new("RGB", (800, 600), BLUE), "HEIF", quality=90)


def _multi_picture_jpeg() -> bytes:
    frames = [Image.new("RGB", (800, 600), colour) for colour in (RED, BLUE)]
    return encode(frames[0], "MPO", save_all=True, append_images=frames[1:])


def _huge_exif_and_comments() -> bytes:
    exif = Image.Exif()
    exif[0x9286] = b"x" * 60_000  # UserComment, close to the 64 KiB APP1 segment limit
    base = encode(Image.new("RGB", (800, 600), RED), "JPEG", exif=exif)
    return jpeg_with_comments(base, count=40, size=65_000)  # ~2.6 MB of COM segments


def _garbage_icc_profile() -> bytes:
    return encode(Image.new("RGB", (800, 600), RED), "JPEG", icc_profile=b"not a profile" * 20)


def _srgb_tagged() -> bytes:
    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    return encode(Image.new("RGB", (800, 600), RED), "JPEG", icc_profile=srgb)


@dataclass(frozen=True)
class Accepted:
    size: tuple[int, int]
    pixel: tuple[int, int]
    colour: tuple[int, int, int]


@dataclass(frozen=True)
class Rejected:
    detail: str


CORPUS: dict[str, tuple[Callable[[], bytes], Accepted | Rejected]] = {
    "zero-byte file": (lambda: b"", Rejected("empty file")),
    "truncated JPEG": (_truncated_jpeg, Rejected("does not decode")),
    "bomb: PNG header 100000x100000": (
        lambda: png_header_only(100_000, 100_000),
        Rejected("decompression bomb"),
    ),
    "bomb: PNG header 10000x10000 (Pillow only warns)": (
        lambda: png_header_only(10_000, 10_000),
        Rejected("exceeds 89478485 pixels"),
    ),
    "CMYK JPEG": (_cmyk_jpeg, Accepted((800, 600), (400, 300), RED)),
    "16-bit greyscale PNG scaled, not clipped": (
        _png_16bit,
        Accepted((600, 600), (300, 300), (128, 128, 128)),
    ),
    "RGBA PNG, transparent half becomes white": (
        _rgba_png,
        Accepted((800, 600), (600, 300), WHITE),
    ),
    "RGBA PNG, opaque half keeps its colour": (_rgba_png, Accepted((800, 600), (200, 300), BLUE)),
    "palette PNG": (_palette_png, Accepted((800, 600), (400, 300), RED)),
    "animated GIF (GIF is not accepted)": (_animated_gif, Rejected("not a readable")),
    "animated WEBP keeps its first frame": (_animated_webp, Accepted((800, 600), (400, 300), RED)),
    "HEIC": (_heic, Accepted((800, 600), (400, 300), BLUE)),
    "multi-picture JPEG from a phone camera": (
        _multi_picture_jpeg,
        Accepted((800, 600), (400, 300), RED),
    ),
    "HTML named .jpg": (
        lambda: b"<!DOCTYPE html><html><body><img src=x onerror=alert(1)></body></html>",
        Rejected("not a readable"),
    ),
    "SVG named .jpg": (
        lambda: b'<svg xmlns="http://www.w3.org/2000/svg" width="4000" height="4000"/>',
        Rejected("not a readable"),
    ),
    "JPEG with huge EXIF and comment blocks": (
        _huge_exif_and_comments,
        Accepted((800, 600), (400, 300), RED),
    ),
    "JPEG with a garbage ICC profile": (
        _garbage_icc_profile,
        Accepted((800, 600), (400, 300), RED),
    ),
    "JPEG tagged with an sRGB ICC profile": (
        _srgb_tagged,
        Accepted((800, 600), (400, 300), RED),
    ),
    "too small: 300x300": (
        lambda: encode(picture(300, 300), "JPEG"),
        Rejected("short side under 512"),
    ),
    "too small: 511 px short side": (
        lambda: encode(picture(2000, 511), "PNG"),
        Rejected("short side under 512"),
    ),
    "smallest accepted: 512x512": (
        lambda: encode(Image.new("RGB", (512, 512), RED), "PNG"),
        Accepted((512, 512), (0, 0), RED),
    ),
    "over 20 MB": (
        lambda: encode(picture(), "JPEG") + b"\0" * (20 * 1024 * 1024),
        Rejected("the limit is 20971520"),
    ),
}


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
@pytest.mark.parametrize("case", CORPUS, ids=list(CORPUS))
def test_hostile_corpus_has_documented_outcome(case: str) -> None:
    make, outcome = CORPUS[case]
    data = make()
    if isinstance(outcome, Rejected):
        with pytest.raises(PhotoInvalid) as caught:
            normalize_photo(data)
        error = caught.value
        assert error.code == "photo_invalid"
        assert not error.retryable
        assert outcome.detail in error.detail
        assert error.parent_message == (
            "We could not read the photo. Please upload a JPEG, PNG, WEBP or HEIC photo "
            "of at least 512 pixels."
        )
    else:
        image = normalize_photo(data)
        assert image.mode == "RGB"
        assert image.size == outcome.size
        assert close_to(image.getpixel(outcome.pixel), outcome.colour)
        assert image.info == {}


def test_size_limit_is_about_bytes_not_content() -> None:
    data = encode(picture(), "JPEG")
    assert normalize_photo(data, max_bytes=len(data)).size == (800, 600)
    with pytest.raises(PhotoInvalid, match="limit"):
        normalize_photo(data, max_bytes=len(data) - 1)


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_bomb_limit_is_pillows_global_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    data = encode(picture(), "PNG")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 800 * 600 - 1)
    with pytest.raises(PhotoInvalid, match="decompression bomb"):
        normalize_photo(data)


def test_exif_orientation_is_applied_and_metadata_dropped() -> None:
    stored = Image.new("RGB", (800, 600), (128, 128, 128))
    ImageDraw.Draw(stored).rectangle((0, 0, 99, 99), fill=RED)
    exif = Image.Exif()
    exif[ORIENTATION] = 6  # "rotate 90° clockwise to display"
    gps = exif.get_ifd(GPS_IFD)
    gps[1] = "N"
    gps[2] = (52.0, 31.0, 12.0)

    image = normalize_photo(encode(stored, "JPEG", exif=exif))

    assert image.size == (600, 800)
    assert close_to(image.getpixel((550, 50)), RED)  # stored top-left is displayed top-right
    assert close_to(image.getpixel((50, 50)), (128, 128, 128))
    reopened = Image.open(io.BytesIO(to_jpeg(image)))
    assert not reopened.getexif()
    assert "exif" not in reopened.info


def test_to_jpeg_writes_baseline_pixels_only() -> None:
    image = normalize_photo(_huge_exif_and_comments())
    image.info["comment"] = b"left behind by some other code"

    reopened = Image.open(io.BytesIO(to_jpeg(image)))

    assert reopened.format == "JPEG"
    assert reopened.mode == "RGB"
    assert "progressive" not in reopened.info
    assert "comment" not in reopened.info
    assert "icc_profile" not in reopened.info
    assert not reopened.getexif()


def test_downscale_keeps_aspect_and_never_enlarges() -> None:
    big = picture(4000, 3000)
    assert downscale(big, 1024).size == (1024, 768)
    assert downscale(picture(3000, 4000), 1024).size == (768, 1024)
    small = picture(600, 400)
    assert downscale(small, 1024) is small
    with pytest.raises(ValueError):
        downscale(small, 0)


def test_image_part_bytes_is_a_downscaled_jpeg() -> None:
    reopened = Image.open(io.BytesIO(image_part_bytes(picture(4000, 3000), 1536)))
    assert reopened.format == "JPEG"
    assert reopened.size == (1536, 1152)


def test_load_page_image_decodes_catalog_art() -> None:
    page = Image.new("RGBA", (1000, 800), (*BLUE, 255))
    image = load_page_image(encode(page, "PNG"))
    assert image.mode == "RGB"
    assert image.size == (1000, 800)
    assert image.getpixel((10, 10)) == BLUE


@pytest.mark.parametrize(
    "data",
    [b"", b"<html></html>", _truncated_jpeg(), _animated_gif()],
    ids=["empty", "html", "truncated", "gif"],
)
def test_load_page_image_rejects_broken_catalog_art(data: bytes) -> None:
    with pytest.raises(BookImageInvalid) as caught:
        load_page_image(data)
    assert isinstance(caught.value, TerminalError)
    assert caught.value.code == "book_image_invalid"


# --- model outputs ---------------------------------------------------------------------------


def size_of(jpeg: bytes) -> tuple[int, int]:
    """The size of a JPEG ``fit_output`` returned (it is one, or this fails)."""
    with Image.open(io.BytesIO(jpeg)) as image:
        assert image.format == "JPEG"
        return image.size


def redrawn(original: Image.Image) -> Image.Image:
    """``original`` with a character drawn over a fifth of it, as a model edit would."""
    edited = original.copy()
    width, height = edited.size
    box = (width // 3, height // 3, width // 3 + width // 3, height // 3 + height * 3 // 5)
    ImageDraw.Draw(edited).ellipse(box, fill=(250, 200, 160))
    return edited


def assert_output_invalid(output: bytes, original: Image.Image, detail: str) -> None:
    with pytest.raises(OutputInvalid) as caught:
        fit_output(output, original=original)
    assert isinstance(caught.value, RetryableError)
    assert caught.value.code == "ai_bad_output"
    assert detail in caught.value.detail


@pytest.mark.parametrize("colour", [WHITE, (0, 0, 0), (40, 90, 200)])
def test_blank_output_is_rejected(colour: tuple[int, int, int]) -> None:
    blank = encode(Image.new("RGB", (1024, 1024), colour), "PNG")
    assert_output_invalid(blank, picture(800, 800), "blank")


def test_undecodable_output_is_rejected() -> None:
    assert_output_invalid(b"I'm sorry, I can't draw that.", picture(), "not a readable")


@pytest.mark.parametrize("size", [(800, 600), (1600, 1200), (1024, 768)])
def test_unchanged_input_is_rejected_even_resized_and_reencoded(size: tuple[int, int]) -> None:
    original = picture(800, 600)
    echoed = to_jpeg(original.resize(size, Image.Resampling.BICUBIC))
    assert_output_invalid(echoed, original, "unchanged")


def test_real_edit_is_accepted_at_the_original_size() -> None:
    original = picture(800, 600)
    answer = to_jpeg(redrawn(original))
    fitted = fit_output(answer, original=original)
    assert size_of(fitted) == original.size
    assert fitted == answer  # a JPEG of the page's size is kept as the model sent it


def test_a_picture_with_more_pixels_than_the_page_keeps_them_for_print() -> None:
    """The pixels asked for the print files (IMAGE_SIZE=auto) are not thrown away."""
    original = picture(400, 300)
    answer = to_jpeg(redrawn(original).resize((1600, 1200)))

    def fitted_size(keep: tuple[int, int] | None) -> tuple[int, int]:
        return size_of(fit_output(answer, original=original, keep=keep))

    assert fitted_size((1600, 1200)) == (1600, 1200)
    # Beyond what the print needs, they are.
    assert fitted_size((800, 600)) == (800, 600)
    assert fitted_size(None) == (400, 300)


def test_a_larger_picture_of_a_nearby_ratio_is_cropped_to_the_page_at_its_resolution() -> None:
    original = picture(850, 1100)  # US letter; the model answered 3:4 at 2K
    reply = redrawn(original).resize((1792, 2400))

    fitted = fit_output(to_jpeg(reply), original=original, requested_ratio="3:4", keep=(2625, 3375))

    assert size_of(fitted) == (1792, 2319)


@pytest.mark.parametrize(
    ("page", "output", "requested"),
    [
        ((600, 800), (1024, 512), "3:4"),  # a 2:1 reply for a 3:4 page
        ((800, 800), (1344, 768), "1:1"),  # 16:9 for a square
        ((800, 600), (1024, 1024), "4:3"),  # a square for 4:3
        ((800, 600), (1024, 1024), None),  # judged against the page itself
    ],
)
def test_an_output_of_the_wrong_shape_is_rejected_not_cropped(
    page: tuple[int, int], output: tuple[int, int], requested: str | None
) -> None:
    original = picture(*page)
    reply = redrawn(original).resize(output)

    with pytest.raises(OutputInvalid, match="ratio asked for") as caught:
        fit_output(to_jpeg(reply), original=original, requested_ratio=requested)
    assert caught.value.code == "ai_bad_output"


def test_gemini_sizes_that_only_approximate_the_ratio_are_accepted() -> None:
    original = picture(1600, 900)  # 16:9; Gemini answers 1344x768 for it, 1.6% off
    reply = redrawn(original).resize((1344, 768))

    fitted = fit_output(to_jpeg(reply), original=original, requested_ratio="16:9")

    assert size_of(fitted) == original.size


def test_the_gap_between_the_page_and_the_nearest_offered_ratio_is_cropped() -> None:
    original = picture(850, 1100)  # US letter, 0.773; the model was asked for 3:4 (0.75)
    reply = redrawn(original).resize((768, 1024))

    fitted = fit_output(to_jpeg(reply), original=original, requested_ratio="3:4")

    assert size_of(fitted) == original.size


def test_the_tolerance_is_a_parameter() -> None:
    original = picture(800, 800)
    reply = to_jpeg(redrawn(original).resize((840, 800)))  # 4.9% wide

    with pytest.raises(OutputInvalid):
        fit_output(reply, original=original, requested_ratio="1:1", tolerance=0.02)
    fitted = fit_output(reply, original=original, requested_ratio="1:1", tolerance=0.06)
    assert size_of(fitted) == (800, 800)


TEN = CATALOG["gemini-3-pro-image"].aspect_ratios
FOURTEEN = CATALOG["gemini-3.1-flash-image"].aspect_ratios


@pytest.mark.parametrize(
    ("width", "height", "ratios", "label"),
    [
        (1024, 1024, TEN, "1:1"),
        (800, 600, TEN, "4:3"),
        (1920, 1080, TEN, "16:9"),
        (2550, 3300, TEN, "3:4"),  # US letter portrait, 0.773: nearer 3:4 (0.75) than 4:5 (0.8)
        (5000, 1000, TEN, "21:9"),
        (1000, 5000, TEN, "9:16"),
        (1000, 5000, FOURTEEN, "1:4"),
        (8000, 1000, FOURTEEN, "8:1"),
    ],
)
def test_nearest_ratio_picks_the_nearest_the_model_offers(
    width: int, height: int, ratios: tuple[str, ...], label: str
) -> None:
    assert nearest_ratio(width, height, ratios) == label


def test_nearest_ratio_rejects_empty_size() -> None:
    with pytest.raises(ValueError):
        nearest_ratio(0, 100, TEN)
