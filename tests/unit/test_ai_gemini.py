"""The gemini adapter, through the real google-genai client, against the local fake server."""

from __future__ import annotations

import traceback
from collections.abc import AsyncIterator
from dataclasses import replace
from io import BytesIO
from typing import Any

import pytest
from PIL import Image

from processors.ai.base import (
    AIBadResponse,
    AIConfigError,
    AIRecitation,
    AIUnavailable,
    ContentBlocked,
    EditRequest,
    ImagePart,
    NoUsableModel,
    Usage,
)
from processors.ai.gemini import GeminiAI
from processors.analysis_models import ChildAnalysis, CoverAnalysis
from processors.errors import OrderError, TerminalError
from testkit.fakes.gemini_server import (
    DEFAULT_ANALYSIS_JSON,
    Behaviour,
    FakeGemini,
    RecordedRequest,
    delayed,
    drifting_analysis,
    finish_reason,
    hang,
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
        # 3:4 at 2K is 1792x2400 px: enough, 1K's 896x1200 is not (IMAGE_SIZE=auto).
        print_pixels=(1700, 2300),
    )


# --- analysis ------------------------------------------------------------------------------


async def test_cover_analysis_is_parsed_into_the_model(fake: FakeGemini, ai: GeminiAI) -> None:
    result = await ai.analyze(prompt="Describe the cover.", images=[COVER], schema=CoverAnalysis)

    assert result.value == CoverAnalysis.model_validate(DEFAULT_ANALYSIS_JSON["cover"])
    assert result.model == fake.ANALYSIS_MODEL
    billed = {
        "calls": 1,
        "images": 0,
        "input_tokens": 1290,
        "output_tokens": 1150,
    }  # candidates + thoughts, as billed
    assert result.usage.as_dict() == {
        **billed,
        "unanswered": 0,
        "unpriced_calls": 0,
        "by_model": {fake.ANALYSIS_MODEL: billed},
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
        '{"hair": "brown", "eyes": "green"}',  # valid JSON without the deciding face_count
        '{"face_count": -1}',
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


async def test_auto_sends_no_size_when_the_request_states_no_print_need(
    fake: FakeGemini, ai: GeminiAI
) -> None:
    await ai.generate_image(replace(page_request(), print_pixels=None))

    assert fake.generate_requests()[0].generation_config["imageConfig"] == {"aspectRatio": "3:4"}


@pytest.mark.parametrize(
    ("page", "needed", "size"),
    [
        # 2K's 1792x2400 is a little narrower than 3:4: cropped to the page, 1792x2389.
        ("3:4", (1792, 2389), "2K"),
        ("3:4", (1792, 2390), "4K"),  # one row more
        # A US-letter page (0.773) is drawn at 3:4 (0.75) and cropped to the page: 2K's
        # 1792x2400 keeps 1792x2319, short of 2350 rows.
        ("850:1100", (1790, 2350), "4K"),
        ("850:1100", (1790, 2300), "2K"),
    ],
)
async def test_auto_counts_the_crop_to_the_page(
    fake: FakeGemini, ai: GeminiAI, page: str, needed: tuple[int, int], size: str
) -> None:
    await ai.generate_image(replace(page_request(), aspect_ratio=page, print_pixels=needed))

    assert fake.generate_requests()[0].generation_config["imageConfig"]["imageSize"] == size


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


@pytest.mark.parametrize(
    "page, model, asked",
    [
        ("1000:1400", FakeGemini.IMAGE_MODEL, "3:4"),  # 5:7 is nobody's ratio: nearest is asked
        ("1000:4000", FakeGemini.IMAGE_MODEL, "1:4"),  # only 3.1 Flash Image has 1:4
        ("1000:4000", FakeGemini.SECOND_IMAGE_MODEL, "9:16"),
        ("2550:3300", FakeGemini.SECOND_IMAGE_MODEL, "3:4"),  # an 8.5x11 page
    ],
)
async def test_the_ratio_asked_is_the_nearest_the_model_accepts(
    fake: FakeGemini, page: str, model: str, asked: str
) -> None:
    ai = make_ai(fake, image_models=[model])
    request = EditRequest(
        prompt="p", base=PAGE, child_photo=PHOTO, aspect_ratio=page, child_name="Mia"
    )

    result = await ai.generate_image(request)
    await ai.aclose()

    assert fake.generate_requests()[0].aspect_ratio == asked
    assert result.aspect_ratio == asked


async def test_image_size_is_never_sent_to_a_model_that_refuses_it(fake: FakeGemini) -> None:
    fake.models.add(fake.NO_SIZE_IMAGE_MODEL)  # as while gemini-2.5-flash-image still ran
    ai = make_ai(
        fake, image_models=[fake.NO_SIZE_IMAGE_MODEL, fake.SECOND_IMAGE_MODEL], image_size="2K"
    )
    fake.enqueue(unavailable())  # the first model is overloaded once: the second gets the call

    first = await ai.generate_image(page_request())
    second = await ai.generate_image(page_request())
    await ai.aclose()

    configs = [
        (r.model, r.generation_config["imageConfig"], r.status) for r in fake.generate_requests()
    ]
    assert configs == [
        (fake.NO_SIZE_IMAGE_MODEL, {"aspectRatio": "3:4"}, 503),
        (fake.SECOND_IMAGE_MODEL, {"aspectRatio": "3:4", "imageSize": "2K"}, 200),
        (fake.NO_SIZE_IMAGE_MODEL, {"aspectRatio": "3:4"}, 200),
    ]
    assert (first.model, second.model) == (fake.SECOND_IMAGE_MODEL, fake.NO_SIZE_IMAGE_MODEL)


async def test_the_fake_refuses_image_size_where_the_model_does(fake: FakeGemini) -> None:
    """Guards the fake: the 400 the adapter must never provoke is really there."""
    from google.genai import errors as genai_errors
    from google.genai import types

    fake.models.add(fake.NO_SIZE_IMAGE_MODEL)
    ai = make_ai(fake)
    with pytest.raises(genai_errors.ClientError) as caught:
        await ai._client.aio.models.generate_content(
            model=fake.NO_SIZE_IMAGE_MODEL,
            contents="draw",
            config=types.GenerateContentConfig(
                image_config=types.ImageConfig(aspect_ratio="1:1", image_size="2K")
            ),
        )
    await ai.aclose()
    assert caught.value.code == 400


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
    assert await ai.check_models() == []

    assert {r.model for r in fake.requests if r.action == "get"} == {
        fake.ANALYSIS_MODEL,
        fake.IMAGE_MODEL,
        fake.SECOND_IMAGE_MODEL,
    }


async def test_a_missing_model_is_skipped_while_another_of_its_kind_remains(
    fake: FakeGemini,
) -> None:
    ai = make_ai(fake, image_models=["gemini-does-not-exist", fake.IMAGE_MODEL])

    warnings = await ai.check_models()
    await ai.generate_image(page_request())
    await ai.aclose()

    assert len(warnings) == 1 and "'gemini-does-not-exist' was not found" in warnings[0]
    assert [r.model for r in fake.generate_requests()] == [fake.IMAGE_MODEL]


async def test_a_shut_down_image_model_is_not_found(fake: FakeGemini) -> None:
    ai = make_ai(fake, image_models=[fake.NO_SIZE_IMAGE_MODEL, fake.IMAGE_MODEL])

    (warning,) = await ai.check_models()
    await ai.aclose()
    assert "use 'gemini-3.1-flash-image' instead" in warning


async def test_a_retired_default_is_named_with_its_replacement(fake: FakeGemini) -> None:
    ai = make_ai(fake, analysis_model="gemini-2.5-flash")

    with pytest.raises(NoUsableModel) as caught:
        await ai.check_models()
    await ai.aclose()
    assert "'gemini-2.5-flash' has been shut down" in str(caught.value)
    assert "use 'gemini-3.5-flash' instead" in str(caught.value)


async def test_no_usable_image_model_is_reported_not_raised_as_value_error(
    fake: FakeGemini,
) -> None:
    ai = make_ai(fake, image_models=["gemini-3-pro-image-preview"])

    with pytest.raises(NoUsableModel, match="use 'gemini-3-pro-image' instead"):
        await ai.check_models()
    await ai.aclose()


async def test_a_model_that_answered_not_found_is_not_tried_again(
    fake: FakeGemini, ai: GeminiAI
) -> None:
    fake.retire(fake.IMAGE_MODEL)  # shut down after the start-up check

    for _ in range(3):
        await ai.generate_image(page_request())

    assert [(r.model, r.status) for r in fake.generate_requests()] == [
        (fake.IMAGE_MODEL, 404),
        *[(fake.SECOND_IMAGE_MODEL, 200)] * 3,
    ]


async def test_check_models_reports_a_rejected_key_without_it(fake: FakeGemini) -> None:
    secret = "AIzaSy-wrong-key-for-start-up"
    ai = make_ai(fake, api_key=secret)

    with pytest.raises(NoUsableModel, match="rejected the configuration") as caught:
        await ai.check_models()
    await ai.aclose()
    assert secret not in everything_printed(caught.value)


# --- usage: every answered call is billed ----------------------------------------------------


@pytest.mark.parametrize(
    "behaviour, error",
    [
        (text_only(), AIBadResponse),
        (finish_reason("IMAGE_SAFETY"), ContentBlocked),
        (prompt_blocked("SAFETY"), ContentBlocked),
        (finish_reason("IMAGE_RECITATION"), AIRecitation),
    ],
)
async def test_a_failed_answer_is_still_counted(
    fake: FakeGemini, single_model_ai: GeminiAI, behaviour: Behaviour, error: type[OrderError]
) -> None:
    fake.enqueue(behaviour)
    usage = Usage()

    with pytest.raises(error):
        await single_model_ai.generate_image(page_request(), usage)
    assert (usage.calls, usage.images) == (len(fake.answered()), 0) == (1, 0)
    assert usage.by_model[fake.IMAGE_MODEL]["calls"] == 1


async def test_http_errors_are_not_counted_and_a_timeout_is_unanswered(fake: FakeGemini) -> None:
    ai = make_ai(fake, image_models=[fake.IMAGE_MODEL], timeout_seconds=0.3)
    usage = Usage()
    fake.enqueue(rate_limited("1s"), hang())

    for _ in range(2):
        with pytest.raises(AIUnavailable):
            await ai.generate_image(page_request(), usage)
    await ai.generate_image(page_request(), usage)
    await ai.aclose()

    assert (usage.calls, usage.images, usage.unanswered) == (1, 1, 1)
    assert len(fake.answered()) == 1


@pytest.mark.parametrize(
    "reason, error, code",
    [
        ("IMAGE_RECITATION", AIRecitation, "ai_recitation"),
        ("RECITATION", AIRecitation, "ai_recitation"),
        ("PUP_LIMITED_DISABLED", AIConfigError, "ai_config_error"),
    ],
)
async def test_finish_reasons_that_repeat_or_concern_the_account(
    fake: FakeGemini, single_model_ai: GeminiAI, reason: str, error: type[OrderError], code: str
) -> None:
    fake.enqueue(finish_reason(reason))

    with pytest.raises(error) as caught:
        await single_model_ai.generate_image(page_request())
    assert caught.value.code == code
    # A recitation is not retried (terminal); the account state pauses claiming (daemon).
    assert not caught.value.retryable or getattr(caught.value, "pauses_claiming", False)


def test_every_sdk_finish_reason_is_classified() -> None:
    """A finish reason the installed SDK knows and this adapter has never considered is a
    question for the developer, not a silent default."""
    from google.genai import types

    from processors.ai import gemini

    considered = (
        gemini._BLOCKING_FINISH_REASONS
        | gemini._RECITATION_FINISH_REASONS
        | gemini._ACCOUNT_FINISH_REASONS
    )
    # Reasons with an image or JSON to judge, or that cannot occur without tools (function
    # calling) and Vertex-only features: the reply's content decides.
    content_decides = {
        "FINISH_REASON_UNSPECIFIED",
        "STOP",
        "MAX_TOKENS",
        "LANGUAGE",
        "OTHER",
        "MALFORMED_FUNCTION_CALL",
        "IMAGE_OTHER",
        "NO_IMAGE",
        "UNEXPECTED_TOOL_CALL",
        "TOO_MANY_TOOL_CALLS",
        "MISSING_THOUGHT_SIGNATURE",
        "MALFORMED_RESPONSE",
        "ESCALATION",
        "CONTINUATION",
        "MODEL_ARMOR",
    }
    assert {r.value for r in types.FinishReason} <= considered | content_decides


async def test_the_sdk_afc_line_is_not_logged(
    fake: FakeGemini, ai: GeminiAI, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO", logger="google_genai")

    await ai.generate_image(page_request())
    await ai.analyze(prompt="p", images=[PHOTO], schema=ChildAnalysis)

    assert not [r for r in caplog.records if "AFC is enabled" in r.getMessage()]


async def test_drifting_descriptive_fields_are_accepted(fake: FakeGemini, ai: GeminiAI) -> None:
    fake.enqueue(drifting_analysis(), drifting_analysis())

    child = await ai.analyze(prompt="p", images=[PHOTO], schema=ChildAnalysis)
    cover = await ai.analyze(prompt="p", images=[COVER], schema=CoverAnalysis)

    assert child.value.face_count == 1
    assert child.value.hair == "brown, short, curly"
    assert child.value.distinctive_features == ["freckles"]
    assert (child.value.glasses, child.value.apparent_age) == (False, None)
    assert cover.value.palette == ["#f2c14e", "#5b8e7d"]
    assert cover.value.art_style == "watercolor, modern picture book"
    assert cover.value.mood == ""


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


async def test_an_image_of_another_shape_is_returned_for_the_pipeline_to_judge(
    fake: FakeGemini, single_model_ai: GeminiAI
) -> None:
    fake.enqueue(wrong_aspect_ratio("2:1"))
    result = await single_model_ai.generate_image(page_request())
    with Image.open(BytesIO(result.data)) as image:
        width, height = image.size
    # Not what was asked: the adapter says what it asked, processors.images rejects the shape.
    assert (width / height, result.aspect_ratio) == (2.0, "3:4")
