"""Settings from the environment: the AI backoff is configurable, so scaled runs can scale it."""

from __future__ import annotations

import pytest

from monitor.config import ConfigError, Settings
from monitor.metrics import Metrics
import processors.factory as factory
from processors.factory import build_ai

BASE = {"DATABASE_URL": "postgresql://localhost/books", "AI_PROVIDER": "local"}


def test_ai_backoff_base_reaches_the_ai_limits(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = Settings.from_env({**BASE, "AI_BACKOFF_BASE_SECONDS": "0.05"})
    built: list[dict[str, object]] = []
    monkeypatch.setattr(factory, "LimitedAI", lambda inner, **options: built.append(options))

    build_ai(settings, Metrics())

    assert built[0]["backoff_base"] == 0.05


@pytest.mark.parametrize("value", ["0", "-1", "soon"])
def test_a_bad_ai_backoff_base_is_refused_by_name(value: str) -> None:
    with pytest.raises(ConfigError, match="AI_BACKOFF_BASE_SECONDS"):
        Settings.from_env({**BASE, "AI_BACKOFF_BASE_SECONDS": value})
