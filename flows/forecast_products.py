"""forecast-products: batch forecasts from each product's serving model."""

from __future__ import annotations

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel

from tasks.data import write_panel
from tasks.forecasting import append_forecast_history, forecast_products
from tasks.registry import PRODUCTION, STAGING, Registry
from tasks.settings import get_settings


class ForecastError(RuntimeError):
    """No forecast could be made."""


class ForecastReport(BaseModel):
    """Where the forecasts went and which products had no model."""

    url: str
    rows: int
    products: int
    missing: dict[str, str]
    history_url: str | None = None


@task(cache_policy=NO_CACHE)
def served_products(registry: Registry) -> list[str]:
    """Products with a production model, or a staging one when none is in production."""
    return sorted(set(registry.current_models(PRODUCTION)) | set(registry.current_models(STAGING)))


@task(cache_policy=NO_CACHE, retries=1)
def write_forecasts(
    products: list[str], horizon: int | None, out_url: str, registry: Registry
) -> ForecastReport:
    """Forecast every product and write one parquet file."""
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


@flow(name="forecast-products")
def forecast_products_flow(
    products: list[str] | None = None, horizon: int | None = None, out_url: str | None = None
) -> ForecastReport:
    """Write forecasts for the chosen products (all served products by default)."""
    settings = get_settings()
    registry = Registry(settings)
    chosen = products or served_products(registry)
    if not chosen:
        raise ForecastError("no product has a registered model yet; run `factory train` first")
    report = write_forecasts(chosen, horizon, out_url or settings.resolved_forecasts_url, registry)
    create_markdown_artifact(
        f"Forecasts for {report.products} products ({report.rows} rows) written to `{report.url}`."
        + (f" No model for: {', '.join(sorted(report.missing))}." if report.missing else ""),
        key="forecast-products",
    )
    get_run_logger().info("wrote %d rows to %s", report.rows, report.url)
    if report.missing and not report.rows:
        first = next(iter(report.missing.items()))
        raise ForecastError(
            f"no forecasts: all {len(report.missing)} products failed, e.g. {first}"
        )
    return report
