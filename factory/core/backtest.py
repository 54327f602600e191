"""Rolling-origin backtests of candidate models on one product's history."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from factory.core.forecaster import ModelConfig, Series, combine, fit
from factory.core.metrics import mean_scores, score, seasonal_scale


@dataclass(frozen=True)
class Window:
    """One backtest window: train on [0, origin), forecast [origin, origin + horizon)."""

    origin: int
    horizon: int


def rolling_windows(n: int, horizon: int, windows: int, step: int) -> list[Window]:
    """Origins stepping back from the end so the last window ends at the last period."""
    origins = [n - horizon - step * k for k in range(windows - 1, -1, -1)]
    if origins[0] <= 0:
        raise ValueError(f"history of {n} periods is too short for {windows} windows")
    return [Window(o, horizon) for o in origins]


def adaptive_windows(
    n: int, horizon: int, windows: int, min_windows: int, step: int, min_train: int
) -> list[Window]:
    """The most windows (from `windows` down to `min_windows`) of the full horizon that leave
    `min_train` periods before the first origin; failing that, `min_windows` shorter windows
    back to back; none when even one-period windows would not fit."""
    for count in range(windows, min_windows - 1, -1):
        if n - horizon - step * (count - 1) >= min_train:
            return rolling_windows(n, horizon, count, step)
    short = min(horizon, (n - min_train) // min_windows)
    return rolling_windows(n, short, min_windows, short) if short >= 1 else []


@dataclass(frozen=True)
class BacktestResult:
    """Per-window and mean scores of one candidate."""

    config: ModelConfig
    windows: tuple[dict[str, float], ...]
    paths: tuple[np.ndarray, ...] = ()  # the forecast of each window

    @property
    def mean(self) -> dict[str, float]:
        """Metrics averaged over windows."""
        return mean_scores(list(self.windows))


def backtest(config: ModelConfig, series: Series, windows: list[Window]) -> BacktestResult:
    """Refit at each origin and score the forecast of the next horizon."""
    paths = []
    for w in windows:
        train = series.head(w.origin)
        test = series.window(w.origin, w.origin + w.horizon)
        paths.append(fit(config, train).forecast(train, test.ds, test.exog))
    return scored(config, series, windows, paths)


def scored(
    config: ModelConfig, series: Series, windows: list[Window], paths: list[np.ndarray]
) -> BacktestResult:
    """A candidate's result from its forecast of each window."""
    scores = [
        score(
            series.y[w.origin : w.origin + w.horizon],
            path,
            seasonal_scale(series.y[: w.origin], config.season_length),
        )
        for w, path in zip(windows, paths, strict=True)
    ]
    return BacktestResult(config, tuple(scores), tuple(paths))


def backtest_ensemble(
    config: ModelConfig, members: list[BacktestResult], series: Series, windows: list[Window]
) -> BacktestResult:
    """An ensemble scored on the same windows from its members' forecasts (no refit)."""
    how = config.params["combine"]
    paths = [combine(np.vstack([m.paths[i] for m in members]), how) for i in range(len(windows))]
    return scored(config, series, windows, paths)


def errors(result: BacktestResult, series: Series, windows: list[Window]) -> list[np.ndarray]:
    """Actual minus forecast in each window."""
    return [
        series.y[w.origin : w.origin + w.horizon] - path
        for w, path in zip(windows, result.paths, strict=True)
    ]
