"""Forecast tasks through `.fn()`: products without a model are named, never silently dropped."""

from __future__ import annotations

from pathlib import Path

from factory.adapters.registry.registry import Registry
from factory.settings import get_settings
from tasks.forecast import served_products, write_forecasts


def test_products_without_a_model_are_reported_with_their_reason(factory_home: Path) -> None:
    registry = Registry(get_settings())
    assert served_products.fn(registry) == []
    report = write_forecasts.fn(["a", "b/c"], 7, str(factory_home / "out"), registry)
    assert report.rows == 0 and report.products == 0
    assert sorted(report.missing) == ["a", "b/c"]
    assert all("no registered model" in why for why in report.missing.values())
    assert report.history_url is None  # nothing to keep for drift monitoring
