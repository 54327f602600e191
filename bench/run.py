"""Benchmark the model factory against its raw limit and the naive one-task-per-product pattern.

    .venv/bin/python bench/run.py --products 1000 [--naive-products 100] [--out bench/results]

One panel (daily, 3 years, seeded, no defects, none discontinued) is written once; then each
mode runs in its own worker process (bench/worker.py) while a thread samples the memory and
CPU of that process tree: the raw limit (bare multiprocessing Pool), the train-fleet flow in
a fresh FACTORY_HOME, its skip-unchanged rerun, the naive pattern on a slice of the fleet, and
a rerun after the newest value of 1% of products changed. Prefect modes talk to one
`prefect server start` launched here on a free loopback port and stopped at the end.
All modes run a snapshot of factory/, tasks/ and flows/ taken at the start, so edits made to
the tree meanwhile neither mix code versions nor change the training keys between runs.
"""

from __future__ import annotations

import argparse
import functools
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
from procmem import TreePeak, TreeSampler, kill_tree
from rich.console import Console
from summary import (
    GIB,
    ModeRun,
    TaskSpan,
    build_report,
    factory_timeline,
    print_report,
    write_json,
)
from workload import Job, Mode, WorkerResult

from factory.adapters.data import write_panel
from factory.adapters.lineage import git_commit
from factory.core.fleet import load_fleet
from factory.core.synthetic import PanelSpec, generate_panel, product_ids
from factory.local import free_port, start_prefect

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
PANEL = PanelSpec(periods=3 * 365, seed=7, discontinued_fraction=0.0)
AS_OF = PANEL.end
CHANGED_FRACTION = 0.01
SAMPLE_S = 0.5
STRIPPED_ENV = ("FACTORY_", "PREFECT_", "MLFLOW_", "RAY_")
console = Console(width=None if sys.stdout.isatty() else 150)


class BenchError(RuntimeError):
    """A mode's worker failed; the message ends with the tail of its log."""


@dataclass(frozen=True)
class Workspace:
    """The temp folders of one benchmark run."""

    root: Path

    @property
    def code(self) -> Path:
        """Snapshot of factory/, tasks/ and flows/, first on every worker's PYTHONPATH."""
        return self.root / "code"

    @property
    def fleet(self) -> Path:
        """Copy of the repo's fleet.yaml."""
        return self.root / "fleet.yaml"

    @property
    def factory_home(self) -> Path:
        """FACTORY_HOME of the factory runs (its data folder is every mode's data)."""
        return self.root / "factory"

    @property
    def data_url(self) -> str:
        """The panel's folder."""
        return str(self.factory_home / "data")

    @property
    def naive_home(self) -> Path:
        """The naive mode's own MLflow store and working directory."""
        return self.root / "naive"

    @property
    def logs(self) -> Path:
        """One log per worker."""
        return self.root / "logs"


@dataclass(frozen=True)
class PrefectApi:
    """The REST API of the Prefect server the flows report to."""

    url: str
    pid: int

    def task_runs(self, flow_run_id: str) -> int:
        """Task runs created under one flow run."""
        body = {"flow_runs": {"id": {"any_": [flow_run_id]}}}
        resp = httpx.post(f"{self.url}/task_runs/count", json=body, timeout=60)
        resp.raise_for_status()
        return int(resp.json())

    def flow_run(self, flow_run_id: str) -> dict[str, Any]:
        """A flow run as the API returns it (state, start_time, end_time, ...)."""
        resp = httpx.get(f"{self.url}/flow_runs/{flow_run_id}", timeout=60)
        resp.raise_for_status()
        return dict(resp.json())

    def task_spans(self, flow_run_id: str, since: datetime) -> list[TaskSpan]:
        """Every finished task run of a flow run, in pages of 200 (the API's default limit)."""
        spans: list[TaskSpan] = []
        offset = 0
        while True:
            body = {"flow_runs": {"id": {"any_": [flow_run_id]}}, "limit": 200, "offset": offset}
            resp = httpx.post(f"{self.url}/task_runs/filter", json=body, timeout=60)
            resp.raise_for_status()
            page = resp.json()
            spans += [
                TaskSpan(
                    t["name"],
                    (datetime.fromisoformat(t["start_time"]) - since).total_seconds(),
                    (datetime.fromisoformat(t["end_time"]) - since).total_seconds(),
                )
                for t in page
                if t["start_time"] and t["end_time"]
            ]
            offset += len(page)
            if len(page) < 200:
                return spans


def create_workspace() -> Workspace:
    """Temp folders, the code snapshot and the fleet copy."""
    ws = Workspace(Path(tempfile.mkdtemp(prefix="factory-bench-")))
    for package in ("factory", "tasks", "flows"):
        ignore = shutil.ignore_patterns("__pycache__")
        shutil.copytree(REPO / package, ws.code / package, ignore=ignore)
    shutil.copy2(REPO / "fleet.yaml", ws.fleet)
    for folder in (ws.factory_home, ws.naive_home, ws.logs):
        folder.mkdir(parents=True)
    return ws


def make_panel(products: int) -> pd.DataFrame:
    """The one panel every mode trains on."""
    return generate_panel(replace(PANEL, n_products=products)).frame


def change_newest(frame: pd.DataFrame, fraction: float) -> tuple[pd.DataFrame, list[str]]:
    """Correct the newest value (y + 5) of an evenly spread `fraction` of the products."""
    ids = sorted(frame["unique_id"].unique())
    k = max(1, round(len(ids) * fraction))
    changed = ids[:: len(ids) // k][:k]
    frame = frame.copy()
    newest = frame["unique_id"].isin(changed) & (frame["ds"] == frame["ds"].max())
    frame.loc[newest, "y"] += 5.0
    return frame, changed


def worker_env(ws: Workspace, commit: str, home: Path, api: PrefectApi | None) -> dict[str, str]:
    """This environment minus any FACTORY_/PREFECT_/MLFLOW_/RAY_ setting, plus the mode's own."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(STRIPPED_ENV)}
    env.update(
        PYTHONPATH=str(ws.code),
        FACTORY_HOME=str(home),
        FACTORY_AS_OF=AS_OF,
        FACTORY_GIT_COMMIT=commit,
        PREFECT_HOME=str(ws.root / "prefect-client"),
    )
    if api is not None:
        env["PREFECT_API_URL"] = api.url
    return env


def log_tail(path: Path, lines: int = 40) -> str:
    """The last lines of a log."""
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


@dataclass(frozen=True)
class WorkerRun:
    """A finished worker: its own result and what the parent measured around it."""

    result: WorkerResult
    process_s: float
    peak: TreePeak
    cpu_s: float
    cpu_rusage_s: float
    server_cpu_s: float


@dataclass
class Bench:
    """One benchmark run: its workspace, options and the modes run so far."""

    ws: Workspace
    args: argparse.Namespace
    commit: str
    runs: dict[str, ModeRun] = field(default_factory=dict)

    def job(self, mode: Mode, **extra: Any) -> Job:
        """A job on the workspace's fleet and data."""
        return Job(mode, str(self.ws.fleet), self.ws.data_url, AS_OF, **extra)

    def run(
        self,
        key: str,
        label: str,
        job: Job,
        env: dict[str, str],
        api: PrefectApi | None,
        cwd: Path | None = None,
    ) -> ModeRun:
        """Run a mode, read its Prefect task runs from the API, and print one line about it."""
        console.print(f"[bold]{label}[/]: running (log: {self.ws.logs / key}.log)")
        before = os.getloadavg()[0]
        w = self.worker(key, job, env, cwd or self.ws.root, api)
        flow_run = w.result.flow_run_id
        task_runs, state, timeline = 0, None, {}
        if api and flow_run:
            task_runs = api.task_runs(flow_run)
            info = api.flow_run(flow_run)
            state = info["state"]["name"]
            if job.mode == "factory":
                timeline = self.timeline(api, flow_run, info)
        load = (before, os.getloadavg()[0])
        run = ModeRun(
            key=key,
            label=label,
            result=w.result,
            process_s=w.process_s,
            peak=w.peak,
            cpu_s=w.cpu_s,
            cpu_rusage_s=w.cpu_rusage_s,
            server_cpu_s=w.server_cpu_s,
            task_runs=task_runs,
            flow_state=state,
            load_avg=load,
            timeline=timeline,
        )
        self.runs[key] = run
        console.print(
            f"  {w.result.wall_s:.1f} s wall ({w.process_s:.1f} s process,"
            f" {w.cpu_s + w.server_cpu_s:.0f} CPU s), {w.result.counts},"
            f" peak RSS {w.peak.rss_bytes / GIB:.2f} GiB, {task_runs} task runs"
        )
        return run

    def timeline(self, api: PrefectApi, flow_run: str, info: dict[str, Any]) -> dict[str, float]:
        """Where a train-fleet run's time went, from its task runs' start and end times."""
        start = datetime.fromisoformat(info["start_time"])
        flow_s = (datetime.fromisoformat(info["end_time"]) - start).total_seconds()
        shard_size = load_fleet(self.ws.fleet).spec.shard_size
        return factory_timeline(api.task_spans(flow_run, start), flow_s, shard_size)

    def worker(
        self, key: str, job: Job, env: dict[str, str], cwd: Path, api: PrefectApi | None
    ) -> WorkerRun:
        """Run one worker, sampling its process tree (and the Prefect server's) until it exits.

        Past --memory-limit-gib the worker's tree is killed, so a runaway mode cannot take
        the (shared) machine down with it.
        """
        job_path = job.write(self.ws.root / f"{key}.job.json")
        result_path, log = self.ws.root / f"{key}.result.json", self.ws.logs / f"{key}.log"
        cmd = [sys.executable, str(BENCH / "worker.py"), str(job_path), str(result_path)]
        limit = int(self.args.memory_limit_gib * GIB)
        t0 = time.perf_counter()
        with log.open("wb") as out:
            proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT)
            roots = {key: proc.pid, **({"prefect-server": api.pid} if api else {})}
            kill = functools.partial(kill_tree, proc.pid)
            with TreeSampler(roots, SAMPLE_S, limit, kill) as peak:
                _, status, usage = os.wait4(proc.pid, 0)  # rusage: its reaped descendants too
                proc.returncode = code = os.waitstatus_to_exitcode(status)
        process_s = time.perf_counter() - t0
        if peak.exceeded_limit:
            raise BenchError(f"{key} passed --memory-limit-gib {self.args.memory_limit_gib}")
        if code:
            raise BenchError(f"{key} worker exited with {code}; {log}:\n{log_tail(log)}")
        rusage_cpu = usage.ru_utime + usage.ru_stime
        cpu = max(rusage_cpu, peak.root_cpu_s[key])  # both undercount; see metadata()
        server_cpu = peak.root_cpu_s.get("prefect-server", 0.0)
        return WorkerRun(
            WorkerResult.read(result_path), process_s, peak, cpu, rusage_cpu, server_cpu
        )


@contextmanager
def prefect_server(ws: Workspace) -> Iterator[PrefectApi]:
    """`prefect server start` (SQLite in the workspace) on a free loopback port, stopped after."""
    console.print("starting a Prefect server")
    server = start_prefect(ws.root / "prefect-server", free_port())
    try:
        yield PrefectApi(f"{server.url}/api", server.pid)
    finally:
        server.stop()


def run_modes(bench: Bench) -> list[str]:
    """Every mode in order; returns the products whose data changed before the last rerun."""
    ws, args = bench.ws, bench.args
    panel = make_panel(args.products)
    write_panel(panel, ws.data_url)
    raw_env = worker_env(ws, bench.commit, ws.factory_home, None)
    bench.run("raw", "raw limit", bench.job("raw"), raw_env, None)
    with prefect_server(ws) as api:
        env = worker_env(ws, bench.commit, ws.factory_home, api)
        bench.run("factory", "factory", bench.job("factory"), env, api)
        bench.run("rerun", "factory rerun, unchanged", bench.job("factory"), env, api)
        naive_env = worker_env(ws, bench.commit, ws.naive_home, api)
        if args.naive_threads:
            naive_env["PREFECT_TASKS_RUNNER_THREAD_POOL_MAX_WORKERS"] = str(args.naive_threads)
        naive = bench.job(
            "naive",
            products=product_ids(args.products)[: args.naive_products],
            tracking_uri=f"sqlite:///{ws.naive_home / 'mlflow.db'}",
        )
        bench.run("naive", "naive", naive, naive_env, api, ws.naive_home)
        changed_panel, changed = change_newest(panel, CHANGED_FRACTION)
        write_panel(changed_panel, ws.data_url)
        label = f"factory rerun, {len(changed)} changed"
        bench.run("rerun_changed", label, bench.job("factory"), env, api)
    return changed


def metadata(args: argparse.Namespace, ws: Workspace, commit: str) -> dict[str, Any]:
    """What was run, where, on which versions."""
    packages = ("prefect", "mlflow", "ray", "lightgbm", "scikit-learn", "pandas", "numpy")
    return {
        "timestamp": datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ"),
        "products": args.products,
        "naive_products": args.naive_products,
        "naive_threads": args.naive_threads or "Prefect default (unbounded)",
        "memory_limit_gib": args.memory_limit_gib,
        "periods": PANEL.periods,
        "panel": {**asdict(PANEL), "n_products": args.products},
        "as_of": AS_OF,
        "fleet_sha256": load_fleet(ws.fleet).sha256,
        "shard_size": load_fleet(ws.fleet).spec.shard_size,
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "versions": {p: version(p) for p in packages},
        "git_commit": commit,
        "memory_method": (
            f"every {SAMPLE_S}s: sum of RSS (and PSS) from /proc/<pid>/smaps_rollup over the"
            " worker's process tree (children found via /proc/*/stat ppid) plus, for Prefect"
            " modes, the Prefect server's tree"
        ),
        "wall_definition": "the timed call inside the worker (train_fleet(), the naive flow,"
        " or read+validate+Pool for raw); process_s is the worker's whole life",
        "models_per_s_definition": "fleet products handled per wall second",
        "cpu_definition": "user+system CPU of the worker's tree, the larger of two lower bounds:"
        " os.wait4 rusage (misses processes the kernel auto-reaps, such as Ray's workers) and"
        " the per-process CPU sampled from /proc (misses each process's last < 0.5 s); plus the"
        " Prefect server's CPU meanwhile. Steadier than wall time on a shared machine",
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--products", type=int, default=1000, help="fleet size (default 1000)")
    parser.add_argument(
        "--naive-products", type=int, default=100, help="products the naive mode runs on"
    )
    parser.add_argument("--out", type=Path, default=BENCH / "results", help="JSON folder")
    parser.add_argument(
        "--naive-threads",
        type=int,
        default=16,
        help="cap on the naive flow's default ThreadPoolTaskRunner (PREFECT_TASKS_RUNNER_THREAD_"
        "POOL_MAX_WORKERS); 0 keeps Prefect's default, one thread per task: each default MLflow"
        " log_model then runs its own ~200 MB requirement-inference process at the same time",
    )
    parser.add_argument(
        "--memory-limit-gib",
        type=float,
        default=12.0,
        help="kill a mode whose process tree passes this summed RSS (default 12)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the temp workspace")
    args = parser.parse_args(argv)
    if not 0 < args.naive_products <= args.products or args.products < 50:
        parser.error("need --products >= 50 and 0 < --naive-products <= --products")
    return args


def main(argv: list[str] | None = None) -> None:
    """Run every mode, print the tables and write the JSON."""
    args = parse_args(argv)
    ws = create_workspace()
    commit = git_commit(REPO)
    meta = metadata(args, ws, commit)
    console.print(f"workspace {ws.root}; {args.products} products, {os.cpu_count()} cores")
    bench, keep = Bench(ws, args, commit), args.keep
    try:
        changed = run_modes(bench)
    except BaseException:
        keep = True
        raise
    finally:
        if keep:
            console.print(f"workspace kept: {ws.root}")
        else:
            shutil.rmtree(ws.root, ignore_errors=True)
    report = build_report(meta, bench.runs, len(changed))
    print_report(console, report)
    for path in write_json(report, args.out):
        console.print(f"wrote {path}")


if __name__ == "__main__":
    main()
