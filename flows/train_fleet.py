"""train-fleet: validate, train on Ray, gate and register one model per product."""

from __future__ import annotations

import time
from collections import Counter

from prefect import flow, get_run_logger
from prefect.futures import as_completed
from prefect.runtime import flow_run
from prefect.task_runners import ThreadPoolTaskRunner

from factory.adapters.artifacts import publish, start_progress, update_progress
from factory.adapters.events import emit_trained
from factory.adapters.identity import TRAINER, settings_as
from factory.adapters.lease import holder_label, training_lease
from factory.adapters.lineage import run_lineage
from factory.adapters.registry.registry import Registry
from factory.adapters.state import merge_state
from factory.core.outcomes import (
    FleetSummary,
    ShardReport,
    check_failure_budget,
    check_quarantine_budget,
    failed_shard,
    shard_records,
    summarize,
    untrained_records,
)
from tasks.prepare import prepare_fleet
from tasks.repair import repair_registry
from tasks.report import report_fleet
from tasks.train import train_shard


@flow(name="train-fleet", task_runner=ThreadPoolTaskRunner(max_workers=6))  # type: ignore[arg-type]
def train_fleet(fleet_path: str = "fleet.yaml", products: list[str] | None = None) -> FleetSummary:
    """Train, gate and register one model per product declared in fleet.yaml.

    One run per registry at a time (the training lease); each shard's outcomes are recorded
    as it finishes, and a shard out of retries fails only its own products.
    """
    log = get_run_logger()
    t0 = time.perf_counter()
    settings = settings_as(TRAINER)
    run_id = str(flow_run.id) if flow_run.id else None
    holder = holder_label(f"flow run {flow_run.name or '?'} ({run_id or 'no id'})")
    with training_lease(settings, holder, settings.lease_wait_s, log.warning):
        prepared = prepare_fleet(fleet_path, settings, products)
        spec, report = prepared.fleet.spec, prepared.report
        records = untrained_records(spec, report, prepared.skipped, run_id)
        merge_state(settings.state_dir, records)  # recorded first: `factory status` explains a stop
        check_quarantine_budget(report, spec)
        registry = Registry(settings)
        lineage = run_lineage(prepared.fleet)
        progress = start_progress(len(report.valid_ids))
        counts: Counter = Counter(skipped=len(prepared.skipped)) if prepared.skipped else Counter()
        update_progress(progress, len(prepared.skipped), len(report.valid_ids), counts)
        keys = prepared.keys
        futures = [  # each shard gets only its own keys: Prefect walks every task parameter
            train_shard.submit(
                s,
                prepared.refs[s.key],
                prepared.fleet,
                {p: keys[p] for p in s.product_ids},
                lineage,
                registry,
            )
            for s in prepared.shards
        ]
        shard_of = {f.task_run_id: s for f, s in zip(futures, prepared.shards, strict=True)}
        reports: list[ShardReport] = []
        for future in as_completed(futures):
            try:
                shard = future.result()
            except Exception as exc:  # out of retries: its products fail, the others go on
                shard = failed_shard(shard_of[future.task_run_id], exc)
                log.error("shard %s failed after its retries: %s", shard.key, exc)
            reports.append(shard)
            done = shard_records(shard, spec.gate.metric, keys, run_id)
            merge_state(settings.state_dir, done)
            records += done
            counts.update(o.status for o in shard.outcomes)
            update_progress(progress, sum(counts.values()), len(report.valid_ids), counts)
            log.info("shard %s done: %s", shard.key, dict(Counter(r.status for r in done)))
        trained = [p for s in prepared.shards for p in s.product_ids]
        if trained:
            repair_registry(settings, trained, spec.auto_promote)

    summary = summarize(
        spec,
        report,
        counts,
        reports,
        prepared.validation_s,
        time.perf_counter() - t0,
        run_id,
    )
    if reports:  # a run that trained something gets its page
        summary.report = report_fleet(settings, fleet_path, run_id)
    publish(summary, records)
    log.info(summary.line())
    registered = [r.product_id for s in reports for r in s.registered.values()]
    emit_trained(run_id, registered)  # promote-fleet/on-trained takes it from here
    check_failure_budget(summary, spec)
    return summary
