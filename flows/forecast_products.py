"""forecast-products: batch forecasts from each product's serving model."""

from __future__ import annotations

from prefect import flow, get_run_logger

from factory.adapters.artifacts import publish_forecasts
from factory.adapters.forecasts import ForecastError, ForecastReport
from factory.adapters.registry.registry import Registry
from factory.settings import get_settings
from tasks.forecast import served_products, write_forecasts


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
    publish_forecasts(report.url, report.rows, report.products, report.missing)
    get_run_logger().info("wrote %d rows to %s", report.rows, report.url)
    if report.missing and not report.rows:
        first = next(iter(report.missing.items()))
        raise ForecastError(
            f"no forecasts: all {len(report.missing)} products failed, e.g. {first}"
        )
    return report
