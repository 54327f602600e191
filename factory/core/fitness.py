"""Per-product fitness for a family: frequency, history length, all-zero, gaps, staleness and
null inputs, computed from one vectorised pass over a sorted panel."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from factory.core.fleet import FamilySpec, FleetSpec

DAY_NS = 86_400 * 10**9  # one day in nanoseconds
NO_STEP = np.iinfo(np.int64).max  # a product's step statistic when it has no such step


def exogenous_columns(fleet: FleetSpec) -> list[str]:
    """Every exogenous column some family of the fleet uses, sorted."""
    return sorted({c for f in fleet.families for c in f.features.exogenous})


def periods_between(start: Any, end: Any, freq: str) -> np.ndarray:
    """Number of periods from start to end inclusive at a frequency (D, W, MS or QS),
    elementwise."""
    s = np.asarray(start, dtype="datetime64[ns]")
    e = np.asarray(end, dtype="datetime64[ns]")
    if freq == "D":
        return (e - s) // np.timedelta64(1, "D") + 1
    if freq == "W":
        return (e - s) // np.timedelta64(7, "D") + 1
    months = (e.astype("datetime64[M]") - s.astype("datetime64[M]")).astype(np.int64)
    return (months // 3 if freq == "QS" else months) + 1


def sort_panel(panel: pd.DataFrame) -> pd.DataFrame:
    """The panel in (unique_id, ds) order with a fresh index; one already in order is not sorted."""
    codes, _ = pd.factorize(panel["unique_id"], sort=True)
    ds = panel["ds"].to_numpy("datetime64[ns]").view(np.int64)
    by_id, by_date = np.diff(codes), np.diff(ds)
    if np.all((by_id > 0) | ((by_id == 0) & (by_date >= 0))):
        return panel.reset_index(drop=True)
    return panel.take(np.lexsort((ds, codes))).reset_index(drop=True)


def product_stats(panel: pd.DataFrame, fleet: FleetSpec) -> pd.DataFrame:
    """Per-product facts of a panel sorted by (unique_id, ds), in one vectorised pass.

    Columns: n, total (of y), first, last, sub_daily (a time other than midnight), min_step
    (smallest step between consecutive dates, ns), odd_step (smallest step that is not whole
    weeks), `null <column>` per exogenous column of the fleet and, when a family is monthly,
    off_month (first date not on the 1st of a month, ns). Step and date statistics are NO_STEP
    where a product has no such step or date.
    """
    exogenous = exogenous_columns(fleet)
    codes, ids = pd.factorize(panel["unique_id"])
    starts = np.flatnonzero(np.r_[True, codes[1:] != codes[:-1]])[: len(codes)]
    if np.any(np.diff(codes[starts]) <= 0):
        raise ValueError("product_stats needs a panel sorted by unique_id")
    ds = panel["ds"].to_numpy("datetime64[ns]").view(np.int64)
    step = np.diff(ds, prepend=ds[:1])
    step[starts] = NO_STEP

    def least(values: np.ndarray) -> np.ndarray:
        return np.minimum.reduceat(values, starts)

    def anywhere(values: np.ndarray) -> np.ndarray:
        return np.logical_or.reduceat(values, starts)

    stats = {
        "n": np.diff(np.r_[starts, len(ds)]),
        "total": np.add.reduceat(panel["y"].to_numpy(dtype="float64"), starts),
        "first": ds[starts].view("datetime64[ns]"),
        "last": np.maximum.reduceat(ds, starts).view("datetime64[ns]"),
        "sub_daily": anywhere(ds % DAY_NS != 0),
        "min_step": least(step),
        "odd_step": least(np.where(step % (7 * DAY_NS) != 0, step, NO_STEP)),
    }
    if any(f.frequency in ("MS", "QS") for f in fleet.families):
        months = ds.view("datetime64[ns]").astype("datetime64[M]")
        month_start = months.astype("datetime64[ns]").view(np.int64)
        stats["off_month"] = least(np.where(month_start != ds, ds, NO_STEP))
        off_quarter = (month_start != ds) | (months.astype(np.int64) % 3 != 0)
        stats["off_quarter"] = least(np.where(off_quarter, ds, NO_STEP))
    for c in exogenous:
        stats[f"null {c}"] = anywhere(panel[c].isna().to_numpy())
    return pd.DataFrame(stats, index=pd.Index(np.asarray(ids, dtype=object)[codes[starts]]))


def check_products(
    stats: pd.DataFrame, ids: list[str], family: FamilySpec, panel_end: pd.Timestamp | None
) -> dict[str, list[str]]:
    """Per-product fitness for one family, from `product_stats`: frequency, history length,
    all-zero, gaps, stale, null inputs."""
    if not ids or panel_end is None:
        return {}
    out: dict[str, list[str]] = {pid: ["no rows"] for pid in ids if pid not in stats.index}
    s = stats.loc[[pid for pid in ids if pid in stats.index]]
    checks = [
        _frequency(s, family),
        _too_short(s, family),
        _all_zero(s, family),
        _gaps(s, family),
        _stale(s, family, panel_end),
        *({pid: f"null {c}" for pid in s.index[s[f"null {c}"]]} for c in family.features.exogenous),
    ]
    for found in checks:
        for pid, why in found.items():
            out.setdefault(pid, []).append(why)
    return out


def _frequency(s: pd.DataFrame, family: FamilySpec) -> dict[str, str]:
    """Products whose date spacing disagrees with the family's frequency.

    D: at least one 1-day step (when there are several dates); W: every step whole weeks; MS:
    every date on the 1st of a month; QS: on the 1st of January, April, July or October. Any
    time other than midnight is sub-daily, for all of them.
    """
    out = {pid: "frequency: sub-daily timestamps" for pid in s.index[s["sub_daily"]]}
    s = s.loc[~s["sub_daily"]]
    expects = f"family {family.name!r} expects {family.frequency}"
    if family.frequency == "D":
        bad = s.loc[(s["n"] > 1) & (s["min_step"] != DAY_NS), "min_step"]
    elif family.frequency == "W":
        bad = s.loc[s["odd_step"] != NO_STEP, "odd_step"]
    else:
        quarterly = family.frequency == "QS"
        column, shortest = ("off_quarter", 89) if quarterly else ("off_month", 28)
        what = "a quarter (January, April, July, October)" if quarterly else "a month"
        off = s.loc[s[column] != NO_STEP]
        bad = off.loc[off["min_step"] < shortest * DAY_NS, "min_step"]
        out |= {
            pid: f"frequency: dates not on the 1st of {what} (e.g. {_day(at)}), {expects}"
            for pid, at in off.loc[off["min_step"] >= shortest * DAY_NS, column].items()
        }
    days = bad // DAY_NS
    return out | {
        pid: f"frequency: dates are {n} day{'s' * (n != 1)} apart, {expects}"
        for pid, n in days.items()
    }


def _day(ns: int) -> str:
    return str(pd.Timestamp(ns).date())


def _too_short(s: pd.DataFrame, family: FamilySpec) -> dict[str, str]:
    """Products below the family's explicit `validation.min_history` (shorter ones are normal
    data, new products: training gives them the short-history path)."""
    need = family.validation.min_history
    if need is None:
        return {}
    return {
        pid: f"too short: {n} periods, family {family.name!r} needs {need}"
        for pid, n in s.loc[s["n"] < need, "n"].items()
    }


def _all_zero(s: pd.DataFrame, family: FamilySpec) -> dict[str, str]:
    if family.validation.allow_all_zero:
        return {}
    return {
        pid: "all-zero demand (set validation.allow_all_zero when no sales is real)"
        for pid in s.index[s["total"] == 0]
    }


def _gaps(s: pd.DataFrame, family: FamilySpec) -> dict[str, str]:
    if family.validation.allow_gaps:
        return {}
    expected = periods_between(s["first"], s["last"], family.frequency)
    missing = pd.Series(expected - s["n"].to_numpy(), index=s.index)
    return {
        pid: f"gaps: {m} missing periods in its history" for pid, m in missing[missing > 0].items()
    }


def _stale(s: pd.DataFrame, family: FamilySpec, panel_end: pd.Timestamp) -> dict[str, str]:
    behind = pd.Series(periods_between(s["last"], panel_end, family.frequency) - 1, index=s.index)
    return {
        pid: f"stale: last observation {s.at[pid, 'last'].date()}, {b} periods old"
        for pid, b in behind[behind > family.validation.max_stale_periods].items()
    }
