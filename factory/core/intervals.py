"""Prediction intervals: conformal half-widths from a winner's backtest errors."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from factory.core.forecaster import LEVELS

# z-scores of the central intervals, for a history too short to backtest
Z = {80: 1.2815515655446004, 95: 1.959963984540054}


def conformal_widths(
    errors: Sequence[np.ndarray], horizon: int, levels: Sequence[int] = LEVELS
) -> dict[str, list[float]]:
    """Half-widths for steps 1..horizon from backtest errors (one array per window, step 1
    first). Each error is scaled by 1/sqrt(step), so every window and step adds to one pool of
    scores; a level's half-width at step h is the pool's conformal quantile (rank
    ceil((n + 1) * level), the largest score when the pool is smaller) times sqrt(h)."""
    scores = np.concatenate(
        [np.abs(e) / np.sqrt(np.arange(1, len(e) + 1)) for e in errors if len(e)] or [[]]
    )
    scores = scores[np.isfinite(scores)]
    if not len(scores):
        return {}
    ordered = np.sort(scores)
    steps = np.sqrt(np.arange(1, horizon + 1))
    out = {}
    for level in levels:
        rank = min(math.ceil((len(ordered) + 1) * level / 100), len(ordered))
        out[str(level)] = [float(v) for v in ordered[rank - 1] * steps]
    return out


def naive_widths(
    y: np.ndarray, horizon: int, levels: Sequence[int] = LEVELS
) -> dict[str, list[float]]:
    """Half-widths for a history too short to backtest: a random walk's, with the spread of
    the history's period-to-period changes (or of its values, for one or two points)."""
    y = np.asarray(y, dtype="float64")
    spread = float(np.std(np.diff(y), ddof=1)) if len(y) > 2 else float(np.abs(y).mean())
    steps = np.sqrt(np.arange(1, horizon + 1))
    return {str(level): [float(v) for v in Z[level] * spread * steps] for level in levels}
