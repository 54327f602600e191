"""monitor-drift: score production models on recent actuals and announce the drifted ones."""

from __future__ import annotations

from collections import Counter

from prefect import flow, get_run_logger

from factory.adapters.artifacts import publish_drift
from factory.adapters.identity import ANALYST, settings_as
from factory.adapters.state import write_drift_state
from factory.core.drift import DriftReport, DriftSpec, should_retrain
from tasks.drift import announce_drift, check_drift


@flow(name="monitor-drift")
def monitor_drift(
    fleet_path: str = "fleet.yaml",
    drift: DriftSpec = DriftSpec(),
    products: list[str] | None = None,
    emit: bool = True,
) -> DriftReport:
    """Check every production model for drift, record it (with each shadow challenger's
    realized error beside production's), and announce what to retrain."""
    log = get_run_logger()
    settings = settings_as(ANALYST)
    outcomes = check_drift(settings, drift, products)
    write_drift_state(settings.state_dir, outcomes)
    publish_drift(outcomes)
    counts = Counter(o.status for o in outcomes)
    retrain = [o for o in outcomes if should_retrain(o, drift)]
    log.info("%d production models: %s", len(outcomes), dict(counts))
    for o in retrain:
        log.info("drifted %s v%s: %s", o.product_id, o.model_version, o.detail)
    for o in outcomes:
        if o.shadow is not None:
            log.info("%s v%s: %s", o.product_id, o.model_version, o.shadow.line())
    sent = announce_drift(fleet_path, settings, retrain) if retrain and emit else []
    return DriftReport(
        checked=len(outcomes),
        counts=dict(counts),
        retrain=[o.product_id for o in retrain],
        event_ids=sent,
    )
