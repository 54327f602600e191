"""A seeded generator of realistic daily retail panels, with optional injected defects."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import pandas as pd

Defect = Literal[
    "negative", "duplicate_dates", "too_short", "all_zero", "gap", "null_y", "future_date"
]
CATEGORIES = ("grocery", "household", "apparel", "toys", "electronics")


@dataclass(frozen=True)
class PanelSpec:
    """How to generate a panel."""

    n_products: int = 100
    periods: int = 3 * 365
    end: str = "2026-10-31"
    seed: int = 7
    intermittent_fraction: float = 0.1
    new_fraction: float = 0.05
    discontinued_fraction: float = 0.0
    defects: dict[str, Defect] = field(default_factory=dict)


@dataclass(frozen=True)
class Panel:
    """A generated panel and the ground truth of what was made wrong on purpose."""

    frame: pd.DataFrame
    defects: dict[str, Defect]
    discontinued: tuple[str, ...]


def product_ids(n: int) -> list[str]:
    """Stable product ids spread over categories: `grocery-00001`, `toys-00002`, ..."""
    return [f"{CATEGORIES[i % len(CATEGORIES)]}-{i:05d}" for i in range(n)]


def generate_panel(spec: PanelSpec) -> Panel:
    """Daily demand with trend, weekly and yearly seasonality, promotions and price effects."""
    rng = np.random.default_rng(spec.seed)
    n, t = spec.n_products, spec.periods
    ids = product_ids(n)
    dates = pd.date_range(end=pd.Timestamp(spec.end), periods=t, freq="D")
    steps = np.arange(t)

    level = rng.lognormal(mean=2.5, sigma=0.8, size=(n, 1))
    intermittent = rng.random(n) < spec.intermittent_fraction
    level[intermittent] = rng.uniform(0.05, 0.6, size=(intermittent.sum(), 1))
    trend = 1 + rng.normal(0, 0.25, size=(n, 1)) * steps / t
    weekly_profile = rng.uniform(0.7, 1.4, size=(n, 7))
    weekly = weekly_profile[:, dates.dayofweek.to_numpy()]
    phase = rng.uniform(0, 2 * np.pi, size=(n, 1))
    yearly = 1 + rng.uniform(0.05, 0.35, size=(n, 1)) * np.sin(
        2 * np.pi * dates.dayofyear.to_numpy() / 365.25 + phase
    )
    promo = (rng.random((n, t)) < 0.06).astype(float)
    base_price = rng.uniform(1, 50, size=(n, 1))
    price = base_price * (1 - 0.2 * promo) * (1 + 0.02 * rng.standard_normal((n, t)))
    lift = 1 + promo * rng.uniform(0.3, 1.2, size=(n, 1))
    mean = np.clip(level * trend * weekly * yearly * lift, 0, None)
    y = rng.poisson(mean).astype(float)

    start = np.zeros(n, dtype=int)
    new = rng.random(n) < spec.new_fraction
    start[new] = rng.integers(t // 3, t // 2, size=new.sum())
    stop = np.full(n, t)
    discontinued = rng.random(n) < spec.discontinued_fraction
    stop[discontinued] = rng.integers(t - 200, t - 60, size=discontinued.sum())
    keep = (steps[None, :] >= start[:, None]) & (steps[None, :] < stop[:, None])

    rows, cols = np.nonzero(keep)
    frame = pd.DataFrame(
        {
            "unique_id": np.asarray(ids, dtype=object)[rows],
            "ds": dates[cols],
            "y": y[rows, cols],
            "price": np.round(price[rows, cols], 2),
            "promo": promo[rows, cols],
        }
    )
    for pid in spec.defects:
        if pid not in ids:
            raise ValueError(f"cannot inject a defect into unknown product {pid!r}")
    frame = inject_defects(frame, spec.defects, rng)
    gone = tuple(pid for pid, d in zip(ids, discontinued, strict=True) if d)
    return Panel(frame, dict(spec.defects), gone)


def inject_defects(
    frame: pd.DataFrame, defects: dict[str, Defect], rng: np.random.Generator
) -> pd.DataFrame:
    """Break the named products in the named way; every other row is left as it was."""
    frame = frame.copy()
    extra: list[pd.DataFrame] = []
    drop = np.zeros(len(frame), dtype=bool)
    for pid, kind in defects.items():
        mask = (frame["unique_id"] == pid).to_numpy()
        idx = np.flatnonzero(mask)
        pick = idx[rng.integers(len(idx) // 4, len(idx) * 3 // 4)]
        if kind == "negative":
            frame.loc[frame.index[pick], "y"] = -3.0
        elif kind == "null_y":
            frame.loc[frame.index[pick], "y"] = np.nan
        elif kind == "all_zero":
            frame.loc[mask, "y"] = 0.0
        elif kind == "duplicate_dates":
            extra.append(frame.iloc[[pick]])
        elif kind == "gap":
            drop[pick : pick + 5] = True
        elif kind == "too_short":
            drop[idx[:-30]] = True
        elif kind == "future_date":
            row = frame.iloc[[idx[-1]]].copy()
            row["ds"] = pd.Timestamp.now().normalize() + pd.Timedelta(days=400)
            extra.append(row)
    frame = frame.loc[~drop]
    if extra:
        frame = pd.concat([frame, *extra], ignore_index=True)
    return frame.sort_values(["unique_id", "ds"], kind="stable").reset_index(drop=True)
