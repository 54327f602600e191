"""watch-landing: merge new sales files into the history and announce the products they change."""

from __future__ import annotations

import time

from prefect import flow, get_run_logger
from prefect.runtime import flow_run

from factory.adapters.artifacts import publish_landing
from factory.adapters.identity import ANALYST, settings_as
from factory.adapters.landing_zone import has_news
from factory.adapters.ledger import LandingBusy
from factory.core.landing import LandingReport, WatchReport
from tasks.landing import announce, ingest_landing


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
    settings = settings_as(ANALYST)
    url = landing_url or settings.resolved_landing_url
    late = max(0.0, time.time() - flow_run.scheduled_start_time.timestamp())
    deadline = time.monotonic() + max(0.0, run_for_seconds - late)
    reports: list[LandingReport] = []
    event_ids: list[str] = []
    scans = 0
    while True:
        scans += 1
        if has_news(url, settings.state_dir):
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
