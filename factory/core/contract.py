"""Data contracts: the pandera schema for sales panels, row parsing, and the validation report
(per-product fitness checks live in factory.core.fitness)."""

from __future__ import annotations

import warnings
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import pandera.pandas as pa
from pandera.typing import Series

from factory.core.errors import UserError
from factory.core.fitness import check_products, exogenous_columns, product_stats, sort_panel
from factory.core.fleet import FamilySpec, FleetSpec
from factory.core.forecaster import Series as ProductSeries
from factory.core.naming import slug_collisions

MISSING_ID = "<missing unique_id>"
NUMERIC_COLUMNS = ("y", "price", "promo")  # the schema's number columns; exogenous ones join them
MAX_ABS_VALUE = 1e15
"""Largest magnitude accepted in y and in exogenous columns (`y too large` beyond it).

No sales figure or price comes near it: beyond it float64 no longer holds whole numbers exactly
(2**53 is about 9e15) and training's sums and squares overflow to inf and NaN (a single 1e300
spike does), so a larger value is treated as corrupt data and its product is quarantined.
"""


class DataError(UserError, ValueError):
    """A user mistake in a data file, naming the file and the column."""

    hint = "check the data file named above (columns unique_id, ds, y)"


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


SANE_NUMBERS = (
    pa.Check(lambda s: ~np.isinf(s), name="finite", error="finite"),
    pa.Check(lambda s: ~np.isfinite(s) | (s.abs() <= MAX_ABS_VALUE), name="bounded"),
)


def sales_schema(as_of: pd.Timestamp, exogenous: Sequence[str] = ()) -> pa.DataFrameSchema:
    """SalesHistory plus: no date after `as_of`; finite numbers up to MAX_ABS_VALUE in y,
    price, promo and the named exogenous columns (numbers, nulls allowed)."""
    schema = SalesHistory.to_schema()
    extra = [c for c in dict.fromkeys(exogenous) if c not in schema.columns]
    schema = schema.add_columns(
        {c: pa.Column(float, nullable=True, coerce=True, required=False) for c in extra}
    )
    for name in [*NUMERIC_COLUMNS, *extra]:
        schema = schema.update_column(name, checks=[*schema.columns[name].checks, *SANE_NUMBERS])
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

    def as_dict(self) -> dict[str, object]:
        """The report as plain data (`factory validate --json`)."""
        return {
            "rows": self.n_rows,
            "products": self.n_products,
            "ready": self.assignment,
            "quarantined": self.quarantined,
            "unassigned": self.unassigned,
        }


def validate_panel(
    frame: pd.DataFrame, fleet: FleetSpec, as_of: pd.Timestamp | None = None
) -> tuple[pd.DataFrame, ValidationReport]:
    """Validate lazily, quarantine failing products with reasons, return the clean panel."""
    for family in fleet.families:
        _check_exogenous(frame, family)
    exog = exogenous_columns(fleet)
    clean, found = validate_rows(frame, as_of or pd.Timestamp.now(), exog)
    reasons: dict[str, list[str]] = defaultdict(list, found)
    clean = sort_panel(clean)
    stats = product_stats(clean, fleet)
    all_ids = set(stats.index) | set(reasons)  # a product is either all clean or has reasons
    assignment = fleet.assign(all_ids - {MISSING_ID})
    covered = {pid for ids in assignment.values() for pid in ids}
    for pid, others in slug_collisions(sorted(covered)).items():
        reasons[pid].extend(f"registry name collides with product {o!r}" for o in others)
    panel_end = clean["ds"].max() if len(clean) else None
    for family_name, ids in assignment.items():
        good = [pid for pid in ids if pid not in reasons]
        for pid, why in check_products(stats, good, fleet.family(family_name), panel_end).items():
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
    frame: pd.DataFrame, as_of: pd.Timestamp, exogenous: Sequence[str] = ()
) -> tuple[pd.DataFrame, dict[str, list[str]]]:
    """Row-level contract: parseable dates and numbers, non-blank ids, y >= 0, finite bounded
    numbers, no nulls, unique keys, no future dates.

    Products with any failing row are held back whole, with their reasons (sorted by product);
    column-wide problems raise DataError. `exogenous` columns present in the frame must hold
    numbers too.
    """
    as_of = as_of.normalize()
    frame = frame.reset_index(drop=True)  # pandera reports row labels; make them positions
    present = [c for c in exogenous if c in frame.columns]
    numeric = [c for c in dict.fromkeys([*NUMERIC_COLUMNS, *present]) if c in frame.columns]
    frame, reasons = parse_columns(frame, numeric)
    schema = sales_schema(as_of, present)
    checked = frame.loc[~frame["unique_id"].isin(list(reasons))] if reasons else frame
    try:
        clean = schema.validate(checked, lazy=True)
    except pa.errors.SchemaErrors as exc:
        _collect_schema_failures(frame, exc.failure_cases, reasons)
        ok = frame["unique_id"].notna() & ~frame["unique_id"].isin(list(reasons))
        clean = schema.validate(frame.loc[ok], lazy=False)
    return clean.reset_index(drop=True), dict(sorted(reasons.items()))


def parse_columns(
    frame: pd.DataFrame, numeric: Sequence[str]
) -> tuple[pd.DataFrame, dict[str, list[str]]]:
    """Dates in ds and numbers in the numeric columns, parsed from raw values, and the reasons of
    the products that hold a blank id or values that do not parse."""
    reasons: dict[str, list[str]] = defaultdict(list)
    for pid in blank_ids(frame["unique_id"]):
        reasons[pid].append("blank unique_id")
    parsed = frame.assign(ds=parse_dates(frame["ds"]))
    for pid, why in _unparsed(frame, parsed, "ds", "unparseable ds", dated=False).items():
        reasons[pid].append(why)
    for column in numeric:
        if pd.api.types.is_numeric_dtype(frame[column].dtype):
            continue
        parsed[column] = pd.to_numeric(frame[column], errors="coerce")
        for pid, why in _unparsed(frame, parsed, column, f"non-numeric {column}").items():
            reasons[pid].append(why)
    return parsed, reasons


def blank_ids(ids: pd.Series) -> list[str]:
    """Ids that are empty or only whitespace (a null id is missing, not blank)."""
    return sorted(str(p) for p in ids.dropna().unique() if not str(p).strip())


def parse_dates(values: pd.Series) -> pd.Series:
    """Dates as tz-naive timestamps; NaT where a value is missing or cannot be parsed.

    A timestamp with a UTC offset or time zone reads as the local wall-clock time it states (the
    offset is dropped), so daily, weekly and monthly data keep their calendar dates across DST.
    """
    if isinstance(values.dtype, pd.DatetimeTZDtype):
        return values.dt.tz_localize(None)
    if pd.api.types.is_datetime64_dtype(values.dtype):
        return values
    codes, distinct = pd.factorize(values)  # few distinct dates, even in a large panel
    parsed = _parse_distinct(pd.Index(distinct))
    return pd.Series(
        parsed.take(codes, allow_fill=True, fill_value=pd.NaT), index=values.index, name="ds"
    )


def _parse_distinct(values: pd.Index) -> pd.DatetimeIndex:
    """All values at once when they share one format and zone; else one by one."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "could not infer format"
            parsed = pd.DatetimeIndex(pd.to_datetime(values))
    except (ValueError, TypeError, OverflowError):
        parsed = pd.DatetimeIndex([_parse_one(v) for v in values])
    return parsed.tz_localize(None) if parsed.tz is not None else parsed


def _parse_one(value: Any) -> pd.Timestamp:
    """One date as its wall-clock time, or NaT."""
    try:
        stamp = pd.Timestamp(value)
    except (ValueError, TypeError, OverflowError):
        return pd.NaT
    return stamp.tz_localize(None) if stamp.tzinfo is not None else stamp


def _unparsed(
    raw: pd.DataFrame, parsed: pd.DataFrame, column: str, what: str, dated: bool = True
) -> dict[str, str]:
    """`<what> (e.g. <raw value> on <date>)` for each product with a value that did not parse."""
    bad = parsed[column].isna() & raw[column].notna()
    if not bad.any():
        return {}
    rows = pd.DataFrame(
        {
            "pid": raw.loc[bad, "unique_id"],
            "value": raw.loc[bad, column],
            "ds": parsed.loc[bad, "ds"],
        }
    ).drop_duplicates("pid")
    return {
        _product(pid): f"{what} {_example(value, ds if dated else None)}"
        for pid, value, ds in rows.itertuples(index=False)
    }


def _product(pid: Any) -> str:
    return pid if isinstance(pid, str) else MISSING_ID


def _example(value: Any, date: Any) -> str:
    if date is None or pd.isna(date):
        return f"(e.g. {value!r})"
    return f"(e.g. {value!r} on {pd.Timestamp(date).date()})"


def _collect_schema_failures(
    frame: pd.DataFrame, cases: pd.DataFrame, reasons: dict[str, list[str]]
) -> None:
    """Turn pandera failure cases into per-product reasons; column-wide failures raise.

    A bad value gets one reason, the most specific (-inf is non-finite, not negative); a product
    gets each kind of reason once, with its first example.
    """
    whole_column = cases[cases["index"].isna()]
    if len(whole_column):
        first = whole_column.iloc[0]
        raise DataError(f"column {first['column']}: {first['check']} ({first['failure_case']})")
    ids = frame["unique_id"].astype("object").to_numpy()
    dates = frame["ds"].to_numpy()
    seen: set[tuple[str, str]] = set()
    cells: set[tuple[str, int]] = set()
    rank = ~cases["check"].isin([c.name for c in SANE_NUMBERS])
    ordered = cases.assign(rank=rank).sort_values("rank", kind="stable")
    columns = ["column", "check", "failure_case", "index"]
    for column, check, value, index in ordered[columns].itertuples(index=False):
        cell, pid = (str(column), int(index)), _product(ids[int(index)])
        reason = _reason(str(column), str(check))
        if cell not in cells and (pid, reason) not in seen:
            seen.add((pid, reason))
            reasons[pid].append(f"{reason} {_example(value, dates[int(index)])}")
        cells.add(cell)


def _reason(column: str, check: str) -> str:
    if check == "multiple_fields_uniqueness":
        return "duplicated (unique_id, ds) rows"
    if check == "not_nullable":
        return f"null {column}"
    if check.startswith("greater_than_or_equal_to"):
        return f"negative {column}"
    if check.startswith("no future dates"):
        return f"future ds: {check}"
    if check == "finite":
        return f"non-finite {column}"
    if check == "bounded":
        return f"{column} too large"
    return f"{column} fails {check}"


def _check_exogenous(frame: pd.DataFrame, family: FamilySpec) -> None:
    missing = [c for c in family.features.exogenous if c not in frame.columns]
    if missing:
        raise DataError(
            f"family {family.name!r} uses exogenous column(s) {', '.join(missing)} "
            "that the sales data does not have"
        )


def product_arrays(frame: pd.DataFrame, columns: list[str]) -> dict[str, dict[str, np.ndarray]]:
    """Split a sorted panel into per-product arrays (ds, y and the named columns)."""
    out: dict[str, dict[str, np.ndarray]] = {}
    if not len(frame):
        return out
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
    arrays = product_arrays(clean, exogenous_columns(fleet))
    out: dict[str, ProductSeries] = {}
    for family, ids in assignment.items():
        cols = fleet.family(family).features.exogenous
        for pid in ids:
            a = arrays[pid]
            out[pid] = ProductSeries(a["ds"], a["y"], {c: a[c] for c in cols})
    return out
