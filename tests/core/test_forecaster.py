"""Features, the naive baseline, fitting, safe serialisation and backtest windows."""

import numpy as np
import pandas as pd
import pytest
import skops.io as sio

from factory.core import saved
from factory.core.backtest import Window, rolling_windows
from factory.core.fleet import load_fleet
from factory.core.forecaster import (
    FeatureConfig,
    Fitted,
    ModelConfig,
    Series,
    design_matrix,
    fit,
    future_dates,
    seasonal_naive,
)
from factory.core.saved import loads
from factory.core.training import baseline_config, model_configs
from tests.support.fleets import REPO

REPO_FLEET = REPO / "fleet.yaml"

FEATS = FeatureConfig(lags=(1, 7), rolling_means=(7,), calendar=("dayofweek",), exogenous=())
CANDIDATES = {
    "ridge": {"alpha": 1.0},
    "random_forest": {"n_estimators": 15, "max_depth": 4, "min_samples_leaf": 5},
    "lightgbm": {"n_estimators": 30, "num_leaves": 7, "min_data_in_leaf": 5},
}


def dates(n, start="2026-01-05"):  # 2026-01-05 is a Monday
    return pd.date_range(start, periods=n, freq="D").to_numpy("datetime64[ns]")


def tiny():
    y = np.array([1.0, 2.0, 4.0, 8.0, 16.0, 32.0])
    return Series(dates(6), y, {"promo": np.array([0.0, 1.0, 0.0, 0.0, 1.0, 0.0])})


@pytest.fixture(scope="module")
def weekly():
    rng = np.random.default_rng(0)
    n = 120
    mean = 10 + 5 * np.sin(np.arange(n) * 2 * np.pi / 7)
    return Series(dates(n), rng.poisson(mean).astype(float), {})


def test_design_matrix_uses_only_earlier_values():
    cfg = FeatureConfig(lags=(1, 2), rolling_means=(2,), calendar=(), exogenous=())

    x = design_matrix(tiny(), cfg, start=2)

    # y = 1, 2, 4, 8, 16, 32; row t = [y[t-1], y[t-2], (y[t-2] + y[t-1]) / 2]
    expected = [
        [2.0, 1.0, 1.5],  # t=2
        [4.0, 2.0, 3.0],  # t=3
        [8.0, 4.0, 6.0],  # t=4
        [16.0, 8.0, 12.0],  # t=5
    ]
    np.testing.assert_array_equal(x, expected)


def test_design_matrix_appends_calendar_then_exogenous():
    cfg = FeatureConfig(lags=(1,), rolling_means=(), calendar=("dayofweek",), exogenous=("promo",))

    x = design_matrix(tiny(), cfg, start=3)

    # t=3..5 are Thu, Fri, Sat (dayofweek 3, 4, 5); promo at t=3..5 is 0, 1, 0
    np.testing.assert_array_equal(x, [[4.0, 3.0, 0.0], [8.0, 4.0, 1.0], [16.0, 5.0, 0.0]])


def test_design_matrix_row_ignores_its_own_value():
    cfg = FeatureConfig(lags=(1, 2), rolling_means=(2, 3), calendar=(), exogenous=())
    series = tiny()
    changed = Series(series.ds, series.y.copy(), series.exog)
    changed.y[-1] = 1000.0

    np.testing.assert_array_equal(
        design_matrix(series, cfg, start=3), design_matrix(changed, cfg, start=3)
    )


@pytest.mark.parametrize(
    ("y", "horizon", "season", "expected"),
    [
        (range(1, 11), 5, 3, [8, 9, 10, 8, 9]),  # last season 8, 9, 10 repeated
        (range(1, 11), 2, 3, [8, 9]),
        (range(1, 15), 7, 7, [8, 9, 10, 11, 12, 13, 14]),
        ([1, 2], 5, 7, [1, 2, 1, 2, 1]),  # shorter than a season: repeat what there is
    ],
)
def test_seasonal_naive_repeats_the_last_season(y, horizon, season, expected):
    out = seasonal_naive(np.asarray(list(y), dtype=float), horizon, season)

    assert out.dtype == np.float64
    np.testing.assert_array_equal(out, expected)


def test_seasonal_naive_model_forecasts_like_the_function(weekly):
    cfg = ModelConfig("seasonal_naive", {}, FEATS, 7)
    model = fit(cfg, weekly)

    out = model.forecast(weekly, future_dates(weekly.ds[-1], 10, "D"))

    np.testing.assert_array_equal(out, np.resize(weekly.y[-7:], 10))
    assert saved.dumps(model) == b""


def test_future_dates_follow_the_last_date():
    out = future_dates(np.datetime64("2026-01-30"), 3, "D")

    assert [str(d)[:10] for d in out] == ["2026-01-31", "2026-02-01", "2026-02-02"]
    monthly = future_dates(np.datetime64("2026-01-01"), 2, "MS")
    assert [str(d)[:10] for d in monthly] == ["2026-02-01", "2026-03-01"]


@pytest.mark.parametrize("kind", list(CANDIDATES))
def test_fit_is_deterministic(weekly, kind):
    cfg = ModelConfig(kind, CANDIDATES[kind], FEATS, 7)
    ds = future_dates(weekly.ds[-1], 14, "D")

    first = fit(cfg, weekly).forecast(weekly, ds)
    second = fit(cfg, weekly).forecast(weekly, ds)

    np.testing.assert_array_equal(first, second)
    assert (first >= 0).all()
    assert len(first) == 14


@pytest.mark.parametrize("kind", list(CANDIDATES))
def test_dumps_loads_round_trip_forecasts_identically(weekly, kind):
    cfg = ModelConfig(kind, CANDIDATES[kind], FEATS, 7)
    model = fit(cfg, weekly)
    ds = future_dates(weekly.ds[-1], 14, "D")

    payload = saved.dumps(model)
    restored = loads(cfg, payload)

    assert isinstance(payload, bytes)
    assert not payload.startswith(b"\x80")  # never a pickle
    np.testing.assert_array_equal(restored.forecast(weekly, ds), model.forecast(weekly, ds))


@pytest.mark.parametrize("kind", ["ridge", "elastic_net"])
def test_linear_forecast_is_the_pipelines_own_prediction(weekly, kind):
    """The direct arithmetic a linear model forecasts with gives what the sklearn pipeline
    predicts, step for step, to the last bit."""
    cfg = ModelConfig(kind, {"alpha": 0.5}, FEATS, 7)
    model = fit(cfg, weekly)
    x = design_matrix(weekly, FEATS, 7)

    np.testing.assert_array_equal(model._predict(x), model.estimator.predict(x))
    model._linear = None  # the pipeline itself, one predict call per step
    ds = future_dates(weekly.ds[-1], 14, "D")
    slow = model.forecast(weekly, ds)
    assert model.estimator.predict(x[:1]).shape == (1,)
    np.testing.assert_array_equal(fit(cfg, weekly).forecast(weekly, ds), slow)


def test_forecast_learns_the_weekly_pattern(weekly):
    # the weekly mean is 10 + 5 sin(2 pi t / 7); a fitted model should track it far better
    # than the flat mean of 10 would
    cfg = ModelConfig("lightgbm", CANDIDATES["lightgbm"], FEATS, 7)
    ds = future_dates(weekly.ds[-1], 14, "D")
    t = np.arange(len(weekly.y), len(weekly.y) + 14)
    truth = 10 + 5 * np.sin(t * 2 * np.pi / 7)

    out = fit(cfg, weekly).forecast(weekly, ds)

    assert np.mean(np.abs(out - truth)) < 0.6 * np.mean(np.abs(10 - truth))


class Gadget:
    """Not a scikit-learn type: nothing the factory would ever store."""

    def __init__(self):
        self.value = 3


def test_loads_refuses_an_untrusted_type():
    payload = sio.dumps(Gadget())
    cfg = ModelConfig("ridge", {"alpha": 1.0}, FEATS, 7)

    with pytest.raises(ValueError, match=r"refusing to load untrusted types: .*Gadget"):
        loads(cfg, payload)


def test_loads_refuses_a_sklearn_type_outside_the_allow_list():
    from sklearn.svm import SVR

    rng = np.random.default_rng(0)
    svr = SVR().fit(rng.random((10, 2)), rng.random(10))
    cfg = ModelConfig("ridge", {"alpha": 1.0}, FEATS, 7)

    with pytest.raises(ValueError, match="SVR"):
        loads(cfg, sio.dumps(svr))


def repo_configs():
    spec = load_fleet(REPO_FLEET).spec
    out = []
    for family in spec.families:
        for label, cfg in model_configs(family).items():
            out.append(pytest.param(cfg, id=f"{family.name}-{label}"))
        out.append(pytest.param(baseline_config(family), id=f"{family.name}-naive"))
    return out


@pytest.mark.parametrize("cfg", repo_configs())
def test_model_config_json_round_trip(cfg):
    back = ModelConfig.from_json(cfg.key)

    assert back == cfg
    assert back.key == cfg.key
    assert isinstance(back.features.lags, tuple)


def test_model_config_key_changes_with_any_parameter():
    a = ModelConfig("ridge", {"alpha": 1.0}, FEATS, 7)

    assert ModelConfig("ridge", {"alpha": 1.0}, FEATS, 7).key == a.key
    assert ModelConfig("ridge", {"alpha": 2.0}, FEATS, 7).key != a.key
    assert ModelConfig("ridge", {"alpha": 1.0}, FEATS, 14).key != a.key
    assert ModelConfig("ridge", {"alpha": 1.0}, FeatureConfig(lags=(1,)), 7).key != a.key
    assert ModelConfig("ridge", {"alpha": 1.0}, FEATS, 7, "W").key != a.key


def test_fitted_forecast_uses_given_exogenous_values():
    # a ridge on promo alone learns y = 5 + 10 * promo exactly enough to tell 0 from 1
    n = 60
    promo = (np.arange(n) % 3 == 0).astype(float)
    series = Series(dates(n), 5 + 10 * promo, {"promo": promo})
    cfg = ModelConfig(
        "ridge", {"alpha": 0.01}, FeatureConfig((1,), (), (), ("promo",)), season_length=7
    )
    model: Fitted = fit(cfg, series)
    ds = future_dates(series.ds[-1], 2, "D")

    with_promo = model.forecast(series, ds, {"promo": np.array([1.0, 0.0])})
    default = model.forecast(series, ds)  # no promotion assumed

    assert with_promo[0] == pytest.approx(15, abs=0.5)
    assert with_promo[1] == pytest.approx(5, abs=0.5)
    np.testing.assert_allclose(default, [5, 5], atol=0.5)


@pytest.mark.parametrize(
    ("n", "horizon", "windows", "step", "origins"),
    [
        (100, 10, 3, 10, [70, 80, 90]),  # 100 - 10 - 10k for k = 2, 1, 0
        (100, 10, 2, 5, [85, 90]),  # overlapping windows
        (50, 7, 4, 7, [22, 29, 36, 43]),
        (31, 10, 3, 10, [1, 11, 21]),  # the shortest history that still has a training period
    ],
)
def test_rolling_windows_origins(n, horizon, windows, step, origins):
    got = rolling_windows(n, horizon, windows, step)

    assert got == [Window(o, horizon) for o in origins]
    assert got[-1].origin + horizon == n  # the last window ends at the last period


@pytest.mark.parametrize(
    ("n", "horizon", "windows", "step"),
    [(30, 10, 3, 10), (20, 10, 3, 10), (5, 10, 2, 10)],  # first origins 0, -10, -15
)
def test_rolling_windows_too_short_raises(n, horizon, windows, step):
    with pytest.raises(ValueError, match=f"history of {n} periods is too short for {windows}"):
        rolling_windows(n, horizon, windows, step)
