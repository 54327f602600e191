"""train-fleet: validate, train on Ray, gate and register one model per product."""

from __future__ import annotations

import time
from collections import Counter

from prefect import flow, get_run_logger
from prefect.futures import as_completed
from prefect.runtime import flow_run
from prefect.task_runners import ThreadPoolTaskRunner

from tasks.pipeline import (
    BudgetExceeded,
    ShardReport,
    current_versions,
    fetch_champions,
    prepare_fleet,
    run_lineage,
    train_shard,
)
from tasks.registry import Registry
from tasks.reporting import (
    FleetSummary,
    outcome_record,
    publish,
    quarantine_record,
    skipped_record,
    start_progress,
    update_progress,
)
from tasks.settings import get_settings
from tasks.state import merge_state


@flow(name="train-fleet", task_runner=ThreadPoolTaskRunner(max_workers=6))  # type: ignore[arg-type]
def train_fleet(fleet_path: str = "fleet.yaml", products: list[str] | None = None) -> FleetSummary:
    """Train, gate and register one model per product declared in fleet.yaml."""
    log = get_run_logger()
    t0 = time.perf_counter()
    settings = get_settings()
    prepared = prepare_fleet(fleet_path, settings, products)
    spec, report = prepared.fleet.spec, prepared.report
    total = len(report.valid_ids) + len(report.quarantined)
    if total and report.quarantine_rate > spec.failure_budget:
        raise BudgetExceeded(
            f"{len(report.quarantined)} of {total} products quarantined"
            f" ({report.quarantine_rate:.0%} > failure_budget {spec.failure_budget:.0%});"
            " nothing trained"
        )
    to_train = [p for s in prepared.shards for p in s.product_ids]
    champions = fetch_champions(settings, to_train) if to_train else {}
    registry = Registry(settings)
    lineage = run_lineage(prepared.fleet)
    progress = start_progress(len(report.valid_ids))
    counts: Counter = Counter(skipped=len(prepared.skipped)) if prepared.skipped else Counter()
    update_progress(progress, len(prepared.skipped), len(report.valid_ids), counts)
    futures = [
        train_shard.submit(s, prepared.refs[s.key], prepared.fleet, champions, lineage, registry)
        for s in prepared.shards
    ]
    reports: list[ShardReport] = []
    for future in as_completed(futures):
        shard = future.result()
        reports.append(shard)
        counts.update(o.status for o in shard.outcomes)
        update_progress(progress, sum(counts.values()), len(report.valid_ids), counts)
        log.info("shard %s done: %s", shard.key, dict(Counter(o.status for o in shard.outcomes)))

    run_id = str(flow_run.id) if flow_run.id else None
    owner = {p: f for f, ids in prepared.fleet.spec.assign(report.quarantined).items() for p in ids}
    records = [
        quarantine_record(p, owner.get(p, ""), why, run_id) for p, why in report.quarantined.items()
    ]
    records += [skipped_record(r, run_id) for r in prepared.skipped.values()]
    for shard in reports:
        for o in shard.outcomes:
            versions = current_versions(
                o.product_id, shard.registered.get(o.product_id), champions.get(o.product_id)
            )
            record = outcome_record(o, spec.gate.metric, run_id, versions)
            record.train_key = None if o.status == "failed" else prepared.keys[o.product_id]
            records.append(record)
    merge_state(settings.state_dir, records)

    counts["quarantined"] = len(report.quarantined)
    failed = {o.product_id: o.reason for r in reports for o in r.outcomes if o.status == "failed"}
    bad = len(report.quarantined) + len(failed)
    summary = FleetSummary(
        flow_run_id=run_id,
        products=total,
        counts=dict(counts),
        quarantined=report.quarantined,
        failed=failed,
        wall_s=time.perf_counter() - t0,
        per_product_ms=cost_split(prepared.validation_s, reports, total),
        shards=len(prepared.shards),
        task_runs=len(prepared.shards) + (2 if prepared.shards else 1),
        budget_exceeded=bool(total) and bad / total > spec.failure_budget,
    )
    publish(summary, records)
    log.info(summary.line())
    if summary.budget_exceeded:
        raise BudgetExceeded(
            f"{bad} of {total} products quarantined or failed"
            f" (> failure_budget {spec.failure_budget:.0%})"
        )
    return summary


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
