"""The gemini adapter, through the real google-genai client, against the local fake server."""

from __future__ import annotations

import traceback
from collections.abc import AsyncIterator
from io import BytesIO
from typing import Any

import pytest
from PIL import Image

from processors.ai.base import (
    AIBadResponse,
    AIConfigError,
    AIUnavailable,
    ContentBlocked,
    EditRequest,
    ImagePart,
)
from processors.ai.gemini import GeminiAI
from processors.analysis_models import ChildAnalysis, CoverAnalysis
from processors.errors import OrderError, TerminalError
from tests.fakes.gemini_server import (
    DEFAULT_ANALYSIS_JSON,
    Behaviour,
    FakeGemini,
    RecordedRequest,
    delayed,
    finish_reason,
    http_error,
    malformed_json,
    prompt_blocked,
    rate_limited,
    solid_jpeg,
    text_only,
    tinted_copy,
    unavailable,
    with_thoughts,
    wrong_aspect_ratio,
)


def png(size: tuple[int, int], color: tuple[int, int, int]) -> bytes:
    buffer = BytesIO()
    Image.new("RGB", size, color).save(buffer, "PNG")
    return buffer.getvalue()


PAGE = ImagePart(solid_jpeg((300, 400), (30, 90, 200)))
PHOTO = ImagePart(solid_jpeg((120, 120), (220, 170, 140)))
COVER = ImagePart(png((300, 400), (240, 200, 40)), mime_type="image/png")

pytestmark = pytest.mark.filterwarnings("ignore:Inheritance class AiohttpClientSession")


@pytest.fixture
async def fake() -> AsyncIterator[FakeGemini]:
    async with FakeGemini() as server:
        yield server


def make_ai(fake: FakeGemini, **overrides: Any) -> GeminiAI:
    options: dict[str, Any] = {
        "analysis_model": fake.ANALYSIS_MODEL,
        "image_models": [fake.IMAGE_MODEL, fake.SECOND_IMAGE_MODEL],
        "timeout_seconds": 5,
        "base_url": fake.base_url,
    }
    options.update(overrides)
    return GeminiAI(options.pop("api_key", fake.api_key), **options)


@pytest.fixture
async def ai(fake: FakeGemini) -> AsyncIterator[GeminiAI]:
    adapter = make_ai(fake)
    yield adapter
    await adapter.aclose()


@pytest.fixture
async def single_model_ai(fake: FakeGemini) -> AsyncIterator[GeminiAI]:
    """An adapter without a fallback model, so a 503 shows its own classification."""
    adapter = make_ai(fake, image_models=[fake.IMAGE_MODEL])
    yield adapter
    await adapter.aclose()


def page_request(*, identity_reference: ImagePart | None = COVER) -> EditRequest:
    return EditRequest(
        prompt="Redraw the page with the child as hero.",
        base=PAGE,
        child_photo=PHOTO,
        aspect_ratio="3:4",
        child_name="Mia",
        identity_reference=identity_reference,
    )


# --- analysis ------------------------------------------------------------------------------


async def test_cover_analysis_is_parsed_into_the_model(fake: FakeGemini, ai: GeminiAI) -> None:
    result = await ai.analyze(prompt="Describe the cover.", images=[COVER], schema=CoverAnalysis)

    assert result.value == CoverAnalysis.model_validate(DEFAULT_ANALYSIS_JSON["cover"])
    assert result.model == fake.ANALYSIS_MODEL
    assert result.usage.as_dict() == {
        "calls": 1,
        "images": 0,
        "input_tokens": 1290,
        "output_tokens": 1150,  # candidates + thoughts, as billed
    }
    (sent,) = fake.generate_requests()
    assert sent.model == fake.ANALYSIS_MODEL
    assert sent.texts == ["Describe the cover."]
    assert sent.images == [COVER.data]
    assert [p.mime_type for p in sent.parts if p.data] == ["image/png"]
    assert sent.generation_config["responseMimeType"] == "application/json"
    assert set(sent.generation_config["responseSchema"]["properties"]) == set(
        CoverAnalysis.model_fields
    )


async def test_child_analysis_returns_what_the_model_said(fake: FakeGemini, ai: GeminiAI) -> None:
    fake.analysis_json["child"] = {**DEFAULT_ANALYSIS_JSON["child"], "face_count": 2}

    result = await ai.analyze(prompt="Look at the child.", images=[PHOTO], schema=ChildAnalysis)

    assert result.value.face_count == 2
    assert fake.generate_requests()[0].schema_kind == "child"


@pytest.mark.parametrize(
    "answer",
    [
        '{"face_count": 1, "hair": "brown", ',  # cut off
        '{"face_count": "two", "hair": "x", "eyes": "x", "skin_tone": "x", "glasses": false}',
        '{"face_count": 1}',  # valid JSON, missing required fields
    ],
)
async def test_analysis_that_does_not_fit_the_schema_is_a_bad_response(
    fake: FakeGemini, ai: GeminiAI, answer: str
) -> None:
    fake.analysis_json["child"] = answer

    with pytest.raises(AIBadResponse, match="not a valid ChildAnalysis") as caught:
        await ai.analyze(prompt="Look at the child.", images=[PHOTO], schema=ChildAnalysis)
    assert caught.value.retryable


async def test_malformed_json_reply_is_a_bad_response(fake: FakeGemini, ai: GeminiAI) -> None:
    fake.enqueue(malformed_json())

    with pytest.raises(AIBadResponse):
        await ai.analyze(prompt="Describe the cover.", images=[COVER], schema=CoverAnalysis)


async def test_blocked_analysis_is_content_blocked(fake: FakeGemini, ai: GeminiAI) -> None:
    fake.enqueue(prompt_blocked("PROHIBITED_CONTENT"))

    with pytest.raises(ContentBlocked, match="PROHIBITED_CONTENT"):
        await ai.analyze(prompt="Look at the child.", images=[PHOTO], schema=ChildAnalysis)


# --- image generation ----------------------------------------------------------------------


async def test_parts_go_as_prompt_page_photo_then_identity_reference(
    fake: FakeGemini, ai: GeminiAI
) -> None:
    result = await ai.generate_image(page_request())

    (sent,) = fake.generate_requests()
    assert [("text" if p.text is not None else "image") for p in sent.parts] == [
        "text",
        "image",
        "image",
        "image",
    ]
    assert sent.texts == ["Redraw the page with the child as hero."]
    assert sent.images == [PAGE.data, PHOTO.data, COVER.data]
    assert [p.mime_type for p in sent.parts if p.data] == ["image/jpeg", "image/jpeg", "image/png"]
    assert sent.generation_config["responseModalities"] == ["IMAGE"]
    assert sent.generation_config["imageConfig"] == {"aspectRatio": "3:4", "imageSize": "2K"}
    assert result.data == tinted_copy(sent)[0]
    assert result.mime_type == "image/jpeg"
    assert result.model == fake.IMAGE_MODEL
    assert (result.usage.calls, result.usage.images) == (1, 1)


async def test_cover_is_drawn_without_identity_reference(fake: FakeGemini, ai: GeminiAI) -> None:
    await ai.generate_image(page_request(identity_reference=None))

    assert fake.generate_requests()[0].images == [PAGE.data, PHOTO.data]


async def test_thought_parts_are_skipped(fake: FakeGemini, ai: GeminiAI) -> None:
    fake.enqueue(with_thoughts())

    result = await ai.generate_image(page_request())

    assert result.data == tinted_copy(fake.generate_requests()[0])[0]


async def test_a_draft_image_among_thoughts_is_not_the_answer(
    fake: FakeGemini, single_model_ai: GeminiAI
) -> None:
    fake.enqueue(with_thoughts(final=False))

    with pytest.raises(AIBadResponse, match="no image in the reply"):
        await single_model_ai.generate_image(page_request())


async def test_analysis_ignores_thought_text(fake: FakeGemini, ai: GeminiAI) -> None:
    fake.enqueue(with_thoughts())

    result = await ai.analyze(prompt="Look at the child.", images=[PHOTO], schema=ChildAnalysis)

    assert result.value == ChildAnalysis.model_validate(DEFAULT_ANALYSIS_JSON["child"])


async def test_image_size_can_be_left_to_the_model(fake: FakeGemini) -> None:
    ai = make_ai(fake, image_size=None)
    await ai.generate_image(page_request())
    await ai.aclose()

    assert fake.generate_requests()[0].generation_config["imageConfig"] == {"aspectRatio": "3:4"}


@pytest.mark.parametrize("api_version", ["v1", "v1beta"])
async def test_configured_api_version_is_used(fake: FakeGemini, api_version: str) -> None:
    ai = make_ai(fake, api_version=api_version)
    await ai.generate_image(page_request())
    await ai.aclose()

    assert fake.generate_requests()[0].api_version == api_version


async def test_sdk_base_url_variable_works_when_no_base_url_is_configured(
    fake: FakeGemini, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GOOGLE_GEMINI_BASE_URL", fake.base_url)
    ai = make_ai(fake, base_url=None)
    await ai.generate_image(page_request())
    await ai.aclose()

    assert len(fake.generate_requests()) == 1


# --- model fallback ------------------------------------------------------------------------


async def test_next_image_model_is_used_when_the_first_is_not_found(
    fake: FakeGemini, ai: GeminiAI
) -> None:
    fake.models.discard(fake.IMAGE_MODEL)

    result = await ai.generate_image(page_request())

    assert result.model == fake.SECOND_IMAGE_MODEL
    assert [(r.model, r.status) for r in fake.generate_requests()] == [
        (fake.IMAGE_MODEL, 404),
        (fake.SECOND_IMAGE_MODEL, 200),
    ]


async def test_next_image_model_is_used_when_the_first_is_overloaded(
    fake: FakeGemini, ai: GeminiAI
) -> None:
    fake.enqueue(unavailable())

    result = await ai.generate_image(page_request())

    assert result.model == fake.SECOND_IMAGE_MODEL


async def test_rate_limit_does_not_switch_models(fake: FakeGemini, ai: GeminiAI) -> None:
    fake.enqueue(rate_limited("17s"))

    with pytest.raises(AIUnavailable):
        await ai.generate_image(page_request())
    assert [r.model for r in fake.generate_requests()] == [fake.IMAGE_MODEL]


async def test_no_image_model_found_is_a_config_error(fake: FakeGemini, ai: GeminiAI) -> None:
    fake.models -= {fake.IMAGE_MODEL, fake.SECOND_IMAGE_MODEL}

    with pytest.raises(AIConfigError, match=fake.SECOND_IMAGE_MODEL):
        await ai.generate_image(page_request())


# --- fault classification ------------------------------------------------------------------


@pytest.mark.parametrize("retry_delay, seconds", [("2s", 2.0), ("0.5s", 0.5), ("58.934s", 58.934)])
async def test_rate_limit_carries_the_server_retry_delay(
    fake: FakeGemini, single_model_ai: GeminiAI, retry_delay: str, seconds: float
) -> None:
    fake.enqueue(rate_limited(retry_delay))

    with pytest.raises(AIUnavailable) as caught:
        await single_model_ai.generate_image(page_request())
    assert caught.value.code == "ai_rate_limited"
    assert caught.value.retry_after == seconds


@pytest.mark.parametrize(
    "behaviour, error, code",
    [
        (unavailable(), AIUnavailable, "ai_unavailable"),
        (http_error(500, "INTERNAL", "An internal error has occurred."), AIUnavailable, None),
        (finish_reason("IMAGE_SAFETY"), ContentBlocked, "content_blocked"),
        (finish_reason("SAFETY"), ContentBlocked, "content_blocked"),
        (finish_reason("PROHIBITED_CONTENT"), ContentBlocked, "content_blocked"),
        (prompt_blocked("SAFETY"), ContentBlocked, "content_blocked"),
        (prompt_blocked("OTHER"), ContentBlocked, "content_blocked"),
        (finish_reason("NO_IMAGE"), AIBadResponse, "ai_bad_response"),
        (finish_reason("OTHER"), AIBadResponse, "ai_bad_response"),
        (text_only("Here is a story instead."), AIBadResponse, "ai_bad_response"),
        (http_error(400, "INVALID_ARGUMENT", "Bad image."), TerminalError, "ai_invalid_request"),
        (http_error(403, "PERMISSION_DENIED", "No access."), AIConfigError, "ai_config_error"),
        (http_error(400, "FAILED_PRECONDITION", "Billing."), AIConfigError, "ai_config_error"),
    ],
)
async def test_each_fault_is_classified(
    fake: FakeGemini,
    single_model_ai: GeminiAI,
    behaviour: Behaviour,
    error: type[OrderError],
    code: str | None,
) -> None:
    fake.enqueue(behaviour)

    with pytest.raises(error) as caught:
        await single_model_ai.generate_image(page_request())
    assert caught.value.code == (code or error.code)
    assert len(fake.generate_requests()) == 1


async def test_text_only_reply_tells_what_the_model_said(
    fake: FakeGemini, single_model_ai: GeminiAI
) -> None:
    fake.enqueue(text_only("I would rather write a poem."))

    with pytest.raises(AIBadResponse, match="rather write a poem"):
        await single_model_ai.generate_image(page_request())


async def test_slow_reply_past_the_timeout_is_unavailable(fake: FakeGemini) -> None:
    ai = make_ai(fake, timeout_seconds=0.3)
    fake.enqueue(delayed(30))

    with pytest.raises(AIUnavailable) as caught:
        await ai.generate_image(page_request())
    await ai.aclose()
    assert caught.value.code == "ai_timeout"


async def test_unsupported_aspect_ratio_is_terminal(fake: FakeGemini, ai: GeminiAI) -> None:
    request = EditRequest(
        prompt="p", base=PAGE, child_photo=PHOTO, aspect_ratio="5:7", child_name="Mia"
    )

    with pytest.raises(TerminalError) as caught:
        await ai.generate_image(request)
    assert caught.value.code == "ai_invalid_request"
    assert not caught.value.retryable


async def test_unreachable_server_is_unavailable(fake: FakeGemini) -> None:
    ai = make_ai(fake, base_url="http://127.0.0.1:9")  # discard port: nothing listens

    with pytest.raises(AIUnavailable):
        await ai.analyze(prompt="p", images=[PHOTO], schema=ChildAnalysis)
    await ai.aclose()


# --- secrets and start-up checks -----------------------------------------------------------


def everything_printed(err: BaseException) -> str:
    return "".join(traceback.format_exception(err)) + repr(err) + str(getattr(err, "detail", ""))


async def test_rejected_api_key_is_a_config_error_without_the_key(fake: FakeGemini) -> None:
    secret = "AIzaSy-not-the-right-key-123"
    ai = make_ai(fake, api_key=secret)

    with pytest.raises(AIConfigError) as caught:
        await ai.generate_image(page_request())
    await ai.aclose()
    assert "API key not valid" in caught.value.detail
    assert secret not in everything_printed(caught.value)


async def test_api_key_echoed_by_the_server_is_redacted(fake: FakeGemini, ai: GeminiAI) -> None:
    fake.enqueue(http_error(400, "INVALID_ARGUMENT", f"Request with key {fake.api_key} is bad."))

    with pytest.raises(TerminalError) as caught:
        await ai.generate_image(page_request())
    printed = everything_printed(caught.value)
    assert fake.api_key not in printed
    assert "Request with key *** is bad." in printed


async def test_check_models_passes_when_all_models_exist(fake: FakeGemini, ai: GeminiAI) -> None:
    await ai.check_models()

    assert {r.model for r in fake.requests if r.action == "get"} == fake.models


async def test_check_models_names_the_missing_model(fake: FakeGemini) -> None:
    ai = make_ai(fake, image_models=[fake.IMAGE_MODEL, "gemini-does-not-exist"])

    with pytest.raises(ValueError, match="image model 'gemini-does-not-exist' was not found"):
        await ai.check_models()
    await ai.aclose()


async def test_check_models_reports_a_rejected_key_without_it(fake: FakeGemini) -> None:
    secret = "AIzaSy-wrong-key-for-start-up"
    ai = make_ai(fake, api_key=secret)

    with pytest.raises(ValueError, match="rejected the configuration") as caught:
        await ai.check_models()
    await ai.aclose()
    assert secret not in everything_printed(caught.value)


def test_fake_replies_have_the_requested_shape() -> None:
    """Guards the fake itself: a wrong-shaped default reply would hide adapter bugs."""
    request = RecordedRequest(
        api_version="v1beta",
        model="m",
        action="generateContent",
        generation_config={"imageConfig": {"aspectRatio": "16:9"}},
    )
    with Image.open(BytesIO(tinted_copy(request)[0])) as image:
        assert image.size == (256, 144)


async def test_an_image_of_another_shape_is_returned_for_the_pipeline_to_fit(
    fake: FakeGemini, single_model_ai: GeminiAI
) -> None:
    fake.enqueue(wrong_aspect_ratio())
    result = await single_model_ai.generate_image(page_request())
    with Image.open(BytesIO(result.data)) as image:
        width, height = image.size
    assert abs(width / height - 3 / 4) > 0.05  # not what was asked; book.py crops it to the page
