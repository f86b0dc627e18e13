"""The fault-injection suite in its short form (``bench/faults.py``; ``make bench`` runs the full one).

Two real daemons work through a batch of orders while one fault strikes: SIGKILL and restart of a
replica, a Postgres restart, a 429 storm on half the image calls, SIGTERM of a replica. Every
order must end completed with its whole PDF, none completed twice, and no image call may be paid
for again unless the fault caught it in flight (started, neither checkpointed nor stored as a
draft before its judge).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from bench import faults
from bench.world import Bench


@pytest.fixture(scope="module")
def bench() -> Iterator[Bench]:
    """An embedded cluster of its own: one scenario stops and starts it."""
    bench = Bench()
    yield bench
    bench.close()


def assert_nothing_lost(report: dict[str, Any]) -> None:
    assert report["faults"], "the fault was never injected"
    assert all(f["items_caught"] > 0 for f in report["faults"]), report["faults"]
    assert report["completed"] == report["orders"] == faults.SHORT["orders"], report
    assert report["pdfs_complete"] == report["completed"]
    assert report["duplicate_completions"] == 0
    assert report["unbounded_repeats"] == 0, report["unbounded_pages"]
    assert report["repeated_image_calls"] <= report["repeat_bound"]
    assert all(f["recover_s"] is not None for f in report["faults"]), report["faults"]


async def test_sigkill_and_restart_of_one_replica(bench: Bench) -> None:
    report = await faults.run_fault(bench, "sigkill_restart", faults.SHORT)
    assert_nothing_lost(report)
    # A drawing stored before its judge answered (a draft) is judged again, not drawn again, so
    # a kill may repeat nothing at all: what it repeats is bounded by the image calls it caught
    # in flight (assert_nothing_lost).
    # The kills were crashes: they spent the crash budget, never an attempt.
    assert report["max_crashes_used"] >= 1
    assert report["max_attempts_used"] == 1


async def test_postgres_restart_mid_run(bench: Bench) -> None:
    report = await faults.run_fault(bench, "postgres_restart", faults.SHORT)
    [fault] = report["faults"]
    assert fault["items_caught"] > 0 and fault["pages_in_flight"] > 0
    assert report["completed"] == report["orders"] == faults.SHORT["orders"], report
    assert report["pdfs_complete"] == report["completed"]
    assert report["duplicate_completions"] == 0
    assert fault["recover_s"] is not None, fault
    # What the recorded outage and the lease imply, whatever the machine's load made of them: no
    # page checkpointed before the outage is paid again; a page is drawn again only by a claim
    # that interrupted an attempt (a takeover after a lease ran out, a retry after a write gave
    # up), at most once per such claim.
    assert report["checkpointed_repaid"] == 0, report
    assert report["repeats_beyond_interruptions"] == 0, report["unbounded_pages"]
    # A lease is renewed every LEASE_SECONDS / 3, so each caught item had at least two thirds of
    # it left when the outage began and is renewed at most a third after the end: an outage
    # shorter than a third of the lease cannot interrupt an attempt, and then nothing is repeated.
    if fault["duration_s"] < faults.SHORT["lease_s"] / 3:
        assert fault["attempts_interrupted"] == 0, fault
        assert report["repeated_image_calls"] == 0, report


async def test_429_storm_on_half_the_image_calls(bench: Bench) -> None:
    report = await faults.run_fault(bench, "storm_429", faults.SHORT)
    assert_nothing_lost(report)
    assert report["faults"][0]["rejected"] > 0
    assert report["http_429"] == report["faults"][0]["rejected"]


async def test_sigterm_of_one_replica_while_the_other_goes_on(bench: Bench) -> None:
    report = await faults.run_fault(bench, "sigterm_one", faults.SHORT)
    assert_nothing_lost(report)
    assert report["faults"][0]["exit_code"] == 0
    # A drained replica hands back what it could not finish without spending an attempt.
    assert report["max_attempts_used"] == 1


def test_child_and_page_are_read_from_the_prompt() -> None:
    from testkit.fakes.gemini_server import RecordedPart, RecordedRequest

    def request(text: str) -> RecordedRequest:
        return RecordedRequest("v1beta", "m", "generateContent", [RecordedPart(text=text)])

    data = '<child_data>\n{"name": "Kid\\u003c7", "age": 5}\n</child_data>'
    assert faults.child_and_page(request(f"the original illustration of page 12. ...\n{data}")) == (
        "Kid<7",
        12,
    )
    assert faults.child_and_page(request(f"Redraw the cover.\n{data}")) == ("Kid<7", 0)
    with pytest.raises(ValueError):
        faults.child_and_page(request("no data block"))
