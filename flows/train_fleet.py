"""train-fleet: validate, train on Ray, gate and register one model per product."""

from __future__ import annotations

import time
from collections import Counter

from prefect import flow, get_run_logger
from prefect.futures import as_completed
from prefect.runtime import flow_run
from prefect.task_runners import ThreadPoolTaskRunner

from factory.adapters.artifacts import publish, start_progress, update_progress
from factory.adapters.lineage import run_lineage
from factory.adapters.registry.registry import Registry
from factory.adapters.state import merge_state
from factory.core.outcomes import (
    FleetSummary,
    ShardReport,
    check_failure_budget,
    check_quarantine_budget,
    fleet_records,
    summarize,
)
from factory.settings import get_settings
from tasks.champions import fetch_champions
from tasks.prepare import prepare_fleet
from tasks.train import train_shard


@flow(name="train-fleet", task_runner=ThreadPoolTaskRunner(max_workers=6))  # type: ignore[arg-type]
def train_fleet(fleet_path: str = "fleet.yaml", products: list[str] | None = None) -> FleetSummary:
    """Train, gate and register one model per product declared in fleet.yaml."""
    log = get_run_logger()
    t0 = time.perf_counter()
    settings = get_settings()
    prepared = prepare_fleet(fleet_path, settings, products)
    spec, report = prepared.fleet.spec, prepared.report
    check_quarantine_budget(report, spec)
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
    records = fleet_records(
        spec, report, prepared.skipped, reports, champions, prepared.keys, run_id
    )
    merge_state(settings.state_dir, records)
    summary = summarize(
        spec,
        report,
        counts,
        reports,
        prepared.validation_s,
        time.perf_counter() - t0,
        run_id,
    )
    publish(summary, records)
    log.info(summary.line())
    check_failure_budget(summary, spec)
    return summary
