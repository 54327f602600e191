"""What the flows show in the Prefect UI: progress, summaries and tables as artifacts."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from uuid import UUID

from prefect.artifacts import (
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)

from factory.adapters.forecasts import ForecastReport
from factory.core.drift import DriftOutcome
from factory.core.landing import LandingReport
from factory.core.outcomes import FleetSummary, ProductRecord

log = logging.getLogger(__name__)

# In-process observers of training progress (the CLI's progress bar): f(done, total).
PROGRESS_LISTENERS: list[Callable[[int, int], None]] = []


def start_progress(total_products: int) -> UUID:
    """A progress artifact the flow updates as shards finish."""
    return create_progress_artifact(  # type: ignore[return-value]
        0.0, key="train-fleet-progress", description=f"Training {total_products} products"
    )


def update_progress(artifact_id: UUID, done: int, total: int, counts: Counter) -> None:
    """Move the progress bar and say what finished so far. Best effort: a Prefect API that is
    away for longer than its client's retries costs the bar an update, never the run."""
    pct = 100.0 * done / total if total else 100.0
    text = ", ".join(f"{v} {k}" for k, v in sorted(counts.items()))
    try:
        update_progress_artifact(artifact_id, pct, description=f"{done}/{total} products: {text}")
    except Exception as exc:
        log.warning("progress artifact not updated (%s: %s)", type(exc).__name__, exc)
    for listener in PROGRESS_LISTENERS:
        listener(done, total)


def publish(summary: FleetSummary, records: list[ProductRecord]) -> None:
    """Per-product table, quarantine table and a markdown summary on the flow run."""
    rows = [
        {
            "product": r.product_id,
            "family": r.family,
            "status": r.status,
            "kind": r.model_kind or "",
            "score": None if r.score is None else round(r.score, 4),
            "baseline": None if r.baseline is None else round(r.baseline, 4),
            "staging": r.staging_version or "",
            "production": r.production_version or "",
            "reason": r.reason,
        }
        for r in records
    ]
    create_table_artifact(rows, key="fleet-outcomes", description="Per-product outcome of this run")
    quarantine = [
        {"product": pid, "reasons": "; ".join(why)} for pid, why in summary.quarantined.items()
    ]
    if quarantine:
        create_table_artifact(
            quarantine, key="fleet-quarantine", description="Products quarantined by data checks"
        )
    create_markdown_artifact(summary_markdown(summary), key="fleet-summary")


def summary_markdown(s: FleetSummary) -> str:
    """The fleet summary as markdown."""
    lines = [
        "# train-fleet summary",
        "",
        f"**{s.line()}**",
        "",
        "| outcome | products |",
        "|---|---|",
        *(f"| {k} | {v} |" for k, v in sorted(s.counts.items())),
        "",
        f"Shards: {s.shards}; Prefect task runs: {s.task_runs}.",
        *(
            [
                "",
                f"Report: [{s.report.name}]({s.report.as_uri()}) (`factory report` makes"
                " another, for any products)",
            ]
            if s.report
            else []
        ),
        "",
        "| stage | ms per product |",
        "|---|---|",
        *(f"| {k} | {v:.1f} |" for k, v in s.per_product_ms.items()),
    ]
    if s.history:
        lines += ["", "| history path | products |", "|---|---|"]
        lines += [f"| {k} | {v} |" for k, v in sorted(s.history.items())]
    if s.winners:
        lines += ["", "| registered model kind | products |", "|---|---|"]
        lines += [f"| {k} | {v} |" for k, v in sorted(s.winners.items(), key=lambda kv: -kv[1])]
    if s.candidate_ms:
        lines += ["", "| candidate | backtest ms per product |", "|---|---|"]
        lines += [f"| {k} | {v:.1f} |" for k, v in s.candidate_ms.items()]
    if s.budget_exceeded:
        lines += ["", "**Failure budget exceeded: the run is marked failed.**"]
    if s.failed:
        lines += ["", "## Failed products", "", "| product | error |", "|---|---|"]
        lines += [f"| {k} | {v} |" for k, v in list(s.failed.items())[:50]]
    return "\n".join(lines)


def publish_drift(outcomes: list[DriftOutcome]) -> None:
    """A table artifact with every product's drift status and, for a product with a shadow
    challenger, its realized WAPE beside production's over the same periods."""
    rows = [
        {
            "product": o.product_id,
            "model": f"{o.model_name}/{o.model_version}",
            "status": o.status,
            "breaches": o.breaches,
            "psi": None if o.psi is None else round(o.psi, 4),
            "shadow": "" if o.shadow is None else f"v{o.shadow.shadow_version}",
            "shadow WAPE": _rounded(o.shadow.shadow_wape if o.shadow else None),
            "production WAPE": _rounded(o.shadow.serving_wape if o.shadow else None),
            "shadow periods": o.shadow.periods if o.shadow else None,
            "detail": o.detail,
        }
        for o in sorted(outcomes, key=lambda o: (o.status == "ok", o.product_id))
    ]
    create_table_artifact(rows, key="drift-status", description="Drift of production models")


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


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


def publish_forecasts(report: ForecastReport) -> None:
    """A markdown artifact: where the forecasts went, how many rows came from shadow
    challengers, and which products had no usable model (and why)."""
    text = (
        f"Forecasts for {report.products} products ({report.rows} rows, {report.shadow_rows}"
        f" from shadow challengers) written to `{report.url}`."
    )
    if report.missing:
        text += f" No model for: {', '.join(sorted(report.missing))}."
    if report.shadow_missing:
        text += f" Shadow challenger not forecast for: {', '.join(sorted(report.shadow_missing))}."
    create_markdown_artifact(text, key="forecast-products")
