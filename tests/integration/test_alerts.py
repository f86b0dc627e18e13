"""deploy/prometheus/alerts.yml and deploy/grafana/dashboard.json against the daemon's real
/metrics, and the gauges the alerts need (database up, AI usable, oldest wait) telling the truth."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import psycopg
import pytest
import yaml
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client.parser import text_string_to_metric_families

from monitor.config import Secret, Settings
from monitor.daemon import AI_PROVIDER_PROBLEM, Monitor
from monitor.server import create_app
from monitor.store.postgres import PostgresStore
from processors.contract import Processor
from processors.errors import TerminalError
from tests.support.factories import insert_book, insert_item, item_row
from tests.support.processors import Failing, Recording
from tests.support.waiting import eventually

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
ALERTS = DEPLOY / "prometheus" / "alerts.yml"
GRAFANA = DEPLOY / "grafana" / "dashboard.json"
#: What the issue asks the alerts to cover, as the names they go by.
REQUIRED_ALERTS = {
    "BookMonitorFailureRate",
    "BookMonitorQueueAge",
    "BookMonitorDatabaseDown",
    "BookMonitorAIConfigError",
    "BookMonitorNoClaimsWhileItemsWait",
}
#: PromQL words that are not metric names (operators, modifiers, aggregation clauses).
PROMQL_WORDS = {
    "and",
    "or",
    "unless",
    "on",
    "ignoring",
    "by",
    "without",
    "group_left",
    "group_right",
    "bool",
    "offset",
    "le",
    "inf",
    "nan",
}
#: The series names each exposed family stands for, by its TYPE (the text format's suffixes).
SUFFIXES = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "summary": ("_sum", "_count"),
}

Serve = Callable[..., Awaitable[tuple[Monitor, TestClient]]]


@pytest.fixture
async def serve(database_url: str) -> AsyncIterator[Serve]:
    running: list[tuple[Monitor, TestClient]] = []

    async def start(processor: Processor, **overrides: object) -> tuple[Monitor, TestClient]:
        values: dict[str, object] = dict(
            database_url=Secret(database_url),
            poll_interval_seconds=0.2,
            lease_seconds=30,
            shutdown_grace_seconds=1,
            worker_id="alerts-test",
        )
        values.update(overrides)
        url = str(values["database_url"])
        monitor = Monitor(Settings(**values), PostgresStore(url, connect_timeout=1), processor)
        client = TestClient(TestServer(create_app(monitor)))
        await client.start_server()
        running.append((monitor, client))
        await monitor.start()
        return monitor, client

    yield start
    for monitor, client in running:
        await client.close()
        await monitor.shutdown()


def exposed_series(text: str) -> set[str]:
    """Every series name the exposition declares (from its TYPE lines) or carries."""
    names: set[str] = set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ", 3)
            base = name.removesuffix("_total") if kind == "counter" else name
            names |= {base + suffix for suffix in SUFFIXES.get(kind, ("",))}
    for family in text_string_to_metric_families(text):
        names |= {sample.name for sample in family.samples}
    return names


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects: identifiers outside label matchers,
    ranges and strings that are neither functions (followed by '(') nor PromQL words."""
    bare = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    bare = re.sub(r"\{[^}]*\}|\[[^\]]*\]", " ", bare)
    bare = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", bare)
    names = set()
    # Not inside a number or duration (1e-9, 5m): a name starts where no word character is.
    for match in re.finditer(r"(?<![\w.])[A-Za-z_:][A-Za-z0-9_:]*", bare):
        word = match.group()
        follows = bare[match.end() :].lstrip()[:1]
        if word.lower() in PROMQL_WORDS or follows == "(":
            continue
        names.add(word)
    return names


def alert_rules() -> list[dict]:
    doc = yaml.safe_load(ALERTS.read_text(encoding="utf-8"))
    return [rule for group in doc["groups"] for rule in group["rules"]]


def grafana_exprs() -> list[str]:
    doc = json.loads(GRAFANA.read_text(encoding="utf-8"))
    return [target["expr"] for panel in doc["panels"] for target in panel["targets"]]


def test_the_name_extraction_finds_names_and_skips_functions_labels_and_words() -> None:
    expr = (
        'histogram_quantile(0.95, sum by (le, kind) (rate(a_bucket{outcome="x y"}[5m])))'
        " and on() max(b) > 1e-9 unless c offset 5m"
    )
    assert metric_names(expr) == {"a_bucket", "b", "c"}


def test_the_alerts_cover_what_operators_need() -> None:
    rules = alert_rules()
    assert {rule["alert"] for rule in rules} >= REQUIRED_ALERTS
    for rule in rules:
        assert rule["expr"].strip() and rule["labels"]["severity"] in {"warning", "critical"}
        assert rule["annotations"]["summary"]


async def test_every_metric_the_alerts_and_the_grafana_dashboard_use_is_exported(
    serve: Serve, db: psycopg.Connection
) -> None:
    book = insert_book(db)
    done, failed = insert_item(db, book_id=book), insert_item(db, book_id=book, max_attempts=1)
    recording = Recording()

    class OneFails:
        async def __call__(self, job):  # type: ignore[no-untyped-def]
            if job.item_id == failed:
                return await Failing(TerminalError("test", code="photo_rejected"))(job)
            return await recording(job)

    monitor, client = await serve(OneFails())
    await eventually(
        lambda: (
            item_row(db, done)["generation_status"] == "completed"
            and item_row(db, failed)["generation_status"] == "failed"
        ),
        what="outcomes",
    )
    text = await (await client.get("/metrics")).text()
    exported = exposed_series(text)
    exprs = [rule["expr"] for rule in alert_rules()] + grafana_exprs()
    used = set().union(*map(metric_names, exprs))
    assert used and all(name.startswith("book_monitor_") for name in used), used
    assert not used - exported, f"not in /metrics: {sorted(used - exported)}"
    # The new health gauges are there with their healthy values.
    values = {s.name: s.value for f in text_string_to_metric_families(text) for s in f.samples}
    assert values["book_monitor_database_up"] == 1 and values["book_monitor_ai_usable"] == 1


async def test_the_oldest_wait_gauge_measures_a_waiting_item(
    serve: Serve, db: psycopg.Connection
) -> None:
    waiting = insert_item(db, book_id=insert_book(db))
    db.execute(
        "update order_items set next_attempt_at = now() - interval '10 minutes' where id = %s",
        [waiting],
    )
    monitor, client = await serve(Recording(), auto_start_monitor=False)
    text = await (await client.get("/metrics")).text()
    values = {s.name: s.value for f in text_string_to_metric_families(text) for s in f.samples}
    assert values["book_monitor_queue_depth"] == 1
    assert 600 <= values["book_monitor_queue_oldest_wait_seconds"] < 3600


async def test_the_database_and_ai_gauges_fall_to_zero_when_health_says_so(serve: Serve) -> None:
    nowhere = "postgresql://nobody@127.0.0.1:1/nothing"
    monitor, client = await serve(Recording(), database_url=Secret(nowhere))
    await eventually(lambda: monitor.stats.db_down_since is not None, what="the outage noticed")
    monitor.health.report(AI_PROVIDER_PROBLEM, "AI provider unusable: test")
    text = await (await client.get("/metrics")).text()
    values = {s.name: s.value for f in text_string_to_metric_families(text) for s in f.samples}
    assert values["book_monitor_database_up"] == 0
    assert values["book_monitor_ai_usable"] == 0
