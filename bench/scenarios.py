"""The scenarios. Each returns a JSON-able dict of measured numbers."""

from __future__ import annotations

import asyncio
import json
import math
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import psycopg
from PIL import Image

from bench import faults
from bench.latency import Call, LatencyModel
from bench.versus import versus
from bench.world import PHOTO, USER, Bench, RssSampler, big_jpeg, sized_replies, world
from processors.pdf import build_pdf

MB = 1024 * 1024
# bench/memprofile/sitecustomize.py: the profiler a daemon loads when it is on its PYTHONPATH.
MEMPROFILE_DIR = Path(__file__).resolve().parent / "memprofile"


def stats(values: list[float]) -> dict[str, float | int | None]:
    if not values:
        return {"n": 0, "median": None, "min": None, "max": None, "p95": None}
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, math.ceil(0.95 * len(ordered)) - 1)]
    return {
        "n": len(values),
        "median": statistics.median(values),
        "min": ordered[0],
        "max": ordered[-1],
        "p95": p95,
    }


def ai_calls(rows: list[dict[str, Any]]) -> int:
    return sum(int((r["ai_usage"] or {}).get("calls", 0)) for r in rows)


# --- 1. single order against its critical path -------------------------------------------


def jpeg_pages(folder: Path, pages: int, side: int) -> list[Path]:
    """A cover and ``pages`` pages as ``side``-px JPEG files in ``folder``."""
    paths = [folder / f"{n:02d}.jpg" for n in range(pages + 1)]
    for path in paths:
        path.write_bytes(big_jpeg(side))
    return paths


def pdf_seconds(pages: int, side: int = 256) -> float:
    """In-process img2pdf build time of a book of ``pages`` + cover at the fake's reply size."""
    with tempfile.TemporaryDirectory() as tmp:
        paths = jpeg_pages(Path(tmp), pages, side)
        started = time.perf_counter()
        build_pdf(paths[0], paths[1:], Path(tmp) / "b.pdf", title="bench")
        return time.perf_counter() - started


def _busy_gaps(calls: list[Call]) -> float:
    """Seconds inside the AI span when no call was in flight at the fake (client-side work)."""
    gaps, reach = 0.0, None
    for start, end, *_ in sorted(calls, key=lambda c: c.start):
        if reach is not None and start > reach:
            gaps += start - reach
        reach = end if reach is None else max(reach, end)
    return gaps


async def single_order(bench: Bench, cfg: dict[str, Any]) -> dict[str, Any]:
    la, li, p = cfg["analysis_s"], cfg["image_s"], cfg["page_concurrency"]
    out: dict[str, Any] = {
        "analysis_s": la,
        "image_s": li,
        "jitter": cfg["jitter"],
        "page_concurrency": p,
        "books": [],
    }
    for pages in cfg["single_pages"]:
        model = LatencyModel(analysis_s=la, image_s=li, jitter=cfg["jitter"])
        async with world(bench, model, (pages,)) as w:
            daemon = w.start_daemon(PAGE_CONCURRENCY=p)
            rss = RssSampler(daemon.pid)
            rss.start()
            walls, before_ai, ai_span, after_ai, pure = [], [], [], [], []
            for i in range(cfg["single_repeats"]):
                mark = len(model.timeline)
                item = await w.order(pages, f"Solo{i}")
                (row,) = await w.wait_done([item], timeout=120)
                if row["generation_status"] == "completed":
                    walls.append(float(row["generated"] - row["started"]))
                    calls = model.timeline[mark:]
                    first, last = min(c.start for c in calls), max(c.end for c in calls)
                    before_ai.append(first - float(row["started"]))
                    ai_span.append(last - first)
                    after_ai.append(float(row["generated"]) - last)
                    pure.append(_busy_gaps(calls))
            peak = await rss.stop()
        pdf = pdf_seconds(pages)
        # QA_MODE=judge (the default): a judge call (L_a) after the cover and after every page.
        ai_path = la + li + la + math.ceil(pages / p) * (li + la)
        critical = ai_path + pdf
        s = stats(walls)
        out["books"].append(
            {
                "pages": pages,
                "critical_path_s": critical,
                "ai_path_s": ai_path,
                "pdf_s": pdf,
                "wall_s": s,
                "ratio_median": (s["median"] / critical) if s["median"] else None,
                "ratio_max": (s["max"] / critical) if s["max"] else None,
                "completed": len(walls),
                "runs": cfg["single_repeats"],
                "peak_rss_mb": peak / MB,
                "claim_to_first_ai_call_s": stats(before_ai),
                "first_to_last_ai_call_s": stats(ai_span),
                "last_ai_call_to_completed_s": stats(after_ai),
                "idle_gaps_between_ai_calls_s": stats(pure),
            }
        )
    return out


def _pool_span(durations: list[float], slots: int) -> float:
    """The span of tasks of ``durations`` started in order on ``slots`` slots, each slot taking
    the next task as soon as it is free (the page pool of processors/book.py)."""
    free = [0.0] * slots
    for d in durations:
        i = free.index(min(free))
        free[i] += d
    return max(free) if durations else 0.0


def drawn_critical_path(calls: list[Call], slots: int) -> dict[str, float]:
    """The shortest possible AI path of one book with the latencies the fake actually drew.

    The dependency chain of processors/book.py: the cover and child analyses (in parallel), the
    cover image, its judge call, then every page (image, then its judge call) in a pool of
    ``slots``. Image calls are told apart by the page number in their prompt; judge calls are
    paired with illustrations in start order (a redraw adds its image and judge to its page).
    Client work, waits and gaps count zero here: wall / this = the daemon's own overhead.
    """
    analyses = [c for c in calls if c.kind == "analysis" and c.request.schema_kind != "judge"]
    judges = sorted((c for c in calls if c.request.schema_kind == "judge"), key=lambda c: c.start)
    images = sorted((c for c in calls if c.kind == "image"), key=lambda c: c.start)
    judged = [j.end - j.start for j in judges] + [0.0] * max(0, len(images) - len(judges))
    per_page: dict[int, float] = {}
    for image, judge_s in zip(images, judged):
        page = faults.child_and_page(image.request)[1]
        per_page[page] = per_page.get(page, 0.0) + (image.end - image.start) + judge_s
    first = max((c.end - c.start for c in analyses), default=0.0)
    cover = per_page.pop(0, 0.0)
    pages = _pool_span([per_page[n] for n in sorted(per_page)], slots)
    return {"analysis_s": first, "cover_s": cover, "pages_s": pages, "ai_s": first + cover + pages}


async def real_latency(bench: Bench, cfg: dict[str, Any]) -> dict[str, Any]:
    """One 10-page book at Gemini-like latencies (not scaled), the QA judge on (the default)."""
    la, li, jitter = cfg["real_analysis_s"], cfg["real_image_s"], cfg["real_jitter"]
    pages, p = cfg["real_pages"], cfg["page_concurrency"]
    model = LatencyModel(analysis_s=la, image_s=li, jitter=jitter, seed=5)
    async with world(bench, model, (pages,)) as w:
        daemon = w.start_daemon(PAGE_CONCURRENCY=p, RETRY_BACKOFF_BASE_SECONDS=30)
        rss = RssSampler(daemon.pid)
        rss.start()
        item = await w.order(pages, "Real")
        (row,) = await w.wait_done([item], timeout=cfg["real_timeout_s"])
        peak = await rss.stop()
    calls = list(model.timeline)
    pdf = pdf_seconds(pages)
    # The latency model's means: analyses, cover, cover judge, then ceil(N/P) rounds of a page and
    # its judge call.
    modelled = la + li + la + math.ceil(pages / p) * (li + la) + pdf
    drawn = drawn_critical_path(calls, p)
    out: dict[str, Any] = {
        "pages": pages,
        "analysis_s": la,
        "image_s": li,
        "jitter": jitter,
        "page_concurrency": p,
        "status": row["generation_status"],
        "ai_calls": ai_calls([row]),
        "judge_calls": sum(1 for c in calls if c.request.schema_kind == "judge"),
        "image_calls": sum(1 for c in calls if c.kind == "image"),
        "modelled_critical_s": modelled,
        "drawn_critical_s": drawn["ai_s"] + pdf,
        "drawn": drawn,
        "pdf_s": pdf,
        "peak_rss_mb": peak / MB,
    }
    if row["generation_status"] == "completed":
        wall = float(row["generated"] - row["started"])
        first, last = min(c.start for c in calls), max(c.end for c in calls)
        out.update(
            wall_s=wall,
            ratio_modelled=wall / modelled,
            ratio_drawn=wall / out["drawn_critical_s"],
            claim_to_first_ai_call_s=first - float(row["started"]),
            idle_gaps_between_ai_calls_s=_busy_gaps(calls),
            last_ai_call_to_completed_s=float(row["generated"]) - last,
        )
    return out


# --- 2. pickup: LISTEN versus polling ----------------------------------------------------


async def _insert_paid(url: str, book: str, name: str, quiet: bool) -> None:
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        if quiet:
            # Replica mode skips ordinary triggers for this session: no pg_notify, polling only.
            await conn.execute("set session_replication_role = replica")
        await conn.execute(
            "select create_paid_order_item(%s, %s, 5, 'girl', %s, %s)", [book, name, PHOTO, USER]
        )


async def pickup(bench: Bench, cfg: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"poll_interval_s": cfg["poll_interval_s"]}
    for mode, quiet, count in (
        ("listen", False, cfg["pickup_items"]),
        ("poll_only", True, cfg["pickup_poll_items"]),
    ):
        model = LatencyModel(analysis_s=0.0, image_s=0.0, jitter=0.0)
        async with world(bench, model, (8,)) as w:
            w.start_daemon(POLL_INTERVAL_SECONDS=cfg["poll_interval_s"], MAX_CONCURRENT_ORDERS=20)
            warm = await w.order(8, "Warm")
            await w.wait_done([warm], timeout=60)
            before = {r["id"] for r in await w.rows([warm])}
            rng = __import__("random").Random(7)
            for i in range(count):
                await _insert_paid(w.url, w.books[8], f"Pick{i}", quiet)
                await asyncio.sleep(rng.uniform(*cfg["pickup_spacing_s"]))
            async with await psycopg.AsyncConnection.connect(w.url, autocommit=True) as conn:
                cur = await conn.execute("select id::text from order_items")
                items = [r[0] for r in await cur.fetchall() if r[0] not in before]
            rows = await w.wait_done(items, timeout=60)
            delays = [float(r["started"] - r["created"]) for r in rows if r["started"] is not None]
            out[mode] = stats(delays)
    return out


# --- 3. saturation -----------------------------------------------------------------------


async def _throughput_run(
    bench: Bench,
    model: LatencyModel,
    orders: int,
    pages: int,
    replicas: int,
    env: dict[str, Any],
    timeout: float,
    sample_rss: bool = False,
) -> dict[str, Any]:
    async with world(bench, model, (pages,)) as w:
        daemons = [w.start_daemon(**env) for _ in range(replicas)]
        await asyncio.sleep(2.0)  # start-up, so the daemons compete from the first claim
        samplers = [RssSampler(d.pid) for d in daemons] if sample_rss else []
        idle = [s.rss() for s in samplers]
        for s in samplers:
            s.start()
        items = [await w.order(pages, f"Kid{i}") for i in range(orders)]
        peak_inflight = 0
        workers: set[str] = set()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            peak_inflight = max(peak_inflight, await w.count_processing())
            workers |= {r["claimed_by"] for r in await w.rows(items) if r["claimed_by"]}
            rows = await w.rows(items)
            if all(r["generation_status"] in ("completed", "failed") for r in rows):
                break
            await asyncio.sleep(0.2)
        peaks = [await s.stop() for s in samplers]
        rows = await w.rows(items)
        done = [r for r in rows if r["generation_status"] == "completed"]
        failed = [r for r in rows if r["generation_status"] == "failed"]
        span = (
            (max(r["generated"] for r in done) - min(r["started"] for r in rows if r["started"]))
            if done
            else None
        )
        image_ok = sum(1 for r in w.fake.generate_requests(w.fake.IMAGE_MODEL) if r.status == 200)
        images_per_book = pages + 1
        result = {
            "orders": orders,
            "pages": pages,
            "replicas": replicas,
            "completed": len(done),
            "failed": len(failed),
            "failed_codes": sorted({r["error_code"] for r in failed if r["error_code"]}),
            "unfinished": orders - len(done) - len(failed),
            "span_s": float(span) if span else None,
            "books_per_min": (len(done) / float(span) * 60) if span else None,
            "http_429": w.fake.statuses.get(429, 0),
            "ai_calls_per_book_daemon": ai_calls(done) / len(done) if done else None,
            "http_requests_per_book": len(w.fake.generate_requests()) / max(len(done), 1),
            "duplicate_image_calls": image_ok - images_per_book * len(done),
            "reclaimed_items": sum(1 for r in rows if (r["attempts"] or 0) > 1),
            "workers_used": len(workers),
            "peak_inflight": peak_inflight,
        }
        if sample_rss:
            result["idle_rss_mb"] = [v / MB for v in idle]
            result["peak_rss_mb"] = [v / MB for v in peaks]
        if model.images_per_minute:
            ceiling = model.images_per_minute / images_per_book
            result["ceiling_books_per_min"] = ceiling
            result["fraction_of_ceiling"] = (result["books_per_min"] / ceiling) if span else None
        return result


async def saturation(bench: Bench, cfg: dict[str, Any]) -> dict[str, Any]:
    runs: dict[str, list[dict[str, Any]]] = {}
    per_minute = cfg["limit_images"] * 60 / cfg["window_s"]
    variants = {
        "defaults": {},
        # The pacer's bucket sized to the server's (scaled) quota window: its burst is usable.
        "client_paced": {
            "AI_REQUESTS_PER_MINUTE": per_minute,
            "AI_RATE_WINDOW_SECONDS": cfg["window_s"],
        },
        # A bucket of one start per interval: the even spacing of the pacer before the bucket.
        "client_paced_even": {
            "AI_REQUESTS_PER_MINUTE": per_minute,
            "AI_RATE_WINDOW_SECONDS": 60 / per_minute,
        },
    }
    for name, extra in variants.items():
        runs[name] = []
        for rep in range(cfg["repeats"]):
            model = LatencyModel(
                analysis_s=cfg["analysis_s"],
                image_s=cfg["image_s"],
                jitter=cfg["jitter"],
                limit_images=cfg["limit_images"],
                window_s=cfg["window_s"],
                seed=rep + 1,
            )
            runs[name].append(
                await _throughput_run(
                    bench, model, cfg["saturation_orders"], 8, 1, extra, timeout=cfg["timeout_s"]
                )
            )
    return {
        "limit_images": cfg["limit_images"],
        "window_s": cfg["window_s"],
        "images_per_minute": cfg["limit_images"] * 60 / cfg["window_s"],
        "runs": runs,
    }


# --- 4. memory ---------------------------------------------------------------------------


async def memory(bench: Bench, cfg: dict[str, Any]) -> dict[str, Any]:
    """Each case with RSS measured unprofiled; the cases in ``memory_profile_cases`` once more
    under the profiler (bench/memprofile) for where the peak is, since tracemalloc costs memory
    and time of its own (a profiled case runs 2-3 times longer)."""
    env = cfg.get("memory_env", {})
    profiled_cases = cfg.get("memory_profile_cases", [])
    out = []
    for inflight, pages, side in cfg["memory_cases"]:
        case = await _memory_case(bench, cfg, inflight, pages, side, env)
        if [inflight, pages, side] in profiled_cases:
            profiled = await _memory_case(bench, cfg, inflight, pages, side, env, profile=True)
            case["profile"] = profiled.get("profile")
        out.append(case)
    return {"cases": out, "env": env}


async def _memory_case(
    bench: Bench,
    cfg: dict[str, Any],
    inflight: int,
    pages: int,
    side: int,
    env: dict[str, str],
    *,
    profile: bool = False,
) -> dict[str, Any]:
    model = LatencyModel(analysis_s=0.1, image_s=cfg["image_s"], jitter=cfg["jitter"])
    async with world(bench, model, (pages,)) as w:
        w.fake.image_maker = sized_replies(side)
        extra: dict[str, Any] = dict(env)
        profile_file = w.home / "memprofile.json"
        if profile:
            extra.update(PYTHONPATH=str(MEMPROFILE_DIR), BENCH_MEMPROFILE=str(profile_file))
        d = w.start_daemon(MAX_CONCURRENT_ORDERS=inflight, **extra)
        await asyncio.sleep(2.0)
        sampler = RssSampler(d.pid)
        cold = sampler.rss()
        # One finished order first, so one-time costs (clients, codecs, arenas) are in the baseline.
        await w.wait_done([await w.order(pages, "Warm")], timeout=cfg["timeout_s"])
        idle = sampler.rss()
        # The profile is of the measured orders' peak only, not of the warm-up's.
        profile_file.unlink(missing_ok=True)
        sampler.start()
        items = [await w.order(pages, f"Mem{i}") for i in range(inflight)]
        peak_inflight = 0
        deadline = time.monotonic() + cfg["timeout_s"]
        while time.monotonic() < deadline:
            peak_inflight = max(peak_inflight, await w.count_processing())
            rows = await w.rows(items)
            if all(r["generation_status"] in ("completed", "failed") for r in rows):
                break
            await asyncio.sleep(0.2)
        peak = await sampler.stop()
        rows = await w.rows(items)
        if any(r["generation_status"] != "completed" for r in rows):
            print(
                "[bench] memory: daemon log tail:\n" + "\n".join(d.logs().splitlines()[-5:]),
                flush=True,
            )
        found = json.loads(profile_file.read_text()) if profile_file.exists() else None
    return {
        "inflight": inflight,
        "pages": pages,
        "reply_px": side,
        "cold_rss_mb": cold / MB,
        "idle_rss_mb": idle / MB,
        "peak_rss_mb": peak / MB,
        "per_order_mb": (peak - idle) / MB / max(peak_inflight, 1),
        "peak_inflight_observed": peak_inflight,
        "completed": sum(r["generation_status"] == "completed" for r in rows),
        "statuses": sorted({f"{r['generation_status']}:{r['error_code']}" for r in rows}),
        "profile": found,
    }


# --- 5. scale-out ------------------------------------------------------------------------


async def scale_out(bench: Bench, cfg: dict[str, Any]) -> dict[str, Any]:
    runs: dict[str, list[dict[str, Any]]] = {}
    env = {
        "MAX_CONCURRENT_ORDERS": cfg["scale_orders_per_replica"],
        "PAGE_CONCURRENCY": cfg["scale_page_concurrency"],
    }
    for replicas in cfg["replicas"]:
        runs[str(replicas)] = []
        for rep in range(cfg["repeats"]):
            model = LatencyModel(
                analysis_s=cfg["analysis_s"],
                image_s=cfg["image_s"],
                jitter=cfg["jitter"],
                limit_images=cfg["scale_limit_images"],
                window_s=cfg["window_s"],
                seed=rep + 11,
            )
            runs[str(replicas)].append(
                await _throughput_run(
                    bench, model, cfg["scale_orders"], 8, replicas, env, timeout=cfg["timeout_s"]
                )
            )
    return {
        "per_replica_env": env,
        "images_per_minute": cfg["scale_limit_images"] * 60 / cfg["window_s"],
        "runs": runs,
    }


# --- 6. PDF ------------------------------------------------------------------------------


def _pillow_pdf(paths: list[Path], out: Path) -> None:
    images = [Image.open(p).convert("RGB") for p in paths]
    images[0].save(
        out, "PDF", save_all=True, append_images=images[1:], resolution=72.0 * images[0].width / 612
    )
    for img in images:
        img.close()


def pdf(bench: Bench, cfg: dict[str, Any]) -> dict[str, Any]:
    out = []
    for side in cfg["pdf_sides"]:
        for pages in cfg["single_pages"]:
            with tempfile.TemporaryDirectory() as tmp:
                paths = jpeg_pages(Path(tmp), pages, side)
                jpeg_bytes = sum(p.stat().st_size for p in paths)
                for engine in ("img2pdf", "pillow"):
                    times, size = [], 0
                    for _ in range(cfg["pdf_repeats"]):
                        target = Path(tmp) / f"{engine}.pdf"
                        started = time.perf_counter()
                        if engine == "img2pdf":
                            build_pdf(paths[0], paths[1:], target, title="bench")
                        else:
                            _pillow_pdf(paths, target)
                        times.append(time.perf_counter() - started)
                        size = target.stat().st_size
                    out.append(
                        {
                            "engine": engine,
                            "side_px": side,
                            "pages": pages + 1,
                            "seconds": stats(times),
                            "ms_per_page": statistics.median(times) * 1000 / (pages + 1),
                            "bytes": size,
                            "kb_per_page": size / 1024 / (pages + 1),
                            "input_jpeg_kb_per_page": jpeg_bytes / 1024 / (pages + 1),
                        }
                    )
    return {"cases": out}


SCENARIOS = {
    "versus": versus,
    "single": single_order,
    "real": real_latency,
    "pickup": pickup,
    "saturation": saturation,
    "memory": memory,
    "scaleout": scale_out,
    "pdf": pdf,
    "faults": faults.suite,
}
