"""The fleet's last known state per product and drift checks, kept for `factory status`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from factory.adapters.files import atomic_write
from factory.core.drift import DriftOutcome, ShadowEvidence
from factory.core.outcomes import ProductRecord

STATE_FILE = "products.parquet"
COLUMNS = list(ProductRecord.__dataclass_fields__)
REBUILT = "rebuilt from the registry by `factory doctor`"
SKIPPABLE = ("registered", "kept", "rejected", "skipped")
DRIFT_FILE = "drift.parquet"
DRIFT_COLUMNS = [
    "product_id",
    "drift_status",
    "drift_detail",
    "drift_model_version",
    "drift_checked_at",
    "shadow_model_version",  # a staging challenger forecast in the shadow, and the realized
    "shadow_wape",  # WAPE of it and of the production version (drift_model_version) over
    "serving_wape",  # the same actuals, in `shadow_periods` complete periods
    "shadow_periods",
]


def read_state(state_dir: Path) -> pd.DataFrame:
    """All products' latest records (empty frame before the first run)."""
    path = state_dir / STATE_FILE
    if not path.exists():
        return pd.DataFrame(columns=COLUMNS)
    frame = pd.read_parquet(path)
    for column in (c for c in COLUMNS if c not in frame.columns):
        frame[column] = None  # a column added since this state was written
    return frame


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
    atomic_write(state_dir / STATE_FILE, lambda fh: merged.to_parquet(fh, index=False))
    return merged


def fix_status(
    state_dir: Path, changes: dict[str, dict[str, Any]], families: dict[str, str]
) -> pd.DataFrame:
    """Set some columns of some products' rows (a product without a row gets one, rebuilt from
    the registry); every other column and row is kept."""
    rows = {r["product_id"]: r for r in read_state(state_dir).to_dict("records")}
    records = []
    for pid, columns in changes.items():
        row = rows.get(pid)
        if row is None:
            record = ProductRecord(pid, families.get(pid, ""), "registered", REBUILT)
        else:
            record = ProductRecord(**{c: _none(row[c]) for c in COLUMNS})
            record.updated_at = pd.Timestamp.now(tz="UTC")
        for column, value in columns.items():
            setattr(record, column, value)
        records.append(record)
    return merge_state(state_dir, records)


def read_drift(state_dir: Path) -> pd.DataFrame:
    """Every product's latest drift check (written by monitor-drift; empty before the first)."""
    path = state_dir / DRIFT_FILE
    return pd.read_parquet(path) if path.exists() else pd.DataFrame(columns=DRIFT_COLUMNS)


def _shadow(o: DriftOutcome) -> tuple[str | None, float | None, float | None, int]:
    s = o.shadow
    if s is None:
        return None, None, None, 0
    return s.shadow_version, s.shadow_wape, s.serving_wape, s.periods


def shadow_evidence(state_dir: Path) -> dict[str, ShadowEvidence]:
    """product -> the shadow evidence of its latest drift check, for products that had any."""
    checks = read_drift(state_dir)
    if "shadow_model_version" not in checks:
        return {}
    out = {}
    for r in checks.loc[checks["shadow_model_version"].notna()].to_dict("records"):
        out[str(r["product_id"])] = ShadowEvidence(
            shadow_version=str(r["shadow_model_version"]),
            serving_version=str(r["drift_model_version"]),
            periods=int(r["shadow_periods"]),
            shadow_wape=_none(r["shadow_wape"]),
            serving_wape=_none(r["serving_wape"]),
        )
    return out


def write_drift_state(state_dir: Path, outcomes: list[DriftOutcome]) -> pd.DataFrame:
    """Record drift checks by product (what `factory status` shows), upserted atomically."""
    now = pd.Timestamp.now(tz="UTC")
    rows = pd.DataFrame(
        [(o.product_id, o.status, o.detail, o.model_version, now, *_shadow(o)) for o in outcomes],
        columns=DRIFT_COLUMNS,
    )
    old = read_drift(state_dir)
    keep = old.loc[~old["product_id"].isin(rows["product_id"])]
    merged = pd.concat([keep, rows] if len(keep) else [rows])
    merged = merged.sort_values("product_id").reset_index(drop=True)
    atomic_write(state_dir / DRIFT_FILE, lambda fh: merged.to_parquet(fh, index=False))
    return merged
