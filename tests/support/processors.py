"""Processors for testing the daemon: they record, fail, hang and crash on purpose.

Usable in-process (construct them) and from a daemon subprocess
(``run_monitor.py run --processor tests.support.processors:recording``), configured by environment.
"""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

from monitor.config import Settings
from monitor.job import Job
from monitor.metrics import Metrics
from processors.contract import BookResult
from processors.errors import RetryableError, TerminalError
from processors.ports import BlobStorage


class Recording:
    """Appends each item id to a file, takes ``seconds`` per item, checkpoints page 1."""

    def __init__(
        self, record_file: Path | None = None, seconds: float = 0.0, steps: int = 1
    ) -> None:
        self.record_file = record_file
        self.seconds = seconds
        self.steps = steps
        self.seen: list[str] = []

    async def __call__(self, job: Job) -> BookResult:
        self.seen.append(job.item_id)
        if self.record_file is not None:
            with self.record_file.open("a") as f:
                f.write(f"start {job.item_id} {os.getpid()}\n")
        context = await job.load_context()
        done = {c["page_number"] for c in context.checkpoints}
        for step in range(1, self.steps + 1):
            if step in done:
                continue
            await job.report(
                int(100 * step / (self.steps + 1)), f"Drawing page {step} of {self.steps}"
            )
            if self.record_file is not None:  # the "paid call" starts
                with self.record_file.open("a") as f:
                    f.write(f"draw {job.item_id} {step}\n")
            await asyncio.sleep(self.seconds / self.steps)
            await job.checkpoint(step, f"generated/{job.item_id}/pages/{step:02d}.jpg")
            if self.record_file is not None:
                with self.record_file.open("a") as f:
                    f.write(f"page {job.item_id} {step}\n")
        base = f"generated/{job.item_id}"
        return BookResult(
            pdf_path=f"{base}/book.pdf",
            pdf_url=f"file:///{base}/book.pdf",
            cover_path=f"{base}/cover.jpg",
            cover_url=f"file:///{base}/cover.jpg",
            usage={"calls": self.steps},
        )


class Failing:
    def __init__(self, error: Exception) -> None:
        self.error = error

    async def __call__(self, job: Job) -> BookResult:
        raise self.error


class Hanging:
    """Never finishes on its own: for leases, cancellation and shutdown."""

    def __init__(self) -> None:
        self.started = asyncio.Event()
        self.cancelled = False

    async def __call__(self, job: Job) -> BookResult:
        self.started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.cancelled = True
            raise
        raise AssertionError("unreachable")


class Crashing:
    async def __call__(self, job: Job) -> BookResult:
        raise RuntimeError("bug in the processor")


class KillsItsProcess:
    """A poison item: whatever touches it takes the whole process down (say, a segfault in an
    image library or an out-of-memory kill), so no failure is ever written."""

    async def __call__(self, job: Job) -> BookResult:
        await job.load_context()
        os.kill(os.getpid(), signal.SIGKILL)
        raise AssertionError("unreachable")


def recording(settings: Settings, metrics: Metrics, storage: BlobStorage) -> Recording:
    record_file = os.environ.get("TEST_RECORD_FILE")
    return Recording(
        Path(record_file) if record_file else None,
        seconds=float(os.environ.get("TEST_PROCESS_SECONDS", "0")),
        steps=int(os.environ.get("TEST_PROCESS_STEPS", "1")),
    )


def retryable(settings: Settings, metrics: Metrics, storage: BlobStorage) -> Failing:
    return Failing(RetryableError("test: transient", code="ai_unavailable"))


def terminal(settings: Settings, metrics: Metrics, storage: BlobStorage) -> Failing:
    return Failing(
        TerminalError(
            "test: no face",
            code="photo_rejected",
            parent_message="Please upload a photo with one child.",
        )
    )


def kills_its_process(
    settings: Settings, metrics: Metrics, storage: BlobStorage
) -> KillsItsProcess:
    return KillsItsProcess()
