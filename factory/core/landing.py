"""Landing-zone merge: new rows are upserted into the history by (unique_id, ds).

New keys are added, changed values replace old ones, nothing is dropped. Pure: no files here
(the landing zone, the ledger and the history live in `factory.adapters`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import pandas as pd
from pydantic import BaseModel

from factory.core.contract import product_arrays
from factory.core.fingerprints import series_fingerprint
from factory.core.fleet import FleetSpec
from factory.core.forecaster import Series

KEYS = ["unique_id", "ds"]


class FileOutcome(BaseModel):
    """What one landed file did to the history."""

    url: str
    sha256: str
    status: Literal["merged", "unchanged", "quarantined", "duplicate", "rejected"]
    rows: int = 0
    product_ids: list[str] = []
    quarantined: dict[str, list[str]] = {}
    reason: str = ""


class LandingReport(BaseModel):
    """One scan: per-file outcomes and the products whose history changed."""

    files: list[FileOutcome] = []
    product_ids: list[str] = []
    fingerprints: dict[str, str] = {}
    fingerprint: str = ""
    unassigned: list[str] = []
    quarantined: dict[str, list[str]] = {}
    rows_added: int = 0
    rows_changed: int = 0
    history_url: str | None = None
    pending: list[str] = []

    def line(self) -> str:
        """One-line summary for logs."""
        counts: dict[str, int] = {}
        for f in self.files:
            counts[f.status] = counts.get(f.status, 0) + 1
        files = ", ".join(f"{v} {k}" for k, v in sorted(counts.items())) or "no new files"
        return (
            f"{files}; {self.rows_added} rows added, {self.rows_changed} changed; "
            f"{len(self.product_ids)} products to retrain, {len(self.quarantined)} quarantined"
        )


@dataclass(frozen=True)
class MergeDiff:
    """Rows a batch adds or changes in the history, and the products they belong to."""

    added: int
    changed: int
    unchanged: int
    product_ids: list[str]


class WatchReport(BaseModel):
    """What one watch-landing run did."""

    landing_url: str
    scans: int
    reports: list[LandingReport]
    event_ids: list[str]

    @property
    def product_ids(self) -> list[str]:
        """Every product announced for retraining."""
        return sorted({p for r in self.reports for p in r.product_ids})


def upsert(history: pd.DataFrame, batch: pd.DataFrame) -> tuple[pd.DataFrame, MergeDiff]:
    """Merge a batch into the history by (unique_id, ds); the batch wins where values differ.

    Every history row is kept unless the batch has the same key; the result has unique keys
    (within the batch, the last row of a key wins) and is sorted by product and date.
    """
    batch = _align(batch.drop_duplicates(KEYS, keep="last"), history)
    if history.empty:
        merged = batch.sort_values(KEYS, kind="stable").reset_index(drop=True)
        ids = sorted(merged["unique_id"].astype(str).unique())
        return merged, MergeDiff(len(batch), 0, 0, ids)
    joined = batch.merge(history, on=KEYS, how="left", suffixes=("", "__old"), indicator=True)
    new = (joined["_merge"] == "left_only").to_numpy()
    values = [c for c in batch.columns if c not in KEYS and f"{c}__old" in joined]
    differs = pd.Series(False, index=joined.index)
    for c in values:
        a, b = joined[c], joined[f"{c}__old"]
        differs |= (a != b) & ~(a.isna() & b.isna())
    changed = differs.to_numpy() & ~new
    affected = sorted(joined.loc[new | changed, "unique_id"].astype(str).unique())
    replaced = pd.MultiIndex.from_frame(history[KEYS]).isin(pd.MultiIndex.from_frame(batch[KEYS]))
    merged = pd.concat([history.loc[~replaced], batch], ignore_index=True)
    merged = merged.sort_values(KEYS, kind="stable").reset_index(drop=True)
    diff = MergeDiff(int(new.sum()), int(changed.sum()), int((~new & ~changed).sum()), affected)
    return merged, diff


def _align(batch: pd.DataFrame, history: pd.DataFrame) -> pd.DataFrame:
    """The batch with the history's dtypes (ids as strings, dates, float values)."""
    batch = batch.copy()
    batch["unique_id"] = batch["unique_id"].astype("string")
    batch["ds"] = pd.to_datetime(batch["ds"])
    for c in batch.columns:
        if c in KEYS:
            continue
        dtype = history[c].dtype if c in history else "float64"
        batch[c] = batch[c].astype(dtype)
    if not history.empty:
        batch = batch[list(history.columns)]
        batch["ds"] = batch["ds"].astype(history["ds"].dtype)
    return batch


def check_columns(batch: pd.DataFrame, history: pd.DataFrame) -> str | None:
    """Why a file's columns cannot be merged into the history, or None when they can."""
    if history.empty:
        return None
    missing = [c for c in history.columns if c not in batch.columns]
    extra = [c for c in batch.columns if c not in history.columns]
    if missing:
        return f"lacks column(s) the history has: {', '.join(missing)}"
    if extra:
        return f"has column(s) the history does not: {', '.join(extra)}"
    return None


def product_fingerprints(
    frame: pd.DataFrame, product_ids: list[str], fleet: FleetSpec
) -> dict[str, str]:
    """Each product's data fingerprint exactly as training computes it (dates, y, its exogenous)."""
    out: dict[str, str] = {}
    for family_name, ids in fleet.assign(product_ids).items():
        if not ids:
            continue
        exog = [c for c in fleet.family(family_name).features.exogenous if c in frame.columns]
        sub = frame.loc[frame["unique_id"].isin(ids)].sort_values(KEYS, kind="stable")
        for pid, a in product_arrays(sub, exog).items():
            out[pid] = series_fingerprint(Series(a["ds"], a["y"], {c: a[c] for c in exog}))
    return dict(sorted(out.items()))
