"""Promotion planning: what changes, how much of the fleet it touches, when it needs approval."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from factory.core.fleet import FleetSpec, PromotionSpec
from factory.core.forecaster import ModelConfig, Series
from factory.core.promotion import (
    Change,
    blast_radius,
    describe,
    pending_changes,
    recent_volume,
    rescore,
    retirements,
    select,
    weigh,
)
from factory.core.repair import ModelState, VersionInfo
from factory.core.training import baseline_config, model_configs
from tests.support.fleets import REPO

FLEET = FleetSpec.model_validate(
    {
        "families": [
            {
                "name": "daily",
                "frequency": "D",
                "horizon": 7,
                "season_length": 7,
                "features": {"lags": [1, 7], "calendar": ["dayofweek"]},
                "models": [{"kind": "ridge"}],
                "backtest": {"windows": 2},
                "products": {"all": True},
            }
        ],
        "retirement": {"no_sales_periods": 30},
    }
)


def staging(pid: str, key: str, version: int = 1, retired: bool = False) -> ModelState:
    v = VersionInfo(version, key, "{}", "fp")
    return ModelState(
        f"f.staging.{pid}", pid, "staging", [v], {"candidate": version}, None, "daily", retired
    )


def production(pid: str, *versions: VersionInfo, alias: int | None = None) -> ModelState:
    aliases = {} if alias is None else {"champion": alias}
    return ModelState(f"f.production.{pid}", pid, "production", list(versions), aliases)


def change(pid: str, share: float, old: float | None, new: float | None, is_new: bool = False):
    prod = None if is_new else VersionInfo(1, "old")
    return Change(
        pid,
        "daily",
        f"f.staging.{pid}",
        VersionInfo(2, "new"),
        f"f.production.{pid}",
        prod,
        share=share,
        volume=share * 100,
        old_score=old,
        new_score=new,
    )


def test_pending_changes_are_staging_winners_production_does_not_serve() -> None:
    models = [
        staging("new", "k1"),
        staging("same", "k2"),
        production("same", VersionInfo(1, "k2"), alias=1),
        staging("newer", "k3", version=2),
        production("newer", VersionInfo(1, "k0"), alias=1),
        staging("blocked", "k4", version=2),
        production(
            "blocked", VersionInfo(1, "k0"), VersionInfo(2, "k4", rolled_back=True), alias=1
        ),
        staging("gone", "k5", retired=True),
    ]
    found = {c.product_id: c for c in pending_changes(models)}
    assert set(found) == {"new", "newer", "blocked"}
    assert found["new"].is_new and found["new"].production_model == "f.production.new"
    assert found["newer"].production is not None and found["newer"].production.version == 1
    assert found["blocked"].rolled_back_before and not found["newer"].rolled_back_before


def test_shares_are_of_the_whole_fleets_recent_sales() -> None:
    changes = [change("a", 0, None, None), change("b", 0, None, None)]
    weighed = weigh(changes, {"a": 30.0, "b": 10.0, "c": 60.0})
    assert [c.share for c in weighed] == [0.3, 0.1]
    series = {"a": Series(np.arange(5), np.array([1.0, 2, 3, np.nan, 4]))}
    assert recent_volume(series, 3) == {"a": 7.0}


@pytest.mark.parametrize(
    ("spec", "changes", "needles"),
    [
        (PromotionSpec(mode="approve"), [change("a", 0.01, 1.0, 0.9)], []),
        (PromotionSpec(mode="approve"), [change("a", 0.5, None, 1.0, is_new=True)], []),
        (
            PromotionSpec(mode="approve", approve_new=True),
            [change("a", 0.5, None, 1.0, is_new=True)],
            ["approve_new"],
        ),
        (PromotionSpec(mode="approve"), [change("a", 0.06, 1.0, 0.9)], ["6.0% of fleet volume"]),
        (PromotionSpec(mode="approve"), [change("a", 0.01, 1.0, 1.1)], ["worst 'a' mase +10.0%"]),
        (PromotionSpec(mode="approve", max_regression=0.2), [change("a", 0.01, 1.0, 1.1)], []),
        (PromotionSpec(mode="approve"), [change("a", 0.01, None, None)], ["re-scored"]),
        (PromotionSpec(mode="manual"), [change("a", 0.01, 1.0, 0.9)], ["manual"]),
    ],
)
def test_limits_decide_whether_a_batch_needs_approval(
    spec: PromotionSpec, changes: list[Change], needles: list[str]
) -> None:
    radius = blast_radius(changes, spec, "mase", 100)
    assert radius.needs_approval == bool(needles)
    for needle in needles:
        assert any(needle in r for r in radius.reasons), radius.reasons


def test_the_table_lists_the_worst_change_first_and_escapes_ids() -> None:
    changes = [change("ok", 0.2, 1.0, 0.5), change("bad|id", 0.1, 1.0, 2.0)]
    changes.append(change("fresh", 0.3, None, 0.7, is_new=True))
    radius = blast_radius(changes, PromotionSpec(mode="approve"), "mase", 10)
    assert [c.product_id for c in radius.changes] == ["bad|id", "ok", "fresh"]
    assert radius.worst is not None and radius.worst.regression == 1.0
    assert radius.replaced_share == pytest.approx(0.3) and radius.new_share == 0.3
    before, after = radius.aggregate()
    assert before == pytest.approx(1.0) and after == pytest.approx((0.1 * 2 + 0.2 * 0.5) / 0.3)
    text = describe(radius, "B1")
    rows = [line for line in text.splitlines() if line.startswith("| `")]
    assert rows[0].startswith("| `bad\\|id`") and "+100.0%" in rows[0]
    assert "new product" in rows[2] and "Needs approval" in text


def test_approving_a_subset_names_ids_outside_the_batch() -> None:
    radius = blast_radius([change("a", 0, 1, 1), change("b", 0, 1, 1)], PromotionSpec(), "mase", 2)
    chosen, unknown = select(radius, ["b", "zzz"])
    assert [c.product_id for c in chosen] == ["b"] and unknown == ["zzz"]
    assert len(select(radius, [])[0]) == 2


def test_a_regression_against_a_perfect_model_is_infinite() -> None:
    assert change("a", 0, 0.0, 0.5).regression == math.inf
    assert change("a", 0, 0.0, 0.0).regression == 0.0
    assert change("a", 0, None, 0.5, is_new=True).regression is None


def test_retirement_covers_products_left_out_of_the_fleet_or_without_sales() -> None:
    today = pd.Timestamp("2026-11-22")
    last_sale = {
        "selling": pd.Timestamp("2026-11-20"),
        "idle": pd.Timestamp("2026-10-01"),
        "never": None,
    }
    members = {p: "daily" for p in last_sale}
    found = retirements([*last_sale, "dropped"], FLEET, members, last_sale, today)
    reasons = {r.product_id: r.reason for r in found}
    assert set(reasons) == {"idle", "never", "dropped"}
    assert "last sale 2026-10-01" in reasons["idle"] and "never sold" in reasons["never"]
    assert "no longer in the fleet" in reasons["dropped"]
    keep = FLEET.model_copy(
        update={
            "retirement": FLEET.retirement.model_copy(
                update={"removed_from_fleet": False, "no_sales_periods": None}
            )
        }
    )
    assert retirements(["dropped", "idle"], keep, members, last_sale, today) == []


def test_rescoring_backtests_both_models_on_the_same_windows() -> None:
    rng = np.random.default_rng(0)
    n = 120
    ds = np.arange("2026-01-01", n, dtype="datetime64[D]")
    y = 50 + 20 * np.sin(np.arange(n) * 2 * np.pi / 7) + rng.normal(0, 1, n)
    family = FLEET.families[0]
    ridge = model_configs(family)["ridge"].key
    naive = baseline_config(family).key
    c = Change(
        "p",
        "daily",
        "s",
        VersionInfo(2, "k2", ridge),
        "p",
        VersionInfo(1, "k1", naive),
    )
    scored = rescore(c, Series(ds, y), family, "mase")
    assert scored.new_score is not None and scored.old_score is not None
    assert scored.new_score < scored.old_score  # ridge on lags beats naive on a clean season
    assert scored.regression is not None and scored.regression < 0
    too_short = rescore(c, Series(ds[:10], y[:10]), family, "mase")
    assert too_short.new_score is None and too_short.metric == "mase"
    pooled = ModelConfig(
        "pooled_lightgbm", {}, model_configs(family)["ridge"].features, 7, "D"
    ).key  # trained across products: not refitted on one
    c = Change("p", "daily", "s", VersionInfo(2, "k2", pooled), "p", VersionInfo(1, "k1", naive))
    unscored = rescore(c, Series(ds, y), family, "mase")
    assert unscored.new_score is None and unscored.regression is None
    radius = blast_radius([unscored], PromotionSpec(mode="approve"), "mase", 10)
    assert radius.needs_approval and "could not be re-scored" in describe(radius, "B")


def test_promotion_auto_is_short_for_mode_auto() -> None:
    from factory.core.fleet import load_fleet

    spec = load_fleet(REPO / "fleet.yaml").spec.model_dump()
    assert FleetSpec.model_validate({**spec, "promotion": "auto"}).auto_promote
    assert FleetSpec.model_validate({**spec, "promotion": {"mode": "auto"}}).auto_promote
    assert not FleetSpec.model_validate({**spec, "promotion": "manual"}).auto_promote


def test_a_refresh_is_not_a_regression_and_is_not_backtested_again() -> None:
    family = FLEET.families[0]
    ridge = model_configs(family)["ridge"].key
    c = Change("p", "daily", "s", VersionInfo(2, "k2", ridge), "p", VersionInfo(1, "k1", ridge))
    n = 60
    ds = np.arange("2026-01-01", n, dtype="datetime64[D]")
    scored = rescore(c, Series(ds, np.ones(n)), family, "mase")
    assert scored.refresh and scored.regression == 0.0 and scored.new_score is None
    radius = blast_radius([scored], PromotionSpec(mode="approve"), "mase", 10)
    assert not radius.needs_approval
    assert "refresh (same config, new data)" in describe(radius, "B")
