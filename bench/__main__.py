"""``python -m bench [--quick|--full] [--scenarios single,pickup,...]``: run and report."""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import sys
import time
from datetime import UTC, datetime

import psutil

from bench import faults, report
from bench.scenarios import SCENARIOS
from bench.world import Bench
from monitor.config import DEFAULT

# Time is scaled: real Gemini image calls take ~10-30 s; here 0.5 s (quick) or 1 s (full).
QUICK = {
    "analysis_s": 0.3,
    "image_s": 0.5,
    "jitter": 0.1,
    # The daemon's own default, so the single-order, real-latency and ordering runs measure it.
    "page_concurrency": DEFAULT.page_concurrency,
    "single_pages": [10, 24],
    "single_repeats": 3,
    # One order at Gemini-like latencies, not scaled (about a minute): analysis and judge calls
    # ~3 s, images 10-15 s.
    "real_analysis_s": 3.0,
    "real_image_s": 12.5,
    "real_jitter": 0.2,
    "real_pages": 10,
    "real_timeout_s": 240,
    # The ordering scenario's worst case (bench/likeness.py): what the judge gives a page drawn
    # without the cover as reference, below QA_MIN_LIKENESS so that every such page is redrawn.
    "ordering_worst_likeness": 3.0,
    # versus (bench/versus.py): a SIGKILL after this many images of kill_orders orders.
    # Server image limits for the versus run, images per real minute (scaled with the
    # latencies there). Gemini publishes no fixed table any more, a project's live limits are
    # in AI Studio (https://ai.google.dev/gemini-api/docs/rate-limits, read 2026-12-02);
    # "paid_tier" = 100, the low end of the Tier 1 image figures reported for Nano Banana
    # models (100+ images/min, 300 RPM; third-party, 2025-12/2026-02, see bench/README.md),
    # above what either system's 5 orders can use at these latencies; "tight" = 10, the
    # per-minute value of a 429 quoted for gemini-3.1-flash-image-preview on a new project.
    "versus_limits": {"paid_tier": 100, "tight": 10},
    # Real time / versus time (bench/versus.py ``scaled``): images 12.5 s -> 2.5 s.
    "versus_scale": 5.0,
    "versus_orders": 6,
    # Saturation runs per limit in section 0 (the median reported, with min-max). At the tight
    # limit both systems are bound by the quota and a run's books/min barely spreads.
    "versus_saturation_repeats": {"paid_tier": 1, "tight": 1},
    "kill_orders": 5,
    "kill_after_images": 20,
    "poll_interval_s": 2.0,
    "pickup_items": 16,
    "pickup_poll_items": 10,
    "pickup_spacing_s": [0.1, 1.0],
    "limit_images": 20,
    "window_s": 5.0,
    "saturation_orders": 20,
    "repeats": 1,
    "timeout_s": 150,
    # [in-flight orders, pages, reply px]
    "memory_cases": [[1, 8, 2048], [4, 8, 2048], [1, 24, 2048], [1, 8, 1024], [1, 8, 4096]],
    # Cases run a second time under the profiler (bench/memprofile.py): where the peak is, and
    # why it grows with book length.
    "memory_profile_cases": [[1, 8, 2048], [1, 24, 2048]],
    "replicas": [1, 2, 4],
    "scale_orders": 6,
    "scale_orders_per_replica": 1,
    "scale_page_concurrency": 2,
    "scale_limit_images": 40,
    "pdf_sides": [256, 2048],
    "pdf_repeats": 3,
    # The fault-injection suite runs in its full form in both modes (30 orders, every fault).
    "faults": faults.SUITE,
}
FULL = {
    **QUICK,
    "image_s": 1.0,
    "analysis_s": 0.5,
    "versus_scale": 2.5,
    "versus_saturation_repeats": {"paid_tier": 3, "tight": 1},
    "single_repeats": 5,
    "pickup_items": 40,
    "pickup_poll_items": 25,
    "poll_interval_s": 10.0,
    "pickup_spacing_s": [0.2, 5.0],
    "limit_images": 20,
    "window_s": 10.0,
    "saturation_orders": 20,
    "repeats": 3,
    "timeout_s": 600,
    "memory_cases": [
        [1, 8, 2048],
        [2, 8, 2048],
        [4, 8, 2048],
        [8, 8, 2048],
        [1, 24, 2048],
        [4, 24, 2048],
        [1, 8, 1024],
        [4, 8, 1024],
        [1, 8, 4096],
        [4, 8, 4096],
    ],
    "memory_profile_cases": [[1, 8, 2048], [1, 24, 2048], [1, 8, 4096]],
    "scale_orders": 16,
    "pdf_repeats": 5,
}


def machine() -> dict[str, object]:
    return {
        "cpus": os.cpu_count(),
        "ram_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
    }


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument(
        "--quick", action="store_true", help="the make bench mode (default), about 24 min"
    )
    mode.add_argument("--full", action="store_true", help="longer latencies, more orders, repeats")
    parser.add_argument(
        "--scenarios",
        default=",".join(SCENARIOS),
        help=f"comma-separated subset of {','.join(SCENARIOS)}",
    )
    parser.add_argument("--no-readme", action="store_true", help="do not rewrite bench/README.md")
    args = parser.parse_args()
    cfg = FULL if args.full else QUICK
    chosen = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    unknown = set(chosen) - set(SCENARIOS)
    if unknown:
        parser.error(f"unknown scenarios: {sorted(unknown)}")
    results: dict[str, object] = {
        "mode": "full" if args.full else "quick",
        "config": cfg,
        "machine": machine(),
        "command": " ".join(["python -m bench", *sys.argv[1:]]),
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
        "scenarios": {},
    }
    bench = Bench()
    t0 = time.monotonic()
    try:
        for name in chosen:
            started = time.monotonic()
            print(f"[bench] {name} ...", flush=True)
            fn = SCENARIOS[name]
            if asyncio.iscoroutinefunction(fn):
                out = asyncio.run(fn(bench, cfg))
            else:
                out = fn(bench, cfg)
            out["elapsed_s"] = time.monotonic() - started
            results["scenarios"][name] = out  # type: ignore[index]
            print(f"[bench] {name} done in {out['elapsed_s']:.1f}s", flush=True)
    finally:
        bench.close()
    results["elapsed_s"] = time.monotonic() - t0
    path = report.save(results)
    print(f"[bench] results: {path}")
    text = report.render(results)
    print(text)
    if not args.no_readme:
        report.update_readme(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
