"""The doctor's plan: which version to keep, where aliases and tags go, which rows to fix."""

from __future__ import annotations

import json

import pytest

from factory.core.repair import ModelState, VersionInfo, plan_fixes, status_fixes

ALIASES = {"staging": "candidate", "production": "champion"}


def v(n: int, key: str | None = None, rolled_back: bool = False) -> VersionInfo:
    return VersionInfo(n, key or f"k{n}", f"cfg{n}", f"fp{n}", rolled_back)


def model(
    env: str, versions: list[VersionInfo], alias: int | None, current: int | None
) -> ModelState:
    return ModelState(
        f"f.{env}.a",
        "a",
        env,
        versions,
        {} if alias is None else {ALIASES[env]: alias},
        None if current is None else {"version": str(current)},
    )


def actions(fixes: list) -> list[tuple[str, int | None]]:
    return [(f.action, f.version) for f in fixes]


def test_a_consistent_registry_needs_nothing() -> None:
    staging = model("staging", [v(1), v(2)], alias=2, current=2)
    production = model("production", [v(1, "k2")], alias=1, current=1)
    assert plan_fixes([staging, production], ALIASES, "production") == []


def test_of_duplicates_the_aliased_version_is_kept_else_the_oldest() -> None:
    aliased = model("staging", [v(1, "k"), v(2, "k"), v(3, "k")], alias=2, current=2)
    assert actions(plan_fixes([aliased], ALIASES, None)) == [
        ("delete-version", 1),
        ("delete-version", 3),
    ]
    unaliased = model("staging", [v(1, "k"), v(2, "k")], alias=None, current=None)
    assert actions(plan_fixes([unaliased], ALIASES, None)) == [
        ("delete-version", 2),
        ("set-alias", 1),
        ("set-current", 1),
    ]


def test_a_winner_left_without_alias_tag_and_copy_gets_all_three() -> None:
    staging = model("staging", [v(1), v(2)], alias=1, current=1)
    production = model("production", [v(1, "k1")], alias=1, current=1)
    fixes = plan_fixes([staging, production], ALIASES, "production")
    assert actions(fixes) == [("set-alias", 2), ("set-current", 2), ("copy-to-production", 2)]
    assert json.loads(fixes[1].value or "") == {
        "version": "2",
        "config": "cfg2",
        "data_fingerprint": "fp2",
    }
    assert actions(plan_fixes([staging, production], ALIASES, None))[-1] == ("set-current", 2)


def test_status_rows_follow_the_registry_and_missing_ones_are_rebuilt() -> None:
    staging = model("staging", [v(1), v(2)], alias=2, current=2)
    production = model("production", [v(1, "k2")], alias=1, current=1)
    agree = {"a": {"staging_version": "2", "production_version": "1"}}
    assert status_fixes([staging, production], agree, ALIASES) == []
    stale = {"a": {"staging_version": None, "production_version": "1"}}
    (fix,) = status_fixes([staging, production], stale, ALIASES)
    assert json.loads(fix.value or "") == {"staging_version": "2", "production_version": "1"}
    (rebuilt,) = status_fixes([staging, production], {}, ALIASES)
    assert json.loads(rebuilt.value or "")["train_key"] == "k2"


GOVERNED, AUTO = None, "production"  # plan_fixes' copy_to: only given under automatic promotion


@pytest.mark.parametrize("copy_to", [GOVERNED, AUTO])
def test_a_rollback_is_not_undone_and_its_model_is_not_copied_again(copy_to: str | None) -> None:
    staging = model("staging", [v(1), v(2)], alias=2, current=2)
    production = model("production", [v(1), v(2, rolled_back=True)], alias=1, current=1)
    assert plan_fixes([staging, production], ALIASES, copy_to) == []


def test_governed_production_keeps_an_older_live_version_automatic_moves_to_the_newest() -> None:
    production = model("production", [v(1), v(2), v(3)], alias=1, current=1)
    assert plan_fixes([production], ALIASES, GOVERNED) == []
    assert actions(plan_fixes([production], ALIASES, AUTO)) == [
        ("set-alias", 3),
        ("set-current", 3),
    ]


def test_automatic_promotion_moves_an_alias_off_a_rolled_back_version() -> None:
    production = model("production", [v(1), v(2), v(3, rolled_back=True)], alias=3, current=3)
    assert actions(plan_fixes([production], ALIASES, AUTO)) == [
        ("set-alias", 2),
        ("set-current", 2),
    ]


@pytest.mark.parametrize("copy_to", [GOVERNED, AUTO])
@pytest.mark.parametrize("alias", [None, 7], ids=["missing", "dangling"])
def test_a_missing_production_alias_goes_to_the_newest_version_not_rolled_back(
    copy_to: str | None, alias: int | None
) -> None:
    versions = [v(1), v(2), v(3, rolled_back=True)]
    production = model("production", versions, alias=alias, current=3)
    fixes = plan_fixes([production], ALIASES, copy_to)
    assert actions(fixes) == [("set-alias", 2), ("set-current", 2)]
    assert json.loads(fixes[1].value or "")["config"] == "cfg2"


def test_the_current_tag_follows_the_alias_a_rollback_chose() -> None:
    production = model("production", [v(1), v(2, rolled_back=True)], alias=1, current=2)
    assert actions(plan_fixes([production], ALIASES, GOVERNED)) == [("set-current", 1)]


@pytest.mark.parametrize("copy_to", [GOVERNED, AUTO])
def test_a_retired_product_only_loses_duplicates(copy_to: str | None) -> None:
    staging = model("staging", [v(1, "k"), v(2, "k"), v(3)], alias=None, current=None)
    production = model("production", [v(1, "k")], alias=None, current=None)
    staging.retired = production.retired = True
    assert actions(plan_fixes([staging, production], ALIASES, copy_to)) == [("delete-version", 2)]
    stale = {"a": {"staging_version": "3", "production_version": "1"}}
    assert status_fixes([staging, production], stale, ALIASES) == []
    assert status_fixes([staging, production], {}, ALIASES) == []


def test_a_half_retired_product_gets_no_production_copy() -> None:
    staging = model("staging", [v(1), v(2)], alias=2, current=2)
    production = model("production", [v(1)], alias=None, current=None)
    production.retired = True
    assert plan_fixes([staging, production], ALIASES, AUTO) == []
