"""Settings from the environment: the AI backoff is configurable, so scaled runs can scale it."""

from __future__ import annotations

import pytest

from monitor.app import build_ai
from monitor.config import ConfigError, Settings
from monitor.metrics import Metrics
from processors.ai.base import ImagePart
from processors.analysis_models import ChildAnalysis
from testkit.fakes.gemini_server import FakeGemini, rate_limited, solid_jpeg

BASE = {"DATABASE_URL": "postgresql://localhost/books", "AI_PROVIDER": "local"}

pytestmark = pytest.mark.filterwarnings("ignore:Inheritance class AiohttpClientSession")


@pytest.mark.parametrize(("setting", "lowest", "highest"), [(None, 2.0, 4.0), ("0.05", 0.05, 0.1)])
async def test_the_ai_backoff_after_a_429_follows_ai_backoff_base_seconds(
    setting: str | None, lowest: float, highest: float
) -> None:
    sleeps: list[float] = []

    async def record(seconds: float) -> None:
        sleeps.append(seconds)

    async with FakeGemini() as fake:
        env = {
            **BASE,
            "AI_PROVIDER": "gemini",
            "GOOGLE_API_KEY": fake.api_key,
            "GEMINI_BASE_URL": fake.base_url,
            "GEMINI_ANALYSIS_MODEL": fake.ANALYSIS_MODEL,
            "GEMINI_IMAGE_MODEL": fake.IMAGE_MODEL,
        }
        if setting is not None:
            env["AI_BACKOFF_BASE_SECONDS"] = setting
        ai, _ = build_ai(Settings.from_env(env), Metrics(), sleep=record)
        fake.enqueue(rate_limited("0s"))  # no server delay: the wait is the backoff alone
        try:
            await ai.analyze(
                prompt="Look at the child.",
                images=[ImagePart(solid_jpeg((64, 64), (1, 2, 3)))],
                schema=ChildAnalysis,
            )
        finally:
            await ai.aclose()

    assert len(sleeps) == 1 and lowest <= sleeps[0] <= highest


@pytest.mark.parametrize("value", ["0", "-1", "soon"])
def test_a_bad_ai_backoff_base_is_refused_by_name(value: str) -> None:
    with pytest.raises(ConfigError, match="AI_BACKOFF_BASE_SECONDS"):
        Settings.from_env({**BASE, "AI_BACKOFF_BASE_SECONDS": value})


def test_the_default_models_are_current_ones_of_the_catalog() -> None:
    from processors.ai.models import CATALOG

    settings = Settings.from_env(BASE)

    for model in (settings.gemini_analysis_model, *settings.gemini_image_models):
        assert not CATALOG[model].retired, model
    assert CATALOG[settings.gemini_analysis_model].kind == "analysis"
    assert {CATALOG[m].kind for m in settings.gemini_image_models} == {"image"}


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("OUTPUT_ASPECT_TOLERANCE", "0"),
        ("OUTPUT_ASPECT_TOLERANCE", "0.7"),
        ("PAGE_DEADLINE_SECONDS", "0"),
        ("MODEL_CHECK_RETRY_SECONDS", "-3"),
        ("IMAGE_SIZE", "8K"),
    ],
)
def test_bad_ai_time_and_shape_settings_are_refused_by_name(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=name):
        Settings.from_env({**BASE, name: value})


@pytest.mark.parametrize("value", ["-1", "lots", "1.5"])
def test_a_bad_page_input_cache_size_is_refused_by_name(value: str) -> None:
    with pytest.raises(ConfigError, match="PAGE_INPUT_CACHE_MB=.*an integer >= 0"):
        Settings.from_env({**BASE, "PAGE_INPUT_CACHE_MB": value})


def test_the_page_input_cache_size_is_read_and_zero_keeps_none() -> None:
    assert Settings.from_env(BASE).page_input_cache_mb == 64
    assert Settings.from_env({**BASE, "PAGE_INPUT_CACHE_MB": "0"}).page_input_cache_mb == 0


def test_image_size_is_chosen_per_book_unless_the_operator_names_one() -> None:
    assert Settings.from_env(BASE).image_size == "auto"
    assert Settings.from_env({**BASE, "IMAGE_SIZE": "AUTO"}).image_size == "auto"
    assert Settings.from_env({**BASE, "IMAGE_SIZE": "1k"}).image_size == "1K"


def test_ai_time_and_shape_settings_are_read() -> None:
    settings = Settings.from_env(
        {
            **BASE,
            "OUTPUT_ASPECT_TOLERANCE": "0.02",
            "PAGE_DEADLINE_SECONDS": "90",
            "IMAGE_SIZE": "4k",
        }
    )

    assert (
        settings.output_aspect_tolerance,
        settings.page_deadline_seconds,
        settings.image_size,
    ) == (0.02, 90.0, "4K")


@pytest.mark.parametrize(
    ("name", "value"), [("PRINT_PPI", "100"), ("PRINT_PPI", "1300"), ("PRINT_BLEED_IN", "0.6")]
)
def test_a_print_profile_outside_print_practice_is_refused_as_import_book_refuses_it(
    name: str, value: str
) -> None:
    with pytest.raises(ConfigError, match=name):
        Settings.from_env({**BASE, name: value})
    assert Settings.from_env({**BASE, "PRINT_PPI": "150"}).print_ppi == 150
