"""The fleet's last known state per product, kept for `factory status` and later queries."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

STATE_FILE = "products.parquet"
COLUMNS = [
    "product_id",
    "family",
    "status",
    "reason",
    "model_kind",
    "metric",
    "score",
    "baseline",
    "staging_version",
    "production_version",
    "data_fingerprint",
    "flow_run_id",
    "train_key",
    "updated_at",
]
SKIPPABLE = ("registered", "kept", "rejected", "skipped")


@dataclass
class ProductRecord:
    """One product's latest outcome (quarantine included)."""

    product_id: str
    family: str
    status: str
    reason: str
    model_kind: str | None = None
    metric: str | None = None
    score: float | None = None
    baseline: float | None = None
    staging_version: str | None = None
    production_version: str | None = None
    data_fingerprint: str | None = None
    flow_run_id: str | None = None
    train_key: str | None = None
    updated_at: pd.Timestamp = field(default_factory=lambda: pd.Timestamp.now(tz="UTC"))


def read_state(state_dir: Path) -> pd.DataFrame:
    """All products' latest records (empty frame before the first run)."""
    path = state_dir / STATE_FILE
    if not path.exists():
        return pd.DataFrame(columns=COLUMNS)
    return pd.read_parquet(path)


def unchanged_products(state_dir: Path, keys: dict[str, str]) -> dict[str, ProductRecord]:
    """Products whose training key equals the one their last finished outcome was made with."""
    state = read_state(state_dir)
    if state.empty:
        return {}
    state = state[state["product_id"].isin(list(keys)) & state["status"].isin(SKIPPABLE)]
    out = {}
    for row in state.to_dict("records"):
        if row["train_key"] == keys[row["product_id"]]:
            row["updated_at"] = pd.Timestamp.now(tz="UTC")
            out[row["product_id"]] = ProductRecord(**{c: _none(row[c]) for c in COLUMNS})
    return out


def _none(value: Any) -> Any:
    return None if value is None or (isinstance(value, float) and value != value) else value


def merge_state(state_dir: Path, records: list[ProductRecord]) -> pd.DataFrame:
    """Upsert records by product id and write atomically; older products are kept."""
    state_dir.mkdir(parents=True, exist_ok=True)
    new = pd.DataFrame([r.__dict__ for r in records], columns=COLUMNS)
    old = read_state(state_dir)
    if len(old):
        prior = old.set_index("product_id")
        for col in ("staging_version", "production_version"):
            known = new["product_id"].map(prior[col]) if col in prior else None
            if known is not None:
                new[col] = new[col].where(new[col].notna(), known)
    merged = pd.concat([old[~old["product_id"].isin(new["product_id"])], new], ignore_index=True)
    merged = merged.sort_values("product_id").reset_index(drop=True)
    tmp = state_dir / f".{STATE_FILE}.tmp"
    merged.to_parquet(tmp, index=False)
    tmp.replace(state_dir / STATE_FILE)
    return merged


DRIFT_FILE = "drift.parquet"
DRIFT_COLUMNS = [
    "product_id",
    "drift_status",
    "drift_detail",
    "drift_model_version",
    "drift_checked_at",
]


def read_drift(state_dir: Path) -> pd.DataFrame:
    """Every product's latest drift check (written by monitor-drift; empty before the first)."""
    path = state_dir / DRIFT_FILE
    return pd.read_parquet(path) if path.exists() else pd.DataFrame(columns=DRIFT_COLUMNS)


def merge_drift(state_dir: Path, rows: pd.DataFrame) -> pd.DataFrame:
    """Upsert drift checks (DRIFT_COLUMNS) by product id and write atomically."""
    state_dir.mkdir(parents=True, exist_ok=True)
    old = read_drift(state_dir)
    keep = old.loc[~old["product_id"].isin(rows["product_id"])]
    merged = pd.concat([keep, rows[DRIFT_COLUMNS]] if len(keep) else [rows[DRIFT_COLUMNS]])
    merged = merged.sort_values("product_id").reset_index(drop=True)
    tmp = state_dir / f".{DRIFT_FILE}.tmp"
    merged.to_parquet(tmp, index=False)
    tmp.replace(state_dir / DRIFT_FILE)
    return merged
