"""forecast-products: batch forecasts from each product's serving model."""

from __future__ import annotations

from prefect import flow, get_run_logger

from factory.adapters.artifacts import publish_forecasts
from factory.adapters.forecasts import ForecastError, ForecastReport, choose_products
from factory.adapters.identity import ANALYST, settings_as
from factory.adapters.registry.registry import Registry
from factory.core.outcomes import name_ids
from tasks.forecast import served_products, write_forecasts


@flow(name="forecast-products")
def forecast_products_flow(
    products: list[str] | None = None, horizon: int | None = None, out_url: str | None = None
) -> ForecastReport:
    """Write forecasts for the chosen products (all served products by default).

    Asked-for products without a serving model are named: an error when none has one, a
    warning otherwise. Nothing is written when no product could be forecast."""
    log = get_run_logger()
    settings = settings_as(ANALYST)
    registry = Registry(settings)
    chosen, unknown = choose_products(served_products(registry), products)
    if unknown:
        log.warning(
            "unknown product(s): %s (no registered model); forecasting the other %d",
            name_ids(unknown),
            len(chosen),
        )
    report = write_forecasts(chosen, horizon, out_url or settings.resolved_forecasts_url, registry)
    report.unknown = unknown
    if report.url is None:
        first = next(iter(report.missing.items()), ("?", "?"))
        raise ForecastError(
            f"no forecasts: all {len(report.missing)} products failed, e.g. {first[0]}: {first[1]};"
            " nothing written"
        )
    publish_forecasts(report.url, report.rows, report.products, report.missing)
    log.info("wrote %d rows to %s", report.rows, report.url)
    return report
