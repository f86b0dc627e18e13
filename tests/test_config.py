"""Settings from the environment: the AI backoff is configurable, so scaled runs can scale it."""

from __future__ import annotations

import pytest

from monitor.config import ConfigError, Settings
from monitor.metrics import Metrics
from processors.ai.base import ImagePart
from processors.analysis_models import ChildAnalysis
from processors.factory import build_ai
from tests.fakes.gemini_server import FakeGemini, rate_limited, solid_jpeg

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
        env = {**BASE, "AI_PROVIDER": "gemini", "GOOGLE_API_KEY": fake.api_key,
               "GEMINI_BASE_URL": fake.base_url, "GEMINI_ANALYSIS_MODEL": fake.ANALYSIS_MODEL,
               "GEMINI_IMAGE_MODEL": fake.IMAGE_MODEL}
        if setting is not None:
            env["AI_BACKOFF_BASE_SECONDS"] = setting
        ai, _ = build_ai(Settings.from_env(env), Metrics(), sleep=record)
        fake.enqueue(rate_limited("0s"))  # no server delay: the wait is the backoff alone
        try:
            await ai.analyze(prompt="Look at the child.", images=[ImagePart(solid_jpeg((64, 64), (1, 2, 3)))],
                             schema=ChildAnalysis)
        finally:
            await ai.aclose()

    assert len(sleeps) == 1 and lowest <= sleeps[0] <= highest


@pytest.mark.parametrize("value", ["0", "-1", "soon"])
def test_a_bad_ai_backoff_base_is_refused_by_name(value: str) -> None:
    with pytest.raises(ConfigError, match="AI_BACKOFF_BASE_SECONDS"):
        Settings.from_env({**BASE, "AI_BACKOFF_BASE_SECONDS": value})
