"""Registry write throughput: the factory's registry path on SQLite vs an MLflow server.

    .venv/bin/python bench/registry_throughput.py --models 400 --threads 1 4

Trains a few real products once, then registers N model versions (clones under distinct
product ids, promotion on) in shards of 50 with K concurrent writers, against (a) a local
SQLite store, (b) PostgreSQL as the factory's own store (`FACTORY_MLFLOW_TRACKING_URI=
postgresql://...`: one transaction per shard) and (c) `mlflow server` on PostgreSQL with 4
workers (the REST API: one call per write). Prints models/s and
HTTP-level writes/s (each model = staging version + alias + tag, production copy + alias +
tag, plus its share of the shard run, metrics and artifact upload).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pandas as pd

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # tests.support: the temporary PostgreSQL database

from factory.adapters.lineage import RunLineage
from factory.adapters.registry.registry import Registry
from factory.core.contract import fleet_series, validate_panel
from factory.core.fleet import load_fleet
from factory.core.synthetic import PanelSpec, generate_panel
from factory.core.training import ProductOutcome, train_many
from factory.local import free_port, start_mlflow
from factory.settings import Settings
from tests.support.postgres import temporary_database

WRITES_PER_MODEL = 6  # 2 versions, 2 aliases, 2 current-tags


def winners(n: int) -> list[ProductOutcome]:
    """N registrable outcomes: a few trained for real, cloned under distinct product ids."""
    fleet = load_fleet(REPO / "fleet.yaml").spec
    panel = generate_panel(PanelSpec(n_products=20, seed=3)).frame
    clean, report = validate_panel(panel, fleet, pd.Timestamp("2026-11-22"))
    family = fleet.families[1]
    series = fleet_series(clean, fleet, {family.name: report.assignment[family.name]})
    trained = [o for o in train_many(list(series.items()), family, fleet.gate, {}) if o.payload]
    return [
        dataclasses.replace(trained[i % len(trained)], product_id=f"bench-{i:06d}")
        for i in range(n)
    ]


def register_all(settings: Settings, outcomes: list[ProductOutcome], threads: int) -> float:
    """Seconds to register every outcome in shards of 50 with `threads` concurrent shards."""
    registry = Registry(settings.model_copy(update={"registry_threads": threads}))
    registry.experiment_id  # noqa: B018 - create the experiment outside the timing
    lineage = RunLineage("f" * 64, "bench", "bench", "bench", "run", "")
    shards = [outcomes[i : i + 50] for i in range(0, len(outcomes), 50)]
    t0 = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        list(
            pool.map(
                lambda kv: registry.register_shard(
                    f"s{kv[0]}",
                    kv[1],
                    {o.product_id: f"k-{o.product_id}" for o in kv[1]},
                    lineage,
                    True,
                ),
                enumerate(shards),
            )
        )
    return time.perf_counter() - t0


def postgres_server(home: Path, database: str) -> Any:
    """An MLflow server on a PostgreSQL database (4 workers)."""
    backend = f"postgresql+psycopg2://root@127.0.0.1:5432/{database}"
    return start_mlflow(home, free_port(), backend, str(home / "art"), workers=4)


def main() -> None:
    """Measure and print models/s and writes/s per backend and writer count."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", type=int, default=400)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 4])
    args = parser.parse_args()
    outcomes = winners(args.models)
    results = []
    for threads in args.threads:
        home = Path(tempfile.mkdtemp(prefix="bench-reg-"))
        sqlite = Settings(home=home, registry_threads=threads)
        if threads == 1:  # SQLite takes one writer; more threads would only queue on its lock
            results.append(("sqlite (local store)", threads, register_all(sqlite, outcomes, 1)))
        with temporary_database("factory_bench") as db:  # the flows' process talks to it
            uri = f"postgresql+psycopg2://root@127.0.0.1:5432/{db}"
            pg = Settings(home=home, mlflow_tracking_uri=uri, artifact_location=str(home / "a"))
            results.append(
                ("postgresql (direct store)", threads, register_all(pg, outcomes, threads))
            )
        with temporary_database("factory_bench") as db:
            server = postgres_server(home, db)
            try:
                remote = Settings(
                    home=home, mlflow_tracking_uri=server.url, registry_threads=threads
                )
                prefix = {"model_prefix": f"t{threads}"}
                secs = register_all(remote.model_copy(update=prefix), outcomes, threads)
                results.append(("mlflow server + postgres (4 workers)", threads, secs))
            finally:
                server.stop()
    print("| backend | writers | models | seconds | models/s | registry writes/s |")
    print("|---|---|---|---|---|---|")
    rows = []
    for backend, threads, secs in results:
        rate = args.models / secs
        rows.append({"backend": backend, "writers": threads, "seconds": secs, "models_per_s": rate})
        print(
            f"| {backend} | {threads} | {args.models} | {secs:.1f} | {rate:.1f} |"
            f" {rate * WRITES_PER_MODEL:.0f} |"
        )
    out = REPO / "bench" / "results" / "registry-throughput.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
