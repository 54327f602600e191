"""The pooled LightGBM candidate: trained across a batch of products, scored and registered
per product."""

from __future__ import annotations

import json
import zlib

import numpy as np
import pytest

from factory.core import pooled, saved
from factory.core.backtest import Window
from factory.core.fleet import FamilySpec, GateSpec
from factory.core.forecaster import POOLED, FeatureConfig, ModelConfig, Series, fit
from factory.core.training import pooled_candidates, train_many
from tests.support.models import model_of

START = np.datetime64("2010-01", "M")
FEATURES = {"lags": [1, 2, 12], "rolling_means": [3], "calendar": ["month"]}
FAMILY = {
    "name": "monthly",
    "frequency": "MS",
    "horizon": 12,
    "season_length": 12,
    "features": FEATURES,
    "backtest": {"windows": 2},
    "products": {"all": True},
}
POOLED_MODEL = {"kind": "pooled_lightgbm", "n_estimators": 100, "num_leaves": 7}


def monthly(y: np.ndarray) -> Series:
    ds = (START + np.arange(len(y))).astype("datetime64[ns]")
    return Series(ds, np.asarray(y, dtype="float64"))


def seasonal(level: float, n: int = 96, seed: int = 0, noise: float = 0.1) -> np.ndarray:
    """One shared yearly shape at the product's level, with multiplicative noise: the last
    season alone (seasonal naive) carries all of it, the pooled shape much less."""
    t = np.arange(n)
    rng = np.random.default_rng(seed)
    return level * (1 + 0.4 * np.sin(2 * np.pi * t / 12)) * (1 + rng.normal(0, noise, n))


def family(*models: dict) -> FamilySpec:
    return FamilySpec.model_validate({**FAMILY, "models": list(models)})


def panel(levels: list[float], n: int = 96) -> list[tuple[str, Series]]:
    return [(f"p{i}", monthly(seasonal(lv, n, seed=i))) for i, lv in enumerate(levels)]


def config() -> ModelConfig:
    params = {k: v for k, v in POOLED_MODEL.items() if k != "kind"}
    return ModelConfig(POOLED, params, FeatureConfig(**FEATURES), 12, "MS")  # type: ignore[arg-type]


LEVELS = [5, 10, 20, 40, 80, 160, 320, 640]


def test_products_of_any_size_share_one_booster_and_forecast_their_own_level():
    items = panel(LEVELS)
    outcomes = train_many(items, family(POOLED_MODEL), GateSpec(), {})
    assert [o.status for o in outcomes] == ["registered"] * len(items)
    assert {json.loads(o.config_json)["kind"] for o in outcomes} == {POOLED}
    for (pid, _), outcome in zip(items, outcomes, strict=True):
        truth = seasonal(LEVELS[int(pid[1:])], 108, noise=0.0)[96:]
        error = np.abs(np.asarray(outcome.forecast) - truth).mean() / truth.mean()
        assert error < 0.06, (pid, error)
        assert outcome.scores[POOLED]["mase"] < outcome.scores["seasonal_naive"]["mase"]
        assert outcome.timings[f"candidate.{POOLED}_s"] > 0


def test_a_registered_pooled_model_loads_back_to_its_reported_forecast():
    items = panel(LEVELS[:4])
    outcome = train_many(items, family(POOLED_MODEL), GateSpec(), {})[2]
    model = model_of(outcome)
    assert np.allclose(model.forecast()["yhat"], outcome.forecast)
    state = json.loads(zlib.decompress(outcome.payload))
    assert set(state) == {"booster", "scale"} and state["booster"].startswith("tree")
    with pytest.raises(ValueError, match="inflates past"):
        saved.inflate(zlib.compress(b"0" * 10_000), 1_000)  # no unbounded expansion
    with pytest.raises(ValueError, match="truncated"):
        saved.loads(config(), outcome.payload[:-10])


def test_a_window_is_forecast_only_from_data_before_its_origin():
    """Changing every product's values after a window's origin leaves that window's forecast
    (and so its score) unchanged: no product sees another's future."""
    items = panel(LEVELS[:4])
    windows = {pid: [Window(60, 12), Window(72, 12)] for pid, _ in items}
    before = pooled.pooled_run({"pooled": config()}, items, windows, limit=4)
    tampered = []
    for pid, s in items:
        y = s.y.copy()
        y[60:] *= 3.0  # after the first window's origin, before the second's
        tampered.append((pid, Series(s.ds, y)))
    after = pooled.pooled_run({"pooled": config()}, tampered, windows, limit=4)
    for pid, _ in items:
        first, second = before.paths[pid]["pooled"], after.paths[pid]["pooled"]
        assert np.array_equal(first[0], second[0])
        assert not np.allclose(first[1], second[1])


def test_cutoffs_are_thinned_to_the_limit_keeping_the_latest():
    dates = [np.datetime64("2020-01-01") + np.timedelta64(d, "D") for d in range(50)]
    kept = pooled.cutoffs(dates + dates, 6)
    assert len(kept) <= 6 and kept[-1] == dates[-1] and kept == sorted(kept)
    assert pooled.cutoffs(dates[:3], 6) == dates[:3]


def test_a_pooled_model_is_not_fitted_on_one_series():
    with pytest.raises(ValueError, match="trained across products"):
        fit(config(), monthly(seasonal(10)))


def test_a_pooled_training_failure_drops_the_candidate_not_the_products(monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("out of memory")

    monkeypatch.setattr(pooled, "train", broken)
    items = panel(LEVELS[:3])
    outcomes = train_many(items, family({"kind": "ridge"}, POOLED_MODEL), GateSpec(), {})
    for outcome in outcomes:
        assert outcome.status == "registered"
        assert json.loads(outcome.config_json)["kind"] == "ridge"
        assert "out of memory" in outcome.dropped[POOLED]


def test_a_short_product_borrows_the_pooled_rows_of_the_long_ones():
    """The pooled candidate needs only its own lookback before a window: a product with two
    years of history is backtested and forecast from a booster trained mostly on others."""
    items = [*panel(LEVELS[:4]), ("new", monthly(seasonal(50, n=30, seed=9)))]
    fam = family(POOLED_MODEL)
    shared = pooled_candidates(fam, items)
    assert POOLED in shared.paths["new"]
    outcome = train_many(items, fam, GateSpec(), {})[-1]
    assert outcome.history == "short" and POOLED in outcome.scores


def test_an_ensemble_can_combine_the_pooled_model_with_per_product_ones():
    items = panel(LEVELS[:4])
    ens = {"kind": "ensemble", "members": ["ridge", POOLED], "combine": "mean", "margin": 0.9}
    outcome = train_many(items, family({"kind": "ridge"}, POOLED_MODEL, ens), GateSpec(), {})[1]
    assert outcome.status == "registered" and outcome.challenger == "ensemble"
    cfg = ModelConfig.from_json(outcome.config_json)
    assert [m.kind for m in cfg.members] in (["ridge", POOLED], [POOLED, "ridge"])
    model = model_of(outcome)
    assert np.allclose(model.forecast()["yhat"], outcome.forecast)


def test_the_report_does_not_refit_a_pooled_model_on_one_product():
    """`factory report` recomputes a version's backtest on one product's series; a pooled
    model (alone or in an ensemble) cannot be, and the page says why instead of failing."""
    from factory.reporting.gather import pooled_note

    ridge = ModelConfig("ridge", {}, FeatureConfig(**FEATURES), 12, "MS")  # type: ignore[arg-type]
    ens = ModelConfig(
        "ensemble",
        {"combine": "mean", "members": [ridge.key, config().key]},
        ridge.features,
        12,
        "MS",
    )
    assert pooled_note(ridge) is None
    assert "pooled" in (pooled_note(config()) or "") and "pooled" in (pooled_note(ens) or "")
