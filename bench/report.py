"""Results to bench/results/*.json and the tables of bench/README.md."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

MB = 1024 * 1024

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
README = HERE / "README.md"
START, END = "<!-- results:start -->", "<!-- results:end -->"


def save(results: dict[str, Any]) -> Path:
    RESULTS.mkdir(exist_ok=True)
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    path = RESULTS / f"{results['mode']}-{stamp}.json"
    text = json.dumps(results, indent=2, default=str)
    path.write_text(text)
    (RESULTS / f"latest-{results['mode']}.json").write_text(text)
    return path


def f(value: Any, digits: int = 2) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def mmm(s: dict[str, Any], digits: int = 2) -> str:
    return f"{f(s['median'], digits)} ({f(s['min'], digits)}–{f(s['max'], digits)})"


def _spread(values: list[float | None], digits: int = 2) -> str:
    vals = sorted(v for v in values if v is not None)
    if not vals:
        return "–"
    med = (
        vals[len(vals) // 2]
        if len(vals) % 2
        else (vals[len(vals) // 2 - 1] + vals[len(vals) // 2]) / 2
    )
    if len(vals) == 1:
        return f(med, digits)
    return f"{f(med, digits)} ({f(vals[0], digits)}–{f(vals[-1], digits)})"


def table(header: list[str], rows: list[list[Any]]) -> list[str]:
    """A Markdown table, followed by an empty line."""
    out = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    out += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return out + [""]


def verdict(ok: bool) -> str:
    return "met" if ok else "missed"


def _replies_text(b: dict[str, Any]) -> str:
    """Which replies a single-order run had (bench/scenarios.py ``REPLIES``)."""
    if b.get("replies", "small") == "model":
        return f"the model's size ({b['reply_px']} px)"
    return f"small ({b.get('reply_px') or 256} px)"


def _single(s: dict[str, Any]) -> list[str]:
    rows = []
    for b in s["books"]:
        ok = b["ratio_max"] is not None and b["ratio_max"] <= 1.2
        rows.append(
            [
                _replies_text(b),
                b["pages"],
                f"{b['completed']}/{b['runs']}",
                f"{f(b['critical_path_s'])} ({f(b['ai_path_s'])} + {f(b['pdf_s'], 3)})",
                mmm(b["wall_s"]),
                f"{f(b['ratio_median'])}, {f(b['ratio_max'])}",
                f(b["peak_rss_mb"], 0),
                verdict(ok),
            ]
        )
    split = [
        [
            _replies_text(b),
            b["pages"],
            mmm(b["claim_to_first_ai_call_s"]),
            mmm(b["first_to_last_ai_call_s"]),
            mmm(b["idle_gaps_between_ai_calls_s"]),
            mmm(b["last_ai_call_to_completed_s"]),
            mmm(b["daemon_cpu_s"]) if "daemon_cpu_s" in b else "–",
        ]
        for b in s["books"]
    ]
    return [
        "### 1. Single order against its critical path",
        "",
        f"L_a = {s['analysis_s']} s, L_i = {s['image_s']} s, ±{int(s['jitter'] * 100)} % jitter, "
        f"PAGE_CONCURRENCY = {s['page_concurrency']}, QA_MODE = judge (the default), "
        f"{_order_name(s.get('cover_first', True))}. Critical path = {_path_text(s)} + PDF "
        "build (measured in process). A judge call holds no image slot, so only the last "
        "illustration's judge adds to the path. Wall = generated_at − started_at. Replies: the "
        "fake's small tinted copies (what the daemon's ordering and overhead cost), or pictures "
        "of the pixels the real model gives at the imageSize the daemon asked for (the sample "
        "book is 8.5 in square, so 4K: what every picture costs the client in production), "
        "encoded with a real reply's detail and quality (grain, JPEG quality 95: 6 MB at 4096 "
        "px, where real replies are JPEGs of 3.5-7.8 MB). Each "
        "row's daemon first finishes one unmeasured order (the fake's replies and the book's "
        "page inputs are then cached, as for any later order of a catalog book).",
        "",
        *table(
            [
                "replies",
                "pages",
                "runs",
                "critical path s (AI + PDF)",
                "wall s",
                "wall / critical (median, max)",
                "peak RSS MB",
                "target ≤ 1.2",
            ],
            rows,
        ),
        "Where the time goes (seconds, median (min–max)):",
        "",
        *table(
            [
                "replies",
                "pages",
                "claim → first AI call",
                "first → last AI reply",
                "idle gaps inside that span",
                "last AI reply → completed",
                "daemon CPU per book (user + sys)",
            ],
            split,
        ),
        "",
        "The CPU is the client's own work on every picture (output checks and fits, judge "
        "inputs, print pictures and screen copies, the PDFs); most of it comes in bursts as a "
        "round's replies land together, so at this compression it adds to the wall up to CPU ÷ "
        "cores.",
    ]


def _order_name(cover_first: bool) -> str:
    return (
        "COVER_FIRST = true (cover, then pages)"
        if cover_first
        else ("COVER_FIRST = false (the cover drawn in the page pool)")
    )


def _path_text(s: dict[str, Any]) -> str:
    if s.get("cover_first", True):
        return (
            "L_a (analyses, in parallel) + L_i (cover) + L_a (its judge) + ceil(N/P)·L_i (page "
            "images) + L_a (the last page's judge)"
        )
    return "L_a (analyses, in parallel) + ceil((N+1)/P)·L_i (the cover and the page images) + L_a"


def _drawn_text(cover_first: bool) -> str:
    if cover_first:
        return "the cover's image and judge calls, then the pages in a pool of P image slots"
    return "the cover first in line of a pool of P image slots, the pages after it"


def _ordering(s: dict[str, Any]) -> list[str]:
    rows = []
    for v in s["variants"]:
        default = " (default)" if v["cover_first"] == s["default_cover_first"] else ""
        rows.append(
            [
                ("true" if v["cover_first"] else "false") + default,
                v["case"],
                f"{v['completed']}/{v['runs']}",
                mmm(v["wall_s"]),
                f(v["modelled_ai_s"]),
                mmm(v["drawn_ai_s"]),
                f(v["ratio_modelled"]),
                mmm(v["last_ai_call_to_completed_s"]),
                mmm(v["image_calls_per_book"], 1),
                f"{v['drawn_without_reference']} of {v['judged_drawings']}",
                f"{v['judged_against_cover']} of {v['judged_drawings']}",
            ]
        )
    return [
        "### 1c. Cover first or pages first (COVER_FIRST), the QA judge on",
        "",
        f"{s['pages']}-page book, one order at a time, L_a = {s['analysis_s']} s, "
        f"L_i = {s['image_s']} s, ±{int(s['jitter'] * 100)} % jitter, PAGE_CONCURRENCY = "
        f"{s['page_concurrency']}. `true`: the cover and its judge before any page, every page "
        "drawn with the cover as identity reference. `false`: the cover is first in line of the "
        "page pool; a page whose image call starts before the cover is drawn goes without the "
        "reference, and every page's judge waits for the cover and compares with it, so a page "
        "that is not the cover's character is drawn again, with it. *Likeness is not measured*: "
        "the fake draws a tinted copy of the base whatever the references. So pages first runs "
        "at both ends (bench/likeness.py): `best`, the fake's judge, which passes every page; "
        f"`worst`, every page drawn without the cover scores {s['worst_likeness']:g} against it "
        f"(QA_MIN_LIKENESS {s['min_likeness']:g}) and is drawn again. Real Gemini lies between. "
        "Critical paths as in section 1 (AI part, scaled; the modelled one has no redraws).",
        "",
        *table(
            [
                "COVER_FIRST",
                "judge",
                "runs",
                "wall s",
                "modelled AI path s",
                "drawn AI path s",
                "wall / modelled AI path",
                "last AI reply → completed s",
                "image calls per book",
                "judged drawings made without the cover",
                "judged against the cover",
            ],
            rows,
        ),
    ]


def _pickup(s: dict[str, Any]) -> list[str]:
    rows = []
    for mode, target in (("listen", 1.0), ("poll_only", s["poll_interval_s"])):
        st = s.get(mode)
        if not st:
            continue
        ok = st["p95"] is not None and (
            st["p95"] < target if mode == "listen" else st["max"] <= target
        )
        rule = "p95 < 1 s" if mode == "listen" else f"max ≤ {target} s"
        rows.append(
            [
                mode,
                st["n"],
                f(st["median"], 3),
                f(st["min"], 3),
                f(st["max"], 3),
                f(st["p95"], 3),
                f"{rule}: {verdict(ok)}",
            ]
        )
    return [
        "### 2. Pickup latency, paid → claimed (started_at − created_at, DB clock)",
        "",
        f"POLL_INTERVAL_SECONDS = {s['poll_interval_s']}. Poll-only inserts run with "
        "`session_replication_role = replica`, which skips the notify trigger.",
        "",
        *table(["mode", "items", "median s", "min s", "max s", "p95 s", "target"], rows),
    ]


def _saturation(s: dict[str, Any]) -> list[str]:
    rows = []
    for name, runs in s["runs"].items():
        raw = [x.get("fraction_of_ceiling") for x in runs]
        bound = [x.get("fraction_of_quota_bound") for x in runs]
        floor = 0.95 if name == "client_paced" else 0.9
        ok = all(v is not None and v >= floor for v in bound) and all(
            x["failed"] == 0 and x["unfinished"] == 0 for x in runs
        )
        rows.append(
            [
                name,
                len(runs),
                runs[0]["orders"],
                _spread([x["completed"] for x in runs], 0),
                _spread([x["failed"] + x["unfinished"] for x in runs], 0),
                _spread([x["books_per_min"] for x in runs]),
                f(runs[0].get("ceiling_books_per_min")),
                _spread([100 * v if v is not None else None for v in raw], 0),
                f(runs[0].get("quota_bound_books_per_min")),
                _spread([100 * v if v is not None else None for v in bound], 0),
                _spread([x["http_429"] for x in runs], 0),
                _spread([x["ai_calls_per_book_daemon"] for x in runs], 1),
                _spread([x["http_requests_per_book"] for x in runs], 1),
                verdict(ok),
            ]
        )
    return [
        "### 3. Saturation: many orders at once against the images-per-minute limit",
        "",
        f"Server limit {s['limit_images']} images per {s['window_s']} s sliding window "
        f"(= {f(s['images_per_minute'], 0)} images/min, scaled time), image calls only (the "
        "analysis model's quota is its own); 8-page book = 9 images; QA_MODE = judge (~10 "
        "analysis calls per book). Books/min = completed / (last `generated_at` − first "
        "`started_at`). *Long-run ceiling* = images/min ÷ 9: what can be sustained, but a "
        "finite run can pass it with the first window's burst. *Run's quota bound* = orders ÷ "
        "the shortest span any client could reach under this limit: L_a (analyses before the "
        "first image) + ⌊(9·orders − 1) / limit⌋ × window (the earliest the server lets the "
        f"last image start) + L_i + L_a (its drawing and judge) + PDF = "
        f"{f(s.get('quota_bound_span_s'))} s; the target is read against it. "
        f"`defaults`: the daemon's defaults ({_settings(s.get('defaults', {}))}no client "
        "pacing); `client_paced`: AI_REQUESTS_PER_MINUTE set to "
        "the limit, its token bucket sized to the server's window (AI_RATE_WINDOW_SECONDS = the "
        "window: the whole window's quota may start at once), analyses not paced; "
        "`client_paced_shared_rate`: the same with AI_ANALYSIS_REQUESTS_PER_MINUTE = the image "
        "limit too (analyses paced at the image rate, as before this round).",
        "",
        *table(
            [
                "variant",
                "runs",
                "orders",
                "completed",
                "failed",
                "books/min",
                "long-run ceiling",
                "% of long-run ceiling (raw)",
                "run's quota bound",
                "% of the bound",
                "429s",
                "AI calls/book (daemon)",
                "HTTP req/book",
                "target ≥ 90 % of the bound (paced ≥ 95 %), 0 failed",
            ],
            rows,
        ),
    ]


def _memory(s: dict[str, Any]) -> list[str]:
    rows = [
        [
            f"{c['peak_inflight_observed']} (of {c['inflight']})",
            c["pages"],
            c["reply_px"],
            c["completed"],
            f(c.get("cold_rss_mb"), 0),
            f(c["idle_rss_mb"], 0),
            f(c["peak_rss_mb"], 0),
            f(c["per_order_mb"], 0),
            verdict(c["per_order_mb"] <= (100 if c["reply_px"] <= 2048 else 250)),
        ]
        for c in s["cases"]
    ]
    env = s.get("env") or {}
    return [
        "### 4. Memory: peak RSS against in-flight orders, book length and image size",
        "",
        "Fake replies are square JPEGs of `reply px` per side (1024, 2048, 4096 ≈ Gemini's 1K, 2K, 4K), "
        "with a real reply's detail and quality (grain, quality 95: 6 MB at 4096 px). "
        "RSS of the daemon process sampled every 50 ms. Cold = before any order; warm = after one "
        "finished order (one-time costs included); per order = (peak − warm) / in-flight observed. "
        "Targets: ≤ 100 MB per order up to 2K, ≤ 250 MB at 4K."
        + (
            f" Daemon environment: `{' '.join(f'{k}={v}' for k, v in env.items())}`." if env else ""
        ),
        "",
        *table(
            [
                "in-flight",
                "pages",
                "reply px",
                "completed",
                "cold RSS MB",
                "warm RSS MB",
                "peak RSS MB",
                "MB per in-flight order",
                "target",
            ],
            rows,
        ),
        *_memory_peaks(s["cases"]),
    ]


def _memory_peaks(cases: list[dict[str, Any]], top: int = 6) -> list[str]:
    """Where the peak is, from the profiled run of each case (bench/memprofile.py)."""
    profiled = [c for c in cases if c.get("profile")]
    if not profiled:
        return []
    lines = [
        "",
        "Where the peak is: each case run again with the daemon under memray (`bench/memprofile.py`, "
        "`--native`: every `malloc` and `mmap`, C libraries included; it costs time, so the table "
        "above is from the unprofiled run). The capture covers the whole run, the warm-up order "
        "included. *Heap* = the largest total of live allocations memray saw; *RSS then* = the "
        "process's RSS at that moment (the rest is the interpreter's and libraries' code and "
        "data, and freed memory the allocator kept). The largest groups of allocations alive at "
        "the heap's peak, as the innermost Python frame [the C function under it] ← the project "
        "frame that asked for it, MB:",
        "",
    ]
    for c in profiled:
        p = c["profile"]
        sites = "; ".join(
            f"`{x['site']}`"
            + (f" [{x['native']}]" if x["native"] else "")
            + (f" ← `{x['caller']}`" if x["caller"] else "")
            + f" {x['bytes'] / MB:.1f}"
            for x in p["sites"][:top]
        )
        lines.append(
            f"- {c['inflight']} × {c['pages']} pages @ {c['reply_px']} px: heap {p['peak_heap'] / MB:.0f} MB, "
            f"RSS then {p['rss_at_peak_heap'] / MB:.0f} MB (highest {p['peak_rss'] / MB:.0f}). "
            f"Sites: {sites}"
        )
    return lines


def _scaleout(s: dict[str, Any]) -> list[str]:
    env = s["per_replica_env"]
    rows = [
        [
            n,
            len(runs),
            f"{_spread([x['completed'] for x in runs], 0)}/{runs[0]['orders']}",
            _spread([x["books_per_min"] for x in runs]),
            f(runs[0].get("ceiling_books_per_min")),
            _spread([x["workers_used"] for x in runs], 0),
            _spread([x["duplicate_image_calls"] for x in runs], 0),
            _spread([x["reclaimed_items"] for x in runs], 0),
            _spread([x["http_429"] for x in runs], 0),
        ]
        for n, runs in s["runs"].items()
    ]
    return [
        "### 5. Scale-out: replicas on one database",
        "",
        f"Each replica MAX_CONCURRENT_ORDERS = {env['MAX_CONCURRENT_ORDERS']}, PAGE_CONCURRENCY = "
        f"{env['PAGE_CONCURRENCY']}; server limit {f(s['images_per_minute'], 0)} images/min. "
        "Duplicates = successful image calls beyond one per (order, page).",
        "",
        *table(
            [
                "replicas",
                "runs",
                "completed",
                "books/min",
                "ceiling",
                "workers used",
                "duplicate image calls",
                "reclaimed items",
                "429s",
            ],
            rows,
        ),
    ]


def _pdf(s: dict[str, Any]) -> list[str]:
    rows = [
        [
            c["engine"],
            c["side_px"],
            c["pages"],
            mmm(c["seconds"], 3),
            f(c["ms_per_page"], 1),
            f(c["kb_per_page"], 0),
            f(c["input_jpeg_kb_per_page"], 0),
        ]
        for c in s["cases"]
    ]
    return [
        "### 6. PDF: img2pdf passthrough against re-encoding with Pillow",
        "",
        *table(
            [
                "engine",
                "page px",
                "pages (incl. cover)",
                "build s",
                "ms/page",
                "KB/page",
                "input JPEG KB/page",
            ],
            rows,
        ),
    ]


def _faults(s: dict[str, Any]) -> list[str]:
    c = s["config"]
    summary, detail = [], []
    for run in s["runs"]:
        ok = (
            run["completed"] == run["orders"]
            and run["duplicate_completions"] == 0
            and run["unbounded_repeats"] == 0
        )
        summary.append(
            [
                run["scenario"],
                run["orders"],
                run["completed"],
                run["pdfs_complete"],
                run["failed"] + run["unfinished"],
                run["duplicate_completions"],
                f"{run['repeated_image_calls']} (≤ {run['repeat_bound']})",
                run["unbounded_repeats"],
                run["http_429"],
                run["max_attempts_used"],
                f(run["recover_s"]),
                f(run["wall_s"], 1),
                verdict(ok),
            ]
        )
        for fault in run["faults"]:
            extra = {
                k: v
                for k, v in fault.items()
                if k
                not in (
                    "kind",
                    "at_s",
                    "duration_s",
                    "items_caught",
                    "pages_in_flight",
                    "recover_s",
                )
            }
            detail.append(
                [
                    run["scenario"],
                    fault["kind"],
                    f(fault["at_s"], 1),
                    f(fault["duration_s"], 1),
                    fault["items_caught"],
                    fault["pages_in_flight"],
                    f(fault["recover_s"]),
                    ", ".join(f"{k} {f(v)}" for k, v in extra.items()) or "–",
                ]
            )
    return [
        "### 7. Fault injection: two replicas, every order kept",
        "",
        f"{c['orders']} orders of the 8-page book (9 images each) placed at once on {c['replicas']} replicas; "
        f"L_a = {c['analysis_s']} s, L_i = {c['image_s']} s, LEASE_SECONDS = {c['lease_s']}. "
        f"sigkill_restart: up to {c['kills']} SIGKILLs of one replica, {c['kill_gap_s'][0]}–{c['kill_gap_s'][1]} s "
        f"apart, each while it is in the middle of a book, restarted at once; postgres_restart: the cluster "
        f"is stopped for {c['outage_s']} s; storm_429: {int(c['storm_fraction'] * 100)} % of image calls get a 429 "
        f"(RetryInfo {c['storm_retry_delay']}) for {c['storm_s']} s; sigterm_one: one replica drains and exits, "
        "the other goes on. Repeated image calls: successful calls beyond one per (item, page); the bound is "
        "the pages in flight (started, neither checkpointed nor drafted) at the faults; unbounded = "
        "repeats beyond that "
        "(must be 0). Recover = from the end of a fault until every item it caught progressed again.",
        "",
        *table(
            [
                "scenario",
                "orders",
                "completed",
                "PDFs complete",
                "failed",
                "duplicate completions",
                "repeated image calls (bound)",
                "unbounded repeats",
                "429s",
                "max attempts",
                "recover s",
                "wall s",
                "all kept, 0 duplicates",
            ],
            summary,
        ),
        *table(
            [
                "scenario",
                "fault",
                "at s",
                "lasted s",
                "items caught",
                "pages in flight",
                "recover s",
                "details",
            ],
            detail,
        ),
    ]


def _real(s: dict[str, Any]) -> list[str]:
    row = [
        s["pages"],
        s["status"],
        f"{s['image_calls']} + {s['judge_calls']} judge",
        f(s["modelled_critical_s"], 1),
        f(s["drawn_critical_s"], 1),
        f(s.get("wall_s"), 1),
        f(s.get("ratio_modelled")),
        f(s.get("ratio_drawn")),
        f(s.get("claim_to_first_ai_call_s")),
        f(s.get("idle_gaps_between_ai_calls_s")),
        f(s.get("last_ai_call_to_completed_s")),
        verdict(s.get("ratio_drawn") is not None and s["ratio_drawn"] <= 1.05),
    ]
    return [
        "### 1b. Single order at real latency (not scaled), the QA judge on",
        "",
        f"Replies of the model's size ({s.get('reply_px') or 256} px, the imageSize the daemon "
        "asked for, 6 MB each as a real reply), after one unmeasured order (section 1). "
        f"L_a = {s['analysis_s']} s (analyses and every judge call), L_i = {s['image_s']} s, "
        f"±{round(s['jitter'] * 100)} % jitter (uniform), PAGE_CONCURRENCY = {s['page_concurrency']}, "
        "QA_MODE = judge (the default: one analysis call after every illustration, the cover "
        f"included), {_order_name(s.get('cover_first', True))}. *Modelled* critical path = "
        f"{_path_text(s)} + PDF, from the means. *Drawn* critical path = the same chain with the "
        "latencies the fake actually drew for this order: the longer analysis, then "
        f"{_drawn_text(s.get('cover_first', True))}; each illustration's image call holds one of "
        "P slots, its judge call follows outside the slot, a redraw queues again after its judge, "
        "slots go first come first served, pages in order. It is the shortest wall a client of "
        "this ordering could reach with those replies, so wall / drawn is the daemon's own "
        "overhead.",
        "",
        *table(
            [
                "pages",
                "status",
                "AI calls at the fake",
                "modelled critical s",
                "drawn critical s",
                "wall s",
                "wall / modelled",
                "wall / drawn",
                "claim → first AI call s",
                "idle gaps s",
                "last AI reply → completed s",
                "target ≤ 1.05 (drawn)",
            ],
            [row],
        ),
    ]


def _ratio(a: Any, b: Any) -> float | None:
    ok = isinstance(a, int | float) and isinstance(b, int | float) and b
    return a / b if ok else None


def _pct(sat: dict[str, Any]) -> str:
    v = sat["books_per_min"]
    return f(100 * v / sat["ceiling_books_per_min"], 0) if v else "–"


def _runs(sat: dict[str, Any]) -> str:
    """Every saturation run's books/min, lowest first (runs before 2026-12-02 kept one)."""
    runs = sat.get("books_per_min_runs") or [sat["books_per_min"]]
    return ", ".join(f(r, 2) if r else "–" for r in runs)


def _repeats(s: dict[str, Any]) -> str:
    repeats = s.get("saturation_repeats") or {}
    if not repeats:
        return "one run per limit"
    return ", ".join(
        f"{n} run{'s' if n > 1 else ''} at the {limit} limit" for limit, n in repeats.items()
    )


def _kill_cell(k: dict[str, Any]) -> str:
    reset = "yes" if k["manual_reset_needed"] else "no"
    return f"{k['processing_at_kill']} / {reset} / {k['completed']} / {k['failed']}"


Row = tuple[str, Any, str | None, str]


def _versus_rows(s: dict[str, Any]) -> list[Row]:
    """(measure, value of one system, key for the ratio, target on daemon / baseline)."""
    rows: list[Row] = [
        (
            "wall per order, one 10-page order alone: claimed → ready (s)",
            lambda x: x["single"]["wall_s"],
            "single_wall",
            "≤ 0.5",
        ),
        (
            "  paid → ready (s), pickup included",
            lambda x: x["single"].get("paid_to_ready_s"),
            "single_paid",
            "",
        ),
    ]
    for limit, spec in s["limits"].items():

        def sat(x: dict[str, Any], limit: str = limit) -> dict[str, Any]:
            return x["saturation"][limit]

        per_min = f(spec["per_real_minute"], 0)
        rows += [
            (
                f"books/min at saturation, {limit} limit ({per_min} images/real min)",
                lambda x, sat=sat: sat(x)["books_per_min"],
                "bpm",
                "≥ 2",
            ),
            (
                "  each run's books/min (the cell above: their median)",
                lambda x, sat=sat: _runs(sat(x)),
                None,
                "",
            ),
            ("  % of the long-run ceiling", lambda x, sat=sat: _pct(sat(x)), None, ""),
            (
                "  completed / failed",
                lambda x, sat=sat: f"{sat(x)['completed']} / {sat(x)['failed']}",
                None,
                "",
            ),
            (
                "  wall per order, median (s)",
                lambda x, sat=sat: sat(x)["wall_per_order_s"],
                "sat_wall",
                "",
            ),
            (
                "  HTTP requests per book, 429s included / 429s",
                lambda x, sat=sat: (
                    f"{f(sat(x)['http_requests_per_book'], 1)} / {sat(x)['http_429']}"
                ),
                None,
                "",
            ),
        ]
    first = next(iter(s["limits"]))

    def at_first(x: dict[str, Any]) -> dict[str, Any]:
        return x["saturation"][first]

    rows += [
        (
            "AI calls per book (answered analyses + images)",
            lambda x: at_first(x)["ai_calls_per_book"],
            "calls",
            "",
        ),
        ("  of which image calls", lambda x: at_first(x)["image_calls_per_book"], None, ""),
        ("peak RSS at saturation (MB)", lambda x: at_first(x)["peak_rss_mb"], "rss", ""),
        ("kill -9: image calls paid twice", lambda x: x["kill"]["repeated_image_calls"], None, ""),
        (
            "  in processing at the kill / manual reset needed / completed / failed",
            lambda x: _kill_cell(x["kill"]),
            None,
            "",
        ),
    ]
    return rows


#: The daemon variants of the versus run (bench/versus.py): column title, short name in ratios.
_VERSUS_DAEMONS = {
    "daemon": ("this daemon", "daemon"),
    "daemon_qa_off": ("daemon, QA_MODE=off", "QA off"),
    "daemon_cover_first": ("daemon, COVER_FIRST=true", "cover first"),
    "daemon_paid_tier": (
        "daemon, MAX_CONCURRENT_ORDERS=10, AI_MAX_CONCURRENCY=32",
        "paid-tier settings",
    ),
}


def _settings(values: dict[str, Any]) -> str:
    """``NAME value, `` for each setting a run recorded (runs before 2026-12-02 recorded none)."""
    return "".join(f"{name} {value}, " for name, value in values.items())


def _versus(s: dict[str, Any]) -> list[str]:
    systems = s["systems"]
    base = systems["baseline"]
    rows = []
    names = [n for n in _VERSUS_DAEMONS if n in systems]
    for label, value, key, rule in _versus_rows(s):
        cells = [value(systems[n]) for n in [*names, "baseline"]]
        ratios = [_ratio(c, cells[-1]) if key else None for c in cells[:-1]]
        if rule and ratios[0] is not None:
            ok = ratios[0] <= 0.5 if rule.startswith("≤") else ratios[0] >= 2
            rule = f"{rule}: {verdict(ok)}"
        digits = 0 if key == "rss" else 2
        rows.append(
            [
                label,
                *(f(c, digits) if isinstance(c, float) else f(c) for c in cells),
                *(f(r) for r in ratios),
                rule,
            ]
        )
    k = base["kill"]
    limits = s["limits"]
    window = next(iter(limits.values()))["window_s"]
    limit_text = "; ".join(
        f"{name}: {spec['images']} images per {f(window)} s scaled "
        f"(= {f(spec['per_real_minute'], 0)} per real minute)"
        for name, spec in limits.items()
    )
    return [
        "### 0. This daemon against the Node original's published algorithm (emulated), one run",
        "",
        "The baseline is an **emulation of the Node original's published algorithm**, not the "
        "original itself (bench/baseline.py): poll every "
        f"{s['baseline_poll_s']} s (its 10 s, scaled), select-then-update "
        "claims, 5 orders at once, the cover analysed again for every order, pages in batches of "
        "3 one batch after another, every page in memory, no checkpoints, no lease, no QA judge, "
        "no output checks, 3 in-process retries per call and then the order fails. It shares "
        "this project's Gemini client and retry code (which waits at least the server's "
        "RetryInfo delay), prompts, storage and PDF builder, so only the algorithm differs. "
        f"Same fake and latency model for all: real latencies divided by {f(s['factor'], 0)} "
        f"(L_a = {f(s['analysis_s'])} s from 3 s, L_i = {f(s['image_s'])} s from 12.5 s, "
        f"±{f(100 * s['jitter'], 0)} %), Gemini's one-minute quota window likewise. Two server "
        f"limits on image calls, {limit_text}: the paid-tier one is above what either system's "
        "5 orders can use (both are bound by their own structure: the comparison measures the "
        "algorithms), the tight one far below (both are bound by the quota: it measures what "
        "each does with 429s). The daemon runs with its defaults and its quota set "
        "(AI_REQUESTS_PER_MINUTE, AI_RATE_WINDOW_SECONDS = the limit): as shipped (QA_MODE = "
        "judge, COVER_FIRST = false), with QA_MODE = off (the algorithm alone), with "
        "COVER_FIRST = true (the cover and its judge before any page, every page drawn with it "
        "as reference) and with MAX_CONCURRENT_ORDERS = 10 and AI_MAX_CONCURRENCY = 32 "
        "(README's advice for a paid-tier quota; the defaults suit a new project's small one). "
        "Saturation: "
        f"{s['orders']} orders of 8 pages placed at once, {_repeats(s)}. The order alone and "
        "the kill -9 run "
        f"at the {s['single_and_kill_limit']} limit; kill -9: "
        f"{k['orders']} orders, SIGKILL after {k['images_drawn_before_kill']} images were drawn, "
        "restart at once; the baseline has no lease, so its orders in processing are put back "
        "to pending by hand (as an operator would) before the restart.",
        "",
        *table(
            [
                "measure",
                *(_VERSUS_DAEMONS[n][0] for n in names),
                "baseline (emulated)",
                *(f"ratio {_VERSUS_DAEMONS[n][1]} / baseline" for n in names),
                "target (daemon / baseline)",
            ],
            rows,
        ),
    ]


SECTIONS = {
    "versus": _versus,
    "single": _single,
    "real": _real,
    "ordering": _ordering,
    "pickup": _pickup,
    "saturation": _saturation,
    "memory": _memory,
    "scaleout": _scaleout,
    "pdf": _pdf,
    "faults": _faults,
}


def render(r: dict[str, Any]) -> str:
    m = r["machine"]
    lines = [
        f"Run: `{r['command']}` ({r['mode']} mode), {r['started']}, {r['elapsed_s']:.0f} s in all.",
        f"Machine: {m['cpus']} CPUs, {m['ram_gb']} GB RAM, Python {m['python']}, {m['platform']}.",
        "Cells are `median (min–max)` over the repeated runs or items.",
        "",
    ]
    for name, section in SECTIONS.items():
        if name in r["scenarios"]:
            lines += section(r["scenarios"][name])
    return "\n".join(lines)


def update_readme(text: str) -> None:
    if not README.exists():
        return
    body = README.read_text()
    if START not in body or END not in body:
        return
    head, rest = body.split(START, 1)
    _, tail = rest.split(END, 1)
    README.write_text(f"{head}{START}\n{text}\n{END}{tail}")
