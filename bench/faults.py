"""Fault injection: two daemons keep every order through SIGKILL, a Postgres restart, a 429 storm
and SIGTERM.

Each scenario places its orders at once on two replicas (real ``run_monitor.py run`` processes),
injects its fault while they work, waits for every order to end and reports:

- orders completed, failed, unfinished (all must complete), and completed books whose PDF is in
  storage with the cover and every page;
- duplicate completions: ``book_ready`` notifications beyond one per item (must be 0);
- repeated image calls: successful image calls beyond one per (item, page), told apart by the
  child's name and page number in the prompt the fake received;
- the bound on repeats: the pages *in flight* at each fault, that is pages of the items the fault
  caught whose image call had started before the fault ended but which had no checkpoint and no
  draft (a drawing stored before its judge, migrations/021) when it began. A page repeated more
  often than the faults caught it in flight (say, one already checkpointed or drafted) is counted
  as ``unbounded_repeats`` and must be 0;
- for a database outage, the bound that its length and the lease imply: a lease is renewed every
  LEASE_SECONDS / 3, so an outage longer than a third of the lease may end attempts after the
  database is back (a lease runs out before the next heartbeat, another worker takes the item
  over, redrawing what the old one still had in flight, which may include pages it started after
  the outage). So each interruption of an item (a claim after its first: ``attempts`` - 1 +
  ``crash_count``) may repeat each of its pages once, and no more (``repeats_beyond_interruptions``
  must be 0); a page checkpointed or drafted before the fault is never paid again
  (``checkpointed_repaid``);
- time to recover: from the end of a fault until every item it caught has made progress again
  (a new checkpoint, or its completion).

``SUITE`` is the full form that ``make bench`` runs (30 orders); ``SHORT`` is the form the test
suite runs (``tests/e2e/test_fault_injection.py``).
"""

from __future__ import annotations

import asyncio
import json
import random
import re
import time
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import psycopg
from aiohttp import web
from psycopg.rows import dict_row
from pypdf import PdfReader

from bench.latency import LatencyModel, is_analysis
from bench.world import Bench, World, world
from testkit.daemon_process import DaemonProcess
from testkit.fakes.gemini_server import FakeGemini, RecordedRequest, rate_limited

PAGES = 8
Page = tuple[str, int]  # (order item id, page number; 0 is the cover)

SUITE: dict[str, Any] = {
    "orders": 30,
    "replicas": 2,
    "analysis_s": 0.2,
    "image_s": 0.25,
    "jitter": 0.1,
    "lease_s": 15,
    "first_fault_s": (2.0, 4.0),
    "kills": 4,
    "kill_gap_s": (2.0, 5.0),
    "outage_s": 3.0,
    "storm_s": 10.0,
    "storm_fraction": 0.5,
    "storm_retry_delay": "1s",
    "timeout_s": 240,
    "seed": 1,
}
# The short form's outage outlasts the Postgres pool's 5 s checkout timeout, so job writes must
# wait it out themselves (Job.outage_patience); a 3 s outage the pool alone rides through.
SHORT: dict[str, Any] = {
    **SUITE,
    "orders": 8,
    # 8 orders on two replicas at the default concurrency (PAGE_CONCURRENCY 8, 24 AI calls) are
    # drawn in 2-3 s: the first fault must come before they are, or it meets no traffic.
    "first_fault_s": (0.5, 1.5),
    "kills": 2,
    "kill_gap_s": (1.0, 2.0),
    "outage_s": 7.0,
    "storm_s": 4.0,
    "timeout_s": 120,
}

_PAGE_NUMBER = re.compile(r"original illustration of page (\d+)\.")
_CHILD_DATA = re.compile(r"<child_data>\s*(.*?)\s*</child_data>", re.S)


def child_and_page(request: RecordedRequest) -> tuple[str, int]:
    """Which child's which page an image request draws, read from its prompt (0 is the cover)."""
    text = "\n".join(request.texts)
    data = _CHILD_DATA.search(text)
    if data is None:
        raise ValueError("an image request without a <child_data> block")
    page = _PAGE_NUMBER.search(text)
    return json.loads(data.group(1))["name"], int(page.group(1)) if page else 0


@dataclass
class Storm:
    """A FakeGemini behaviour: while ``active``, ``fraction`` of image calls get a 429."""

    inner: LatencyModel
    fraction: float = 0.5
    retry_delay: str = "1s"
    active: bool = False
    rejected: int = 0
    rejected_children: set[str] = field(default_factory=set)
    seed: int = 3

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)

    async def __call__(self, fake: FakeGemini, request: RecordedRequest) -> web.Response:
        if self.active and not is_analysis(request) and self._rng.random() < self.fraction:
            self.rejected += 1
            self.rejected_children.add(child_and_page(request)[0])
            return await rate_limited(self.retry_delay)(fake, request)
        return await self.inner(fake, request)


@dataclass
class Fault:
    kind: str
    began: float  # wall clock
    ended: float
    caught: set[str]  # the items in flight that the fault hit
    checkpointed: set[Page]  # their pages that had a checkpoint or a draft when it began
    detail: dict[str, Any] = field(default_factory=dict)


class Run:
    """Two replicas working through one batch of orders while an injector disturbs them."""

    def __init__(self, w: World, storm: Storm, cfg: dict[str, Any]) -> None:
        self.w, self.storm, self.cfg = w, storm, cfg
        self.env = {"LEASE_SECONDS": cfg["lease_s"]}
        self.daemons = [w.start_daemon(**self.env) for _ in range(cfg["replicas"])]
        self.items: list[str] = []
        self.rng = random.Random(cfg["seed"])

    async def place_orders(self) -> None:
        self.items = [await self.w.order(PAGES, f"Kid{i}") for i in range(self.cfg["orders"])]

    async def query(self, sql: str, params: list[Any]) -> list[tuple[Any, ...]]:
        async with await psycopg.AsyncConnection.connect(self.w.url, autocommit=True) as conn:
            return await (await conn.execute(sql, params)).fetchall()

    async def records(self, sql: str, params: list[Any]) -> list[dict[str, Any]]:
        async with await psycopg.AsyncConnection.connect(
            self.w.url, autocommit=True, row_factory=dict_row
        ) as conn:
            return await (await conn.execute(sql, params)).fetchall()

    async def in_flight(self, worker: str | None = None) -> tuple[set[str], set[Page]]:
        """Items processing (by ``worker``, or by anyone), and those items' saved pages: with a
        checkpoint, or a draft waiting for its judge (both are never drawn again)."""
        rows = await self.query(
            """select id::text from order_items where generation_status = 'processing'
                  and (%s::text is null or claimed_by = %s)""",
            [worker, worker],
        )
        caught = {r[0] for r in rows}
        pages = await self.query(
            """select order_item_id::text, page_number from order_item_pages
                where order_item_id = any(%s::uuid[])
               union
               select order_item_id::text, page_number from order_item_page_drafts
                where order_item_id = any(%s::uuid[])""",
            [list(caught)] * 2,
        )
        return caught, {(r[0], r[1]) for r in pages}

    async def all_ended(self) -> bool:
        rows = await self.query(
            "select count(*) from order_items where id = any(%s::uuid[]) and generation_status in ('pending', 'processing')",
            [self.items],
        )
        return rows[0][0] == 0

    async def pause(self, bounds: tuple[float, float]) -> None:
        await asyncio.sleep(self.rng.uniform(*bounds))

    async def wait_busy(self, daemon: DaemonProcess | None = None, timeout: float = 30) -> bool:
        """Until ``daemon`` (or any replica) is in the middle of a book's pages.

        That is, it holds an item with a checkpoint but not all of them, so image calls are in
        flight. False if that never happens before every order has ended (or ``timeout``).
        """
        worker = daemon.env["WORKER_ID"] if daemon else None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            mid_book = await self.query(
                """select count(*) from order_items where generation_status = 'processing'
                      and (%s::text is null or claimed_by = %s) and pages_done between 1 and %s""",
                [worker, worker, PAGES - 1],
            )
            if mid_book[0][0]:
                return True
            if await self.all_ended():
                return False
            await asyncio.sleep(0.02)
        return False


# --- the four injectors ------------------------------------------------------------------------


async def kill_and_restart(run: Run) -> list[Fault]:
    """SIGKILL one replica at random moments while it holds work; a supervisor restarts it
    under the same WORKER_ID, so it takes over what it held at once (no lease to wait out)."""
    faults = []
    await run.pause(run.cfg["first_fault_s"])
    for n in range(run.cfg["kills"]):
        if n:
            await run.pause(run.cfg["kill_gap_s"])
        victim = run.daemons[0]
        if not await run.wait_busy(victim):
            break
        await asyncio.to_thread(victim.kill)
        at = time.time()
        # Read after the kill: a dead process writes nothing, so this is exactly what it left.
        caught, done = await run.in_flight(victim.env["WORKER_ID"])
        run.daemons[0] = run.w.restart(victim)
        faults.append(Fault("SIGKILL", at, at, caught, done))
    return faults


async def postgres_restart(run: Run) -> list[Fault]:
    """Stop the database in the middle of the run and start it again after ``outage_s``."""
    await run.pause(run.cfg["first_fault_s"])
    await run.wait_busy()
    caught, done = await run.in_flight()
    began = time.time()
    await asyncio.to_thread(run.w.bench.cluster.stop)
    await asyncio.sleep(run.cfg["outage_s"])
    await asyncio.to_thread(run.w.bench.cluster.start)
    return [
        Fault(
            "Postgres restart", began, time.time(), caught, done, {"outage_s": run.cfg["outage_s"]}
        )
    ]


async def storm_429(run: Run) -> list[Fault]:
    """Answer ``storm_fraction`` of all image calls with 429 for ``storm_s`` seconds.

    It starts after the first pause, without waiting for a book in the middle of its pages: at
    the default concurrency a book's pages are one or two rounds, a window a poll can miss, and
    the storm is a span of time whose calls it hits whatever the books' progress."""
    await run.pause(run.cfg["first_fault_s"])
    caught, done = await run.in_flight()
    began = time.time()
    run.storm.active = True
    await asyncio.sleep(run.cfg["storm_s"])
    run.storm.active = False
    ended = time.time()
    names = await run.query(
        "select id::text, child_name from order_items where id = any(%s::uuid[])", [run.items]
    )
    caught |= {item for item, name in names if name in run.storm.rejected_children}
    return [
        Fault(
            "429 storm",
            began,
            ended,
            caught,
            done,
            {
                "storm_s": run.cfg["storm_s"],
                "fraction": run.cfg["storm_fraction"],
                "rejected": run.storm.rejected,
            },
        )
    ]


async def terminate_one(run: Run) -> list[Fault]:
    """SIGTERM one replica while it holds work; the other keeps going, the first stays down."""
    await run.pause(run.cfg["first_fault_s"])
    victim = run.daemons[0]
    await run.wait_busy(victim)
    caught, done = await run.in_flight(victim.env["WORKER_ID"])
    began = time.time()
    exit_code = await asyncio.to_thread(victim.terminate, 60)
    ended = time.time()
    # Not finished by the victim: handed back (the other replica may have claimed them already).
    handed_back = await run.query(
        """select count(*) from order_items where id = any(%s::uuid[])
              and (generated_at is null or generated_at > to_timestamp(%s))""",
        [list(caught), ended],
    )
    return [
        Fault(
            "SIGTERM",
            began,
            ended,
            caught,
            done,
            {"exit_code": exit_code, "drain_s": ended - began, "handed_back": handed_back[0][0]},
        )
    ]


INJECTORS: dict[str, Callable[[Run], Awaitable[list[Fault]]]] = {
    "sigkill_restart": kill_and_restart,
    "postgres_restart": postgres_restart,
    "storm_429": storm_429,
    "sigterm_one": terminate_one,
}


# --- measuring ---------------------------------------------------------------------------------


async def _outcome(run: Run, faults: list[Fault], began: float) -> dict[str, Any]:
    rows = await run.records(
        """select oi.id::text as id, oi.child_name as name, oi.generation_status as status,
                  oi.error_code, oi.attempts, oi.crash_count, oi.pdf_path,
                  extract(epoch from oi.started_at)::float8 as last_claim,
                  extract(epoch from oi.generated_at)::float8 as generated,
                  (select count(*) from notifications n
                    where n.order_item_id = oi.id and n.kind = 'book_ready') as book_ready,
                  (select coalesce(array_agg(extract(epoch from p.created_at)::float8), '{}')
                     from order_item_pages p where p.order_item_id = oi.id) as checkpointed
             from order_items oi where oi.id = any(%s::uuid[])""",
        [run.items],
    )
    item_of = {r["name"]: r["id"] for r in rows}
    status = Counter(r["status"] for r in rows)
    completed = [r for r in rows if r["status"] == "completed"]
    generated = {r["id"]: r["generated"] for r in rows}
    progress = {
        r["id"]: [*r["checkpointed"], *([r["generated"]] if r["generated"] else [])] for r in rows
    }

    call_starts: defaultdict[Page, list[float]] = defaultdict(list)
    for call in (c for c in run.storm.inner.timeline if c.kind == "image"):
        name, page = child_and_page(call.request)
        call_starts[(item_of[name], page)].append(call.start)
    first_call = {key: min(starts) for key, starts in call_starts.items()}

    # Each claim after the first (a retry after a failure, a takeover of an expired lease) may
    # redraw once what its predecessor had in flight, and nothing else.
    interruptions = {r["id"]: (r["attempts"] or 1) - 1 + (r["crash_count"] or 0) for r in rows}

    caught_in_flight: Counter[Page] = Counter()
    fault_rows = []
    for fault in faults:
        in_flight = {
            key
            for key, start in first_call.items()
            if key[0] in fault.caught and key not in fault.checkpointed and start < fault.ended
        }
        caught_in_flight.update(in_flight)
        fault_rows.append(
            {
                "kind": fault.kind,
                "at_s": fault.began - began,
                "duration_s": fault.ended - fault.began,
                "items_caught": len(fault.caught),
                "pages_in_flight": len(in_flight),
                "attempts_interrupted": sum(1 for item in fault.caught if interruptions[item]),
                "recover_s": _recovery(fault, progress, generated),
                **fault.detail,
            }
        )
    repeats = {key: len(starts) - 1 for key, starts in call_starts.items() if len(starts) > 1}
    unbounded = {
        key: extra - caught_in_flight[key]
        for key, extra in repeats.items()
        if extra > caught_in_flight[key]
    }
    recoveries = [f["recover_s"] for f in fault_rows]
    ended = [r["generated"] for r in completed]
    return {
        "orders": len(rows),
        "completed": len(completed),
        "failed": status["failed"],
        "failed_codes": sorted(
            {r["error_code"] for r in rows if r["status"] == "failed" and r["error_code"]}
        ),
        "unfinished": status["pending"] + status["processing"],
        "pdfs_complete": sum(_pdf_pages(run.w, r["pdf_path"]) == PAGES + 1 for r in completed),
        "duplicate_completions": sum(max(0, r["book_ready"] - 1) for r in rows),
        "image_calls_ok": sum(len(starts) for starts in call_starts.values()),
        "repeated_image_calls": sum(repeats.values()),
        "repeat_bound": sum(f["pages_in_flight"] for f in fault_rows),
        "repeats_beyond_interruptions": sum(
            max(0, extra - interruptions[key[0]]) for key, extra in repeats.items()
        ),
        "checkpointed_repaid": sum(
            repeats.get(key, 0) for fault in faults for key in fault.checkpointed
        ),
        "unbounded_repeats": sum(unbounded.values()),
        # What to look at if that is ever not 0: each such page's calls, against the faults.
        "unbounded_pages": [
            {
                "item": key[0],
                "page": key[1],
                "call_starts_s": [round(t - began, 3) for t in sorted(call_starts[key])],
            }
            for key in unbounded
        ],
        "http_429": run.w.fake.statuses.get(429, 0),
        "max_attempts_used": max((r["attempts"] or 0) for r in rows),
        "max_crashes_used": max((r["crash_count"] or 0) for r in rows),
        "recover_s": None if None in recoveries else max(recoveries, default=0.0),
        "wall_s": (max(ended) - began) if ended else None,
        "faults": fault_rows,
    }


def _recovery(
    fault: Fault, progress: dict[str, list[float]], generated: dict[str, float | None]
) -> float | None:
    """Seconds from the end of ``fault`` until every item it caught progressed; None if one never did.

    An item that completed before the fault ended (drained during a SIGTERM) needs no recovery.
    """
    waits = []
    for item in fault.caught:
        done_at = generated.get(item)
        if done_at is not None and done_at <= fault.ended:
            waits.append(0.0)
            continue
        later = [t for t in progress[item] if t > fault.ended]
        if not later:
            return None
        waits.append(min(later) - fault.ended)
    return max(waits, default=0.0)


def _pdf_pages(w: World, pdf_path: str | None) -> int:
    if not pdf_path:
        return 0
    file = w.home / "storage" / pdf_path
    return len(PdfReader(file).pages) if file.is_file() else 0


# --- running -----------------------------------------------------------------------------------


async def run_fault(bench: Bench, name: str, cfg: dict[str, Any]) -> dict[str, Any]:
    """One scenario of the suite: ``name`` is a key of ``INJECTORS``."""
    model = LatencyModel(
        analysis_s=cfg["analysis_s"], image_s=cfg["image_s"], jitter=cfg["jitter"], seed=cfg["seed"]
    )
    storm = Storm(model, fraction=cfg["storm_fraction"], retry_delay=cfg["storm_retry_delay"])
    async with world(bench, storm, (PAGES,)) as w:
        run = Run(w, storm, cfg)
        await asyncio.sleep(1.5)  # both replicas up before the first claim
        await run.place_orders()
        # Each SIGKILL costs every item the victim held a crash, not an attempt; the crash budget
        # (order_items.max_crashes, default 5) is above the most kills a scenario makes.
        began = time.time()
        faults = await INJECTORS[name](run)
        await w.wait_done(run.items, timeout=cfg["timeout_s"])
        return {"scenario": name, **await _outcome(run, faults, began)}


async def suite(bench: Bench, cfg: dict[str, Any]) -> dict[str, Any]:
    """The bench scenario: every injector once, with ``cfg["faults"]`` (the full form)."""
    return {
        "config": cfg["faults"],
        "runs": [await run_fault(bench, name, cfg["faults"]) for name in INJECTORS],
    }
