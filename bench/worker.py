"""One benchmark mode in its own process: `python bench/worker.py JOB.json RESULT.json`.

bench/run.py starts it with the environment of the mode (FACTORY_HOME, PREFECT_API_URL, a
code snapshot on PYTHONPATH) and samples the memory of its whole process tree.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
import time
from collections import Counter
from pathlib import Path

import pandas as pd
from workload import Job, WorkerResult, outcome_digest, stage_split_ms

from factory.adapters.data import read_panel
from factory.adapters.lineage import code_fingerprint
from factory.core.contract import fleet_series, validate_panel
from factory.core.fleet import load_fleet, make_shards
from factory.core.outcomes import candidate_ms
from factory.core.training import ChampionRef, ProductOutcome, train_many

FRAMEWORKS = ("prefect", "ray", "mlflow")


def run_raw(job: Job) -> WorkerResult:
    """The limit: read, validate and train every shard in a bare multiprocessing Pool."""
    t0 = time.perf_counter()
    fleet = load_fleet(job.fleet_path).spec
    clean, report = validate_panel(read_panel(job.data_url), fleet, pd.Timestamp(job.as_of))
    validation_s = time.perf_counter() - t0
    series = fleet_series(clean, fleet, report.assignment)
    shards = make_shards(report.assignment, fleet.shard_size)
    no_champions: dict[str, ChampionRef] = {}
    work = [
        ([(p, series[p]) for p in s.product_ids], fleet.family(s.family), fleet.gate, no_champions)
        for s in shards
    ]
    with multiprocessing.Pool(os.cpu_count()) as pool:
        batches = pool.starmap(train_many, work, chunksize=1)
    wall_s = time.perf_counter() - t0
    loaded = [m for m in FRAMEWORKS if m in sys.modules]
    if loaded:
        raise RuntimeError(f"the raw limit must not load {', '.join(loaded)}")
    outcomes = [o for batch in batches for o in batch]
    products = len(report.valid_ids) + len(report.quarantined)
    return WorkerResult(
        wall_s=wall_s,
        products=products,
        models=sum(o.payload is not None for o in outcomes),
        counts=dict(Counter(o.status for o in outcomes)),
        per_product_ms=stage_split_ms(validation_s, [o.timings for o in outcomes], products),
        shards=len(shards),
        outcome_digest=digest_outcomes(outcomes),
        code_fingerprint=code_fingerprint(),
        candidate_ms=candidate_ms([o for o in outcomes if o.status != "failed"]),
        notes=[f"Pool({os.cpu_count()}), start method {multiprocessing.get_start_method()}"],
    )


def digest_outcomes(outcomes: list[ProductOutcome]) -> str:
    """The outcome digest of in-memory outcomes."""
    return outcome_digest((o.product_id, o.status, o.data_fingerprint) for o in outcomes)


def run_factory(job: Job) -> WorkerResult:
    """The train-fleet flow end to end, on the FACTORY_HOME and PREFECT_API_URL it was given."""
    from factory.adapters.state import read_state
    from factory.settings import get_settings
    from flows.train_fleet import train_fleet

    t0 = time.perf_counter()
    summary = train_fleet(job.fleet_path)
    wall_s = time.perf_counter() - t0
    state = read_state(get_settings().state_dir).fillna({"data_fingerprint": ""})
    rows = zip(state["product_id"], state["status"], state["data_fingerprint"], strict=True)
    return WorkerResult(
        wall_s=wall_s,
        products=summary.products,
        models=summary.counts.get("registered", 0),
        counts=summary.counts,
        per_product_ms=summary.per_product_ms,
        shards=summary.shards,
        flow_run_id=summary.flow_run_id,
        flow_task_runs=summary.task_runs,
        flow_body_s=summary.wall_s,
        outcome_digest=outcome_digest((str(p), str(s), str(f)) for p, s, f in rows),
        code_fingerprint=code_fingerprint(),
        candidate_ms=summary.candidate_ms,
    )


def run_naive(job: Job) -> WorkerResult:
    """One Prefect task per product, each logging and registering its model with MLflow."""
    from naive_flow import run_naive_fleet

    return run_naive_fleet(job)


RUNNERS = {"raw": run_raw, "factory": run_factory, "naive": run_naive}


def main(job_path: Path, result_path: Path) -> None:
    """Run the job's mode and write what it measured."""
    job = Job.read(job_path)
    RUNNERS[job.mode](job).write(result_path)


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
