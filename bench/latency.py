"""A latency model for the fake Gemini server: a ``FakeGemini`` behaviour.

- analysis calls (JSON replies) take ``analysis_s`` +- ``jitter`` (a fraction, uniform);
- image calls take ``image_s`` +- ``jitter``;
- image calls are limited server side to ``limit_images`` per sliding ``window_s`` seconds
  (a scaled "images per minute" quota); above it the server answers 429 RESOURCE_EXHAUSTED with a
  RetryInfo delay equal to the time until the oldest call in the window leaves it.

The limit counts accepted image calls at their start, as a quota counter does.
"""

from __future__ import annotations

import random
import time
from collections import deque
from dataclasses import dataclass, field
from typing import NamedTuple

from aiohttp import web

from testkit.fakes.gemini_server import (
    Behaviour,
    FakeGemini,
    RecordedRequest,
    rate_limited,
    succeed,
)


def is_analysis(request: RecordedRequest) -> bool:
    """Analysis calls ask for JSON; image calls do not."""
    return request.generation_config.get("responseMimeType") == "application/json"


class Call(NamedTuple):
    """One answered call, wall-clock times, with the request (for telling pages apart)."""

    start: float
    end: float
    kind: str  # "analysis" | "image"
    request: RecordedRequest


@dataclass
class LatencyModel:
    analysis_s: float = 0.3
    image_s: float = 0.5
    jitter: float = 0.1
    limit_images: int | None = None
    window_s: float = 60.0
    seed: int = 1
    accepted: deque[float] = field(default_factory=deque)
    rejected: int = 0
    images_ok: int = 0
    analyses: int = 0
    #: every call answered with success, in the order they ended
    timeline: list[Call] = field(default_factory=list)
    #: what a successful call answers, after its latency (the fake's healthy model by default)
    answer: Behaviour = field(default_factory=succeed)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)
        self._ok = self.answer

    @property
    def images_per_minute(self) -> float | None:
        return None if self.limit_images is None else self.limit_images * 60.0 / self.window_s

    def _draw(self, mean: float) -> float:
        return max(0.0, mean * (1 + self._rng.uniform(-self.jitter, self.jitter)))

    async def __call__(self, fake: FakeGemini, request: RecordedRequest) -> web.Response:
        if is_analysis(request):
            self.analyses += 1
            began = time.time()
            await fake.sleep(self._draw(self.analysis_s))
            self.timeline.append(Call(began, time.time(), "analysis", request))
            return await self._ok(fake, request)
        if self.limit_images is not None:
            now = time.monotonic()
            while self.accepted and self.accepted[0] <= now - self.window_s:
                self.accepted.popleft()
            if len(self.accepted) >= self.limit_images:
                self.rejected += 1
                wait = self.accepted[0] + self.window_s - now
                return await rate_limited(f"{max(wait, 0.001):.3f}s")(fake, request)
            self.accepted.append(now)
        began = time.time()
        await fake.sleep(self._draw(self.image_s))
        self.timeline.append(Call(began, time.time(), "image", request))
        self.images_ok += 1
        return await self._ok(fake, request)
