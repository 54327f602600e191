"""Batch forecasting tasks: which products are served, and their forecasts written out."""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from factory.adapters.data import write_panel
from factory.adapters.forecasts import ForecastReport, append_forecast_history, forecast_products
from factory.adapters.registry.names import PRODUCTION, STAGING
from factory.adapters.registry.registry import Registry


@task(cache_policy=NO_CACHE)
def served_products(registry: Registry) -> list[str]:
    """Products with a production model, or a staging one when none is in production."""
    return sorted(set(registry.current_models(PRODUCTION)) | set(registry.current_models(STAGING)))


@task(cache_policy=NO_CACHE, retries=1)
def write_forecasts(
    products: list[str], horizon: int | None, out_url: str, registry: Registry
) -> ForecastReport:
    """Forecast every product and write one parquet file (and the forecast history)."""
    frame, missing = forecast_products(registry, products, horizon)
    target = write_panel(frame, out_url, "forecasts.parquet")
    kept = (
        append_forecast_history(frame, registry.settings.resolved_forecasts_url)
        if len(frame)
        else None
    )
    return ForecastReport(
        url=target,
        rows=len(frame),
        products=frame["unique_id"].nunique(),
        missing=missing,
        history_url=kept,
    )
