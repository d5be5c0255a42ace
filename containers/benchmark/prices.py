"""Dollars per instance-hour, for the benchmark's cost per million records: prices.json beside
this module (SageMaker ML instance types, on-demand, one region; its `about`, `collected` and
`source` say where the figures come from and when), or the user's `--price-per-hour`."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

PRICES_FILE = Path(__file__).with_name("prices.json")
SECONDS_PER_HOUR = 3600.0


@dataclass(frozen=True)
class PriceTable:
    region: str
    currency: str
    collected: str
    source: str
    prices: dict[str, float]

    def lookup(self, instance_type: str | None) -> tuple[str, float] | None:
        """(the ML instance type priced, its price) for an instance type as SageMaker
        (ml.m5.xlarge) or EC2 (m5.xlarge: what the same machine costs as a SageMaker
        ml.m5.xlarge) names it; None when the table has no price for it."""
        if not instance_type:
            return None
        name = instance_type.strip().lower()
        ml_name = name if name.startswith("ml.") else f"ml.{name}"
        price = self.prices.get(ml_name)
        return None if price is None else (ml_name, price)


@lru_cache(maxsize=1)
def load_price_table(path: Path = PRICES_FILE) -> PriceTable:
    raw = json.loads(path.read_text())
    return PriceTable(
        region=raw["region"],
        currency=raw["currency"],
        collected=raw["collected"],
        source=raw["source"],
        prices={name: float(price) for name, price in raw["prices"].items()},
    )


def resolve_price(instance_type: str | None, price_per_hour: float | None) -> dict:
    """The price the result's costs use, and where it came from: `--price-per-hour`, else the
    table's price of the instance type, else none (costs are then left out)."""
    if price_per_hour is not None:
        return {"per_hour": price_per_hour, "currency": "USD", "source": "--price-per-hour", "priced_as": instance_type}
    table = load_price_table()
    found = table.lookup(instance_type)
    if found is None:
        why = "the instance type is unknown" if not instance_type else f"{PRICES_FILE.name} has no price for it"
        return {
            "per_hour": None,
            "currency": table.currency,
            "source": f"{why}; pass --price-per-hour",
            "priced_as": None,
        }
    ml_name, price = found
    return {
        "per_hour": price,
        "currency": table.currency,
        "source": f"{PRICES_FILE.name}: {table.region} on-demand, collected {table.collected} from {table.source}",
        "priced_as": ml_name,
    }


def usd_per_million(per_hour: float | None, records_per_s: float | None) -> float | None:
    """Dollars per million records at `records_per_s` on an instance costing `per_hour`."""
    if per_hour is None or not records_per_s:
        return None
    return per_hour / SECONDS_PER_HOUR / records_per_s * 1e6
