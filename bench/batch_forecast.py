"""Batch forecasts at training speed: the forecast-products flow against its raw limit.

    .venv/bin/python bench/batch_forecast.py --products 1000 [--shard-size 250] [--repeat 2]

Registers N products in a fresh FACTORY_HOME (SQLite store): a few trained for real on a
synthetic panel and cloned under distinct ids (bench/registry_throughput.py's `winners`), each
with its signature, staging v1 and its production copy; with --shadow-share, that share of the
products also gets a staging v2 (a shadow challenger, forecast too). Then each mode runs in
its own process with its own local Ray (started before the timer in both), on a snapshot of
factory/, tasks/ and flows/ taken at the start:

- raw: the same shards on Ray with no Prefect: resolve the serving versions in bulk, verify,
  load and forecast in the workers, write the parquet file and the forecast history;
- flow: `forecast_products_flow()` reporting to a `prefect server start` on a free loopback
  port (started here, stopped at the end);
- plain: what a user would otherwise write, `mlflow.pyfunc.load_model("models:/<name>@champion")`
  and `predict` product by product, on a sample (--plain-sample), extrapolated to N.

Prints flow/raw (best of --repeat runs each) and the workers' ms per model, and writes
bench/results/batch-forecast-<YYYYMMDD>.json (-<N> appended for N other than 1000).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path
from statistics import median
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # bench.registry_throughput: the trained clones

STRIPPED_ENV = ("FACTORY_", "PREFECT_", "MLFLOW_", "RAY_")
REGISTER_SHARD = 100


@dataclass
class ModeResult:
    """What one worker process measured."""

    mode: str
    wall_s: float  # the timed part only (Ray already up; imports outside)
    ray_start_s: float = 0.0
    products: int = 0  # products forecast (serving versions)
    models: int = 0  # versions forecast (serving + shadow)
    rows: int = 0
    shards: int = 0
    missing: int = 0
    worker_s: float = 0.0  # summed over the Ray tasks
    notes: str = ""
    load_avg: tuple[float, float] = (0.0, 0.0)  # 1-minute load average before and after

    @property
    def worker_ms_per_model(self) -> float:
        """Ray workers' time per version forecast (verify + load + forecast)."""
        return 1000 * self.worker_s / self.models if self.models else 0.0


# --- the worker process -----------------------------------------------------------------------


def run_raw(shard_size: int, out: str) -> ModeResult:
    """The same shards on Ray, no Prefect: bulk resolution, Ray tasks, parquet + history."""
    import ray

    from factory.adapters.fanout import ensure_ray
    from factory.adapters.forecasts import save_forecasts
    from factory.adapters.registry.registry import Registry
    from factory.serving.batch import StoreAccess, combine, resolve_models, submit_shard
    from factory.settings import get_settings

    settings = get_settings()
    registry = Registry(settings)
    t0 = time.perf_counter()
    ensure_ray(settings)
    ray_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    plan = resolve_models(registry)
    shards = plan.shards(shard_size)
    verifier, access = registry.verifier, StoreAccess.of(settings)
    batch = combine(plan, ray.get([submit_shard(s, 0, verifier, access) for s in shards]))
    report = save_forecasts(
        batch.frame, batch.missing, out, settings.resolved_forecasts_url, batch.shadow_missing
    )
    wall = time.perf_counter() - t0
    loaded = [m for m in ("prefect",) if m in sys.modules]
    if loaded:
        raise RuntimeError(f"the raw limit must not load {', '.join(loaded)}")
    return ModeResult(
        "raw",
        wall,
        ray_s,
        report.products,
        batch.models,
        report.rows,
        len(shards),
        len(report.missing),
        batch.worker_s,
    )


def run_flow(shard_size: int, out: str) -> ModeResult:
    """The forecast-products flow end to end (its shards are Prefect tasks calling Ray)."""
    from factory.adapters.fanout import ensure_ray
    from factory.settings import get_settings
    from flows.forecast_products import forecast_products_flow

    t0 = time.perf_counter()
    ensure_ray(get_settings())  # the flow then finds it running, as on a cluster
    ray_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    report = forecast_products_flow(None, None, out, shard_size=shard_size)
    wall = time.perf_counter() - t0
    return ModeResult(
        "flow",
        wall,
        ray_s,
        report.products,
        report.models,
        report.rows,
        -(-(report.products + len(report.missing)) // shard_size),
        len(report.missing),
        report.worker_s,
    )


def run_plain(sample: int) -> ModeResult:
    """MLflow's pyfunc, product by product, on the first `sample` products."""
    import mlflow
    import pandas as pd

    from factory.adapters.registry.registry import Registry
    from factory.settings import get_settings

    settings = get_settings()
    mlflow.set_tracking_uri(settings.tracking_uri)  # this process only: the plain pattern's way
    registry = Registry(settings)
    ids = sorted(registry.current_models("production"))[:sample]
    times = []
    for pid in ids:
        t0 = time.perf_counter()
        model = mlflow.pyfunc.load_model(f"models:/{registry.name('production', pid)}@champion")
        model.predict(pd.DataFrame({"h": [0]}))
        times.append(time.perf_counter() - t0)
    warm = times[1:] or times
    return ModeResult(
        "plain",
        sum(warm) / len(warm),
        products=len(ids),
        models=len(ids),
        notes=f"first (cold) load+predict {times[0]:.2f} s; wall_s is the mean of the others",
    )


def worker_main(argv: list[str]) -> None:
    """`--worker MODE RESULT.json SHARD_SIZE OUT|SAMPLE`: run one mode, write its result."""
    mode, result, size, extra = argv
    if mode == "raw":
        res = run_raw(int(size), extra)
    elif mode == "flow":
        res = run_flow(int(size), extra)
    else:
        res = run_plain(int(extra))
    Path(result).write_text(json.dumps(asdict(res)))


# --- the parent: registry, server, modes ------------------------------------------------------


def register(home: Path, n: int, shadow_share: float) -> tuple[float, int]:
    """N products with staging v1 and production v1 (signed); a share also gets staging v2.
    Returns the seconds it took and the number of shadow challengers."""
    from bench.registry_throughput import winners
    from factory.adapters.lineage import RunLineage
    from factory.adapters.registry.registry import Registry
    from factory.settings import Settings

    t0 = time.perf_counter()
    outcomes = winners(n)
    registry = Registry(Settings(home=home))
    lineage = RunLineage("f" * 64, "bench", "bench", "bench", "run", "")
    step = max(1, round(1 / shadow_share)) if shadow_share > 0 else 0
    challengers = outcomes[::step] if step else []
    rounds = [(outcomes, "k1", True), (challengers, "k2", False)]
    for batch, key, promote in rounds:
        for start in range(0, len(batch), REGISTER_SHARD):
            shard = batch[start : start + REGISTER_SHARD]
            keys = {o.product_id: f"{key}-{o.product_id}" for o in shard}
            registry.register_shard(f"{key}-{start}", shard, keys, lineage, promote)
    return time.perf_counter() - t0, len(challengers)


def worker_env(root: Path, home: Path, api: str | None) -> dict[str, str]:
    """This environment minus FACTORY_/PREFECT_/MLFLOW_/RAY_ settings, plus the mode's own."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(STRIPPED_ENV)}
    env.update(
        PYTHONPATH=os.pathsep.join((str(root / "code"), str(REPO))),
        FACTORY_HOME=str(home),
        PREFECT_HOME=str(root / "prefect-client"),
    )
    if api:
        env["PREFECT_API_URL"] = api
    return env


def run_mode(root: Path, key: str, args: list[str], env: dict[str, str]) -> ModeResult:
    """One mode in its own process (own Ray); its log under <root>/logs."""
    result, log = root / f"{key}.json", root / "logs" / f"{key}.log"
    log.parent.mkdir(exist_ok=True)
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--worker",
        args[0],
        str(result),
        *args[1:],
    ]
    before = os.getloadavg()[0]
    with log.open("wb") as out:
        code = subprocess.run(
            cmd, env=env, cwd=root, stdout=out, stderr=subprocess.STDOUT
        ).returncode
    if code:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-30:])
        raise RuntimeError(f"{key} exited with {code}; {log}:\n{tail}")
    res = ModeResult(**json.loads(result.read_text()))
    res.load_avg = (before, os.getloadavg()[0])
    print(
        f"  {key}: {res.wall_s:.2f} s, {res.products} products, {res.models} models,"
        f" {res.rows} rows, {res.shards} shards, {res.worker_ms_per_model:.2f} ms/model in"
        f" workers, Ray start {res.ray_start_s:.1f} s, load {res.load_avg[0]:.1f}->"
        f"{res.load_avg[1]:.1f} {res.notes}",
        flush=True,
    )
    return res


def best(runs: list[ModeResult]) -> ModeResult:
    return min(runs, key=lambda r: r.wall_s)


def summary(args: argparse.Namespace, runs: dict[str, list[ModeResult]], setup: dict) -> dict:
    """The JSON written: every run, the best of each mode, the ratios."""
    from factory.adapters.lineage import git_commit

    raw, flow = best(runs["raw"]), best(runs["flow"])
    out: dict[str, Any] = {
        "timestamp": datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ"),
        "products": args.products,
        "shard_size": args.shard_size,
        "repeat": args.repeat,
        **setup,
        "raw_s": raw.wall_s,
        "flow_s": flow.wall_s,
        "flow_over_raw": flow.wall_s / raw.wall_s,
        "flow_over_raw_median": median(r.wall_s for r in runs["flow"])
        / median(r.wall_s for r in runs["raw"]),
        "worker_ms_per_model": {"raw": raw.worker_ms_per_model, "flow": flow.worker_ms_per_model},
        "ms_per_product_wall": {
            "raw": 1000 * raw.wall_s / max(raw.products, 1),
            "flow": 1000 * flow.wall_s / max(flow.products, 1),
        },
        "runs": {k: [asdict(r) for r in v] for k, v in runs.items()},
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "versions": {p: version(p) for p in ("prefect", "mlflow", "ray", "lightgbm", "pandas")},
        "git_commit": git_commit(REPO),
        "definitions": {
            "raw_s/flow_s": "best of --repeat runs: resolution of the serving versions through the"
            " written parquet file and history; Ray started before the timer in both",
            "worker_ms_per_model": "summed time of the Ray tasks per version forecast (verify"
            " signature and digest, read payload, forecast the family horizon)",
        },
    }
    if runs.get("plain"):
        plain = runs["plain"][0]
        estimate = plain.wall_s * args.products
        out["plain"] = {
            "sample": plain.products,
            "s_per_product_warm": plain.wall_s,
            "estimated_s": estimate,
            "note": plain.notes,
        }
        out["plain_over_flow"] = estimate / flow.wall_s
    return out


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--products", type=int, default=1000, help="1000 (default) or 10000")
    parser.add_argument("--shard-size", type=int, default=250, help="products per Ray task")
    parser.add_argument("--repeat", type=int, default=3, help="runs of raw and flow (best kept)")
    parser.add_argument("--shadow-share", type=float, default=0.0, help="products with a shadow")
    parser.add_argument("--plain-sample", type=int, default=20, help="0: skip the plain mode")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results")
    parser.add_argument("--keep", action="store_true", help="keep the temp workspace")
    return parser.parse_args(argv)


def main(argv: list[str]) -> None:
    """Register, start Prefect, run the modes, print and write the figures."""
    from factory.local import free_port, start_prefect

    args = parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="factory-bench-batch-"))
    home = root / "factory"
    for package in ("factory", "tasks", "flows"):  # edits to the tree meanwhile change nothing
        shutil.copytree(
            REPO / package, root / "code" / package, ignore=shutil.ignore_patterns("__pycache__")
        )
    print(f"workspace {root}; registering {args.products} products", flush=True)
    try:
        register_s, shadows = register(home, args.products, args.shadow_share)
        print(f"  registered in {register_s:.1f} s ({shadows} shadow challengers)", flush=True)
        runs: dict[str, list[ModeResult]] = {"raw": [], "flow": [], "plain": []}
        server = start_prefect(root / "prefect-server", free_port())
        try:
            api = f"{server.url}/api"
            raw_env, flow_env = worker_env(root, home, None), worker_env(root, home, api)
            for i in range(args.repeat):
                for mode, env in (("raw", raw_env), ("flow", flow_env)):
                    out = str(root / f"out-{mode}-{i}")
                    runs[mode].append(
                        run_mode(root, f"{mode}-{i}", [mode, str(args.shard_size), out], env)
                    )
        finally:
            server.stop()
        if args.plain_sample:
            plain = ["plain", "0", str(args.plain_sample)]
            runs["plain"].append(run_mode(root, "plain", plain, raw_env))
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    setup = {"register_s": register_s, "shadow_products": shadows}
    report = summary(args, runs, setup)
    print(
        f"flow/raw {report['flow_over_raw']:.2f}"
        f" ({report['flow_s']:.2f} s / {report['raw_s']:.2f} s);"
        f" worker {report['worker_ms_per_model']['flow']:.2f} ms per model (flow),"
        f" {report['worker_ms_per_model']['raw']:.2f} (raw)"
        + (
            f"; plain pyfunc loop ~{report['plain']['estimated_s']:.0f} s"
            f" ({report['plain_over_flow']:.1f}x the flow)"
            if "plain" in report
            else ""
        )
    )
    args.out.mkdir(parents=True, exist_ok=True)
    suffix = "" if args.products == 1000 else f"-{args.products}"
    path = args.out / f"batch-forecast-{datetime.now(UTC):%Y%m%d}{suffix}.json"
    path.write_text(json.dumps(report, indent=2))
    print(f"wrote {path}")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        worker_main(sys.argv[2:])
    else:
        main(sys.argv[1:])
