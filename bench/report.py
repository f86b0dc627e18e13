"""Results to bench/results/*.json and the tables of bench/README.md."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

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
    med = vals[len(vals) // 2] if len(vals) % 2 else (vals[len(vals) // 2 - 1] + vals[len(vals) // 2]) / 2
    if len(vals) == 1:
        return f(med, digits)
    return f"{f(med, digits)} ({f(vals[0], digits)}–{f(vals[-1], digits)})"


def render(r: dict[str, Any]) -> str:
    m, sc, cfg = r["machine"], r["scenarios"], r["config"]
    lines = [
        f"Run: `{r['command']}` ({r['mode']} mode), {r['started']}, {r['elapsed_s']:.0f} s in all.",
        f"Machine: {m['cpus']} CPUs, {m['ram_gb']} GB RAM, Python {m['python']}, {m['platform']}.",
        "Cells are `median (min–max)` over the repeated runs or items.",
        "",
    ]
    if "single" in sc:
        s = sc["single"]
        lines += [
            "### 1. Single order against its critical path",
            "",
            f"L_a = {s['analysis_s']} s, L_i = {s['image_s']} s, ±{int(s['jitter'] * 100)} % jitter, "
            f"PAGE_CONCURRENCY = {s['page_concurrency']}. Critical path = L_a + L_i (cover) + "
            "ceil(N/P)·L_i + PDF build (measured in process). Wall = generated_at − started_at.",
            "",
            "| pages | runs | critical path s (AI + PDF) | wall s | wall / critical (median, max) | peak RSS MB | target ≤ 1.2 |",
            "| --- | --- | --- | --- | --- | --- | --- |",
        ]
        for b in s["books"]:
            ok = b["ratio_max"] is not None and b["ratio_max"] <= 1.2
            lines.append(
                f"| {b['pages']} | {b['completed']}/{b['runs']} | {f(b['critical_path_s'])} "
                f"({f(b['ai_path_s'])} + {f(b['pdf_s'], 3)}) | {mmm(b['wall_s'])} | "
                f"{f(b['ratio_median'])}, {f(b['ratio_max'])} | {f(b['peak_rss_mb'], 0)} | "
                f"{'met' if ok else 'missed'} |")
        lines += ["", "Where the time goes (seconds, median (min–max)):", "",
                  "| pages | claim → first AI call | first → last AI reply | idle gaps inside that span | last AI reply → completed |",
                  "| --- | --- | --- | --- | --- |"]
        for b in s["books"]:
            if "claim_to_first_ai_call_s" in b:
                lines.append(f"| {b['pages']} | {mmm(b['claim_to_first_ai_call_s'])} | {mmm(b['first_to_last_ai_call_s'])} | "
                             f"{mmm(b['idle_gaps_between_ai_calls_s'])} | {mmm(b['last_ai_call_to_completed_s'])} |")
        lines.append("")
    if "pickup" in sc:
        s = sc["pickup"]
        lines += [
            "### 2. Pickup latency, paid → claimed (started_at − created_at, DB clock)",
            "",
            f"POLL_INTERVAL_SECONDS = {s['poll_interval_s']}. Poll-only inserts run with "
            "`session_replication_role = replica`, which skips the notify trigger.",
            "",
            "| mode | items | median s | min s | max s | p95 s | target |",
            "| --- | --- | --- | --- | --- | --- | --- |",
        ]
        for mode, target in (("listen", 1.0), ("poll_only", s["poll_interval_s"])):
            st = s.get(mode)
            if not st:
                continue
            ok = st["p95"] is not None and (st["p95"] < target if mode == "listen" else st["max"] <= target)
            rule = "p95 < 1 s" if mode == "listen" else f"max ≤ {target} s"
            lines.append(f"| {mode} | {st['n']} | {f(st['median'], 3)} | {f(st['min'], 3)} | "
                         f"{f(st['max'], 3)} | {f(st['p95'], 3)} | {rule}: {'met' if ok else 'missed'} |")
        lines.append("")
    if "saturation" in sc:
        s = sc["saturation"]
        lines += [
            "### 3. Saturation: many orders at once against the images-per-minute limit",
            "",
            f"Server limit {s['limit_images']} images per {s['window_s']} s sliding window "
            f"(= {f(s['images_per_minute'], 0)} images/min, scaled time); 8-page book = 9 images. "
            "`defaults`: the daemon's defaults (MAX_CONCURRENT_ORDERS 5, PAGE_CONCURRENCY 4, "
            "AI_MAX_CONCURRENCY 8, no client pacing); `client_paced`: AI_REQUESTS_PER_MINUTE set to the limit.",
            "",
            "| variant | runs | orders | completed | failed | books/min | ceiling | % of ceiling | 429s | AI calls/book (daemon) | HTTP req/book | target ≥ 90 %, 0 failed |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        for name, runs in s["runs"].items():
            frac = [x.get("fraction_of_ceiling") for x in runs]
            ok = all(v is not None and v >= 0.9 for v in frac) and all(x["failed"] == 0 and x["unfinished"] == 0 for x in runs)
            lines.append(
                f"| {name} | {len(runs)} | {runs[0]['orders']} | {_spread([x['completed'] for x in runs], 0)} | "
                f"{_spread([x['failed'] + x['unfinished'] for x in runs], 0)} | "
                f"{_spread([x['books_per_min'] for x in runs])} | {f(runs[0].get('ceiling_books_per_min'))} | "
                f"{_spread([100 * v if v is not None else None for v in frac], 0)} | "
                f"{_spread([x['http_429'] for x in runs], 0)} | {_spread([x['ai_calls_per_book_daemon'] for x in runs], 1)} | "
                f"{_spread([x['http_requests_per_book'] for x in runs], 1)} | {'met' if ok else 'missed'} |")
        lines.append("")
    if "memory" in sc:
        s = sc["memory"]
        lines += [
            "### 4. Memory: peak RSS against in-flight orders and book length",
            "",
            "Fake replies are square JPEGs of `reply px` per side (2048 ≈ Gemini's 2K). RSS of the daemon "
            "process sampled every 50 ms. Cold = before any order; warm = after one finished order (one-time "
            "costs included); per order = (peak − warm) / in-flight observed.",
            "",
            "| in-flight | pages | reply px | completed | cold RSS MB | warm RSS MB | peak RSS MB | MB per in-flight order | target ≤ 150 |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        for c in s["cases"]:
            lines.append(f"| {c['peak_inflight_observed']} (of {c['inflight']}) | {c['pages']} | {c['reply_px']} | "
                         f"{c['completed']} | {f(c.get('cold_rss_mb'), 0)} | {f(c['idle_rss_mb'], 0)} | {f(c['peak_rss_mb'], 0)} | "
                         f"{f(c['per_order_mb'], 0)} | {'met' if c['per_order_mb'] <= 150 else 'missed'} |")
        lines.append("")
    if "scaleout" in sc:
        s = sc["scaleout"]
        env = s["per_replica_env"]
        lines += [
            "### 5. Scale-out: replicas on one database",
            "",
            f"Each replica MAX_CONCURRENT_ORDERS = {env['MAX_CONCURRENT_ORDERS']}, PAGE_CONCURRENCY = "
            f"{env['PAGE_CONCURRENCY']}; server limit {f(s['images_per_minute'], 0)} images/min. "
            "Duplicates = successful image calls beyond 9 per completed book.",
            "",
            "| replicas | runs | completed | books/min | ceiling | workers used | duplicate image calls | reclaimed items | 429s |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        for n, runs in s["runs"].items():
            lines.append(
                f"| {n} | {len(runs)} | {_spread([x['completed'] for x in runs], 0)}/{runs[0]['orders']} | "
                f"{_spread([x['books_per_min'] for x in runs])} | {f(runs[0].get('ceiling_books_per_min'))} | "
                f"{_spread([x['workers_used'] for x in runs], 0)} | {_spread([x['duplicate_image_calls'] for x in runs], 0)} | "
                f"{_spread([x['reclaimed_items'] for x in runs], 0)} | {_spread([x['http_429'] for x in runs], 0)} |")
        lines.append("")
    if "pdf" in sc:
        s = sc["pdf"]
        lines += [
            "### 6. PDF: img2pdf passthrough against re-encoding with Pillow",
            "",
            "| engine | page px | pages (incl. cover) | build s | ms/page | KB/page | input JPEG KB/page |",
            "| --- | --- | --- | --- | --- | --- | --- |",
        ]
        for c in s["cases"]:
            lines.append(f"| {c['engine']} | {c['side_px']} | {c['pages']} | {mmm(c['seconds'], 3)} | "
                         f"{f(c['ms_per_page'], 1)} | {f(c['kb_per_page'], 0)} | {f(c['input_jpeg_kb_per_page'], 0)} |")
        lines.append("")
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
