"""Data contracts: the pandera schema for sales panels and per-product fitness checks."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pandera.pandas as pa
from pandera.typing import Series

from factory.core.fleet import FamilySpec, FleetSpec
from factory.core.forecaster import Series as ProductSeries
from factory.core.errors import UserError

MISSING_ID = "<missing unique_id>"


class DataError(UserError, ValueError):
    """A user mistake in a data file, naming the file and the column."""


class SalesHistory(pa.DataFrameModel):
    """Long-format sales: one row per product and period."""

    unique_id: Series[str] = pa.Field(nullable=False)
    ds: Series[pa.DateTime] = pa.Field(nullable=False)
    y: Series[float] = pa.Field(ge=0, nullable=False)
    price: Series[float] | None = pa.Field(ge=0, nullable=True)
    promo: Series[float] | None = pa.Field(isin=[0.0, 1.0], nullable=True)

    class Config:
        unique = ["unique_id", "ds"]  # noqa: RUF012 - pandera reads this class attribute
        coerce = True


def sales_schema(as_of: pd.Timestamp) -> pa.DataFrameSchema:
    """SalesHistory plus the rule that no date lies after `as_of`."""
    schema = SalesHistory.to_schema()
    return schema.update_column(
        "ds", checks=[pa.Check.le(as_of, error=f"no future dates (after {as_of.date()})")]
    )


@dataclass
class ValidationReport:
    """What passed, what was quarantined and why, and which family each good product is in."""

    n_rows: int
    n_products: int
    assignment: dict[str, list[str]]
    quarantined: dict[str, list[str]] = field(default_factory=dict)
    unassigned: list[str] = field(default_factory=list)
    panel_end: pd.Timestamp | None = None

    @property
    def valid_ids(self) -> list[str]:
        """Products that passed every check, in family order."""
        return [pid for ids in self.assignment.values() for pid in ids]

    @property
    def quarantine_rate(self) -> float:
        """Share of the fleet's products that were quarantined."""
        total = len(self.valid_ids) + len(self.quarantined)
        return len(self.quarantined) / total if total else 0.0


def validate_panel(
    frame: pd.DataFrame, fleet: FleetSpec, as_of: pd.Timestamp | None = None
) -> tuple[pd.DataFrame, ValidationReport]:
    """Validate lazily, quarantine failing products with reasons, return the clean panel."""
    clean, found = validate_rows(frame, as_of or pd.Timestamp.now())
    reasons: dict[str, list[str]] = defaultdict(list, found)
    clean = clean.sort_values(["unique_id", "ds"], kind="stable").reset_index(drop=True)

    all_ids = {str(i) for i in frame["unique_id"].dropna().unique()} | set(reasons)
    assignment = fleet.assign(all_ids - {MISSING_ID})
    covered = {pid for ids in assignment.values() for pid in ids}
    panel_end = clean["ds"].max() if len(clean) else None
    for family_name, ids in assignment.items():
        family = fleet.family(family_name)
        _check_exogenous(clean, family)
        good = [pid for pid in ids if pid not in reasons]
        for pid, why in check_products(clean, good, family, panel_end).items():
            reasons[pid].extend(why)
        assignment[family_name] = [pid for pid in ids if pid not in reasons]

    fleet_reasons = {
        pid: why for pid, why in reasons.items() if pid in covered or pid == MISSING_ID
    }
    report = ValidationReport(
        n_rows=len(frame),
        n_products=len(all_ids),
        assignment=assignment,
        quarantined=dict(sorted(fleet_reasons.items())),
        unassigned=sorted(all_ids - covered - {MISSING_ID}),
        panel_end=panel_end,
    )
    return clean.loc[clean["unique_id"].isin(report.valid_ids)], report


def validate_rows(
    frame: pd.DataFrame, as_of: pd.Timestamp
) -> tuple[pd.DataFrame, dict[str, list[str]]]:
    """Row-level contract (types, y >= 0, no nulls, unique keys, no future dates).

    Products with any failing row are held back whole, with their reasons (sorted by product);
    column-wide problems raise DataError.
    """
    as_of = as_of.normalize()
    frame = frame.reset_index(drop=True)  # pandera reports row labels; make them positions
    reasons: dict[str, list[str]] = defaultdict(list)
    try:
        clean = sales_schema(as_of).validate(frame, lazy=True)
    except pa.errors.SchemaErrors as exc:
        _collect_schema_failures(frame, exc.failure_cases, reasons)
        ok = frame["unique_id"].notna() & ~frame["unique_id"].isin(list(reasons))
        clean = sales_schema(as_of).validate(frame.loc[ok], lazy=False)
    return clean.reset_index(drop=True), dict(sorted(reasons.items()))


def _collect_schema_failures(
    frame: pd.DataFrame, cases: pd.DataFrame, reasons: dict[str, list[str]]
) -> None:
    """Turn pandera failure cases into per-product reasons; column-wide failures raise."""
    whole_column = cases[cases["index"].isna()]
    if len(whole_column):
        first = whole_column.iloc[0]
        raise DataError(f"column {first['column']}: {first['check']} ({first['failure_case']})")
    ids = frame["unique_id"].astype("object").to_numpy()
    dates = frame["ds"].to_numpy()
    seen: set[tuple[str, str]] = set()
    for column, check, value, index in cases[
        ["column", "check", "failure_case", "index"]
    ].itertuples(index=False):
        row = int(index)
        pid = ids[row] if isinstance(ids[row], str) else MISSING_ID
        reason = _reason(str(column), str(check))
        if (pid, reason) in seen:
            continue
        seen.add((pid, reason))
        reasons[pid].append(f"{reason} (e.g. {value!r} on {pd.Timestamp(dates[row]).date()})")


def _reason(column: str, check: str) -> str:
    if check == "multiple_fields_uniqueness":
        return "duplicated (unique_id, ds) rows"
    if check == "not_nullable":
        return f"null {column}"
    if check.startswith("greater_than_or_equal_to"):
        return f"negative {column}"
    if check.startswith("no future dates"):
        return f"future ds: {check}"
    return f"{column} fails {check}"


def _check_exogenous(frame: pd.DataFrame, family: FamilySpec) -> None:
    missing = [c for c in family.features.exogenous if c not in frame.columns]
    if missing:
        raise DataError(
            f"family {family.name!r} uses exogenous column(s) {', '.join(missing)} "
            "that the sales data does not have"
        )


def periods_between(start: pd.Timestamp, end: pd.Timestamp, freq: str) -> int:
    """Number of periods from start to end inclusive at a frequency (D, W or MS)."""
    if freq == "D":
        return int((end - start).days) + 1
    if freq == "W":
        return int((end - start).days) // 7 + 1
    return (end.year - start.year) * 12 + end.month - start.month + 1


def check_products(
    frame: pd.DataFrame, ids: list[str], family: FamilySpec, panel_end: pd.Timestamp | None
) -> dict[str, list[str]]:
    """Per-product fitness for one family: history length, gaps, all-zero, stale, null inputs."""
    if not ids or panel_end is None:
        return {}
    sub = frame.loc[frame["unique_id"].isin(ids)]
    stats = sub.groupby("unique_id", observed=True).agg(
        n=("y", "size"), total=("y", "sum"), first=("ds", "min"), last=("ds", "max")
    )
    nulls = (
        sub[list(family.features.exogenous)].isna().groupby(sub["unique_id"]).any()
        if family.features.exogenous
        else None
    )
    out: dict[str, list[str]] = {}
    freq, need = family.frequency, family.min_history
    for pid, row in stats.iterrows():
        why = []
        expected = periods_between(row["first"], row["last"], freq)
        if row["n"] < need:
            why.append(f"too short: {row['n']} periods, family {family.name!r} needs {need}")
        if row["total"] == 0:
            why.append("all-zero demand")
        if expected > row["n"] and not family.validation.allow_gaps:
            why.append(f"gaps: {expected - row['n']} missing periods in its history")
        behind = periods_between(row["last"], panel_end, freq) - 1
        if behind > family.validation.max_stale_periods:
            why.append(f"stale: last observation {row['last'].date()}, {behind} periods old")
        if nulls is not None:
            bad = [c for c in nulls.columns if bool(nulls.at[pid, c])]
            why.extend(f"null {c}" for c in bad)
        if why:
            out[str(pid)] = why
    missing = set(ids) - set(stats.index.astype(str))
    out.update({pid: ["no rows"] for pid in missing})
    return out


def product_arrays(frame: pd.DataFrame, columns: list[str]) -> dict[str, dict[str, np.ndarray]]:
    """Split a sorted panel into per-product arrays (ds, y and the named columns)."""
    out: dict[str, dict[str, np.ndarray]] = {}
    ids = frame["unique_id"].to_numpy()
    bounds = np.flatnonzero(ids[1:] != ids[:-1]) + 1
    starts = np.concatenate([[0], bounds])
    ends = np.concatenate([bounds, [len(ids)]])
    ds = frame["ds"].to_numpy("datetime64[ns]")
    values = {c: frame[c].to_numpy(dtype="float64") for c in ["y", *columns]}
    for s, e in zip(starts, ends, strict=True):
        item = {"ds": ds[s:e]}
        item.update({c: v[s:e] for c, v in values.items()})
        out[str(ids[s])] = item
    return out


def fleet_series(
    clean: pd.DataFrame, fleet: FleetSpec, assignment: dict[str, list[str]]
) -> dict[str, ProductSeries]:
    """Each valid product's series with its family's exogenous columns."""
    exog = sorted({c for f in fleet.families for c in f.features.exogenous})
    arrays = product_arrays(clean, exog)
    out: dict[str, ProductSeries] = {}
    for family, ids in assignment.items():
        cols = fleet.family(family).features.exogenous
        for pid in ids:
            a = arrays[pid]
            out[pid] = ProductSeries(a["ds"], a["y"], {c: a[c] for c in cols})
    return out
