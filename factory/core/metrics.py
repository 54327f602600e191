"""Forecast accuracy metrics. Each takes actuals and forecasts of one window."""

from __future__ import annotations

import numpy as np

METRICS = ("mae", "rmse", "wape", "smape", "mase")


def mae(y: np.ndarray, yhat: np.ndarray) -> float:
    """Mean absolute error."""
    return float(np.mean(np.abs(y - yhat)))


def rmse(y: np.ndarray, yhat: np.ndarray) -> float:
    """Root mean squared error."""
    return float(np.sqrt(np.mean((y - yhat) ** 2)))


def wape(y: np.ndarray, yhat: np.ndarray) -> float:
    """Weighted absolute percentage error: sum|e| / sum|y| (0 when both are 0)."""
    num, den = float(np.sum(np.abs(y - yhat))), float(np.sum(np.abs(y)))
    if den == 0:
        return 0.0 if num == 0 else float("inf")
    return num / den


def smape(y: np.ndarray, yhat: np.ndarray) -> float:
    """Symmetric MAPE in [0, 2]: mean of 2|e| / (|y| + |yhat|), with 0/0 counted as 0."""
    den = np.abs(y) + np.abs(yhat)
    ratio = np.divide(2 * np.abs(y - yhat), den, out=np.zeros_like(den, dtype=float), where=den > 0)
    return float(np.mean(ratio))


def seasonal_scale(history: np.ndarray, season: int) -> float:
    """In-sample MAE of the seasonal naive forecast: the MASE denominator."""
    if len(history) <= season:
        return 0.0
    return float(np.mean(np.abs(history[season:] - history[:-season])))


def mase(y: np.ndarray, yhat: np.ndarray, scale: float) -> float:
    """MAE scaled by the in-sample seasonal-naive MAE (plain MAE when that scale is 0)."""
    return mae(y, yhat) / scale if scale > 0 else mae(y, yhat)


def score(y: np.ndarray, yhat: np.ndarray, scale: float) -> dict[str, float]:
    """All metrics for one window."""
    return {
        "mae": mae(y, yhat),
        "rmse": rmse(y, yhat),
        "wape": wape(y, yhat),
        "smape": smape(y, yhat),
        "mase": mase(y, yhat, scale),
    }


def mean_scores(windows: list[dict[str, float]]) -> dict[str, float]:
    """Average each metric over backtest windows."""
    return {m: float(np.mean([w[m] for w in windows])) for m in METRICS}
