"""watch-landing: merge new sales files into the history and announce the products they change."""

from __future__ import annotations

import time

import pandas as pd
from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run
from prefect.settings import get_current_settings
from pydantic import BaseModel

from tasks.events import LANDED, ProductsPayload, emit_products_event
from tasks.fleet import load_fleet
from tasks.landing import (
    LEDGER_FILE,
    LandingBusy,
    LandingReport,
    Ledger,
    confirm,
    ingest,
    list_landing,
)
from tasks.settings import Settings, get_settings


class EventsNotEmitted(RuntimeError):
    """Prefect is not emitting events here, so nothing would retrain; the data stays pending."""


class WatchReport(BaseModel):
    """What one watch-landing run did."""

    landing_url: str
    scans: int
    reports: list[LandingReport]
    event_ids: list[str]

    @property
    def product_ids(self) -> list[str]:
        """Every product announced for retraining."""
        return sorted({p for r in self.reports for p in r.product_ids})


def has_news(landing_url: str, settings: Settings) -> bool:
    """Cheap check (listing + ledger) for new or changed files or unannounced merges."""
    ledger = Ledger(settings.state_dir / LEDGER_FILE)
    return bool(ledger.pending()) or any(not ledger.unchanged(f) for f in list_landing(landing_url))


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


def publish_landing(report: LandingReport) -> None:
    """A markdown artifact: files, products to retrain, quarantined products."""
    lines = ["# Landing", "", report.line(), "", "| file | status | rows | products | note |"]
    lines.append("|---|---|---|---|---|")
    for f in report.files:
        note = f.reason or "; ".join(f"{p}: {', '.join(w)}" for p, w in f.quarantined.items())
        lines.append(f"| {f.url} | {f.status} | {f.rows} | {len(f.product_ids)} | {note} |")
    if report.product_ids:
        lines += ["", f"Retraining: {', '.join(report.product_ids[:200])}"]
    create_markdown_artifact("\n".join(lines), key="landing-report")


@flow(name="watch-landing")
def watch_landing(
    fleet_path: str = "fleet.yaml",
    landing_url: str | None = None,
    poll_seconds: float = 2.0,
    run_for_seconds: float = 0.0,
) -> WatchReport:
    """Scan the landing zone (once, or every poll_seconds for run_for_seconds) and announce.

    The window is counted from the run's scheduled start, so a run that starts late still ends
    when the next scheduled run is due: consecutive runs neither overlap nor drift apart.
    """
    settings = get_settings()
    url = landing_url or settings.resolved_landing_url
    late = max(0.0, time.time() - flow_run.scheduled_start_time.timestamp())
    deadline = time.monotonic() + max(0.0, run_for_seconds - late)
    reports: list[LandingReport] = []
    event_ids: list[str] = []
    scans = 0
    while True:
        scans += 1
        if has_news(url, settings):
            try:
                report = ingest_landing(fleet_path, url, settings)
            except LandingBusy as exc:
                get_run_logger().info("skipping this scan: %s", exc)
            else:
                if report.files or report.product_ids:
                    reports.append(report)
                    publish_landing(report)
                if report.product_ids:
                    event_ids += announce(report, settings)
        if time.monotonic() + poll_seconds > deadline:
            break
        time.sleep(poll_seconds)
    return WatchReport(landing_url=url, scans=scans, reports=reports, event_ids=event_ids)
