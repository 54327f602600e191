"""Drift: per-period WAPE, consecutive breaches, PSI (hand-checked), assessment."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from factory.core.drift import (
    DriftOutcome,
    DriftSpec,
    ProductionModel,
    assess,
    assess_fleet,
    period_wapes,
    psi,
    should_retrain,
    trailing_breaches,
)


@pytest.mark.parametrize(
    ("y", "yhat", "period", "expected"),
    [
        ([10, 10, 10, 10], [8, 12, 10, 10], 2, [0.2, 0.0]),
        ([10, 10, 10, 10, 10], [8, 12, 10, 10, 0], 2, [0.2, 0.0]),  # incomplete period ignored
        ([4, 0, 0, 6], [2, 1, 0, 6], 4, [0.3]),
        ([0, 0], [1, 0], 2, [math.inf]),  # error on zero demand
        ([1, 2], [1, 2], 3, []),
    ],
)
def test_period_wapes(y, yhat, period, expected) -> None:
    assert period_wapes(np.array(y, float), np.array(yhat, float), period) == pytest.approx(
        expected
    )


@pytest.mark.parametrize(
    ("wapes", "expected"),
    [
        ([0.10, 0.30, 0.30, 0.30], 3),
        ([0.30, 0.30, 0.10], 0),  # the latest period recovered
        ([0.30, 0.10, 0.30], 1),
        ([0.22, 0.22, 0.21], 0),  # exactly at the limit (1.05 x 0.2 = 0.21) is not a breach
        ([], 0),
        ([math.inf, math.inf], 2),
    ],
)
def test_trailing_breaches(wapes, expected) -> None:
    assert trailing_breaches(wapes, reference=0.2, threshold=0.05) == expected


@pytest.mark.parametrize(
    ("reference", "recent", "bins", "expected"),
    [
        # median split at 2.5: shares (0.5, 0.5) vs (0.75, 0.25)
        # 0.25 ln(1.5) + (-0.25) ln(0.5) = 0.101366 + 0.173287
        ([1, 2, 3, 4], [1, 1, 1, 4], 2, 0.274653),
        ([1, 2, 3, 4], [4, 3, 2, 1], 2, 0.0),
        # all recent mass in the upper bin (the empty one floored at 1e-4):
        # (1e-4 - 0.5) ln(1e-4 / 0.5) + (1 - 0.5) ln(1 / 0.5) = 4.257745 + 0.346574
        ([1, 2, 3, 4], [9, 9], 2, 4.604318),
        # ties (intermittent demand) merge quantile edges: quartiles (0, 0, 0.25) -> edges
        # {0, 0.25}; shares (3/4, 1/4) vs (1/4, 3/4): 2 x 0.5 ln 3 = ln 3
        ([0, 0, 0, 1], [0, 1, 1, 1], 4, 1.098612),
    ],
)
def test_psi(reference, recent, bins, expected) -> None:
    assert psi(np.array(reference), np.array(recent), bins) == pytest.approx(expected, abs=1e-5)


def test_psi_of_a_shifted_distribution_is_large_and_of_a_resample_small() -> None:
    rng = np.random.default_rng(0)
    ref = rng.poisson(20, 364)
    assert psi(ref, rng.poisson(20, 5000)) < 0.05
    assert psi(ref, rng.poisson(6, 60)) > 1.0


def test_drift_spec_is_strict() -> None:
    with pytest.raises(ValidationError):
        DriftSpec(treshold=0.1)  # type: ignore[call-arg]
    with pytest.raises(ValidationError):
        DriftSpec(retrain_on=("accuracy",))  # type: ignore[arg-type]


# --- one product, hand-built ----------------------------------------------------------------------

CUTOFF = pd.Timestamp("2026-03-31")
MODEL = ProductionModel("p", "factory.production.p", "3", 0.10, CUTOFF)


def series(start: str, values: list[float], name: str = "y") -> pd.DataFrame:
    return pd.DataFrame({"ds": pd.date_range(start, periods=len(values)), name: values})


def history(recent: list[float]) -> pd.DataFrame:
    """90 training days around 10, then the recent actuals."""
    train = series("2026-01-01", [10.0 + (i % 7) for i in range(90)])
    return pd.concat([train, series("2026-04-01", recent)], ignore_index=True)


FORECAST = series("2026-04-01", [13.0] * 28, "yhat")


def test_three_bad_weeks_in_a_row_are_performance_drift() -> None:
    recent = [13.0] * 7 + [9.0] * 21  # week 1 exact, then WAPE 4/9 = 0.44 > 1.25 x 0.10
    out = assess(MODEL, history(recent), FORECAST, DriftSpec(psi_threshold=100))
    assert out.period_wapes == pytest.approx([0.0, 4 / 9, 4 / 9, 4 / 9])
    assert out.breaches == 3
    assert out.status == "performance"
    assert out.kinds == {"performance"}


def test_two_bad_weeks_are_not_yet_drift() -> None:
    recent = [13.0] * 14 + [9.0] * 14
    out = assess(MODEL, history(recent), FORECAST, DriftSpec(psi_threshold=100))
    assert (out.breaches, out.status) == (2, "ok")


def test_shifted_demand_is_input_drift_even_when_forecasts_are_missing() -> None:
    recent = [1.0] * 60
    out = assess(MODEL, history(recent), FORECAST.iloc[:0], DriftSpec())
    assert out.period_wapes == [] and out.psi is not None and out.psi > 0.25
    assert out.status == "input"


def test_too_little_evidence_is_insufficient() -> None:
    out = assess(MODEL, history([13.0] * 10), FORECAST, DriftSpec())
    assert out.status == "insufficient" and out.psi is None
    assert "PSI n/a" in out.detail


@pytest.mark.parametrize(
    ("status", "retrain_on", "expected"),
    [
        ("performance", ("performance", "input"), True),
        ("input", ("performance",), False),
        ("performance+input", ("input",), True),
        ("ok", ("performance", "input"), False),
    ],
)
def test_should_retrain(status, retrain_on, expected) -> None:
    out = DriftOutcome(product_id="p", model_name="m", model_version="1", status=status, detail="")
    assert should_retrain(out, DriftSpec(retrain_on=retrain_on)) is expected


def test_assess_fleet_scores_each_model_only_on_its_own_version_forecasts() -> None:
    hist = history([13.0] * 7 + [9.0] * 21).assign(unique_id="p")
    own = FORECAST.assign(unique_id="p", model_name=MODEL.name, model_version="3")
    older = series("2026-04-01", [9.0] * 28, "yhat").assign(
        unique_id="p", model_name=MODEL.name, model_version="2"
    )
    (out,) = assess_fleet({"p": MODEL}, hist, pd.concat([own, older]), DriftSpec(psi_threshold=9))
    assert out.breaches == 3 and out.model_version == "3"
