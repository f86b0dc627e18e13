"""Cost in money and per-page progress: the price table, its override, the spend counter,
``ai_usage.cost_usd`` on the row, /monitor/status totals and the log lines of one book.

The book runs through the real pipeline (Monitor + BookProcessor + google-genai against the local
Gemini fake, whose usageMetadata gives every call 1290 prompt and 1150 candidate tokens).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from loguru import logger

from monitor.config import ConfigError, Settings
from monitor.metrics import Metrics
from processors.ai.base import Usage
from processors.ai.pricing import DEFAULT_PRICES, PriceTable, PriceTableError
from testkit.fakes.gemini_server import FakeGemini
from tests.support.factories import item_row
from tests.support.pipeline_env import PipelineEnv

INPUT_TOKENS, OUTPUT_TOKENS = 1290, 1150  # what the fake reports per call (see test_pipeline)
pytestmark = pytest.mark.filterwarnings("ignore:Inheritance class AiohttpClientSession")
ANALYSIS_PRICE, IMAGE_PRICE = (1.0, 4.0), (0.5, 60.0)


def write_prices(path: Path, models: dict[str, Any]) -> Path:
    path.write_text(json.dumps({"models": models}))
    return path


def cost(price: tuple[float, float], calls: int) -> float:
    return calls * (INPUT_TOKENS * price[0] + OUTPUT_TOKENS * price[1]) / 1_000_000


# --- the table ------------------------------------------------------------------------------


def test_default_table_prices_the_documented_models_and_counts_the_rest() -> None:
    table = PriceTable.load()
    document = json.loads(DEFAULT_PRICES.read_text())
    assert document["source"] == "https://ai.google.dev/gemini-api/docs/pricing"
    usage = table.price("gemini-3.5-flash", Usage(calls=1, input_tokens=1000, output_tokens=2000))
    assert usage.cost_usd == pytest.approx((1000 * 1.50 + 2000 * 9.00) / 1e6)
    assert table.price("models/gemini-3.5-flash", Usage(calls=1, output_tokens=10)).cost_usd
    # No price known: never "free", counted apart.
    unknown = table.price(Settings.gemini_image_models[0], Usage(calls=2, images=2))
    assert unknown.cost_usd is None and unknown.unpriced_calls == 2
    from processors.ai.local import MODEL as LOCAL_MODEL

    assert table.price(LOCAL_MODEL, Usage(calls=1, images=1)).cost_usd == 0


def test_override_replaces_adds_and_removes_models(tmp_path: Path) -> None:
    override = write_prices(
        tmp_path / "prices.json",
        {
            "gemini-2.5-flash-image": {"input_per_million": 0.3, "output_per_million": 30},
            "gemini-3.5-flash": None,
        },
    )
    table = PriceTable.load(override)
    assert table.price_of("gemini-2.5-flash-image") is not None
    assert table.price_of("gemini-3.5-flash") is None
    assert table.price_of("gemini-3.1-pro-preview") is not None  # untouched default


@pytest.mark.parametrize(
    "content",
    [
        "not json",
        json.dumps({"models": {"m": {"input_per_million": 1}}}),
        json.dumps({"models": {"m": {"input_per_million": -1, "output_per_million": 1}}}),
        json.dumps({"prices": {}}),
    ],
)
def test_a_bad_price_file_is_a_config_error(tmp_path: Path, content: str) -> None:
    bad = tmp_path / "prices.json"
    bad.write_text(content)
    with pytest.raises(PriceTableError):
        PriceTable.load(bad)
    with pytest.raises(ConfigError, match="AI_PRICES_FILE"):
        Settings.from_env({"DATABASE_URL": "postgresql://x/y", "AI_PRICES_FILE": str(bad)})


def test_usage_round_trips_through_the_row_shape() -> None:
    usage = Usage(
        calls=3, images=1, input_tokens=10, output_tokens=20, cost_usd=0.25, unpriced_calls=1
    )
    assert Usage.from_dict(usage.as_dict()) == usage
    assert "cost_usd" not in Usage(calls=1).as_dict()  # never priced: no claim about money
    total = Usage(cost_usd=0.5)
    total.add(Usage(calls=1))
    assert total.cost_usd == 0.5


# --- one book ---------------------------------------------------------------------------------


@pytest.fixture
async def env(database_url: str, tmp_path: Path) -> AsyncIterator[PipelineEnv]:
    async with PipelineEnv.open(database_url, tmp_path) as environment:
        yield environment


@pytest.fixture
def log_records() -> Iterator[list[dict[str, Any]]]:
    records: list[dict[str, Any]] = []
    sink = logger.add(lambda message: records.append(message.record), level="INFO")
    yield records
    logger.remove(sink)


async def test_a_book_records_its_cost_logs_each_page_and_counts_spend(
    env: PipelineEnv,
    db: psycopg.Connection,
    tmp_path: Path,
    log_records: list[dict[str, Any]],
) -> None:
    prices = write_prices(
        tmp_path / "prices.json",
        {
            FakeGemini.ANALYSIS_MODEL: dict(
                zip(("input_per_million", "output_per_million"), ANALYSIS_PRICE, strict=True)
            ),
            FakeGemini.IMAGE_MODEL: dict(
                zip(("input_per_million", "output_per_million"), IMAGE_PRICE, strict=True)
            ),
        },
    )
    book = await env.add_book()  # 4 pages, page 3 without a character: cover + 3 drawn pages
    item = await env.add_item(book.id)
    processor = await env.factory_processor(AI_PRICES_FILE=str(prices))

    assert await env.run_once(processor) == 1

    drawn = 1 + len(book.drawn_pages)
    expected = cost(ANALYSIS_PRICE, 2) + cost(IMAGE_PRICE, drawn)
    usage = item_row(db, item)["ai_usage"]
    assert usage["cost_usd"] == pytest.approx(expected, abs=1e-6)
    assert usage["unpriced_calls"] == 0

    metrics: Metrics = processor.metrics
    exposition = metrics.render(None)[0].decode()
    spent = {
        line.split(" ")[0]: float(line.split(" ")[1])
        for line in exposition.splitlines()
        if line.startswith("book_monitor_ai_spend_usd_total{")
    }
    assert spent[
        f'book_monitor_ai_spend_usd_total{{kind="generate_image",model="{FakeGemini.IMAGE_MODEL}"}}'
    ] == pytest.approx(cost(IMAGE_PRICE, drawn))
    assert spent[
        f'book_monitor_ai_spend_usd_total{{kind="analyze",model="{FakeGemini.ANALYSIS_MODEL}"}}'
    ] == pytest.approx(cost(ANALYSIS_PRICE, 2))
    assert metrics.spend_by_model()[FakeGemini.IMAGE_MODEL] == pytest.approx(
        cost(IMAGE_PRICE, drawn), abs=1e-6
    )

    pages = [r for r in log_records if r["message"] == "page drawn"]
    assert sorted(r["extra"]["page"] for r in pages) == [0, *book.drawn_pages]
    for record in pages:
        extra = record["extra"]
        assert extra["item_id"] == item and extra["model"] == FakeGemini.IMAGE_MODEL
        assert extra["redraws"] == 0 and extra["softened"] is False and extra["seconds"] >= 0
    (finished,) = [r for r in log_records if r["message"] == "book finished"]
    assert finished["extra"]["pages"] == len(book.pages)
    assert finished["extra"]["calls"] == 2 + drawn
    assert finished["extra"]["cost_usd"] == pytest.approx(expected, abs=1e-6)


async def test_unpriced_models_are_counted_not_called_free(
    env: PipelineEnv, db: psycopg.Connection, tmp_path: Path
) -> None:
    # null removes a model from the table: neither of the fake's models has a price then.
    prices = write_prices(
        tmp_path / "prices.json", {FakeGemini.ANALYSIS_MODEL: None, FakeGemini.IMAGE_MODEL: None}
    )
    book = await env.add_book()
    item = await env.add_item(book.id)
    processor = await env.factory_processor(AI_PRICES_FILE=str(prices))

    await env.run_once(processor)

    usage = item_row(db, item)["ai_usage"]
    assert "cost_usd" not in usage
    assert usage["unpriced_calls"] == usage["calls"] == 2 + 1 + len(book.drawn_pages)
    assert processor.metrics.spend_by_model() == {}
