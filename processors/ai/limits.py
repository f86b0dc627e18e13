"""Process-wide limits on image-AI calls: concurrency, pacing, retries.

One ``LimitedAI`` wraps the adapter for the whole process, so five concurrent orders share one
budget and do not turn into a 429 storm:

- at most ``max_concurrency`` calls in flight, the slots and the pacers' turns going to the
  oldest order first (processors/queue_order.py);
- optionally at most ``requests_per_minute`` image-call starts and, apart,
  ``analysis_requests_per_minute`` analysis-call starts, each paced by a token bucket sized to
  the quota window (``_Pacer``): a whole window's quota may start at once, and no window ever
  holds more than its quota. Gemini's quotas are per model and the two kinds go to different
  models with different quotas, so each kind has its own rate; a book with the QA judge makes
  about as many analysis calls as image calls, and pacing them at the image model's rate capped
  throughput at ~88 % of the image quota (bench section 3, 2026-12-01);
- ``RetryableError`` retried up to ``max_retries`` times with exponential backoff and jitter,
  waiting at least a server's ``retry_after``. When the server asks for longer than
  ``backoff_max`` (a spent daily quota), the error goes straight back to the queue, whose own
  backoff suits long waits better than a worker holding an order. ``AIConfigError`` is never
  retried in-process. Neither a backoff sleep nor a wait for a paced start holds a concurrency
  slot: a call takes its slot only once its kind's pacer admits it, so an image call waiting
  for the next quota window never keeps a judge call from starting. Neither wait counts against
  the caller's page deadline (``processors.deadline``); a backoff sleep does.

Metrics attach through callbacks, so this module needs no metrics library. With a ``prices``
table, every successful call's usage is priced here, the one place that sees every call, and
its cost is reported through ``on_spend``.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Protocol, TypeVar

import tenacity
from loguru import logger

from processors.ai.base import (
    USAGE_COUNTS,
    AIBadResponse,
    AIConfigError,
    Analysis,
    EditRequest,
    GeneratedImage,
    ImageAI,
    ImagePart,
    ModelT,
    Usage,
)
from processors.ai.pricing import PriceTable
from processors.deadline import waiting_turn
from processors.errors import OrderError, RetryableError
from processors.queue_order import QueueOrderSemaphore


class _FromModel(Protocol):
    model: str
    usage: Usage


ResultT = TypeVar("ResultT", bound=_FromModel)

Sleep = Callable[[float], Awaitable[None]]
Clock = Callable[[], float]
OnRetry = Callable[[str], None]
"""Called with the error code (``ai_rate_limited``, ``ai_timeout``...) before each retry."""
OnCall = Callable[[str, str, float, str], None]
"""Called after each attempt with kind (``analyze``/``generate_image``), model (``unknown`` when
the call failed), seconds spent in the call, and outcome (``ok`` or the error code)."""
OnSpend = Callable[[str, str, float], None]
"""Called after each priced call with kind, model and its cost in USD."""


# An unusable analysis reply is asked for again this many times (processors.analysis).
ANALYSIS_BAD_RESPONSE_RETRIES = 1

# How late, as a fraction of the quota window, a paced call's token comes back (``_Pacer``).
RETURN_MARGIN = 0.02


class _Pacer:
    """A token bucket of one quota window's worth of call starts, taken in queue order.

    The bucket holds ``requests_per_minute * window_s / 60`` tokens, so a whole window's quota
    may start at once (even spacing left that burst unused: 66 % against 78 % of the ceiling in
    the bench of 2026-12-01). A spent token comes back exactly one window after the start it
    paid for, which refills the bucket at ``requests_per_minute`` in the long run. A bucket
    refilled continuously from the first second would let up to two windows' worth start within
    one window after an idle spell, and Gemini counts per window: "if your RPM limit is 20,
    making 21 requests within a minute will result in an error"
    (https://ai.google.dev/gemini-api/docs/rate-limits, read 2026-12-02). A token is stamped
    with the call's real start, after its wait for a concurrency slot, so a slot that frees late
    never crowds more starts into a window than the bucket holds.

    A token comes back ``RETURN_MARGIN`` of a window late: the server stamps a call when it
    arrives, after an upload whose length varies with the images it carries, so a token back
    exactly one window after the client's start would be turned away whenever the new call
    arrives faster than the old one did (14 of 180 image calls got a 429 that way in the bench
    of 2026-12-02, each costing its page a whole window). The long-run rate is thus 2 % below
    ``requests_per_minute``.

    A quota below one call per window keeps a bucket of one token and a longer window, so the
    rate is still ``requests_per_minute`` (less the margin).
    """

    def __init__(
        self, requests_per_minute: float, window_s: float, sleep: Sleep, clock: Clock
    ) -> None:
        self._capacity = max(1, int(requests_per_minute * window_s / 60.0))
        self._window = self._capacity * 60.0 / requests_per_minute * (1 + RETURN_MARGIN)
        self._sleep = sleep
        self._clock = clock
        # The start times of the last ``capacity`` calls, oldest first (non-decreasing).
        self._starts: deque[float] = deque()
        # One caller at a time waits for the next token (and then for its slot), in queue order.
        self._turn = QueueOrderSemaphore(1)

    async def admit(self, slots: QueueOrderSemaphore) -> None:
        """Wait for a token, then take one of ``slots`` (the caller gives it back).

        The turn's holder sleeps until the next token comes back; a call of an older order that
        came in line meanwhile takes that token first (``yield_to_older``), and the holder waits
        again for the one after."""
        await self._turn.acquire()
        holding = True
        try:
            start = self._clock()
            while (free_at := self._token_free_at()) > start:
                await self._sleep(free_at - start)
                start = free_at
                holding = False
                handed_over = await self._turn.yield_to_older()
                holding = True
                if not handed_over:
                    break
                start = self._clock()  # the older call took that token: wait for the next
            await slots.acquire()
            self._starts.append(max(start, self._clock()))
            if len(self._starts) > self._capacity:
                self._starts.popleft()
        finally:
            if holding:
                self._turn.release()

    def _token_free_at(self) -> float:
        """When the next token is back in the bucket (-inf: one is there now)."""
        if len(self._starts) < self._capacity:
            return float("-inf")
        return self._starts[0] + self._window


class LimitedAI:
    """An ``ImageAI`` that runs another one within the process-wide limits (module docstring).

    ``sleep`` serves the backoff and pacing waits and ``clock`` (monotonic seconds) tells the
    pacer the time; tests pass a fake pair that counts call starts against a fake clock.
    ``requests_per_minute`` paces image calls and ``analysis_requests_per_minute`` analysis calls
    (``None``: that kind is not paced). ``rate_window_s`` is the quota window the pacers'
    buckets are sized to (Gemini's: a minute).
    ``check_models`` and ``aclose`` pass straight through: they run once, at start and stop.
    """

    def __init__(
        self,
        inner: ImageAI,
        *,
        max_concurrency: int,
        requests_per_minute: float | None,
        max_retries: int,
        analysis_requests_per_minute: float | None = None,
        rate_window_s: float = 60.0,
        backoff_base: float = 2.0,
        backoff_max: float = 60.0,
        on_retry: OnRetry | None = None,
        on_call: OnCall | None = None,
        prices: PriceTable | None = None,
        on_spend: OnSpend | None = None,
        sleep: Sleep = asyncio.sleep,
        clock: Clock = time.monotonic,
    ) -> None:
        if max_concurrency < 1:
            raise ValueError("max_concurrency must be at least 1")
        if max_retries < 0:
            raise ValueError("max_retries must not be negative")
        if requests_per_minute is not None and requests_per_minute <= 0:
            raise ValueError("requests_per_minute must be positive when set")
        if analysis_requests_per_minute is not None and analysis_requests_per_minute <= 0:
            raise ValueError("analysis_requests_per_minute must be positive when set")
        if rate_window_s <= 0:
            raise ValueError("rate_window_s must be positive")
        self._inner = inner
        self._slots = QueueOrderSemaphore(max_concurrency)
        rates = {"analyze": analysis_requests_per_minute, "generate_image": requests_per_minute}
        self._pacers = {
            kind: _Pacer(rate, rate_window_s, sleep, clock)
            for kind, rate in rates.items()
            if rate is not None
        }
        self._max_retries = max_retries
        self._backoff = tenacity.wait_exponential_jitter(
            initial=backoff_base, max=backoff_max, jitter=backoff_base
        )
        self._backoff_max = backoff_max
        self._on_retry = on_retry
        self._on_call = on_call
        self._prices = prices
        self._on_spend = on_spend
        self._sleep = sleep

    async def check_models(self) -> list[str]:
        return await self._inner.check_models()

    async def analyze(
        self,
        *,
        prompt: str,
        images: list[ImagePart],
        schema: type[ModelT],
        usage: Usage | None = None,
    ) -> Analysis[ModelT]:
        return await self._run(
            "analyze",
            lambda sink: self._inner.analyze(
                prompt=prompt, images=images, schema=schema, usage=sink
            ),
            usage,
        )

    async def generate_image(
        self, request: EditRequest, usage: Usage | None = None
    ) -> GeneratedImage:
        return await self._run(
            "generate_image", lambda sink: self._inner.generate_image(request, sink), usage
        )

    async def aclose(self) -> None:
        await self._inner.aclose()

    async def _run(
        self, kind: str, call: Callable[[Usage], Awaitable[ResultT]], usage: Usage | None
    ) -> ResultT:
        retrying = tenacity.AsyncRetrying(
            retry=tenacity.retry_if_exception(_worth_retrying),
            stop=self._stop,
            wait=self._wait,
            before_sleep=self._before_sleep,
            sleep=self._sleep,
            reraise=True,
        )
        return await retrying(self._attempt, kind, call, usage)

    async def _attempt(
        self, kind: str, call: Callable[[Usage], Awaitable[ResultT]], usage: Usage | None
    ) -> ResultT:
        async with self._admitted(kind):
            started = time.monotonic()
            # What this attempt was answered, priced and handed to the caller's sink whatever
            # happens next: a blocked or unusable reply is billed like a good one.
            answered = Usage()
            try:
                result = await call(answered)
            except Exception as err:
                self._report(kind, "unknown", started, _outcome(err))
                raise
            finally:
                self._price(kind, answered)
                if usage is not None:
                    usage.add(answered)
            self._report(kind, result.model, started, "ok")
            return result

    @asynccontextmanager
    async def _admitted(self, kind: str) -> AsyncIterator[None]:
        """A concurrency slot, once the kind's pacer (if any) admitted the call. The wait is the
        call's turn, not its work: it does not count against a page's deadline
        (processors/deadline.py)."""
        pacer = self._pacers.get(kind)
        async with waiting_turn():
            if pacer is not None:
                await pacer.admit(self._slots)
            else:
                await self._slots.acquire()
        try:
            yield
        finally:
            self._slots.release()

    def _price(self, kind: str, answered: Usage) -> None:
        """Price each model's share of ``answered`` into it, and report the spend."""
        if self._prices is None:
            return
        for model, counts in answered.by_model.items():
            share = self._prices.price(
                model, Usage.from_dict({k: v for k, v in counts.items() if k in USAGE_COUNTS})
            )
            answered.unpriced_calls += share.unpriced_calls
            if share.cost_usd is not None:
                answered.cost_usd = (answered.cost_usd or 0.0) + share.cost_usd
                if self._on_spend is not None:
                    self._on_spend(kind, model, share.cost_usd)

    def _report(self, kind: str, model: str, started: float, outcome: str) -> None:
        if self._on_call is not None:
            self._on_call(kind, model, time.monotonic() - started, outcome)

    def _wait(self, state: tenacity.RetryCallState) -> float:
        return max(self._backoff(state), _retry_after(state) or 0.0)

    def _stop(self, state: tenacity.RetryCallState) -> bool:
        """After ``max_retries``, or at once when the server asks for more than ``backoff_max``.

        An analysis the model answered unusably is asked again once only (processors.analysis).
        """
        retry_after = _retry_after(state)
        too_long = retry_after is not None and retry_after > self._backoff_max
        bad_analysis = (
            isinstance(_exception(state), AIBadResponse)
            and bool(state.args)
            and state.args[0] == "analyze"
            and state.attempt_number > ANALYSIS_BAD_RESPONSE_RETRIES
        )
        return too_long or bad_analysis or state.attempt_number > self._max_retries

    async def _before_sleep(self, state: tenacity.RetryCallState) -> None:
        err = _exception(state)
        wait = state.next_action.sleep if state.next_action is not None else 0.0
        # item_id and page come from the caller's logger.contextualize.
        logger.warning(
            "AI call failed; retrying in {:.1f}s: {}",
            wait,
            getattr(err, "detail", None) or err,
            kind=state.args[0] if state.args else None,
            attempt=state.attempt_number,
            error_code=_outcome(err),
        )
        if self._on_retry is not None:
            self._on_retry(_outcome(err))


def _worth_retrying(err: BaseException) -> bool:
    return isinstance(err, RetryableError) and not isinstance(err, AIConfigError)


def _exception(state: tenacity.RetryCallState) -> BaseException | None:
    return state.outcome.exception() if state.outcome is not None else None


def _retry_after(state: tenacity.RetryCallState) -> float | None:
    err = _exception(state)
    return err.retry_after if isinstance(err, RetryableError) else None


def _outcome(err: BaseException | None) -> str:
    return err.code if isinstance(err, OrderError) else "internal_error"
