"""Per-product training: backtest, gate against baseline and champion, refit the winner."""

import re

import numpy as np
import pytest

from factory.core.contract import product_arrays
from factory.core.fleet import FamilySpec, GateSpec
from factory.core.forecaster import ModelConfig, Series, future_dates
from factory.core.metrics import METRICS
from factory.core.saved import loads
from factory.core.synthetic import PanelSpec, generate_panel
from factory.core.training import (
    ChampionRef,
    model_configs,
    series_fingerprint,
    train_many,
    train_product,
)

GATE = GateSpec()  # mase, 5% over the baseline, ties go to the champion
FAMILY_BASE = {
    "name": "daily",
    "horizon": 7,
    "season_length": 7,
    "features": {
        "lags": [1, 7, 14],
        "rolling_means": [7],
        "calendar": ["dayofweek"],
        "exogenous": ["promo"],
    },
    "backtest": {"windows": 2},
    "products": {"all": True},
}
LIGHTGBM = {"kind": "lightgbm", "n_estimators": 40, "num_leaves": 7, "min_data_in_leaf": 5}
FAMILY = FamilySpec.model_validate(
    {**FAMILY_BASE, "models": [{"kind": "ridge", "alpha": 1.0}, LIGHTGBM]}
)
# a ridge shrunk so hard it predicts little more than the mean
WEAK = FamilySpec.model_validate({**FAMILY_BASE, "models": [{"kind": "ridge", "alpha": 1e6}]})


@pytest.fixture(scope="module")
def panel_series():
    panel = generate_panel(
        PanelSpec(n_products=8, periods=150, seed=5, new_fraction=0, intermittent_fraction=0)
    )
    arrays = product_arrays(panel.frame, ["promo"])
    return {
        pid: Series(a["ds"], a["y"], {"promo": a["promo"]}) for pid, a in sorted(arrays.items())
    }


@pytest.fixture(scope="module")
def strong(panel_series):
    """The product with the highest level: its weekly pattern stands out most from the noise."""
    pid = max(panel_series, key=lambda p: panel_series[p].y.mean())
    return pid, panel_series[pid]


@pytest.fixture(scope="module")
def first(strong):
    pid, series = strong
    return train_product(pid, series, FAMILY, GATE)


def champion_from(outcome, fingerprint=None, version="1"):
    return ChampionRef(
        f"factory.staging.{outcome.product_id}",
        version,
        outcome.config_json,
        outcome.data_fingerprint if fingerprint is None else fingerprint,
    )


def test_first_run_registers_a_challenger(strong, first):
    pid, series = strong

    assert first.status == "registered"
    assert first.reason.startswith("first model")
    assert first.product_id == pid
    assert first.family == "daily"
    assert first.n_obs == len(series.y) == 150
    assert first.challenger in {"ridge", "lightgbm"}
    assert first.config_json == model_configs(FAMILY)[first.challenger].key
    assert set(first.scores) == {"seasonal_naive", "ridge", "lightgbm"}
    for scores in first.scores.values():
        assert set(scores) == set(METRICS)
        assert all(np.isfinite(v) and v >= 0 for v in scores.values())
    # the challenger is the best candidate and beats the baseline by the 5% margin
    best = min(first.scores["ridge"]["mase"], first.scores["lightgbm"]["mase"])
    assert first.scores[first.challenger]["mase"] == best
    assert best < 0.95 * first.scores["seasonal_naive"]["mase"]
    assert first.decision["verdict"] == "registered"
    assert first.decision["champion"] is None
    assert first.data_fingerprint == series_fingerprint(series)


def test_registered_outcome_carries_a_loadable_model(strong, first):
    _, series = strong

    assert first.payload
    model = loads(ModelConfig.from_json(first.config_json), first.payload)
    ds = future_dates(series.ds[-1], 7, "D")
    np.testing.assert_array_equal(model.forecast(series, ds), first.forecast)
    assert first.forecast_ds[0] == str(series.ds[-1] + np.timedelta64(1, "D"))[:10]
    assert len(first.forecast_ds) == len(first.forecast) == 7
    # enough history to compute the longest lag (14) on the day after the data ends
    assert first.history_tail["y"] == series.y[-14:].tolist()
    assert set(first.history_tail) == {"ds", "y", "promo"}


def test_same_config_and_data_keeps_the_champion(strong, first):
    pid, series = strong

    again = train_product(pid, series, FAMILY, GATE, champion_from(first, version="4"))

    assert again.status == "kept"
    assert "unchanged" in again.reason
    assert again.payload is None
    assert again.forecast is None
    assert again.decision["champion_version"] == "4"
    # the champion was re-scored on today's windows: the same numbers as the challenger
    assert again.decision["champion"] == again.decision["challenger"]


def test_same_config_on_new_data_is_a_refresh(strong, first):
    pid, series = strong

    again = train_product(pid, series, FAMILY, GATE, champion_from(first, fingerprint="older"))

    assert again.status == "registered"
    assert "refresh" in again.reason
    assert again.payload
    assert again.config_json == first.config_json


def test_fingerprint_changes_with_any_value(strong):
    _, series = strong
    bumped = Series(series.ds, series.y.copy(), {"promo": series.exog["promo"].copy()})
    bumped.exog["promo"][0] = 1 - bumped.exog["promo"][0]

    assert series_fingerprint(bumped) != series_fingerprint(series)
    assert series_fingerprint(series.head(149)) != series_fingerprint(series)


def test_much_better_champion_holds_against_weak_candidates(strong):
    pid, series = strong
    champion_cfg = model_configs(FAMILY)["lightgbm"]
    champion = ChampionRef("m", "9", champion_cfg.key, series_fingerprint(series))

    outcome = train_product(pid, series, WEAK, GATE, champion)

    assert outcome.status == "kept"
    assert outcome.payload is None
    assert outcome.challenger == "ridge"
    assert outcome.decision["champion_version"] == "9"
    # the champion's config is not a candidate, so it was backtested itself and won clearly
    assert outcome.decision["champion"] < 0.9 * outcome.decision["challenger"]
    assert "holds" in outcome.reason


def test_better_challenger_replaces_a_champion_that_is_another_candidate(strong, first):
    pid, series = strong
    other = next(k for k in ("ridge", "lightgbm") if k != first.challenger)
    assert first.scores[first.challenger]["mase"] < first.scores[other]["mase"]
    champion = ChampionRef("m", "2", model_configs(FAMILY)[other].key, first.data_fingerprint)

    outcome = train_product(pid, series, FAMILY, GATE, champion)

    assert outcome.status == "registered"


def test_train_many_turns_a_raising_product_into_a_failed_outcome(panel_series, strong):
    pid, series = strong
    broken = Series(
        np.array(["not a date"] * 40), series.y[:40], {"promo": series.exog["promo"][:40]}
    )

    outcomes = train_many([(pid, series), ("broken", broken)], FAMILY, GATE, champions={})

    assert [o.product_id for o in outcomes] == [pid, "broken"]
    good, bad = outcomes
    assert good.status == "registered"
    assert bad.status == "failed"
    assert bad.family == "daily"
    assert bad.n_obs == 40
    assert bad.reason.startswith("DateParseError:") and "not a date" in bad.reason
    assert re.search(r"\(\w+\.pyx?:\d+\)$", bad.reason)  # where it arose
    assert bad.payload is None


def test_train_many_uses_each_products_champion(panel_series, strong, first):
    pid, series = strong
    others = [p for p in panel_series if p != pid][:1]
    items = [(pid, series)] + [(p, panel_series[p]) for p in others]

    outcomes = train_many(items, FAMILY, GATE, champions={pid: champion_from(first)})

    assert outcomes[0].status == "kept"  # its champion is unchanged
    assert outcomes[1].decision["champion"] is None  # no champion for the other product
    assert outcomes[1].status in {"registered", "rejected"}
