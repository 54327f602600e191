"""What a training run decided, per product and for the fleet: records, budget and summary."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from pydantic import BaseModel

from factory.core.contract import ValidationReport
from factory.core.errors import UserError
from factory.core.fleet import FleetSpec, Shard
from factory.core.training import ChampionRef, ProductOutcome


class BudgetExceeded(UserError, RuntimeError):
    """More of the fleet was quarantined or failed than fleet.yaml's failure_budget allows."""

    hint = "see `factory status` for the reasons per product"


@dataclass
class ProductRecord:
    """One product's latest outcome (quarantine included)."""

    product_id: str
    family: str
    status: str
    reason: str
    model_kind: str | None = None
    metric: str | None = None
    score: float | None = None
    baseline: float | None = None
    staging_version: str | None = None
    production_version: str | None = None
    data_fingerprint: str | None = None
    flow_run_id: str | None = None
    train_key: str | None = None
    history: str | None = None  # full, short (fewer or shorter backtest windows) or minimal
    updated_at: pd.Timestamp = field(default_factory=lambda: pd.Timestamp.now(tz="UTC"))


@dataclass(frozen=True)
class Registered:
    """Where one product's new model landed."""

    product_id: str
    staging_version: str
    production_version: str | None


@dataclass
class ShardReport:
    """What one shard produced: outcomes, registrations and time spent registering."""

    key: str
    outcomes: list[ProductOutcome]
    registered: dict[str, Registered]
    registry_s: float
    champions: dict[str, ChampionRef] = field(default_factory=dict)  # as read by this shard


def failed_shard(shard: Shard, error: BaseException) -> ShardReport:
    """A shard whose infrastructure retries ran out: each of its products failed, with why."""
    reason = f"shard {shard.key} failed after its retries: {type(error).__name__}: {error}"
    reason = reason.splitlines()[0][:500]
    return ShardReport(
        shard.key,
        [ProductOutcome(p, shard.family, "failed", reason) for p in shard.product_ids],
        {},
        0.0,
    )


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
    history: dict[str, int] = {}  # trained products by path: full, short, minimal
    winners: dict[str, int] = {}  # registered models by kind
    candidate_ms: dict[str, float] = {}  # each candidate's backtest ms per product it ran on
    report: Path | None = None  # the run's HTML report (`factory report`), when written

    def line(self) -> str:
        """One-line summary for logs and the CLI."""
        parts = ", ".join(f"{v} {k}" for k, v in sorted(self.counts.items()))
        return f"{self.products} products in {self.wall_s:.1f}s: {parts}"


class UnknownProducts(UserError, LookupError):
    """None of the products asked for can be trained: not in the data, or in no family."""

    hint = "`factory validate` shows the products in the data and the families they are in"


def name_ids(ids: Iterable[str], limit: int = 10) -> str:
    """`a, b, c` or `a, b, ... and 12 more` for messages about many products."""
    ids = list(ids)
    more = f" and {len(ids) - limit} more" if len(ids) > limit else ""
    return ", ".join(ids[:limit]) + more


def unknown_products(
    requested: Iterable[str], in_data: Collection[str], covered: Collection[str]
) -> dict[str, str]:
    """The requested products that cannot train, with why (not in the data, or in no family)."""
    return {
        p: "not in the sales data" if p not in in_data else "in no family of fleet.yaml"
        for p in dict.fromkeys(requested)
        if p not in covered
    }


def check_requested(
    requested: Iterable[str], in_data: Collection[str], covered: Collection[str]
) -> str | None:
    """Raise UnknownProducts when none of the requested products can train; when only some
    cannot, a warning naming them (None when all can)."""
    asked = list(dict.fromkeys(requested))
    unknown = unknown_products(asked, in_data, covered)
    if not unknown:
        return None
    groups: dict[str, list[str]] = {}
    for pid, why in unknown.items():
        groups.setdefault(why, []).append(pid)
    line = "unknown product(s): " + "; ".join(
        f"{name_ids(ids)} ({why})" for why, ids in groups.items()
    )
    if len(unknown) == len(asked):
        raise UnknownProducts(line)
    return f"{line}; training the other {len(asked) - len(unknown)}"


def restrict(
    report: ValidationReport,
    products: Iterable[str] | None,
    warn: Callable[[str], object] | None = None,
) -> ValidationReport:
    """Keep only the named products in the report (all when None).

    Raises UnknownProducts when none of them is in the data and covered by a family; when
    only some are not, `warn` is told which."""
    if products is None:
        return report
    asked = list(products)
    keep = set(asked)
    covered = {*report.valid_ids, *report.quarantined}
    warning = check_requested(asked, covered | set(report.unassigned), covered)
    if warning and warn is not None:
        warn(warning)
    report.assignment = {f: [p for p in ids if p in keep] for f, ids in report.assignment.items()}
    report.quarantined = {p: r for p, r in report.quarantined.items() if p in keep}
    return report


def check_quarantine_budget(report: ValidationReport, spec: FleetSpec) -> None:
    """Stop before training when more products were quarantined than the budget allows."""
    total = len(report.valid_ids) + len(report.quarantined)
    if total and report.quarantine_rate > spec.failure_budget:
        raise BudgetExceeded(
            f"{len(report.quarantined)} of {total} products quarantined"
            f" ({report.quarantine_rate:.0%} > failure_budget {spec.failure_budget:.0%});"
            " nothing trained"
        )


def check_failure_budget(summary: FleetSummary, spec: FleetSpec) -> None:
    """Fail the run when quarantined plus failed products exceed the budget."""
    if summary.budget_exceeded:
        bad = len(summary.quarantined) + len(summary.failed)
        raise BudgetExceeded(
            f"{bad} of {summary.products} products quarantined or failed"
            f" (> failure_budget {spec.failure_budget:.0%})"
        )


def current_versions(
    reg: Registered | None, champion: ChampionRef | None
) -> tuple[str | None, str | None]:
    """(staging, production) versions a product is served by after this run."""
    if reg is not None:
        return reg.staging_version, reg.production_version
    if champion is not None and champion.in_production:
        return None, champion.version
    return (champion.version if champion else None), None


def outcome_record(
    o: ProductOutcome, metric: str, flow_run_id: str | None, versions: tuple[str | None, str | None]
) -> ProductRecord:
    """A product's outcome as a status record."""
    best = o.scores.get(o.challenger or "", {})
    cfg_kind = json.loads(o.config_json)["kind"] if o.config_json else o.challenger
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
        history=o.history if o.status != "failed" else None,
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
    reason = last if last.startswith("unchanged") else f"unchanged since last run ({last})"
    return ProductRecord(
        **{**previous.__dict__, "status": "skipped", "reason": reason, "flow_run_id": run_id}
    )


def untrained_records(
    spec: FleetSpec,
    report: ValidationReport,
    skipped: dict[str, ProductRecord],
    run_id: str | None,
) -> list[ProductRecord]:
    """Status records of the products a run does not train: quarantined and unchanged."""
    owner = {p: f for f, ids in spec.assign(report.quarantined).items() for p in ids}
    records = [
        quarantine_record(p, owner.get(p, ""), why, run_id) for p, why in report.quarantined.items()
    ]
    return records + [skipped_record(r, run_id) for r in skipped.values()]


def shard_records(
    shard: ShardReport, metric: str, keys: dict[str, str], run_id: str | None
) -> list[ProductRecord]:
    """Status records of one finished shard's products (written as soon as it finishes)."""
    records = []
    for o in shard.outcomes:
        versions = current_versions(
            shard.registered.get(o.product_id), shard.champions.get(o.product_id)
        )
        record = outcome_record(o, metric, run_id, versions)
        record.train_key = None if o.status == "failed" else keys[o.product_id]
        records.append(record)
    return records


def summarize(
    spec: FleetSpec,
    report: ValidationReport,
    counts: Counter,
    shards: list[ShardReport],
    validation_s: float,
    wall_s: float,
    run_id: str | None,
) -> FleetSummary:
    """The fleet summary of one run (counts include the skipped products)."""
    total = len(report.valid_ids) + len(report.quarantined)
    failed = {o.product_id: o.reason for r in shards for o in r.outcomes if o.status == "failed"}
    bad = len(report.quarantined) + len(failed)
    return FleetSummary(
        flow_run_id=run_id,
        products=total,
        counts={**counts, "quarantined": len(report.quarantined)},
        quarantined=report.quarantined,
        failed=failed,
        wall_s=wall_s,
        per_product_ms=cost_split(validation_s, shards, total),
        shards=len(shards),
        # validate-data, the shards, repair-registry, report-fleet
        task_runs=len(shards) + (3 if shards else 1),
        budget_exceeded=bool(total) and bad / total > spec.failure_budget,
        **quality_split(shards),
    )


def quality_split(reports: list[ShardReport]) -> dict[str, dict]:
    """Trained products per history path, registered models per kind, and the mean backtest
    cost of each candidate per product it ran on."""
    outcomes = [o for r in reports for o in r.outcomes if o.status != "failed"]
    kinds = [
        json.loads(o.config_json)["kind"]
        for o in outcomes
        if o.status == "registered" and o.config_json
    ]
    return {
        "history": dict(Counter(o.history for o in outcomes)),
        "winners": dict(Counter(kinds)),
        "candidate_ms": candidate_ms(outcomes),
    }


def candidate_ms(outcomes: Iterable[ProductOutcome]) -> dict[str, float]:
    """Each candidate's mean backtest ms per product it ran on."""
    costs: dict[str, list[float]] = {}
    for o in outcomes:
        for key, seconds in o.timings.items():
            if key.startswith("candidate."):
                label = key.removeprefix("candidate.").removesuffix("_s")
                costs.setdefault(label, []).append(seconds)
    return {k: 1000 * sum(v) / len(v) for k, v in sorted(costs.items())}


def cost_split(validation_s: float, reports: list[ShardReport], total: int) -> dict[str, float]:
    """Mean milliseconds per product for each stage (worker time for backtest and fit)."""
    outcomes = [o for r in reports for o in r.outcomes]
    n = max(len(outcomes), 1)
    return {
        "validation": 1000 * validation_s / max(total, 1),
        "backtest": 1000 * sum(o.timings.get("backtest_s", 0) for o in outcomes) / n,
        "fit": 1000 * sum(o.timings.get("fit_s", 0) for o in outcomes) / n,
        "registry": 1000 * sum(r.registry_s for r in reports) / n,
    }


class Coalesced(BaseModel):
    """Waiting runs of the retrain deployment whose products a running retrain takes over."""

    run_ids: list[str] = []
    product_ids: list[str] = []
    reasons: list[str] = []


class RetrainReport(BaseModel):
    """What one retrain-products run trained and which waiting runs it absorbed."""

    requested: list[str]
    products: list[str]
    reason: str
    coalesced: Coalesced
    summary: FleetSummary | None
