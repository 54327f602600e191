"""report-fleet: the planner's HTML page after a training run, linked from its summary."""

from __future__ import annotations

from pathlib import Path

from prefect import get_run_logger, task
from prefect.artifacts import create_link_artifact
from prefect.cache_policies import NO_CACHE

from factory.reporting import write_report
from factory.settings import Settings

KEEP_REPORTS = 10  # a run's page is ~5 MB (plotly inline): the latest ten train reports stay
TRAIN_PREFIX = "train-"


@task(cache_policy=NO_CACHE)
def report_fleet(settings: Settings, fleet_path: str, run_id: str | None) -> Path | None:
    """Write the report of this run's fleet (three top sellers and the short products) and
    link it on the flow run. A report that cannot be written is a warning, never a failed
    training run."""
    folder = settings.resolved_home / "reports"
    out = folder / f"{TRAIN_PREFIX}{run_id or 'local'}.html"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        path = write_report(settings, None, out, top=3, fleet_path=fleet_path)
    except Exception as exc:
        get_run_logger().warning("report not written (%s: %s)", type(exc).__name__, exc)
        return None
    for old in sorted(folder.glob(f"{TRAIN_PREFIX}*.html"), key=lambda p: p.stat().st_mtime)[
        :-KEEP_REPORTS
    ]:
        old.unlink(missing_ok=True)
    create_link_artifact(
        path.as_uri(),
        link_text=f"fleet report: {path.name}",
        key="fleet-report",
        description="Errors against seasonal naive, per family, and forecasts with intervals",
    )
    return path
