"""What bench/run.py asks a worker process to run, and what the worker reports back."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

Mode = Literal["raw", "factory", "naive"]


@dataclass(frozen=True)
class Job:
    """One worker run: which mode, on which fleet and data."""

    mode: Mode
    fleet_path: str
    data_url: str
    as_of: str
    products: list[str] | None = None  # naive: its slice of the fleet
    tracking_uri: str | None = None  # naive: its own MLflow store

    def write(self, path: Path) -> Path:
        """Save as JSON for the worker's command line."""
        path.write_text(json.dumps(asdict(self)))
        return path

    @classmethod
    def read(cls, path: Path) -> Job:
        """Inverse of `write`."""
        return cls(**json.loads(path.read_text()))


@dataclass
class WorkerResult:
    """What a worker measured inside its own process."""

    wall_s: float  # the timed call only: imports and interpreter start/exit are outside
    products: int
    models: int  # models produced (gate winners: fitted, serialised, registered if any registry)
    counts: dict[str, int]
    per_product_ms: dict[str, float]
    shards: int = 0
    flow_run_id: str | None = None
    flow_task_runs: int | None = None  # as the flow's own summary states them
    flow_body_s: float | None = None  # FleetSummary.wall_s: inside the flow function
    outcome_digest: str = ""
    code_fingerprint: str = ""
    notes: list[str] = field(default_factory=list)
    candidate_ms: dict[str, float] = field(default_factory=dict)  # backtest ms per product

    def write(self, path: Path) -> None:
        """Save as JSON for bench/run.py."""
        path.write_text(json.dumps(asdict(self)))

    @classmethod
    def read(cls, path: Path) -> WorkerResult:
        """Inverse of `write`."""
        return cls(**json.loads(path.read_text()))


def outcome_digest(rows: Iterable[tuple[str, str, str]]) -> str:
    """Hash of (product, status, data fingerprint) rows: equal digests, identical work."""
    digest = hashlib.sha256()
    for row in sorted(rows):
        digest.update("\t".join(row).encode() + b"\n")
    return digest.hexdigest()[:16]


def stage_split_ms(
    validation_s: float, timings: list[dict[str, float]], products: int
) -> dict[str, float]:
    """Mean ms per product for each stage, computed as factory.core.outcomes.cost_split does."""
    n = max(len(timings), 1)
    split = {"validation": 1000 * validation_s / max(products, 1)}
    for stage in ("backtest", "fit", "registry"):
        split[stage] = 1000 * sum(t.get(f"{stage}_s", 0.0) for t in timings) / n
    return split
