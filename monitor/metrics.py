"""Prometheus metrics of one daemon, on a registry of its own.

A dedicated ``CollectorRegistry`` (not prometheus_client's global one) lets tests, and several
monitors in one process, each count for themselves without "duplicated timeseries" errors.

Who reports what:

- the daemon: claims, completions, failures, retries, abandoned items, the in-flight count and
  the queue depth (whenever it probes the database);
- the book processor: :meth:`Metrics.page_generated`, :meth:`Metrics.pdf_built` and
  :meth:`Metrics.page_input`;
- the AI wrapper (``processors.ai.limits.LimitedAI``): pass :meth:`Metrics.observe_ai_call` as
  ``on_call`` and :meth:`Metrics.ai_retry` as ``on_retry``; their signatures match those hooks;
- the status server: the event-loop lag.

Label values are machine codes (error codes, model names, outcomes), never item ids or anything
about a child, so the number of series stays small and nothing personal reaches a scraper.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import choose_encoder

NAMESPACE = "book_monitor"
# One attempt at a whole book: analyses, a cover, N pages, a PDF. Minutes, not milliseconds.
ORDER_BUCKETS = (30, 60, 120, 180, 300, 450, 600, 900, 1200, 1800, 3600)
# One model call: a vision analysis takes seconds, an image edit up to the client timeout.
AI_CALL_BUCKETS = (0.5, 1, 2, 5, 10, 20, 30, 45, 60, 90, 120, 180, 240)
PDF_BUCKETS = (0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 30, 60)


class Metrics:
    """The daemon's metrics and the small reporting methods its parts call."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self._queue_depth_at: float | None = None
        own: dict[str, Any] = {"namespace": NAMESPACE, "registry": self.registry}

        self._claimed = Counter("items_claimed", "Order items claimed by this worker.", **own)
        self._completed = Counter("items_completed", "Order items completed by this worker.", **own)
        self._failed = Counter(
            "items_failed", "Order items failed for good, by error code.", ["error_code"], **own
        )
        self._retried = Counter(
            "items_retried",
            "Order items sent back to the queue to be retried, by error code.",
            ["error_code"],
            **own,
        )
        self._abandoned = Counter(
            "items_abandoned",
            "Order items given up unfinished: lease_lost, order_not_paid, shutdown, "
            "predecessor_crashed (held by a crashed process with this worker id).",
            ["reason"],
            **own,
        )
        self._pages = Counter(
            "pages_generated", "Book pages illustrated, by outcome.", ["outcome"], **own
        )
        self._page_inputs = Counter(
            "page_inputs",
            "Catalog pages' model inputs, made, or reused from another order of the book "
            "(PAGE_INPUT_CACHE_MB).",
            ["outcome"],
            **own,
        )
        self._verdicts = Counter(
            "quality_verdicts",
            "QA judge verdicts on illustrations, passed or failed, by the identity reference the "
            "drawing was made with: cover_itself, with_cover, without_cover (drawn beside the "
            "cover, COVER_FIRST=false), unknown (a draft of an earlier attempt).",
            ["outcome", "reference"],
            **own,
        )
        self._ai_calls = Histogram(
            "ai_call_duration_seconds",
            "Duration of one AI model call, by kind, model, outcome.",
            ["kind", "model", "outcome"],
            buckets=AI_CALL_BUCKETS,
            **own,
        )
        self._ai_spend = Counter(
            "ai_spend_usd",
            "Money spent on AI calls by this worker, in USD per the price table "
            "(AI_PRICES_FILE), by model and kind; calls of unpriced models are not in it.",
            ["model", "kind"],
            **own,
        )
        self._spend_by_model: dict[str, float] = {}
        self._ai_retries = Counter(
            "ai_retries",
            "AI calls retried in-process, by the error code that caused it.",
            ["reason"],
            **own,
        )
        self._in_flight = Gauge(
            "items_in_flight", "Order items being processed by this worker now.", **own
        )
        self._queue_depth = Gauge(
            "queue_depth", "Paid order items waiting for any worker, as last probed.", **own
        )
        self._queue_oldest_wait = Gauge(
            "queue_oldest_wait_seconds",
            "How long the longest-waiting claimable item has been "
            "due (since its next_attempt_at), as last probed; 0 when none waits.",
            **own,
        )
        self._database_up = Gauge(
            "database_up",
            "1 while the daemon's last database round trip succeeded, else 0 "
            "(unreachable or not migrated), as /health reports it.",
            **own,
        )
        self._ai_usable = Gauge(
            "ai_usable",
            "1 while the AI provider is usable, 0 while claiming is paused for it "
            "(no usable model, bad key, account limited: see /health).",
            **own,
        )
        self._order_duration = Histogram(
            "order_duration_seconds",
            "Time from claim to the recorded outcome of one attempt at an order item.",
            ["outcome"],
            buckets=ORDER_BUCKETS,
            **own,
        )
        self._pdf = Histogram(
            "pdf_build_duration_seconds",
            "Time to assemble one book PDF.",
            buckets=PDF_BUCKETS,
            **own,
        )
        # Named without "photo": scrapes are checked for personal-looking words (test_server).
        self._retention_deleted = Counter(
            "retention_objects_deleted",
            "Stored objects (child pictures, intermediate page "
            "images) deleted by the retention job (PHOTO_RETENTION_DAYS).",
            **own,
        )
        self._emails = Counter(
            "emails",
            "Emails to parents by kind (book_ready, book_failed) and outcome: sent, "
            "retry (an attempt failed, due again later), gave_up, skipped (no address, too old).",
            ["kind", "outcome"],
            **own,
        )
        self._loop_lag = Gauge(
            "event_loop_lag_seconds",
            "How late the event loop last woke a timer (stall detector).",
            **own,
        )

    # ------------------------------------------------------------------ the daemon

    def items_claimed(self, count: int) -> None:
        self._claimed.inc(count)

    def item_completed(self, seconds: float) -> None:
        self._completed.inc()
        self._order_duration.labels("completed").observe(seconds)

    def item_failed(self, error_code: str, seconds: float) -> None:
        self._failed.labels(error_code).inc()
        self._order_duration.labels("failed").observe(seconds)

    def item_retried(self, error_code: str, seconds: float) -> None:
        self._retried.labels(error_code).inc()
        self._order_duration.labels("retry").observe(seconds)

    def item_abandoned(self, reason: str, count: int = 1) -> None:
        self._abandoned.labels(reason).inc(count)

    def track_in_flight(self, count: Callable[[], int]) -> None:
        """Read the in-flight gauge from ``count`` at scrape time, so it can never drift."""
        self._in_flight.set_function(count)

    def set_queue_depth(self, depth: int, oldest_wait_seconds: float | None = None) -> None:
        """The probed queue; ``oldest_wait_seconds`` when the probe measured it too."""
        self._queue_depth.set(depth)
        if oldest_wait_seconds is not None:
            self._queue_oldest_wait.set(oldest_wait_seconds)
        self._queue_depth_at = time.monotonic()

    def track_health(self, database_up: Callable[[], bool], ai_usable: Callable[[], bool]) -> None:
        """Read the two health gauges at scrape time from the daemon's own state, like the
        in-flight count, so they say what /health says at that moment."""
        self._database_up.set_function(lambda: float(database_up()))
        self._ai_usable.set_function(lambda: float(ai_usable()))

    def queue_depth_age(self) -> float:
        """Seconds since the queue depth was last set; infinite before the first time."""
        if self._queue_depth_at is None:
            return math.inf
        return time.monotonic() - self._queue_depth_at

    def photos_deleted(self, count: int) -> None:
        """Photo retention removed ``count`` objects from storage."""
        self._retention_deleted.inc(count)

    def email(self, kind: str, outcome: str) -> None:
        """One email to a parent reached ``outcome`` (monitor/mailer.py)."""
        self._emails.labels(kind=kind, outcome=outcome).inc()

    # ------------------------------------------------------------------ processors

    def page_generated(self, outcome: str) -> None:
        """One page done: ``ok``, or the error code it failed with."""
        self._pages.labels(outcome).inc()

    def pdf_built(self, seconds: float) -> None:
        self._pdf.observe(seconds)

    def page_input(self, outcome: str) -> None:
        """A catalog page's model input, ``made`` or ``reused`` (processors/page_inputs.py)."""
        self._page_inputs.labels(outcome).inc()

    def quality_verdict(self, outcome: str, reference: str) -> None:
        """One QA judge verdict, ``passed`` or ``failed``, on a drawing made with ``reference``
        (processors/qa.py ``Reference``): what COVER_FIRST=false costs in redraws, measured."""
        self._verdicts.labels(outcome, reference).inc()

    def observe_ai_call(self, kind: str, model: str, seconds: float, outcome: str) -> None:
        """``LimitedAI``'s ``on_call`` hook: one attempt, ``outcome`` ``ok`` or an error code."""
        self._ai_calls.labels(kind, model, outcome).observe(seconds)

    def ai_spent(self, kind: str, model: str, usd: float) -> None:
        """``LimitedAI``'s ``on_spend`` hook: the priced cost of one successful call."""
        self._ai_spend.labels(model, kind).inc(usd)
        self._spend_by_model[model] = self._spend_by_model.get(model, 0.0) + usd

    def spend_by_model(self) -> dict[str, float]:
        """USD spent by this process since it started, per model (for /monitor/status)."""
        return {model: round(usd, 6) for model, usd in sorted(self._spend_by_model.items())}

    def ai_retry(self, reason: str) -> None:
        """``LimitedAI``'s ``on_retry`` hook: ``reason`` is the error code being retried."""
        self._ai_retries.labels(reason).inc()

    # ------------------------------------------------------------------ the status server

    def set_loop_lag(self, seconds: float) -> None:
        self._loop_lag.set(seconds)

    def render(self, accept: str | None) -> tuple[bytes, str]:
        """The exposition body and its content type, negotiated from an ``Accept`` header the
        way prometheus_client's own HTTP handlers do (text format unless OpenMetrics is asked)."""
        encode, content_type = choose_encoder(accept or "")
        return encode(self.registry), content_type
