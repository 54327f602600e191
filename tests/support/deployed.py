"""The factory deployed on real parts for end-to-end tests: `prefect server start` (SQLite, a free
loopback port), `prefect deploy` of deployments/prefect.yaml and a process worker running the
flows from this checkout with its own factory home; all stopped on exit, including the flow-run
processes the worker started.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from uuid import UUID

from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from prefect.client.schemas.objects import FlowRun, StateType
from prefect.states import Cancelling

from factory.adapters.registry.names import (
    CANDIDATE_ALIAS,
    CHAMPION_ALIAS,
    ENVIRONMENT_TAG,
    PRODUCT_TAG,
    PRODUCTION,
)
from factory.local import Service, free_port, start_prefect, stop_pid
from tests.support.fleets import AS_OF, REPO
from tests.support.prefect_api import PrefectApi
from tests.support.processes import stop_tree

BIN = Path(sys.executable).parent
POOL = "factory"
PROMOTE = "promote-fleet/on-trained"
TERMINAL = {StateType.COMPLETED, StateType.FAILED, StateType.CRASHED, StateType.CANCELLED}
SETTLED = TERMINAL | {StateType.PAUSED}  # a promote-fleet run suspended for approval waits


class Stack(PrefectApi):
    """A Prefect server with the factory's deployments and a worker on the work pool."""

    def __init__(self, server: Service, env: dict[str, str], home: Path, worker_log: Path):
        super().__init__(f"{server.url}/api")
        self.server, self.env, self.home, self.worker_log = server, env, home, worker_log

    def log_tail(self, n: int = 60) -> str:
        if not self.worker_log.exists():
            return ""
        lines = self.worker_log.read_text(errors="replace").splitlines()
        return "\n".join(lines[-n:])

    def wait(self, what: str, check: Callable[[], Any], timeout: float) -> Any:
        """Poll until `check()` is truthy; fail with the worker's log after `timeout` s."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = check()
            if value:
                return value
            time.sleep(1)
        raise AssertionError(
            f"timed out after {timeout:.0f}s waiting for {what}\n{self.log_tail()}"
        )

    def settled(self, run_id: UUID, timeout: float = 150) -> FlowRun:
        """Wait for a flow run to end or to be suspended; the run as it is then."""
        return self.wait(
            f"flow run {run_id}",
            lambda: (r := self.client.read_flow_run(run_id)).state_type in SETTLED and r,
            timeout,
        )

    def finished(self, run_id: UUID, timeout: float = 150) -> FlowRun:
        """Wait for a flow run to end; it must have completed."""
        run = self.settled(run_id, timeout)
        assert run.state_type == StateType.COMPLETED, f"{run.state}\n{self.log_tail()}"
        return run

    def promotions_since(self, started: FlowRun, timeout: float = 120) -> list[FlowRun]:
        """The promote-fleet/on-trained runs created since `started` began (a train run, or a
        retrain whose train-fleet subflow emits factory.fleet.trained), once one exists and
        all have ended or been suspended; oldest first."""
        since = started.start_time
        assert since is not None, f"run {started.id} never started"

        def settled() -> list[FlowRun] | None:
            runs = [r for r in self.runs(PROMOTE) if r.created and r.created >= since]
            return runs if runs and all(r.state_type in SETTLED for r in runs) else None

        runs: list[FlowRun] = self.wait(f"{PROMOTE} after run {started.id}", settled, timeout)
        return sorted(runs, key=lambda r: r.created or since)


def is_suspended(run: FlowRun) -> bool:
    """Suspended for input (the worker's process has exited), not merely paused in process."""
    return run.state_type == StateType.PAUSED and run.state_name == "Suspended"


def train_nightly(stack: Stack) -> FlowRun:
    """Run train-fleet/nightly now and wait for it and for the promote-fleet run its
    factory.fleet.trained event starts; both must complete (first models: no approval)."""
    trained = stack.finished(stack.run("train-fleet/nightly"), timeout=180)
    (promoted,) = stack.promotions_since(trained)
    assert promoted.state_type == StateType.COMPLETED, f"{promoted.state}\n{stack.log_tail()}"
    return trained


def cli(args: list[str], env: dict[str, str]) -> str:
    """Run a console command from the repository root; it must succeed."""
    done = subprocess.run(
        [str(BIN / args[0]), *args[1:]],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, f"{args}: {done.stdout[-2000:]}\n{done.stderr[-3000:]}"
    return done.stdout


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without Prefect or factory settings, plus `extra`."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "FACTORY_"))}
    base["PATH"] = f"{BIN}{os.pathsep}{base.get('PATH', '')}"  # `python` is the venv's
    return {**base, **extra}


@contextlib.contextmanager
def deployed(tmp_path: Path) -> Iterator[tuple[Service, dict[str, str]]]:
    """A server with the work pool and every deployment of deployments/prefect.yaml."""
    server = start_prefect(tmp_path, free_port())
    try:
        env = clean_env(
            PREFECT_API_URL=f"{server.url}/api",
            PREFECT_HOME=str(tmp_path / "prefect-client"),
            PREFECT_SERVER_ANALYTICS_ENABLED="false",
            FACTORY_PROJECT_DIR=str(REPO),
        )
        cli(["prefect", "work-pool", "create", POOL, "--type", "process"], env)
        deploy = ["prefect", "--no-prompt", "deploy", "--all"]
        cli([*deploy, "--prefect-file", "deployments/prefect.yaml"], env)
        yield server, env
    finally:
        stop_pid(server.pid)


@contextlib.contextmanager
def worker_stack(tmp_path: Path) -> Iterator[Stack]:
    """Server + work pool + `prefect deploy --all` + a worker with FACTORY_HOME in `tmp_path`."""
    home = tmp_path / "factory"
    worker: subprocess.Popen | None = None
    with deployed(tmp_path) as (server, env):
        try:
            log = tmp_path / "worker.log"
            worker_env = {
                **env,
                "FACTORY_HOME": str(home),
                "FACTORY_AS_OF": AS_OF,
                "PREFECT_WORKER_QUERY_SECONDS": "1",
            }
            command = ["worker", "start", "--pool", POOL, "--name", tmp_path.name]
            with log.open("wb") as out:
                worker = subprocess.Popen(
                    [str(BIN / "prefect"), *command],
                    cwd=REPO,
                    env=worker_env,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            with Stack(server, env, home, log) as stack:
                stack.wait(
                    "the worker to register",
                    lambda: stack.client.read_workers_for_work_pool(POOL),
                    60,
                )
                yield stack
                for run in stack.client.read_flow_runs():  # cancel what still runs (the watcher)
                    if run.state_type in (StateType.RUNNING, StateType.PENDING):
                        stack.client.set_flow_run_state(run.id, Cancelling(), force=True)
        finally:
            if worker is not None:
                stop_tree(worker.pid)


def registry(home: Path) -> MlflowClient:
    """The worker's MLflow store (registry URI explicit: other tests set a process-wide one)."""
    uri = f"sqlite:///{home / 'mlflow.db'}"
    return MlflowClient(uri, registry_uri=uri)


def versions(home: Path) -> dict[tuple[str, str], dict[str, str]]:
    """(model name, version) -> tags, for every version in the factory's registry."""
    return {
        (v.name, str(v.version)): dict(v.tags)
        for v in registry(home).search_model_versions(max_results=10_000)
    }


def served(home: Path, environment: str = PRODUCTION) -> dict[str, ModelVersion]:
    """product -> the version an environment serves (production @champion, staging @candidate)."""
    client = registry(home)
    alias = CHAMPION_ALIAS if environment == PRODUCTION else CANDIDATE_ALIAS
    return {
        m.tags[PRODUCT_TAG]: client.get_model_version_by_alias(m.name, alias)
        for m in client.search_registered_models(max_results=1000)
        if m.tags.get(ENVIRONMENT_TAG) == environment and alias in m.aliases
    }


def champions(home: Path) -> dict[str, int]:
    """product -> the version production's `@champion` points at."""
    return {pid: int(v.version) for pid, v in served(home).items()}


def models_in(home: Path, environment: str) -> set[str]:
    """Names of the registered models of one environment (staging or production)."""
    found = registry(home).search_registered_models(max_results=1000)
    return {m.name for m in found if m.tags.get(ENVIRONMENT_TAG) == environment}


def finished(stack: Stack, deployment: str) -> list[FlowRun]:
    """Runs of a deployment that have ended."""
    return [r for r in stack.runs(deployment) if r.state_type in TERMINAL]
