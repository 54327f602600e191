"""Landing tasks: ingest new files into the history; announce the products they change."""

from __future__ import annotations

import pandas as pd
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.settings import get_current_settings

from factory.adapters.events import LANDED, EventsNotEmitted, ProductsPayload, emit_products_event
from factory.adapters.landing_zone import confirm, ingest
from factory.core.fleet import load_fleet
from factory.core.landing import LandingReport
from factory.settings import Settings


@task(cache_policy=NO_CACHE, task_run_name="ingest-landing")
def ingest_landing(fleet_path: str, landing_url: str, settings: Settings) -> LandingReport:
    """Validate new files, upsert them into the history, report the products that changed."""
    fleet = load_fleet(fleet_path).spec
    as_of = pd.Timestamp(settings.as_of) if settings.as_of else pd.Timestamp.now()
    report = ingest(landing_url, settings.resolved_data_url, settings.state_dir, fleet, as_of)
    log = get_run_logger()
    log.info(report.line())
    for f in report.files:
        if f.status == "rejected":
            log.warning("rejected %s: %s", f.url, f.reason)
    for pid, why in report.quarantined.items():
        log.warning("quarantined %s: %s", pid, "; ".join(why))
    return report


@task(cache_policy=NO_CACHE)
def announce(report: LandingReport, settings: Settings) -> list[str]:
    """Emit factory.data.landed for the changed products, then mark the files done."""
    payload = ProductsPayload(
        product_ids=report.product_ids,
        fingerprint=report.fingerprint,
        fingerprints=report.fingerprints,
        reason="data-landed",
        detail={"files": ", ".join(f.url.rsplit("/", 1)[-1] for f in report.files)},
    )
    # Without an API URL, Prefect runs a temporary server: events sent there retrain nothing.
    ids = emit_products_event(LANDED, payload) if get_current_settings().api.url else []
    if not ids:
        raise EventsNotEmitted(
            f"{len(report.product_ids)} products changed but no event could be emitted "
            "(PREFECT_API_URL is not set); they stay pending for the next scan"
        )
    confirm(settings.state_dir, report.pending)
    get_run_logger().info("%s for %d products: %s", LANDED, len(report.product_ids), ids)
    return ids
