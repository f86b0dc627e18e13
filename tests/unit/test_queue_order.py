"""Shared turns go to the oldest place in the queue (processors/queue_order.py)."""

from __future__ import annotations

import asyncio

import pytest

from processors.queue_order import Place, QueueOrderSemaphore, deferred, served_as


async def settle() -> None:
    """Let every runnable task reach its next wait."""
    for _ in range(10):
        await asyncio.sleep(0)


class Turns:
    """Tasks that each take a turn of ``slots`` at a place, note it and hold it until let go."""

    def __init__(self, slots: QueueOrderSemaphore) -> None:
        self.slots = slots
        self.served: list[str] = []
        self._done: dict[str, asyncio.Event] = {}
        self.tasks: dict[str, asyncio.Task[None]] = {}

    def arrive(self, name: str, place: Place, *, defer: int = 0) -> None:
        self._done[name] = asyncio.Event()

        async def take() -> None:
            async with self.slots:
                self.served.append(name)
                await self._done[name].wait()

        async def take_deferred() -> None:
            with deferred(defer):
                await take()

        with served_as(place):
            self.tasks[name] = asyncio.ensure_future(take_deferred() if defer else take())

    def finish(self, name: str) -> None:
        self._done[name].set()


async def test_deferred_work_goes_after_its_orders_other_turns_and_before_younger_orders() -> None:
    turns = Turns(QueueOrderSemaphore(1))
    older, younger = ("2026-12-02T10:00:01", "a"), ("2026-12-02T10:00:09", "z")
    turns.arrive("holder", older)
    await settle()
    turns.arrive("older, deferred", older, defer=1)
    turns.arrive("younger", younger)
    turns.arrive("older", older)
    await settle()

    for name in ["holder", "older", "older, deferred"]:
        turns.finish(name)
        await settle()

    assert turns.served == ["holder", "older", "older, deferred", "younger"]


async def test_work_deferred_further_goes_after_work_deferred_less() -> None:
    turns = Turns(QueueOrderSemaphore(1))
    order = ("2026-12-02T10:00:01", "a")
    turns.arrive("holder", order)
    await settle()
    turns.arrive("finished picture", order, defer=2)
    turns.arrive("fit", order, defer=1)
    turns.arrive("judge input", order)
    await settle()

    for name in ["holder", "judge input", "fit"]:
        turns.finish(name)
        await settle()

    assert turns.served == ["holder", "judge input", "fit", "finished picture"]


async def test_a_freed_slot_goes_to_the_oldest_place_then_first_come() -> None:
    turns = Turns(QueueOrderSemaphore(1))
    turns.arrive("holder", ("2026-12-02T10:00:05", "e"))
    await settle()
    # Waiting in arrival order: newest order first, the oldest last.
    for name, place in [
        ("newest", ("2026-12-02T10:00:09", "z")),
        ("middle-1", ("2026-12-02T10:00:03", "m")),
        ("oldest", ("2026-12-02T10:00:01", "a")),
        ("middle-2", ("2026-12-02T10:00:03", "m")),
    ]:
        turns.arrive(name, place)
    await settle()

    for name in ["holder", "oldest", "middle-1", "middle-2"]:
        turns.finish(name)
        await settle()

    assert turns.served == ["holder", "oldest", "middle-1", "middle-2", "newest"]


async def test_a_call_outside_any_order_goes_before_the_orders() -> None:
    turns = Turns(QueueOrderSemaphore(1))
    turns.arrive("holder", ("2026-12-02T10:00:05", "e"))
    await settle()
    turns.arrive("order", ("2026-12-02T10:00:01", "a"))
    turns.arrive("cover endpoint", ())
    await settle()

    turns.finish("holder")
    await settle()

    assert turns.served == ["holder", "cover endpoint"]


async def test_a_released_slot_is_handed_over_not_left_for_a_newcomer() -> None:
    slots = QueueOrderSemaphore(1)
    turns = Turns(slots)
    turns.arrive("holder", ("b",))
    await settle()
    turns.arrive("waiter", ("c",))
    await settle()

    turns.finish("holder")
    await settle()
    # The waiter holds the slot now; a newcomer (even an older place) waits behind it.
    turns.arrive("newcomer", ("a",))
    await settle()

    assert turns.served == ["holder", "waiter"]
    assert not turns.tasks["newcomer"].done()
    turns.finish("waiter")
    turns.finish("newcomer")
    await settle()
    assert turns.served == ["holder", "waiter", "newcomer"]


async def test_a_waiter_cancelled_in_line_takes_no_slot() -> None:
    turns = Turns(QueueOrderSemaphore(1))
    turns.arrive("holder", ("b",))
    await settle()
    turns.arrive("gone", ("a",))
    turns.arrive("next", ("c",))
    await settle()

    turns.tasks["gone"].cancel()
    await settle()
    turns.finish("holder")
    await settle()

    assert turns.served == ["holder", "next"]


async def test_a_waiter_cancelled_as_the_slot_reaches_it_passes_the_slot_on() -> None:
    slots = QueueOrderSemaphore(1)
    turns = Turns(slots)
    turns.arrive("holder", ("a",))
    await settle()
    turns.arrive("unlucky", ("b",))
    turns.arrive("next", ("c",))
    await settle()

    turns.finish("holder")
    await asyncio.sleep(0)  # the holder exits and hands the slot to "unlucky"...
    turns.tasks["unlucky"].cancel()  # ...which is cancelled before it resumes
    await settle()

    assert turns.served == ["holder", "next"]
    turns.finish("next")
    await settle()
    # Nothing leaked: the one slot is free again.
    await asyncio.wait_for(slots.acquire(), timeout=1)


async def test_at_most_value_hold_a_slot_at_once() -> None:
    slots = QueueOrderSemaphore(3)
    turns = Turns(slots)
    for n in range(7):
        turns.arrive(f"t{n}", (str(n),))
    await settle()

    assert turns.served == ["t0", "t1", "t2"]
    turns.finish("t1")
    await settle()
    assert turns.served == ["t0", "t1", "t2", "t3"]


async def test_tasks_started_inside_an_order_carry_its_place() -> None:
    turns = Turns(QueueOrderSemaphore(1))
    turns.arrive("holder", ("b",))
    await settle()

    async def order(name: str, place: Place) -> None:
        with served_as(place):
            # A page task of the order, started inside it: it waits at the order's place.
            await asyncio.ensure_future(page(name))

    async def page(name: str) -> None:
        async with turns.slots:
            turns.served.append(name)

    young = asyncio.ensure_future(order("young page", ("c",)))
    await settle()
    old = asyncio.ensure_future(order("old page", ("a",)))
    await settle()
    turns.finish("holder")
    await asyncio.gather(young, old)

    assert turns.served == ["holder", "old page", "young page"]


async def test_a_holder_yields_to_an_older_place_only() -> None:
    slots = QueueOrderSemaphore(1)
    served: list[str] = []
    with served_as(("c",)):
        await slots.acquire()
    turns = Turns(slots)
    turns.arrive("younger", ("d",))
    await settle()

    with served_as(("c",)):
        assert await slots.yield_to_older() is False  # nobody older waits: kept
    turns.arrive("older", ("a",))
    await settle()

    async def holder() -> None:
        with served_as(("c",)):
            assert await slots.yield_to_older() is True
            served.append("holder again")
            slots.release()

    back = asyncio.ensure_future(holder())
    await settle()
    assert turns.served == ["older"]  # the older took the slot; the holder waits at its place
    turns.finish("older")
    await back
    await settle()
    assert served == ["holder again"]
    assert turns.served == ["older", "younger"]


async def test_a_holder_cancelled_while_waiting_for_its_slot_back_holds_none() -> None:
    slots = QueueOrderSemaphore(1)
    with served_as(("c",)):
        await slots.acquire()
    turns = Turns(slots)
    turns.arrive("older", ("a",))
    await settle()

    async def holder() -> None:
        with served_as(("c",)):
            await slots.yield_to_older()

    back = asyncio.ensure_future(holder())
    await settle()
    back.cancel()
    await settle()
    turns.finish("older")
    await settle()

    # The slot the holder gave away is free again, not lost with it.
    await asyncio.wait_for(slots.acquire(), timeout=1)


def test_a_semaphore_needs_a_slot() -> None:
    with pytest.raises(ValueError, match="at least one slot"):
        QueueOrderSemaphore(0)
