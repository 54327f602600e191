"""monitor-drift: score production models on recent actuals and announce the drifted ones."""

from __future__ import annotations

from collections import Counter

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.settings import get_current_settings
from pydantic import BaseModel

from tasks.data import read_panel
from tasks.drift import (
    DriftOutcome,
    DriftSpec,
    assess_fleet,
    production_models,
    should_retrain,
    write_drift_state,
)
from tasks.events import DRIFTED, ProductsPayload, emit_products_event
from tasks.fleet import load_fleet
from tasks.forecasting import read_forecast_history
from tasks.landing import combined_fingerprint, product_fingerprints
from tasks.registry import Registry
from tasks.settings import Settings, get_settings


class DriftReport(BaseModel):
    """What one monitor-drift run found and announced."""

    checked: int
    counts: dict[str, int]
    retrain: list[str]
    event_ids: list[str]


@task(cache_policy=NO_CACHE)
def check_drift(
    settings: Settings, spec: DriftSpec, products: list[str] | None
) -> list[DriftOutcome]:
    """Every production model's drift from the history and the forecasts it made."""
    models = production_models(Registry(settings), products)
    history = read_panel(settings.resolved_data_url)
    history = history.loc[history["unique_id"].isin(list(models)), ["unique_id", "ds", "y"]]
    forecasts = read_forecast_history(settings.resolved_forecasts_url)
    return assess_fleet(models, history, forecasts, spec)


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


def publish_drift(outcomes: list[DriftOutcome]) -> None:
    """A table artifact with every product's drift status."""
    rows = [
        {
            "product": o.product_id,
            "model": f"{o.model_name}/{o.model_version}",
            "status": o.status,
            "breaches": o.breaches,
            "psi": None if o.psi is None else round(o.psi, 4),
            "detail": o.detail,
        }
        for o in sorted(outcomes, key=lambda o: (o.status == "ok", o.product_id))
    ]
    create_table_artifact(rows, key="drift-status", description="Drift of production models")


@flow(name="monitor-drift")
def monitor_drift(
    fleet_path: str = "fleet.yaml",
    drift: DriftSpec = DriftSpec(),
    products: list[str] | None = None,
    emit: bool = True,
) -> DriftReport:
    """Check every production model for drift, record it, and announce what to retrain."""
    log = get_run_logger()
    settings = get_settings()
    outcomes = check_drift(settings, drift, products)
    write_drift_state(settings.state_dir, outcomes)
    publish_drift(outcomes)
    counts = Counter(o.status for o in outcomes)
    retrain = [o for o in outcomes if should_retrain(o, drift)]
    log.info("%d production models: %s", len(outcomes), dict(counts))
    for o in retrain:
        log.info("drifted %s v%s: %s", o.product_id, o.model_version, o.detail)
    sent = announce_drift(fleet_path, settings, retrain) if retrain and emit else []
    return DriftReport(
        checked=len(outcomes),
        counts=dict(counts),
        retrain=[o.product_id for o in retrain],
        event_ids=sent,
    )
