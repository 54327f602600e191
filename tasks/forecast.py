"""Batch forecasting tasks: which products are served, and their forecasts written out."""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from factory.adapters.files import atomic_write
from factory.adapters.forecasts import (
    ForecastReport,
    append_forecast_history,
    forecast_products,
    served_product_ids,
)
from factory.adapters.prefect_env import retry_unless_user_error
from factory.adapters.registry.registry import Registry


@task(cache_policy=NO_CACHE)
def served_products(registry: Registry) -> list[str]:
    """Products with a production model, or a staging one when none is in production."""
    return served_product_ids(registry)


@task(cache_policy=NO_CACHE, retries=1, retry_condition_fn=retry_unless_user_error)
def write_forecasts(
    products: list[str], horizon: int | None, out_url: str, registry: Registry
) -> ForecastReport:
    """Forecast every product and write one parquet file (and the forecast history); when no
    product could be forecast, write nothing (an earlier file is not replaced by an empty one)."""
    frame, missing = forecast_products(registry, products, horizon)
    if not len(frame):
        return ForecastReport(url=None, rows=0, products=0, missing=missing)
    target = f"{out_url.rstrip('/')}/forecasts.parquet"
    atomic_write(target, lambda fh: frame.to_parquet(fh, index=False))  # never half a file
    kept = append_forecast_history(frame, registry.settings.resolved_forecasts_url)
    return ForecastReport(
        url=target,
        rows=len(frame),
        products=frame["unique_id"].nunique(),
        missing=missing,
        history_url=kept,
    )
