"""Job writes wait out a short database outage instead of throwing away paid, stored work."""

from __future__ import annotations

from typing import Any

import pytest

from monitor.job import Job
from monitor.store.base import StoreUnavailable
from processors.contract import LeaseLost


class FlakyStore:
    """A store whose checkpoint write is refused ``outage`` times, then answers ``answer``."""

    def __init__(self, outage: int, answer: bool = True) -> None:
        self.outage = outage
        self.answer = answer
        self.calls = 0

    async def checkpoint_page(self, *args: Any, **kwargs: Any) -> bool:
        self.calls += 1
        if self.calls <= self.outage:
            raise StoreUnavailable("database unavailable during checkpoint_order_item_page")
        return self.answer


def job(store: FlakyStore, patience: float) -> Job:
    return Job(
        item={"id": "item-1", "attempts": 1},
        worker="w1",
        store=store,  # type: ignore[arg-type]
        outage_patience=patience,
    )


async def test_a_checkpoint_gets_through_once_the_database_is_back() -> None:
    store = FlakyStore(outage=2)

    await job(store, patience=5).checkpoint(3, "generated/item-1/pages/03.jpg")

    assert store.calls == 3


async def test_without_patience_the_first_refusal_is_raised() -> None:
    store = FlakyStore(outage=1)

    with pytest.raises(StoreUnavailable):
        await job(store, patience=0).checkpoint(3, "generated/item-1/pages/03.jpg")
    assert store.calls == 1


async def test_an_outage_longer_than_the_patience_is_raised() -> None:
    store = FlakyStore(outage=1000)

    with pytest.raises(StoreUnavailable):
        await job(store, patience=0.6).checkpoint(3, "generated/item-1/pages/03.jpg")
    assert 2 <= store.calls < 10


async def test_a_lease_taken_during_the_outage_is_still_fenced() -> None:
    store = FlakyStore(outage=1, answer=False)

    with pytest.raises(LeaseLost):
        await job(store, patience=5).checkpoint(3, "generated/item-1/pages/03.jpg")
