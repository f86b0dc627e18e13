"""Decoding, validation, normalization and quality checks for every image the pipeline touches.

Three kinds of image come through here, each trusted differently:

- the child's photo, uploaded by a parent: hostile until proven otherwise (``normalize_photo``);
- catalog cover and page images: ours, but still decoded defensively (``load_page_image``);
- model outputs: checked for the ways a model fails without an error (``fit_output``).

All of them leave as 8-bit sRGB ``RGB`` images with no metadata attached, so nothing from an
upload (GPS position, comments, a stale colour profile) can leak into what we send or print.

Every function here is synchronous and CPU-bound: callers on the event loop run them through
``asyncio.to_thread`` so heartbeats keep flowing while a 48-megapixel photo is decoded.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pillow_heif
from loguru import logger
from PIL import ExifTags, Image, ImageChops, ImageCms, ImageOps, ImageStat

from processors.errors import OrderError, RetryableError, TerminalError

# Registers the "HEIF" format with Pillow so HEIC photos from iPhones open like any other.
pillow_heif.register_heif_opener()

MAX_PHOTO_BYTES = 20 * 1024 * 1024
MIN_PHOTO_SIDE = 512

# Pillow format names that ``Image.open`` may try. Restricting the plugins is the format sniff:
# each plugin recognises its own magic bytes, so an HTML page named ``photo.jpg`` or a GIF
# matches none. (The JPEG plugin also opens phone cameras' multi-picture JPEGs, as "MPO".)
PHOTO_FORMATS = ("JPEG", "PNG", "WEBP", "HEIF")
# Image models answer in one of these; catalog art is stored in them too.
_GENERATED_FORMATS = ("JPEG", "PNG", "WEBP")

# How far (relative, on a log scale: 0.04 is about 4%) a model's picture may stray from the ratio
# it was asked for before it counts as the wrong shape. Gemini's output sizes only approximate
# the requested ratio (16:9 comes back as 1344x768, 1.6% off). The setting is
# OUTPUT_ASPECT_TOLERANCE.
DEFAULT_ASPECT_TOLERANCE = 0.04

# EXIF orientations that store the picture on its side: its upright width is the stored height.
_SIDEWAYS = frozenset({5, 6, 7, 8})

# Quality checks run on small copies: cheap, and insensitive to JPEG noise and resampling.
_CHECK_SIDE = 256
# Highest per-channel standard deviation (0-255 scale) that still counts as a blank image.
BLANK_STDDEV = 3.0
# Mean absolute difference (0-255 scale) under which an output is the input handed back.
# Re-encoding or rescaling a picture moves it by under 1 (measured at JPEG quality 75), while
# redrawing a character over a fifth of a page moves it by about 10.
UNCHANGED_MEAN_DIFF = 1.5

ErrorFactory = Callable[[str], OrderError]


class PhotoInvalid(TerminalError):
    """The child's photo cannot be used: the parent has to upload another one."""

    code = "photo_invalid"
    parent_message = (
        "We could not read the photo. Please upload a JPEG, PNG, WEBP or HEIC photo "
        "of at least 512 pixels."
    )


class BookImageInvalid(TerminalError):
    """A catalog cover or page image does not decode: the book itself needs fixing."""

    code = "book_image_invalid"


class OutputInvalid(RetryableError):
    """The image model answered with a picture we cannot use; another call may well succeed."""

    code = "ai_bad_output"


def normalize_photo(
    data: bytes, *, max_bytes: int = MAX_PHOTO_BYTES, min_side: int = MIN_PHOTO_SIDE
) -> Image.Image:
    """Validate an uploaded photo and return it upright, as 8-bit sRGB RGB.

    Everything that can be judged from the header (byte size, real format, pixel count, short
    side) is judged before any pixel is decoded, so a decompression bomb costs a few bytes of
    parsing. Animated images keep their first frame only. Raises ``PhotoInvalid``.
    """
    if len(data) > max_bytes:
        raise PhotoInvalid(f"photo is {len(data)} bytes, the limit is {max_bytes}")
    image = _open(data, PHOTO_FORMATS, PhotoInvalid)
    if min(image.size) < min_side:
        raise PhotoInvalid(f"photo is {image.width}x{image.height}, short side under {min_side}")
    return _decode(image, PhotoInvalid)


def load_page_image(data: bytes) -> Image.Image:
    """Decode a catalog cover or page image to upright 8-bit sRGB RGB.

    Raises ``BookImageInvalid`` (``book_image_invalid``): no retry can repair a broken catalog file.
    """
    return _decode(_open(data, _GENERATED_FORMATS, BookImageInvalid), BookImageInvalid)


def downscale(img: Image.Image, max_side: int) -> Image.Image:
    """Shrink ``img`` so its longer side is at most ``max_side``, keeping the aspect ratio.

    Images already small enough are returned as they are, not copied, so treat the result as
    read-only; images are never enlarged.
    """
    if max_side < 1:
        raise ValueError(f"max_side must be positive, got {max_side}")
    size = _within(img.size, max_side)
    if size == img.size:
        return img
    return img.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)


def to_jpeg(img: Image.Image, quality: int = 90) -> bytes:
    """Encode as a baseline RGB JPEG carrying pixels only.

    No EXIF (so a photo's GPS position never leaves the server), no colour profile (the pixels
    are sRGB, which is what a profile-less JPEG means) and no comment, which Pillow would
    otherwise copy from ``img.info``.
    """
    rgb = img if img.mode == "RGB" else img.convert("RGB")
    out = io.BytesIO()
    rgb.save(out, "JPEG", quality=quality, optimize=True, progressive=False, comment=b"")
    return out.getvalue()


def image_part_bytes(img: Image.Image, max_side: int) -> bytes:
    """JPEG bytes of ``img`` scaled down for a model request.

    Pixels beyond what the model looks at only add upload time and input tokens.
    """
    return to_jpeg(downscale(img, max_side))


def model_input_file(source: Path | bytes, max_side: int) -> bytes:
    """JPEG bytes of one of our own drawn images (a file or its bytes) for a model request.

    Like ``image_part_bytes``, but a JPEG is decoded at the smallest libjpeg scale that still
    gives ``max_side`` (``_draft``), so a 4K page costs a quarter of its pixels, not all of them.
    Our drawn images carry no EXIF, so no orientation is applied.
    """
    with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as img:
        scale = min(1.0, max_side / max(img.size))
        _draft(img, (math.ceil(img.width * scale), math.ceil(img.height * scale)))
        return image_part_bytes(img if img.mode == "RGB" else img.convert("RGB"), max_side)


@dataclass(frozen=True)
class Original:
    """What the output checks need of the page or cover a model redrew: its pixel size, and a
    copy of at most ``_CHECK_SIDE`` px to compare with. A page waiting for its reply holds this
    (a quarter of a megabyte), not the decoded catalog page (20 MB at 2550 x 3300)."""

    size: tuple[int, int]
    look: Image.Image

    @classmethod
    def of(cls, image: Image.Image) -> Original:
        return cls(image.size, downscale(image, _CHECK_SIDE))


def fit_output(
    output: bytes,
    *,
    original: Image.Image | Original,
    requested_ratio: str | None = None,
    tolerance: float = DEFAULT_ASPECT_TOLERANCE,
    keep: tuple[int, int] | None = None,
    checked: bool = False,
) -> bytes:
    """Check a model's picture and return it as the page's JPEG, at ``original``'s exact ratio
    and at ``original``'s pixel size or, when the picture has more pixels and ``keep`` (width,
    height: what the print files need, ``EditRequest.print_pixels``) asks for them, at up to
    the page-ratio size that covers ``keep``: the pixels paid for the print files
    (``IMAGE_SIZE``) are kept, and only those beyond what the print needs are dropped.

    ``original`` is the RGB page or cover the model was asked to redraw, as ``load_page_image``
    returns it, or its ``Original`` (all the checks use of it). ``requested_ratio`` (``"3:4"``)
    is what the model was asked for, which can differ a little from the page when the model
    offers no closer ratio. The output may differ from the requested ratio by ``tolerance`` at
    most; what is left between it and the page is centre-cropped (never more than that gap plus
    the tolerance) and the picture resized with LANCZOS, so nothing is ever stretched. Raises
    ``OutputInvalid`` when the output does not decode, is blank, has the wrong shape, or is the
    original handed back unchanged: each is a failed call, never a page to print.

    The shape is judged from the header, before any pixel is decoded. A JPEG reply that already
    has the result's size (a square 2K reply for a square book that needs 2K or more) is
    returned as the model's own bytes: no crop, no resize and no re-encoding to lose quality
    over, and its checks run on a 1/8-scale decode (``_draft``), which still reads every byte,
    so a truncated reply fails them. Any other JPEG larger than the result is decoded at 1/2,
    1/4 or 1/8 scale where that still covers it: a 4K reply for a 2K need costs a quarter of
    its pixels.

    ``checked``: this very ``output`` passed ``check_output`` with the same ``original``,
    ``requested_ratio`` and ``tolerance``, so its pixels are not checked again (the shape still
    is, from the header): a second look at another scale could judge a picture on the edge of
    a threshold the other way, after its judge call has started.
    """
    page = original if isinstance(original, Original) else Original.of(original)
    wanted = _wanted(page.size, keep)
    wanted_size = (math.ceil(page.size[0] * wanted), math.ceil(page.size[1] * wanted))
    opened = _open(output, _GENERATED_FORMATS, OutputInvalid)
    upright = _upright_size(opened)
    _check_shape(upright, page.size, requested_ratio, tolerance)
    size = _result_size(upright, page.size, wanted)
    if _is_the_result(opened, size):
        if not checked:
            _draft(opened, (_CHECK_SIDE, _CHECK_SIDE))
            _check_drawing(_decode(opened, OutputInvalid), page.look)
        return output
    _draft(opened, _fit_source_size(upright, wanted_size))
    image = _decode(opened, OutputInvalid)
    del opened  # often the same pixels as ``image``: fit_consuming frees them
    # Again on the pixels: a PNG may carry its orientation after the header.
    _check_shape(image.size, page.size, requested_ratio, tolerance)
    size = _result_size(image.size, page.size, wanted)
    if not checked:
        # Checked before the fit, on a small copy of the same centre crop: a reply smaller than
        # the page is not upscaled first only to be shrunk for its checks, nor at all when they
        # fail.
        _check_drawing(image, page.look, box=_centre_crop(image.size, size))
    return to_jpeg(fit_consuming(image, size))


@dataclass(frozen=True)
class CheckedOutput:
    """What ``check_output`` makes of a reply that passed: the judge's preview, and the
    screen PDF's copy of the page when the page will be larger than the screen side."""

    preview: Image.Image
    #: The screen copy's JPEG; None when the page is within ``screen_side`` (it is its own).
    screen: bytes | None


def check_output(
    output: bytes,
    *,
    original: Original,
    requested_ratio: str | None = None,
    tolerance: float = DEFAULT_ASPECT_TOLERANCE,
    preview_side: int,
    keep: tuple[int, int] | None = None,
    screen_side: int | None = None,
) -> CheckedOutput:
    """``fit_output``'s checks alone (``OutputInvalid`` for the same outputs), and the page the
    output will become as a preview of at most ``preview_side`` px: the same centre crop, from a
    decode at the smallest DCT scale that still covers it.

    The judge's input is made from this preview while the page itself is fitted: the fit
    decodes all of a 4K reply and resizes it to the print's pixels, half a second of a core,
    while the judge looks at 1536 px, which a half-scale decode of the reply serves. Then call
    ``fit_output(..., checked=True)`` with the same ``keep``.

    With ``screen_side``, a page that ``fit_output`` will make larger than it (``keep``: the
    print's pixels) also gets its screen copy here, the size ``downscale(page, screen_side)``
    has, from the same decode: a square 4K reply's half-scale decode is the 2048 px copy with
    no resize at all, where a copy made from the fitted page would decode 2625 px again and
    resample them (0.17 s of a core a picture, bench/README.md, eleventh pass).
    """
    opened = _open(output, _GENERATED_FORMATS, OutputInvalid)
    upright = _upright_size(opened)
    _check_shape(upright, original.size, requested_ratio, tolerance)
    left, top, right, bottom = _centre_crop(upright, original.size)
    scale = min(1.0, preview_side / max(right - left, bottom - top))
    preview = (max(1, round((right - left) * scale)), max(1, round((bottom - top) * scale)))
    page = _result_size(upright, original.size, _wanted(original.size, keep))
    screen = _within(page, screen_side) if screen_side and max(page) > screen_side else None
    _draft(opened, _fit_source_size(upright, screen or preview))
    image = _decode(opened, OutputInvalid)
    _check_shape(image.size, original.size, requested_ratio, tolerance)
    _check_drawing(image, original.look, box=_centre_crop(image.size, original.size))
    # Each step frees the picture it was made from (a 2K reply: 29 MB at most instead of 38).
    if screen is None:
        return CheckedOutput(fit_consuming(image, preview), None)
    copy = fit_consuming(image, screen)
    screen_jpeg = to_jpeg(copy)
    return CheckedOutput(fit_consuming(copy, preview), screen_jpeg)


def fit_consuming(image: Image.Image, size: tuple[int, int]) -> Image.Image:
    """``ImageOps.fit(image, size, LANCZOS)``, which closes ``image``: the same centre crop and
    separable filter, one axis at a time, with ``image``'s pixels freed after the first pass
    instead of living beside both passes' buffers (a 4K reply fitted to 2625 px: 82 MB at most
    instead of 103; a 2048 px page upscaled to 2625: 37 instead of 49). ``image`` is returned,
    not closed, when it already has ``size``."""
    if image.size == size:
        return image
    left, top, right, bottom = _centre_crop(image.size, size)
    first = image.resize(
        (image.width, size[1]), Image.Resampling.LANCZOS, box=(0.0, top, image.width, bottom)
    )
    image.close()
    if first.size == size:
        return first
    return first.resize(size, Image.Resampling.LANCZOS, box=(left, 0.0, right, first.height))


def _centre_crop(
    source: tuple[int, int], size: tuple[int, int]
) -> tuple[float, float, float, float]:
    """The largest centred box of ``source`` at ``size``'s ratio, as ``ImageOps.fit`` takes it."""
    (width, height), ratio = source, size[0] / size[1]
    crop_w, crop_h = (height * ratio, height) if width / height >= ratio else (width, width / ratio)
    left, top = (width - crop_w) / 2, (height - crop_h) / 2
    return left, top, left + crop_w, top + crop_h


def _wanted(original: tuple[int, int], keep: tuple[int, int] | None) -> float:
    """How many times ``original``'s size covers ``keep`` (at least 1)."""
    return max(1.0, *(k / o for k, o in zip(keep or (0, 0), original, strict=True)))


def _within(size: tuple[int, int], max_side: int) -> tuple[int, int]:
    """``size`` shrunk, as ``downscale`` shrinks a picture, to a longer side of ``max_side``."""
    scale = max_side / max(size)
    if scale >= 1:
        return size
    return max(1, round(size[0] * scale)), max(1, round(size[1] * scale))


def _result_size(
    source: tuple[int, int], original: tuple[int, int], wanted: float
) -> tuple[int, int]:
    """The page's size scaled up by as much of ``wanted`` as ``source`` has pixels for."""
    scale = max(1.0, min(source[0] / original[0], source[1] / original[1], wanted))
    return round(original[0] * scale), round(original[1] * scale)


def _is_the_result(opened: Image.Image, size: tuple[int, int]) -> bool:
    """Whether a reply's own bytes can be the page: a plain sRGB colour JPEG of exactly
    ``size``, stored upright. Its other metadata (content credentials, say) describes how the
    model made the picture, never the child, and stays."""
    return (
        opened.format == "JPEG"
        and opened.mode == "RGB"
        and opened.size == size
        and _header_orientation(opened) == 1
        and not opened.info.get("icc_profile")
    )


def _check_drawing(
    drawing: Image.Image,
    reference: Image.Image,
    box: tuple[float, float, float, float] | None = None,
) -> None:
    """``OutputInvalid`` when ``drawing`` (its ``box``, the part that becomes the page) is blank
    or ``reference`` (the original, at most ``_CHECK_SIDE`` px) handed back unchanged; both are
    judged on one copy at the reference's size, where JPEG noise and resampling do not count."""
    small = drawing.resize(reference.size, Image.Resampling.LANCZOS, box=box, reducing_gap=3.0)
    if max(ImageStat.Stat(small).stddev) < BLANK_STDDEV:
        raise OutputInvalid("model output is blank (near-uniform colour)")
    difference = ImageChops.difference(small, reference)
    mean_difference = sum(ImageStat.Stat(difference).mean) / 3
    if mean_difference < UNCHANGED_MEAN_DIFF:
        raise OutputInvalid(
            f"model output is the unchanged input (mean difference {mean_difference:.2f})"
        )


def _check_shape(
    size: tuple[int, int], page_size: tuple[int, int], requested_ratio: str | None, tolerance: float
) -> None:
    """``OutputInvalid`` when ``size`` strays from the requested ratio (or the page's) by more
    than ``tolerance`` (``fit_output``)."""
    width, height = size
    page = math.log(page_size[0] / page_size[1])
    asked = _ratio_log(requested_ratio) if requested_ratio else page
    got = math.log(width / height)
    if abs(got - asked) > tolerance:
        raise OutputInvalid(
            f"model output is {width}x{height}, not the {requested_ratio or 'page'} "
            f"ratio asked for (off by {abs(got - asked):.1%}, tolerance {tolerance:.1%})",
            code="ai_bad_output",
        )


def _fit_source_size(source: tuple[int, int], target: tuple[int, int]) -> tuple[int, int]:
    """The smallest scaled size of ``source`` from which ``ImageOps.fit`` still fills ``target``
    without enlarging: its centre crop at ``target``'s ratio must keep ``target``'s pixels."""
    (sw, sh), (tw, th) = source, target
    crop_w, crop_h = min(sw, sh * tw / th), min(sh, sw * th / tw)
    scale = min(1.0, max(tw / crop_w, th / crop_h))
    return math.ceil(sw * scale), math.ceil(sh * scale)


def _upright_size(image: Image.Image) -> tuple[int, int]:
    """The size ``image`` will have once its EXIF orientation is applied, from the header."""
    return (image.height, image.width) if _header_orientation(image) in _SIDEWAYS else image.size


def _header_orientation(image: Image.Image) -> int:
    """The EXIF orientation found before any pixel is decoded (JPEG and WEBP keep EXIF in the
    header; ``getexif`` would decode a whole PNG to look for a late eXIf chunk), else 1."""
    raw = image.info.get("exif")
    if not isinstance(raw, bytes):
        return 1
    exif = Image.Exif()
    try:
        exif.load(raw)
        return int(exif.get(ExifTags.Base.Orientation, 1) or 1)
    except Exception:  # Broken EXIF is not our business here; _decode meets it if it matters.
        return 1


def _draft(image: Image.Image, upright_size: tuple[int, int]) -> None:
    """Ask a not yet decoded JPEG to decode at the smallest libjpeg DCT scale (1/2, 1/4, 1/8)
    that keeps at least ``upright_size`` pixels (after orientation); other formats ignore it.

    DCT scaling is a good box-like downsampling, and the result is resized with LANCZOS
    afterwards anyway, so a smaller decode serves where the full one would be thrown away.
    """
    w, h = upright_size
    if _header_orientation(image) in _SIDEWAYS:
        w, h = h, w
    if w * 2 <= image.width and h * 2 <= image.height:
        image.draft(image.mode, (w, h))


def _ratio_log(label: str) -> float:
    w, h = label.split(":")
    return math.log(int(w) / int(h))


def _open(data: bytes, formats: tuple[str, ...], fail: ErrorFactory) -> Image.Image:
    """Parse the header only and reject decompression bombs before any pixel is decoded.

    Pillow raises ``DecompressionBombError`` above twice ``Image.MAX_IMAGE_PIXELS`` but only
    warns between one and two times the limit; a ``warnings`` filter cannot turn that warning
    into an error here, because filters are process-global and this runs in worker threads.
    Comparing the header's size with the same limit rejects that range just as firmly.
    """
    if not data:
        raise fail("empty file")
    try:
        image = Image.open(io.BytesIO(data), formats=formats)
    except Image.DecompressionBombError as exc:
        raise fail(f"decompression bomb: {exc}") from exc
    except Exception as exc:  # Pillow signals unreadable headers with many exception types.
        raise fail(f"not a readable {'/'.join(formats)} image: {exc}") from exc
    limit = Image.MAX_IMAGE_PIXELS
    if limit is not None and image.width * image.height > limit:
        raise fail(f"decompression bomb: {image.width}x{image.height} exceeds {limit} pixels")
    return image


def _decode(image: Image.Image, fail: ErrorFactory) -> Image.Image:
    """Decode the pixels, apply the EXIF orientation and convert to 8-bit sRGB RGB.

    Metadata is dropped from the result: it described the upload, not our pixels (the colour
    profile no longer applies after conversion, the orientation has been applied).
    """
    try:
        # In place: without an orientation tag, the default would return a full copy.
        ImageOps.exif_transpose(image, in_place=True)
        rgb = _to_srgb(image, image.info.get("icc_profile"))
    except Exception as exc:  # Truncated or corrupt data surfaces as OSError, ValueError, ...
        raise fail(f"image does not decode: {exc}") from exc
    rgb.info = {}
    return rgb


def _to_srgb(image: Image.Image, icc_profile: bytes | None) -> Image.Image:
    """Bring any decoded mode to 8-bit RGB, through the embedded ICC profile when it works."""
    if image.mode.startswith("I"):
        # 16-bit greyscale: scale to 8 bits; a plain convert would clip everything above 255.
        image = image.convert("I").point(lambda value: value / 256).convert("L")
    if image.has_transparency_data:
        # Transparent areas become white paper, not the black a plain RGB convert would give.
        background = Image.new("RGBA", image.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, image.convert("RGBA"))
    if image.mode not in ("RGB", "CMYK", "L"):
        image = image.convert("RGB")
    if icc_profile:
        try:
            # Profiles are built per call: LittleCMS profile handles are not safe to share
            # between the worker threads this runs in.
            source = ImageCms.ImageCmsProfile(io.BytesIO(icc_profile))
            srgb = ImageCms.createProfile("sRGB")
            converted = ImageCms.profileToProfile(image, source, srgb, outputMode="RGB")
        except (ImageCms.PyCMSError, OSError) as exc:
            # A broken or mismatched profile costs colour accuracy, not the photo.
            logger.warning("ignoring unusable ICC profile: {}", exc)
        else:
            if converted is not None:
                return converted
    return image.convert("RGB") if image.mode != "RGB" else image
