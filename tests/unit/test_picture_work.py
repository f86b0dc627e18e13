"""Picture work runs in at most one thread per slot, across every caller of the process
(processors/picture_work.py): the bound on decoded pictures in memory (issue 15)."""

from __future__ import annotations

import asyncio
import threading

import pytest

from processors.picture_work import PictureWork, usable_cores


class Peak:
    """Counts the blocking jobs running at once, in their threads. Each job waits at a barrier
    of ``together`` parties, so the test hangs (and fails at the barrier's timeout) unless that
    many run at once, and ``most`` shows whether more ever did: no timing decides the result."""

    def __init__(self, together: int) -> None:
        self._lock = threading.Lock()
        self._barrier = threading.Barrier(together, timeout=10)
        self.now = 0
        self.most = 0

    def job(self, result: int) -> int:
        with self._lock:
            self.now += 1
            self.most = max(self.most, self.now)
        self._barrier.wait()
        with self._lock:
            self.now -= 1
        return result


@pytest.mark.parametrize("slots", [2, 3])
async def test_no_more_jobs_run_at_once_than_there_are_slots(slots: int) -> None:
    work, peak = PictureWork(slots), Peak(slots)
    jobs = 3 * slots

    results = await asyncio.gather(*(work.run(peak.job, n) for n in range(jobs)))

    assert results == list(range(jobs))  # each caller gets its own job's result
    assert peak.most == slots


async def test_callers_of_different_orders_share_the_slots() -> None:
    # Two "orders" each fitting four pictures at once, one process: two slots in all, not each.
    work, peak = PictureWork(2), Peak(2)

    async def order() -> list[int]:
        return list(await asyncio.gather(*(work.run(peak.job, n) for n in range(4))))

    await asyncio.gather(order(), order())

    assert peak.most == 2


async def test_a_failing_job_gives_its_slot_back() -> None:
    work = PictureWork(1)

    def broken() -> None:
        raise ValueError("corrupt picture")

    with pytest.raises(ValueError, match="corrupt picture"):
        await work.run(broken)
    assert await asyncio.wait_for(work.run(lambda: 7), timeout=5) == 7


async def test_a_cancelled_caller_keeps_its_slot_until_its_thread_ends() -> None:
    work, release = PictureWork(1), threading.Event()
    started, ran = threading.Event(), []

    def blocking() -> None:
        started.set()
        release.wait(timeout=10)
        ran.append("first")

    first = asyncio.ensure_future(work.run(blocking))
    await asyncio.to_thread(started.wait, 10)
    first.cancel()
    second = asyncio.ensure_future(work.run(lambda: ran.append("second")))
    await asyncio.sleep(0.05)
    # The first thread still runs, so its slot is not free and the second job has not started.
    assert ran == [] and not first.done()
    release.set()
    await asyncio.wait_for(second, timeout=5)
    assert ran == ["first", "second"]
    assert first.cancelled()


def test_by_default_one_slot_per_usable_core() -> None:
    assert PictureWork().slots == usable_cores() >= 1
