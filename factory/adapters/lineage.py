"""Lineage facts shared by every model a run registers: code, config and flow run."""

from __future__ import annotations

import functools
import hashlib
import os
import subprocess
from dataclasses import asdict, dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from factory.core.fleet import LoadedFleet

FACTORY_ROOT = Path(__file__).resolve().parents[1]
# The code that decides a product's model (features, candidates, backtest, gate) ...
MODEL_CODE = (
    "core/forecaster.py",
    "core/classical.py",
    "core/pooled.py",
    "core/intervals.py",
    "core/saved.py",
    "core/backtest.py",
    "core/metrics.py",
    "core/gate.py",
    "core/training.py",
)
# ... and the libraries whose versions can change a fitted model or its forecasts.
MODEL_LIBRARIES = ("numpy", "pandas", "scikit-learn", "lightgbm", "statsforecast")


@dataclass(frozen=True)
class RunLineage:
    """Where a set of models came from."""

    fleet_sha256: str
    package_version: str
    git_commit: str
    code_fingerprint: str
    flow_run_id: str
    flow_run_url: str

    def tags(self) -> dict[str, str]:
        """As MLflow tags under the `factory.` prefix."""
        return {f"factory.{k}": v for k, v in asdict(self).items()}


def package_version() -> str:
    """The installed version of the factory."""
    try:
        return version("model-factory")
    except PackageNotFoundError:
        return "unknown"


@functools.cache
def code_fingerprint(root: Path = FACTORY_ROOT) -> str:
    """Hash of the code that decides a model and of the model libraries' versions.

    Editing the CLI, a flow, a task, an adapter or a log line leaves it (and so every
    product's training key) unchanged; editing the forecaster or the gate changes it.
    """
    digest = hashlib.sha256()
    for rel in MODEL_CODE:
        digest.update(rel.encode())
        digest.update((root / rel).read_bytes())
    for name in MODEL_LIBRARIES:
        digest.update(f"{name}=={_installed(name)}".encode())
    return digest.hexdigest()[:16]


def _installed(name: str) -> str:
    try:
        return version(name)
    except PackageNotFoundError:
        return "absent"


def git_commit(root: Path | None = None) -> str:
    """The code's git commit (with `-dirty` when the tree has changes), or `unknown`."""
    if env := os.environ.get("FACTORY_GIT_COMMIT"):
        return env
    root = root or FACTORY_ROOT.parent
    try:
        sha = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return f"{sha}-dirty" if sha and dirty else (sha or "unknown")


def run_lineage(fleet: LoadedFleet) -> RunLineage:
    """Lineage shared by all of the current flow run's models."""
    from prefect.runtime import flow_run
    from prefect.utilities.urls import url_for

    run_id = flow_run.id
    return RunLineage(
        fleet_sha256=fleet.sha256,
        package_version=package_version(),
        git_commit=git_commit(),
        code_fingerprint=code_fingerprint(),
        flow_run_id=str(run_id or ""),
        flow_run_url=(url_for("flow-run", obj_id=run_id) or "") if run_id else "",
    )
