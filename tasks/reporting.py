"""Run summaries: per-product rows, the fleet summary, and their Prefect artifacts."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from uuid import UUID

from prefect.artifacts import (
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)
from pydantic import BaseModel

from tasks.state import ProductRecord
from tasks.training import ProductOutcome

# In-process observers of training progress (the CLI's progress bar): f(done, total).
PROGRESS_LISTENERS: list[Callable[[int, int], None]] = []


class FleetSummary(BaseModel):
    """What one train-fleet run did, as returned by the flow and shown in the UI."""

    flow_run_id: str | None
    products: int
    counts: dict[str, int]
    quarantined: dict[str, list[str]]
    failed: dict[str, str]
    wall_s: float
    per_product_ms: dict[str, float]
    shards: int
    task_runs: int
    budget_exceeded: bool

    def line(self) -> str:
        """One-line summary for logs and the CLI."""
        parts = ", ".join(f"{v} {k}" for k, v in sorted(self.counts.items()))
        return f"{self.products} products in {self.wall_s:.1f}s: {parts}"


def outcome_record(
    o: ProductOutcome, metric: str, flow_run_id: str | None, versions: tuple[str | None, str | None]
) -> ProductRecord:
    """A product's outcome as a status record."""
    best = o.scores.get(o.challenger or "", {})
    cfg_kind = o.challenger.split("_")[0] if o.challenger else None
    return ProductRecord(
        product_id=o.product_id,
        family=o.family,
        status=o.status,
        reason=o.reason,
        model_kind=cfg_kind if o.status == "registered" else None,
        metric=metric,
        score=best.get(metric),
        baseline=o.scores.get("seasonal_naive", {}).get(metric),
        staging_version=versions[0],
        production_version=versions[1],
        data_fingerprint=o.data_fingerprint or None,
        flow_run_id=flow_run_id,
    )


def quarantine_record(
    pid: str, family: str, reasons: list[str], run_id: str | None
) -> ProductRecord:
    """A quarantined product as a status record."""
    return ProductRecord(pid, family, "quarantined", "; ".join(reasons), flow_run_id=run_id)


def skipped_record(previous: ProductRecord, run_id: str | None) -> ProductRecord:
    """An unchanged product: its last outcome stands; this run did not retrain it."""
    last = (
        previous.reason if previous.status == "skipped" else f"{previous.status}: {previous.reason}"
    )
    return ProductRecord(
        **{
            **previous.__dict__,
            "status": "skipped",
            "reason": last
            if last.startswith("unchanged")
            else f"unchanged since last run ({last})",
            "flow_run_id": run_id,
        }
    )


def start_progress(total_products: int) -> UUID:
    """A progress artifact the flow updates as shards finish."""
    return create_progress_artifact(  # type: ignore[return-value]
        0.0, key="train-fleet-progress", description=f"Training {total_products} products"
    )


def update_progress(artifact_id: UUID, done: int, total: int, counts: Counter) -> None:
    """Move the progress bar and say what finished so far."""
    pct = 100.0 * done / total if total else 100.0
    text = ", ".join(f"{v} {k}" for k, v in sorted(counts.items()))
    update_progress_artifact(artifact_id, pct, description=f"{done}/{total} products: {text}")
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
        "",
        "| stage | ms per product |",
        "|---|---|",
        *(f"| {k} | {v:.1f} |" for k, v in s.per_product_ms.items()),
    ]
    if s.budget_exceeded:
        lines += ["", "**Failure budget exceeded: the run is marked failed.**"]
    if s.failed:
        lines += ["", "## Failed products", "", "| product | error |", "|---|---|"]
        lines += [f"| {k} | {v} |" for k, v in list(s.failed.items())[:50]]
    return "\n".join(lines)
