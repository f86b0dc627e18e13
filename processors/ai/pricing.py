"""Cost of model calls in money, from a price table the operator can override.

The default table is ``processors/ai/prices.json`` (its header names the pricing page and the day
it was checked). ``AI_PRICES_FILE`` points to a JSON file of the same shape whose entries replace
the defaults model by model (``null`` removes one). Image models bill their output image as
output tokens; ``output_per_million`` is that rate for an image model (its few text tokens are
priced the same, a documented overestimate of fractions of a cent).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from processors.ai.base import Usage

DEFAULT_PRICES = Path(__file__).resolve().parent / "prices.json"


class PriceTableError(ValueError):
    """The price file cannot be read or has a malformed entry (the daemon refuses to start)."""


@dataclass(frozen=True)
class ModelPrice:
    input_per_million: float
    output_per_million: float

    def cost(self, usage: Usage) -> float:
        return (
            usage.input_tokens * self.input_per_million
            + usage.output_tokens * self.output_per_million
        ) / 1_000_000


class PriceTable:
    def __init__(self, prices: Mapping[str, ModelPrice]) -> None:
        self.prices = dict(prices)

    @classmethod
    def load(cls, override: Path | None = None) -> PriceTable:
        """The default table, with the operator's file laid over it."""
        models = _models(DEFAULT_PRICES)
        if override is not None:
            models.update(_models(override))
        return cls({name: price for name, price in models.items() if price is not None})

    def price_of(self, model: str) -> ModelPrice | None:
        return self.prices.get(model.removeprefix("models/"))

    def price(self, model: str, usage: Usage) -> Usage:
        """``usage`` with its cost set, or its calls counted as unpriced when the model has none."""
        known = self.price_of(model)
        if known is None:
            usage.unpriced_calls += usage.calls
        else:
            usage.cost_usd = (usage.cost_usd or 0.0) + known.cost(usage)
        return usage


def _models(path: Path) -> dict[str, ModelPrice | None]:
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
        entries: Mapping[str, Any] = document["models"]
        return {str(name): _entry(path, str(name), entry) for name, entry in entries.items()}
    except (OSError, ValueError, KeyError, TypeError) as exc:
        if isinstance(exc, PriceTableError):
            raise
        raise PriceTableError(f"price table {path} unreadable: {exc}") from exc


def _entry(path: Path, name: str, entry: Any) -> ModelPrice | None:
    if entry is None:
        return None
    try:
        price = ModelPrice(float(entry["input_per_million"]), float(entry["output_per_million"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise PriceTableError(
            f"price table {path}: {name} needs input_per_million and output_per_million "
            f"(USD per 1M tokens) or null"
        ) from exc
    if price.input_per_million < 0 or price.output_per_million < 0:
        raise PriceTableError(f"price table {path}: {name} has a negative price")
    return price
