"""Classical candidates, ensembles, intervals and the short-history path, on known answers."""

from __future__ import annotations

import json

import numpy as np
import pytest

from factory.core import classical, saved
from factory.core.backtest import BacktestResult, Window, adaptive_windows
from factory.core.candidates import EnsembleSpec
from factory.core.fleet import FamilySpec, GateSpec
from factory.core.forecaster import FeatureConfig, ModelConfig, Series, fit
from factory.core.intervals import conformal_widths, naive_widths
from factory.core.metrics import METRICS
from factory.core.saved import loads
from factory.core.training import (
    ProductOutcome,
    _backtest_candidates,
    challenger_label,
    fallback_label,
    train_many,
    train_product,
)
from tests.support.models import model_of

START = np.datetime64("2015-01", "M")
MONTHLY = {
    "name": "monthly",
    "frequency": "MS",
    "horizon": 12,
    "season_length": 12,
    "features": {"lags": [1, 2, 12], "rolling_means": [3], "calendar": ["month"]},
    "backtest": {"windows": 2},
    "products": {"all": True},
}
GATE = GateSpec()


def monthly(y: np.ndarray) -> Series:
    """A monthly series starting January 2015."""
    ds = (START + np.arange(len(y))).astype("datetime64[ns]")
    return Series(ds, np.asarray(y, dtype="float64"))


def config(kind: str, season: int = 12, **params: object) -> ModelConfig:
    return ModelConfig(kind, dict(params), FeatureConfig(), season, "MS")


def forecast(cfg: ModelConfig, y: np.ndarray, h: int) -> np.ndarray:
    series = monthly(y)
    future = (START + np.arange(len(y), len(y) + h)).astype("datetime64[ns]")
    return fit(cfg, series).forecast(series, future)


def trend_season(n: int, noise: float = 0.0, seed: int = 0) -> np.ndarray:
    t = np.arange(n)
    rng = np.random.default_rng(seed)
    return 200 + 1.5 * t + 25 * np.sin(2 * np.pi * t / 12) + rng.normal(0, noise, n)


def intermittent(n: int, size: float = 10.0, every: int = 4) -> np.ndarray:
    """`size` once every `every` periods, zero otherwise: demand rate size / every."""
    return np.where(np.arange(1, n + 1) % every == 0, size, 0.0)


def test_ets_forecasts_pure_trend_plus_season_almost_exactly():
    y = trend_season(96 + 12)
    got = forecast(config("auto_ets"), y[:96], 12)
    assert np.abs(got - y[96:]).max() < 0.01 * y[96:].mean()


def test_arima_forecasts_pure_trend_plus_season_closely():
    y = trend_season(96 + 12)
    got = forecast(config("auto_arima"), y[:96], 12)
    assert np.abs(got - y[96:]).mean() < 0.02 * y[96:].mean()


def test_theta_extends_a_linear_trend():
    y = 50 + 3.0 * np.arange(60)
    got = forecast(config("theta", season=1), y, 6)
    expected = 50 + 3.0 * np.arange(60, 66)
    assert np.abs(got - expected).max() < 0.05 * expected.mean()
    assert np.all(np.diff(got) > 0)  # trees and naive methods would stay flat


@pytest.mark.parametrize(
    ("kind", "params", "expected"),
    [
        ("croston", {"variant": "classic"}, 10 / 4),  # size over interval
        ("croston", {"variant": "sba"}, 0.95 * 10 / 4),  # debiased by (1 - alpha / 2)
        ("adida", {}, 10 / 4),  # aggregated to the mean interval: one sale per bucket
        ("imapa", {}, 10 / 4),
        # probability x size, read just after a sale: p settles at 0.1 / (1 - 0.9^4) there
        ("tsb", {"alpha_d": 0.1, "alpha_p": 0.1}, 10 * 0.1 / (1 - 0.9**4)),
    ],
)
def test_intermittent_methods_forecast_the_demand_rate(kind, params, expected):
    got = forecast(config(kind, **params), intermittent(200), 6)
    assert np.allclose(got, got[0])  # a flat rate, not a copy of the zeros and spikes
    assert got[0] == pytest.approx(expected, rel=0.08)


@pytest.mark.parametrize(("kind", "expected"), [("naive", 7.0), ("mean", 4.0)])
def test_naive_and_mean(kind, expected):
    assert forecast(config(kind), np.array([1.0, 4.0, 7.0]), 3).tolist() == [expected] * 3


@pytest.mark.parametrize(
    "cfg",
    [
        config("auto_ets"),
        config("theta"),
        config("auto_arima"),
        config("croston", variant="sba"),
        config("adida"),
        config("imapa"),
        config("tsb", alpha_d=0.2, alpha_p=0.3),
        config("naive"),
        config("mean"),
    ],
    ids=lambda c: c.kind,
)
def test_saved_state_forecasts_identically(cfg):
    y = (
        trend_season(60, noise=3)
        if cfg.kind not in ("croston", "adida", "imapa", "tsb")
        else (intermittent(60) * (1 + np.arange(60) % 3))
    )
    series = monthly(y)
    model = fit(cfg, series)
    payload = saved.dumps(model)
    assert b"__array__" in payload or cfg.kind in ("naive", "mean")
    json.loads(payload)  # plain JSON: nothing to unpickle
    future = (START + np.arange(60, 78)).astype("datetime64[ns]")
    again = loads(cfg, payload).forecast(series, future)
    assert np.array_equal(again, model.forecast(series, future))


def test_saved_state_refuses_anything_but_numbers_and_text():
    cfg = config("naive")
    bad = json.dumps({"model_": {"mean": {"__array__": ["x"], "dtype": "object", "shape": [1]}}})
    with pytest.raises(ValueError, match="dtype 'object'"):
        loads(cfg, bad.encode())
    with pytest.raises(ValueError, match="mapping with 'model_'"):
        loads(cfg, b"[1, 2]")


def test_ensemble_is_the_median_of_its_members_and_round_trips():
    members = [config("naive"), config("mean"), config("seasonal_naive")]
    ens = config("ensemble", combine="median", members=[m.key for m in members])
    y = trend_season(48, noise=2)
    series = monthly(y)
    future = (START + np.arange(48, 60)).astype("datetime64[ns]")
    paths = np.vstack([fit(m, series).forecast(series, future) for m in members])
    model = fit(ens, series)
    got = model.forecast(series, future)
    assert np.array_equal(got, np.median(paths, axis=0))
    assert np.array_equal(loads(ens, saved.dumps(model)).forecast(series, future), got)


@pytest.mark.parametrize(
    ("n", "expected"),
    [
        (100, [Window(64, 12), Window(76, 12), Window(88, 12)]),  # the full backtest
        (40, [Window(16, 12), Window(28, 12)]),  # fewer windows
        (30, [Window(18, 12)]),  # one window
        (20, [Window(12, 8)]),  # a shorter one, leaving a season before it
        (12, []),  # no room for a backtest at all
    ],
)
def test_windows_adapt_to_the_history(n, expected):
    assert adaptive_windows(n, 12, 3, 1, 12, 12) == expected


def test_conformal_widths_are_the_pooled_quantile_scaled_by_sqrt_h():
    errors = [np.array([1.0, -2.0 * np.sqrt(2)]), np.array([-3.0, 4.0 * np.sqrt(2)])]
    widths = conformal_widths(errors, 4, levels=(50, 95))
    # scores |e| / sqrt(h): 1, 2, 3, 4; rank ceil(5 * 0.5) = 3 -> 3; rank 5 -> the largest, 4
    assert widths["50"] == pytest.approx([3 * np.sqrt(h) for h in range(1, 5)])
    assert widths["95"] == pytest.approx([4 * np.sqrt(h) for h in range(1, 5)])


def test_naive_widths_grow_with_the_spread_and_the_horizon():
    calm = naive_widths(np.array([10.0, 11, 10, 11, 10]), 3)
    wild = naive_widths(np.array([10.0, 20, 5, 25, 0]), 3)
    assert wild["95"][0] > calm["95"][0] > 0
    assert calm["80"][0] < calm["95"][0]
    assert calm["95"][2] == pytest.approx(calm["95"][0] * np.sqrt(3))


def family(*models: dict, **over: object) -> FamilySpec:
    return FamilySpec.model_validate({**MONTHLY, "models": list(models), **over})


CLASSICAL_FAMILY = family(
    {"kind": "ridge"}, {"kind": "auto_ets"}, {"kind": "theta"}, {"kind": "ensemble", "top_k": 2}
)


def test_a_classical_winner_loads_back_to_its_reported_forecast():
    outcome = train_product("p", monthly(trend_season(84, noise=2)), CLASSICAL_FAMILY, GATE)
    assert outcome.status == "registered" and outcome.history == "full"
    assert json.loads(outcome.config_json)["kind"] in ("auto_ets", "theta", "ensemble")
    frame = model_of(outcome).forecast()
    assert np.allclose(frame["yhat"], outcome.forecast)
    assert (frame["yhat_lo_95"] <= frame["yhat_lo_80"]).all()
    assert (frame["yhat_lo_80"] <= frame["yhat"]).all() and (
        frame["yhat"] <= frame["yhat_hi_80"]
    ).all()
    assert (frame["yhat_hi_80"] <= frame["yhat_hi_95"]).all()


def test_interval_width_grows_with_noise():
    def width(noise: float) -> float:
        y = trend_season(84, noise=noise, seed=3)
        outcome = train_product("p", monthly(y), CLASSICAL_FAMILY, GATE)
        frame = model_of(outcome).forecast()
        return float((frame["yhat_hi_80"] - frame["yhat_lo_80"]).mean())

    assert width(12.0) > 2 * width(2.0)


@pytest.mark.parametrize(
    ("n", "path"), [(30, "short"), (20, "short"), (8, "minimal"), (1, "minimal")]
)
def test_short_products_get_a_forecast_with_intervals(n, path):
    outcome = train_product("new", monthly(trend_season(n, noise=2)), CLASSICAL_FAMILY, GATE)
    assert outcome.status == "registered", outcome.reason
    assert outcome.history == path
    assert len(outcome.forecast) == 12
    frame = model_of(outcome).forecast()
    assert frame["yhat_hi_95"].gt(frame["yhat"]).all()
    if path == "short":  # ridge needs lags + two seasons of rows: dropped, with its reason
        assert "ridge" in outcome.dropped and "needs" in outcome.dropped["ridge"]
        assert {"naive", "mean"} <= set(outcome.scores)  # the short-history candidates ran
    else:
        assert json.loads(outcome.config_json)["kind"] == "mean"


def test_nothing_beats_the_baseline_keeps_the_best_candidate_not_worse():
    y = np.tile([5.0, 50, 10, 80, 20, 5, 60, 15, 90, 30, 10, 40], 6)  # a pure season
    fam = family({"kind": "mean"}, {"kind": "naive"})
    outcome = train_product("p", monthly(y), fam, GATE)
    assert outcome.status == "registered" and outcome.reason.startswith("fallback")
    assert outcome.challenger == "seasonal_naive"  # both candidates are worse than it
    off = train_product("p", monthly(y), fam, GateSpec(fallback=False))
    assert off.status == "rejected" and off.payload is None


def test_a_failing_candidate_is_dropped_not_the_product(monkeypatch):
    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("cannot fit")

    monkeypatch.setattr(classical, "fit", broken)
    outcome = train_product("p", monthly(trend_season(84, noise=2)), CLASSICAL_FAMILY, GATE)
    assert outcome.status == "registered"
    assert outcome.dropped["auto_ets"] == "RuntimeError: cannot fit"
    assert outcome.challenger == "ridge"


def test_an_ensemble_with_fixed_members_combines_exactly_those():
    fam = family(
        {"kind": "naive"},
        {"kind": "mean"},
        {"kind": "theta"},
        {"kind": "ensemble", "members": ["naive", "mean"], "combine": "mean"},
    )
    series = monthly(trend_season(84, noise=2))
    windows = adaptive_windows(84, 12, 2, 1, 12, 12)
    outcome = ProductOutcome("p", fam.name, "failed", "")
    results = _backtest_candidates(outcome, series, fam, windows, "mase")
    ensemble = results["ensemble"]
    assert sorted(m.kind for m in ensemble.config.members) == ["mean", "naive"]  # not theta
    for i, path in enumerate(ensemble.paths):
        assert np.array_equal(path, (results["naive"].paths[i] + results["mean"].paths[i]) / 2)


def test_ensemble_members_must_be_candidates_of_the_family():
    with pytest.raises(ValueError, match=r"ensemble members arima are not candidates"):
        family({"kind": "naive"}, {"kind": "mean"}, {"kind": "ensemble", "members": ["arima"]})


def result(kind: str, mase: float) -> BacktestResult:
    return BacktestResult(config(kind), ({m: mase for m in METRICS},))


@pytest.mark.parametrize(
    ("scores", "margin", "expected"),
    [
        ({"theta": 0.90, "ensemble": 0.95}, 0.0, "theta"),  # the best score wins outright
        ({"theta": 0.90, "ensemble": 0.95}, 0.10, "ensemble"),  # 0.90 is not 10% below 0.95
        ({"theta": 0.80, "ensemble": 0.95}, 0.10, "theta"),  # 0.80 < 0.855
        ({"theta": 0.99, "ensemble": 0.95}, 0.10, "ensemble"),
    ],
)
def test_the_ensemble_margin_keeps_the_combination_unless_clearly_beaten(scores, margin, expected):
    results = {"seasonal_naive": result("seasonal_naive", 1.0)}
    results |= {k: result(k, v) for k, v in scores.items()}
    spec = EnsembleSpec(kind="ensemble", margin=margin)
    assert challenger_label(results, "mase", spec) == expected


@pytest.mark.parametrize(
    ("scores", "chosen", "tolerance", "expected"),
    [
        ({"ensemble": 0.99, "theta": 0.97}, "ensemble", 0.0, "ensemble"),  # not worse: kept
        ({"ensemble": 1.05, "theta": 0.98}, "ensemble", 0.0, "theta"),  # the best not worse
        ({"ensemble": 1.05, "theta": 1.10}, "ensemble", 0.0, "seasonal_naive"),
        ({"ensemble": 1.05, "theta": 1.10}, "ensemble", 0.10, "ensemble"),  # within 10%
        ({"ensemble": 1.15, "theta": 1.08}, "ensemble", 0.10, "theta"),
        ({"ensemble": 1.15, "theta": 1.12}, "ensemble", 0.10, "seasonal_naive"),
    ],
)
def test_the_fallback_keeps_the_chosen_candidate_within_the_tolerance(
    scores, chosen, tolerance, expected
):
    results = {"seasonal_naive": result("seasonal_naive", 1.0)}
    results |= {k: result(k, v) for k, v in scores.items()}
    assert fallback_label(results, chosen, "mase", tolerance) == expected


def test_a_fleet_sets_the_fallback_tolerance():
    y = np.tile([5.0, 50, 10, 80, 20, 5, 60, 15, 90, 30, 10, 40], 6)
    y = y * (1 + 0.05 * np.random.default_rng(9).standard_normal(len(y)))  # theta ~8% worse
    fam = family({"kind": "theta"})
    strict = train_product("p", monthly(y), fam, GATE)
    theta, naive = strict.scores["theta"]["mase"], strict.scores["seasonal_naive"]["mase"]
    assert 1.0 < theta / naive < 1.2
    assert strict.challenger == "seasonal_naive"
    loose = train_product("p", monthly(y), fam, GateSpec(fallback_tolerance=0.2))
    assert loose.challenger == "theta" and loose.reason.startswith("fallback")
    assert json.loads(loose.config_json)["kind"] == "theta"
    with pytest.raises(ValueError, match="fallback_tolerance"):
        GateSpec(fallback_tolerance=1.5)


def test_an_all_zero_product_gets_a_zero_forecast_whatever_the_candidates():
    """A family that allows all-zero histories: every candidate kind copes with a series of
    zeros (no division by its zero scale), and the product is forecast zero, with intervals."""
    everything = family(
        {"kind": "ridge"},
        {"kind": "lightgbm", "n_estimators": 20},
        {"kind": "pooled_lightgbm", "n_estimators": 20},
        {"kind": "auto_ets"},
        {"kind": "theta"},
        {"kind": "auto_arima"},
        {"kind": "croston", "variant": "sba"},
        {"kind": "tsb"},
        {"kind": "ensemble", "top_k": 3},
        validation={"allow_all_zero": True},
    )
    items = [("zero", monthly(np.zeros(84))), ("sells", monthly(trend_season(84, noise=2)))]
    zero, sells = train_many(items, everything, GATE, {})
    assert (zero.status, sells.status) == ("registered", "registered"), zero.reason
    assert np.allclose(zero.forecast, 0.0)
    frame = model_of(zero).forecast()
    assert np.allclose(frame["yhat"], 0.0) and frame.notna().all().all()
    assert (frame["yhat_lo_95"] >= 0).all()
