"""The doctor's plan: which version to keep, where aliases and tags go, which rows to fix."""

from __future__ import annotations

import json

from factory.core.repair import ModelState, VersionInfo, plan_fixes, status_fixes

ALIASES = {"staging": "candidate", "production": "champion"}


def v(n: int, key: str | None = None) -> VersionInfo:
    return VersionInfo(n, key or f"k{n}", f"cfg{n}", f"fp{n}")


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
