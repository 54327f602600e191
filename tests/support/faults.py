"""A factory home for fault-injection tests: `factory train` in its own processes, as an
operator runs it, against real servers; helpers to wait for a moment and to kill -9."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import psutil

from factory.adapters.data import write_panel
from factory.core.synthetic import PanelSpec, generate_panel, product_ids
from factory.settings import Settings
from tests.support import invariants
from tests.support.fleets import AS_OF, write_fleet

TRAINED = ("registered", "kept", "rejected", "failed")


@dataclass
class FactoryHome:
    """One FACTORY_HOME with a synthetic panel and a fleet.yaml sharded small."""

    root: Path
    env: dict[str, str | None]  # None: unset in the commands' environment
    fleet: Path
    products: list[str]
    procs: list[subprocess.Popen[str]] = field(default_factory=list)

    def settings(self) -> Settings:
        """The settings the CLI processes see."""
        return Settings(
            home=Path(str(self.env["FACTORY_HOME"])),
            mlflow_tracking_uri=self.env.get("FACTORY_MLFLOW_TRACKING_URI") or None,
        )

    def start(
        self, name: str, *args: str, extra: dict[str, str] | None = None
    ) -> subprocess.Popen[str]:
        """`factory train` (or another command) in its own session, output in <root>/<name>.log."""
        cmd = [
            sys.executable,
            "-m",
            "factory.cli",
            *(args or ("train", "--fleet", str(self.fleet))),
        ]
        with (self.root / f"{name}.log").open("w") as out:
            proc = subprocess.Popen(
                cmd,
                env={
                    k: v
                    for k, v in {**os.environ, **self.env, **(extra or {})}.items()
                    if v is not None
                },
                cwd=self.root,
                stdout=out,
                stderr=subprocess.STDOUT,
                text=True,
                start_new_session=True,
            )
        self.procs.append(proc)
        return proc

    def run(self, name: str, *args: str, timeout: float = 600) -> tuple[int, str]:
        """Run a command to its end: (exit code, its output)."""
        proc = self.start(name, *args)
        code = proc.wait(timeout)
        return code, self.log(name)

    def log(self, name: str) -> str:
        """What a started command printed so far."""
        return (self.root / f"{name}.log").read_text()

    def state(self) -> pd.DataFrame:
        """The status store (empty before anything was recorded)."""
        path = self.settings().state_dir / "products.parquet"
        return pd.read_parquet(path) if path.exists() else pd.DataFrame(columns=["product_id"])

    def trained(self) -> int:
        """Products with a recorded training outcome."""
        state = self.state()
        return int(state["status"].isin(TRAINED).sum()) if "status" in state else 0

    def violations(self) -> list[str]:
        """The invariant checker's findings (empty when every invariant holds)."""
        return invariants.violations(self.settings(), self.products)

    def stop_all(self) -> None:
        """Kill whatever a test left running (and its Ray processes)."""
        for proc in self.procs:
            kill_tree(proc.pid)


def make_home(
    root: Path, prefect_api: str | None, n: int = 40, shard_size: int = 5, **env: str | None
) -> FactoryHome:
    """A home with `n` healthy synthetic products, shards of `shard_size`; runs report to the
    Prefect server at `prefect_api`, or (None) to the embedded default's ephemeral server."""
    root.mkdir(parents=True, exist_ok=True)
    home = root / "factory"
    panel = generate_panel(PanelSpec(n_products=n, seed=5, periods=2 * 365))
    write_panel(panel.frame, str(home / "data"))
    fleet = write_fleet(root / "fleet.yaml", shard_size=shard_size)
    base: dict[str, str | None] = {
        "FACTORY_HOME": str(home),
        "FACTORY_AS_OF": AS_OF,
        "FACTORY_RAY_NUM_CPUS": "2",
        "PREFECT_API_URL": prefect_api,
        "PREFECT_LOGGING_LEVEL": "INFO",
    }
    for var in ("FACTORY_DATA_URL", "FACTORY_MLFLOW_TRACKING_URI", "RAY_ADDRESS"):
        base[var] = ""  # the parent's must not leak in; empty means the embedded default
    return FactoryHome(root, base | env, fleet, product_ids(n))


def wait_for(what: str, check: Callable[[], bool], timeout: float = 300) -> None:
    """Poll until `check()` holds; fail naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            if check():
                return
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def kill_tree(pid: int) -> None:
    """kill -9 a process, its session and everything below it (Ray workers included)."""
    try:
        below = psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        below = []
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)
    for child in below:
        with contextlib.suppress(psutil.NoSuchProcess):
            child.kill()
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, 0)
