"""Forecast metrics against values worked out by hand."""

import math

import numpy as np
import pytest

from factory.core.metrics import (
    METRICS,
    mae,
    mase,
    mean_scores,
    rmse,
    score,
    seasonal_scale,
    smape,
    wape,
)


def arr(values):
    return np.asarray(values, dtype=float)


@pytest.mark.parametrize(
    ("y", "yhat", "expected"),
    [
        ([1, 2, 3], [2, 2, 2], 2 / 3),  # |e| = 1, 0, 1 -> 2/3
        ([4, 0], [1, 2], 2.5),  # |e| = 3, 2 -> 5/2
        ([5, 5], [5, 5], 0.0),  # perfect forecast
        ([0, 10], [10, 0], 10.0),  # |e| = 10, 10 -> 10
    ],
)
def test_mae(y, yhat, expected):
    assert mae(arr(y), arr(yhat)) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("y", "yhat", "expected"),
    [
        ([1, 2, 3], [2, 2, 2], math.sqrt(2 / 3)),  # e^2 = 1, 0, 1 -> sqrt(2/3)
        ([0, 0, 0, 0], [2, 2, 2, 2], 2.0),  # e^2 = 4 each -> sqrt(4)
        ([3, 0], [0, 4], math.sqrt(12.5)),  # e^2 = 9, 16 -> sqrt(25/2)
        ([7], [7], 0.0),
    ],
)
def test_rmse(y, yhat, expected):
    assert rmse(arr(y), arr(yhat)) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("y", "yhat", "expected"),
    [
        ([1, 2, 3], [2, 2, 2], 1 / 3),  # sum|e| = 2, sum|y| = 6
        ([10, 0], [5, 5], 1.0),  # sum|e| = 5 + 5 = 10, sum|y| = 10
        ([4, 4], [3, 6], 3 / 8),  # sum|e| = 1 + 2 = 3, sum|y| = 8
        ([0, 0], [0, 0], 0.0),  # both zero: no error at all
        ([0, 0], [1, 0], math.inf),  # zero actuals but an error: undefined -> inf
    ],
)
def test_wape(y, yhat, expected):
    assert wape(arr(y), arr(yhat)) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("y", "yhat", "expected"),
    [
        # 2|e|/(|y|+|yhat|) = 2/3, 0/4, 2/5 -> (10/15 + 6/15) / 3 = 16/45
        ([1, 2, 3], [2, 2, 2], 16 / 45),
        ([0, 4], [0, 0], 1.0),  # 0/0 counted as 0, then 8/4 = 2 -> mean 1
        ([0], [5], 2.0),  # the upper bound: 10/5
        ([0, 0], [0, 0], 0.0),  # all 0/0
        ([3, 1], [1, 3], 1.0),  # 4/4 = 1 each
    ],
)
def test_smape(y, yhat, expected):
    assert smape(arr(y), arr(yhat)) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("history", "season", "expected"),
    [
        ([1, 2, 3, 4, 6], 2, 7 / 3),  # |3-1|, |4-2|, |6-3| = 2, 2, 3
        ([1, 5, 1, 5], 1, 4.0),  # |5-1|, |1-5|, |5-1| = 4 each
        ([1, 5, 1, 5], 2, 0.0),  # exactly periodic with period 2
        ([1, 2], 2, 0.0),  # not longer than one season: no naive forecast at all
        ([9], 7, 0.0),
    ],
)
def test_seasonal_scale(history, season, expected):
    assert seasonal_scale(arr(history), season) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("y", "yhat", "scale", "expected"),
    [
        ([1, 2, 3], [2, 2, 2], 2.0, 1 / 3),  # mae 2/3 over 2
        ([1, 2, 3], [2, 2, 2], 0.5, 4 / 3),  # mae 2/3 over 1/2
        ([1, 2, 3], [2, 2, 2], 0.0, 2 / 3),  # scale 0 -> plain MAE
        ([4, 0], [1, 2], 0.0, 2.5),  # scale 0 -> plain MAE
    ],
)
def test_mase(y, yhat, scale, expected):
    assert mase(arr(y), arr(yhat), scale) == pytest.approx(expected)


def test_score_has_every_metric_for_one_window():
    # y=[1,2,3], yhat=[2,2,2], scale 2: the values checked one by one above
    got = score(arr([1, 2, 3]), arr([2, 2, 2]), 2.0)
    assert set(got) == set(METRICS)
    assert got == pytest.approx(
        {"mae": 2 / 3, "rmse": math.sqrt(2 / 3), "wape": 1 / 3, "smape": 16 / 45, "mase": 1 / 3}
    )


@pytest.mark.parametrize(
    ("windows", "expected"),
    [
        (
            [
                {"mae": 1.0, "rmse": 2.0, "wape": 0.5, "smape": 0.2, "mase": 1.0},
                {"mae": 3.0, "rmse": 4.0, "wape": 0.1, "smape": 0.4, "mase": 3.0},
            ],
            # (1+3)/2, (2+4)/2, (0.5+0.1)/2, (0.2+0.4)/2, (1+3)/2
            {"mae": 2.0, "rmse": 3.0, "wape": 0.3, "smape": 0.3, "mase": 2.0},
        ),
        (
            [{"mae": 0.5, "rmse": 1.5, "wape": 0.25, "smape": 1.0, "mase": 0.75}],
            {"mae": 0.5, "rmse": 1.5, "wape": 0.25, "smape": 1.0, "mase": 0.75},
        ),
        (
            [
                {"mae": 1.0, "rmse": 1.0, "wape": math.inf, "smape": 2.0, "mase": 1.0},
                {"mae": 2.0, "rmse": 4.0, "wape": 0.2, "smape": 0.0, "mase": 4.0},
                {"mae": 3.0, "rmse": 7.0, "wape": 0.4, "smape": 1.0, "mase": 7.0},
            ],
            # an infinite window keeps the mean infinite; others: 6/3, 12/3, 3/3, 12/3
            {"mae": 2.0, "rmse": 4.0, "wape": math.inf, "smape": 1.0, "mase": 4.0},
        ),
    ],
)
def test_mean_scores(windows, expected):
    got = mean_scores(windows)
    assert set(got) == set(METRICS)
    assert got == pytest.approx(expected)
