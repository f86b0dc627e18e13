"""The bench's drawn critical path (bench/scenarios.py ``_pool_finish``): the report's
"wall / drawn" ratios are only as true as this model of the page pool."""

from __future__ import annotations

from bench.scenarios import _pool_finish


def test_a_judge_holds_no_slot_and_a_redraw_queues_after_it() -> None:
    # One slot: page 2's image starts when page 1's image ends, not when its judge does; page
    # 1's redraw waits for its judge, then for the slot page 2 holds.
    pages = [[(1.0, 0.5), (1.0, 0.5)], [(1.0, 0.5)]]
    assert _pool_finish(pages, slots=1, ready=0.0) == 3.5


def test_pages_beside_the_cover_are_judged_after_its_first_drawing() -> None:
    cover, page = [(1.0, 0.1)], [(0.5, 0.5)]
    # Alone, the page would be judged at 1.0; judged against the cover, it waits for it at 1.0.
    assert _pool_finish([cover, page], slots=2, ready=0.0) == 1.1
    assert _pool_finish([cover, page], slots=2, ready=0.0, cover_in_pool=True) == 1.5
