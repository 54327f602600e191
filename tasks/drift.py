"""Drift tasks: score production models (and their shadow challengers) on recent actuals;
announce the drifted ones."""

from __future__ import annotations

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.settings import get_current_settings

from factory.adapters.data import parsed_rows, read_panel
from factory.adapters.events import DRIFTED, ProductsPayload, emit_products_event
from factory.adapters.forecasts import read_forecast_history
from factory.adapters.registry.registry import Registry
from factory.core.drift import DriftOutcome, DriftSpec, assess_fleet
from factory.core.fingerprints import combined_fingerprint
from factory.core.fleet import load_fleet
from factory.core.landing import product_fingerprints
from factory.serving.batch import shadow_versions
from factory.settings import Settings


@task(cache_policy=NO_CACHE)
def check_drift(
    settings: Settings, spec: DriftSpec, products: list[str] | None
) -> list[DriftOutcome]:
    """Every production model's drift from the history and the forecasts it made; for a
    product with a shadow challenger, both versions' realized errors on the same actuals."""
    registry = Registry(settings)
    models = registry.production_models(products)
    shadows = shadow_versions(registry, list(models)) if models else {}
    history = read_panel(settings.resolved_data_url)
    history = history.loc[history["unique_id"].isin(list(models)), ["unique_id", "ds", "y"]]
    history = parsed_rows(history)
    forecasts = read_forecast_history(settings.resolved_forecasts_url)
    return assess_fleet(models, history, forecasts, spec, shadows)


@task(cache_policy=NO_CACHE)
def announce_drift(fleet_path: str, settings: Settings, drifted: list[DriftOutcome]) -> list[str]:
    """Emit factory.model.drifted for the products to retrain, with their data fingerprints."""
    ids = [o.product_id for o in drifted]
    history = read_panel(settings.resolved_data_url)
    fps = product_fingerprints(history, ids, load_fleet(fleet_path).spec)
    payload = ProductsPayload(
        product_ids=ids,
        fingerprint=combined_fingerprint(fps),
        fingerprints=fps,
        reason="drift",
        detail={o.product_id: f"v{o.model_version} {o.status}" for o in drifted},
    )
    sent = emit_products_event(DRIFTED, payload) if get_current_settings().api.url else []
    if not sent:  # recorded in the drift state; the next monitor run announces them again
        get_run_logger().warning("no PREFECT_API_URL: %d drifted products not announced", len(ids))
    return sent
