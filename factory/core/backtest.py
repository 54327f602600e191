"""Rolling-origin backtests of candidate models on one product's history."""

from __future__ import annotations

from dataclasses import dataclass

from factory.core.forecaster import ModelConfig, Series, fit
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


@dataclass(frozen=True)
class BacktestResult:
    """Per-window and mean scores of one candidate."""

    config: ModelConfig
    windows: tuple[dict[str, float], ...]

    @property
    def mean(self) -> dict[str, float]:
        """Metrics averaged over windows."""
        return mean_scores(list(self.windows))


def backtest(config: ModelConfig, series: Series, windows: list[Window]) -> BacktestResult:
    """Refit at each origin and score the forecast of the next horizon."""
    scores = []
    for w in windows:
        train = series.head(w.origin)
        test = series.window(w.origin, w.origin + w.horizon)
        model = fit(config, train)
        yhat = model.forecast(train, test.ds, test.exog)
        scores.append(score(test.y, yhat, seasonal_scale(train.y, config.season_length)))
    return BacktestResult(config, tuple(scores))
