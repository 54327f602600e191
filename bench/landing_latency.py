"""Latency from a file landing to new model versions registered, on real parts.

Starts `prefect server start` (SQLite, free loopback port), `prefect deploy --all` of
deployments/prefect.yaml, and `prefect worker start` (default polling unless --query-seconds),
trains a synthetic fleet once with train-fleet/nightly, starts watch-landing/poll, then drops
files that each add one new day for the same 10 products. For every drop it records when the
file landed, when factory.data.landed was emitted, when the triggered retrain-products run was
created, picked up by the worker (PENDING), running and completed, and when the last of the
products' new production versions was registered. Prints the samples and p50 and writes JSON to
bench/results/.

    .venv/bin/python bench/landing_latency.py                 # default worker polling (10 s)
    .venv/bin/python bench/landing_latency.py --query-seconds 1 --label fast-poll
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from uuid import UUID

import pandas as pd
from mlflow import MlflowClient
from prefect.client.schemas.objects import FlowRun, StateType

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from factory.adapters.data import write_panel
from factory.core.synthetic import PanelSpec, generate_panel
from factory.local import free_port, start_prefect
from tests.support.prefect_api import PrefectApi
from tests.support.processes import stop_tree
from tests.support.ray_cluster import start_ray_cluster

BIN = Path(sys.executable).parent
AS_OF = "2026-11-22"
HISTORY_END = pd.Timestamp("2026-10-31")


@dataclass
class Sample:
    """One drop and when each step after it happened (seconds after the file landed)."""

    drop: int
    products: int
    registered: int
    event_s: float
    run_created_s: float
    run_pending_s: float
    run_running_s: float
    run_completed_s: float
    registered_s: float
    load1: float  # 1-minute load average when the file landed (2 cores: > 2 means contention)


class Api(PrefectApi):
    """The factory's Prefect calls, plus when a flow run entered each state."""

    def states(self, run_id: UUID) -> dict[StateType, float]:
        """First time (epoch seconds) the run entered each state type."""
        out: dict[StateType, float] = {}
        for s in sorted(self.client.read_flow_run_states(run_id), key=lambda s: s.timestamp):
            out.setdefault(s.type, s.timestamp.timestamp())
        return out


def wait(what: str, check: Any, timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := check():
            return value
        time.sleep(0.25)
    raise TimeoutError(f"{what} did not happen within {timeout:.0f}s")


def cli(args: list[str], env: dict[str, str]) -> None:
    done = subprocess.run(
        [str(BIN / args[0]), *args[1:]], cwd=REPO, env=env, capture_output=True, text=True
    )
    if done.returncode:
        raise RuntimeError(f"{args}: {done.stdout[-2000:]}{done.stderr[-2000:]}")


def production_versions(client: MlflowClient) -> dict[tuple[str, str], tuple[str, int]]:
    """(model, version) -> (product, creation ms) of every production version."""
    return {
        (v.name, str(v.version)): (v.tags.get("factory.product_id", ""), int(v.creation_timestamp))
        for v in client.search_model_versions(
            "name LIKE 'factory.production.%'", max_results=50_000
        )
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--products", type=int, default=200, help="fleet size (history)")
    parser.add_argument("--affected", type=int, default=10, help="products per dropped file")
    parser.add_argument("--drops", type=int, default=6)
    parser.add_argument("--query-seconds", type=float, default=None, help="worker polling")
    parser.add_argument(
        "--ray-head", action="store_true", help="start a Ray head once; flows join it by address"
    )
    parser.add_argument("--label", default="default")
    parser.add_argument("--keep", action="store_true", help="keep the temp folder")
    args = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="factory-latency-"))
    home = root / "factory"
    full = generate_panel(PanelSpec(n_products=args.products, seed=7, end="2026-11-20")).frame
    write_panel(full[full["ds"] <= HISTORY_END], str(home / "data"))

    server = start_prefect(root, free_port())
    api_url = f"{server.url}/api"
    base = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "FACTORY_"))}
    env = {
        **base,
        "PATH": f"{BIN}{os.pathsep}{base.get('PATH', '')}",
        "PREFECT_API_URL": api_url,
        "PREFECT_HOME": str(root / "prefect-client"),
        "FACTORY_PROJECT_DIR": str(REPO),
    }
    worker_env = {**env, "FACTORY_HOME": str(home), "FACTORY_AS_OF": AS_OF}
    if args.query_seconds is not None:
        worker_env["PREFECT_WORKER_QUERY_SECONDS"] = str(args.query_seconds)
    worker_pid, cluster = None, None
    try:
        if args.ray_head:
            cluster = start_ray_cluster(root / "ray", nodes=1, cpus_per_node=2)
            worker_env |= {**cluster.env(), "FACTORY_RAY_ADDRESS": cluster.address}
        cli(["prefect", "work-pool", "create", "factory", "--type", "process"], env)
        cli(
            [
                "prefect",
                "--no-prompt",
                "deploy",
                "--all",
                "--prefect-file",
                "deployments/prefect.yaml",
            ],
            env,
        )
        with (root / "worker.log").open("wb") as log:
            worker_pid = subprocess.Popen(
                [str(BIN / "prefect"), "worker", "start", "--pool", "factory"],
                cwd=REPO,
                env=worker_env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            ).pid
        with Api(api_url) as api:
            samples = measure(api, home, full, args)
        time.sleep(5)  # let the last flow-run process shut its Ray down
    finally:
        if worker_pid:
            stop_tree(worker_pid)
        if cluster:
            cluster.stop()
        stop_tree(server.pid)
        print(f"logs: {root}" if args.keep else "", end="")
        if not args.keep:
            import shutil

            shutil.rmtree(root, ignore_errors=True)
    report(samples, args)


def measure(api: Api, home: Path, full: pd.DataFrame, args: argparse.Namespace) -> list[Sample]:
    """Train once, start the watcher, then drop files and time each one."""
    print(f"training {args.products} products once (train-fleet/nightly)...", flush=True)
    nightly = api.run("train-fleet/nightly")
    wait(
        "the first training",
        lambda: api.client.read_flow_run(nightly).state_type == StateType.COMPLETED,
        900,
    )
    uri = f"sqlite:///{home / 'mlflow.db'}"
    client = MlflowClient(uri, registry_uri=uri)
    served = sorted({pid for pid, _ in production_versions(client).values()})
    chosen = served[: args.affected]
    print(f"{len(served)} products in production; dropping files for {chosen}", flush=True)
    api.run("watch-landing/poll", run_for_seconds=3600)
    wait(
        "the watcher",
        lambda: any(r.state_type == StateType.RUNNING for r in api.runs("watch-landing/poll")),
        120,
    )
    rng = random.Random(0)
    samples = []
    days = full.loc[full["ds"] > HISTORY_END, "ds"].drop_duplicates().sort_values()
    for i, day in enumerate(days[: args.drops], start=1):
        time.sleep(rng.uniform(0, 10))  # land at a random phase of the worker's polling
        before = production_versions(client)
        known_runs = {r.id for r in api.runs("retrain-products/on-data")}
        rows = full[full["unique_id"].isin(chosen) & (full["ds"] == day)]
        tmp = home / "landing" / f".drop-{i}.part"
        tmp.parent.mkdir(parents=True, exist_ok=True)
        rows.to_parquet(tmp)
        tmp.rename(home / "landing" / f"drop-{i}.parquet")
        landed = time.time()
        load1 = os.getloadavg()[0]
        run: FlowRun = wait(
            "the retrain run", lambda known=known_runs: finished_run(api, known), 300
        )
        after = production_versions(client)
        new = [
            created for key, (pid, created) in after.items() if key not in before and pid in chosen
        ]
        states = api.states(run.id)
        event = max(e.occurred.timestamp() for e in api.events("factory.data.landed"))
        assert run.created is not None and run.state_type is not None
        sample = Sample(
            drop=i,
            products=len(chosen),
            registered=len(new),
            event_s=event - landed,
            run_created_s=run.created.timestamp() - landed,
            run_pending_s=states.get(StateType.PENDING, float("nan")) - landed,
            run_running_s=states.get(StateType.RUNNING, float("nan")) - landed,
            run_completed_s=states.get(run.state_type, float("nan")) - landed,
            registered_s=(max(new) / 1000 - landed) if new else float("nan"),
            load1=load1,
        )
        samples.append(sample)
        print(
            f"drop {i}: {sample.registered}/{sample.products} new versions in "
            f"{sample.registered_s:.1f}s (event {sample.event_s:.1f}s, run created "
            f"{sample.run_created_s:.1f}s, worker picked up {sample.run_pending_s:.1f}s, "
            f"running {sample.run_running_s:.1f}s, done {sample.run_completed_s:.1f}s; "
            f"load {load1:.1f})",
            flush=True,
        )
    return samples


def finished_run(api: Api, known: set[UUID]) -> FlowRun | None:
    """A retrain-products run that is not in `known` and has ended."""
    ended = (StateType.COMPLETED, StateType.FAILED, StateType.CRASHED)
    runs = api.runs("retrain-products/on-data")
    return next((r for r in runs if r.id not in known and r.state_type in ended), None)


def report(samples: list[Sample], args: argparse.Namespace) -> None:
    """p50 of each step and the JSON record."""

    def p50(field: str) -> float:
        return statistics.median(getattr(s, field) for s in samples)

    steps = {
        "detect + ingest + emit (landed -> event)": p50("event_s"),
        "automation (event -> run created)": p50("run_created_s") - p50("event_s"),
        "worker polling (created -> PENDING)": p50("run_pending_s") - p50("run_created_s"),
        "flow process start (PENDING -> RUNNING)": p50("run_running_s") - p50("run_pending_s"),
        "retrain run (RUNNING -> last version)": p50("registered_s") - p50("run_running_s"),
    }
    print(f"\np50 landing -> {args.affected} new versions registered: {p50('registered_s'):.1f}s")
    for name, value in steps.items():
        print(f"  {name:45} {value:5.1f}s")
    out = REPO / "bench" / "results" / f"landing_latency-{args.label}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    record = {
        "label": args.label,
        "p50_registered_s": p50("registered_s"),
        "p50_steps_s": steps,
        "samples": [asdict(s) for s in samples],
        "settings": {
            "products": args.products,
            "affected": args.affected,
            "drops": args.drops,
            "worker_query_seconds": args.query_seconds or 10.0,
            "watcher_poll_seconds": 2,
            "ray": "one Ray head, joined by address" if args.ray_head else "local Ray per flow run",
            "cpus": os.cpu_count(),
            "machine": platform.platform(),
        },
    }
    out.write_text(json.dumps(record, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
