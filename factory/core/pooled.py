"""Pooled candidates: one LightGBM trained across the products of a shard (as mlforecast does),
backtested per product on that product's own windows, registered per product.

Each product's series is divided by its recent level (`forecaster.level`) before its feature
rows are made, so products of any size share one booster. A window's forecast comes from a
booster trained only on data dated before the window's origin (every product's), so no
product sees another's future.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from factory.core.backtest import Window
from factory.core.forecaster import (
    Fitted,
    ModelConfig,
    Pooled,
    Series,
    design_matrix,
    level,
    scaled,
    train_booster,
)


@dataclass
class PooledRun:
    """The pooled candidates of one batch of products."""

    # product -> candidate label -> its forecast of each of the product's windows
    paths: dict[str, dict[str, list[np.ndarray]]] = field(default_factory=dict)
    # candidate config key -> booster trained on every product's full history
    shared: dict[str, Any] = field(default_factory=dict)
    # product -> candidate label -> why it has no backtest
    dropped: dict[str, dict[str, str]] = field(default_factory=dict)
    # candidate label -> training and backtest seconds, per product of the batch
    seconds: dict[str, float] = field(default_factory=dict)


def min_train(config: ModelConfig) -> int:
    """Periods a product needs before a forecast origin: its own features' lookback (the
    training rows come from every product)."""
    return config.features.lookback + 1


def rows(config: ModelConfig, series: Series) -> tuple[np.ndarray, np.ndarray]:
    """A product's training rows, scaled by its level (none when it is too short)."""
    lookback = config.features.lookback
    if len(series.y) <= lookback:
        width = design_matrix(series, config.features, len(series.y)).shape[1]
        return np.empty((0, width)), np.empty(0)
    s = scaled(series, level(series.y, config))
    return design_matrix(s, config.features, lookback), s.y[lookback:]


def train(config: ModelConfig, histories: list[Series], seed: int = 0) -> Any | None:
    """One booster on every history's rows (None when there are none)."""
    parts = [rows(config, h) for h in histories]
    x = np.vstack([p[0] for p in parts])
    if len(x) == 0:
        return None
    return train_booster(config.params, x, np.concatenate([p[1] for p in parts]), seed)


def cutoffs(dates: list[np.datetime64], limit: int) -> list[np.datetime64]:
    """The distinct window origins (dates), thinned evenly to at most `limit` (the latest
    always kept): each distinct origin costs one booster."""
    distinct = sorted(set(dates))
    if len(distinct) <= limit:
        return distinct
    keep = np.unique(np.linspace(0, len(distinct) - 1, limit).round().astype(int))
    return [distinct[i] for i in keep]


def pooled_run(
    configs: dict[str, ModelConfig],
    items: list[tuple[str, Series]],
    windows: dict[str, list[Window]],
    limit: int,
) -> PooledRun:
    """Backtest every pooled candidate (`configs`, all of kind pooled_lightgbm) on each
    product's windows and train its full-history
    booster. A window uses the booster of the latest cutoff at or before its origin (at most
    `limit` cutoffs: ragged histories would otherwise need one booster per origin)."""
    run = PooledRun()
    for label, config in configs.items():
        start = time.perf_counter()
        need = min_train(config)
        eligible = [(p, s) for p, s in items if windows[p] and windows[p][0].origin >= need]
        origins = [s.ds[w.origin] for pid, s in eligible for w in windows[pid]]
        boosters = {}
        for cut in cutoffs(origins, limit):
            before = [s.head(int(np.searchsorted(s.ds, cut))) for _, s in items]
            boosters[cut] = train(config, before)
        ordered = sorted(boosters)
        for pid, series in eligible:
            paths, reason = _paths(config, series, windows[pid], boosters, ordered)
            if reason:
                run.dropped.setdefault(pid, {})[label] = reason
            else:
                run.paths.setdefault(pid, {})[label] = paths
        booster = train(config, [s for _, s in items])
        if booster is not None:
            run.shared[config.key] = booster
        run.seconds[label] = (time.perf_counter() - start) / max(len(items), 1)
    return run


def failed(configs: dict[str, ModelConfig], items: list[tuple[str, Series]], why: str) -> PooledRun:
    """A batch whose pooled training raised: every product drops the pooled candidates."""
    return PooledRun(dropped={pid: dict.fromkeys(configs, why) for pid, _ in items})


def _paths(
    config: ModelConfig,
    series: Series,
    windows: list[Window],
    boosters: dict[np.datetime64, Any],
    ordered: list[np.datetime64],
) -> tuple[list[np.ndarray], str]:
    """A product's forecast of each window, or why there is none."""
    paths = []
    for w in windows:
        at = int(np.searchsorted(ordered, series.ds[w.origin], side="right")) - 1
        booster = boosters[ordered[at]] if at >= 0 else None
        if booster is None:
            return [], "no pooled training rows before its first window"
        head = series.head(w.origin)
        test = series.window(w.origin, w.origin + w.horizon)
        model = Fitted(config, Pooled(booster, level(head.y, config)))
        paths.append(model.forecast(head, test.ds, test.exog))
    return paths, ""
