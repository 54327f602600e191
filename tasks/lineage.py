"""Lineage facts shared by every model a run registers: code, config and flow run."""

from __future__ import annotations

import functools
import hashlib
import os
import subprocess
from dataclasses import asdict, dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path


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
def code_fingerprint() -> str:
    """Hash of the factory's own source files: changes whenever the code that trains changes."""
    digest = hashlib.sha256()
    for path in sorted(Path(__file__).parent.glob("*.py")):
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def git_commit(root: Path | None = None) -> str:
    """The code's git commit (with `-dirty` when the tree has changes), or `unknown`."""
    if env := os.environ.get("FACTORY_GIT_COMMIT"):
        return env
    root = root or Path(__file__).resolve().parent.parent
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
