"""Forecast tasks through `.fn()`: products without a model are named, never silently dropped."""

from __future__ import annotations

from pathlib import Path

import pytest

from factory.adapters.forecasts import ForecastError, choose_products
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
    assert report.url is None
    assert not (factory_home / "out").exists()  # no empty forecasts file


@pytest.mark.parametrize(
    ("asked", "chosen", "unknown"),
    [
        (None, ["a", "b"], []),
        (["b"], ["b"], []),
        (["b", "x", "b"], ["b"], ["x"]),
    ],
)
def test_choose_products_names_the_ones_without_a_model(
    asked: list[str] | None, chosen: list[str], unknown: list[str]
) -> None:
    assert choose_products(["a", "b"], asked) == (chosen, unknown)


@pytest.mark.parametrize(
    ("served", "asked", "message"),
    [
        ([], None, "no product has a registered model yet"),
        (["a"], ["x", "y"], "unknown product(s): x, y (no registered model)"),
    ],
)
def test_choose_products_refuses_when_nothing_can_be_forecast(
    served: list[str], asked: list[str] | None, message: str
) -> None:
    with pytest.raises(ForecastError) as caught:
        choose_products(served, asked)
    assert message in str(caught.value)
