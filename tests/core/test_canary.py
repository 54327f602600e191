"""Canary releases, the pure parts: the sticky split, the share, the record and its problems,
fleet.yaml's `promotion.canary_share`, and promotion planning around a running canary."""

from __future__ import annotations

import textwrap
from datetime import UTC, datetime
from pathlib import Path

import pytest

from factory.core.canary import (
    BUCKETS,
    CanaryError,
    CanarySpec,
    RunningCanary,
    bucket,
    canary_note,
    check_share,
    read_spec,
    start_spec,
    takes_canary,
)
from factory.core.fleet import FleetError, PromotionSpec, load_fleet
from factory.core.promotion import pending_changes
from factory.core.repair import ModelState, VersionInfo
from tests.support.fleets import REPO

KEYS = [f"client-{i}" for i in range(10_000)]


@pytest.mark.parametrize("share", [0.01, 0.05, 0.1, 0.25, 0.5, 0.9])
def test_the_split_serves_the_share_within_tolerance_on_10000_keys(share: float) -> None:
    served = sum(takes_canary("grocery-00001", key, share) for key in KEYS)
    # binomial standard deviation <= 50 on 10,000 keys: 1.5 points is more than 3 of them
    assert abs(served / len(KEYS) - share) < 0.015


def test_the_same_key_always_gets_the_same_answer() -> None:
    first = [takes_canary("grocery-00001", key, 0.3) for key in KEYS[:2000]]
    again = [takes_canary("grocery-00001", key, 0.3) for key in KEYS[:2000]]
    assert first == again and any(first) and not all(first)
    assert all(0 <= bucket("grocery-00001", key) < BUCKETS for key in KEYS[:2000])


def test_growing_the_share_keeps_every_client_already_on_the_canary() -> None:
    small = {k for k in KEYS if takes_canary("p", k, 0.1)}
    large = {k for k in KEYS if takes_canary("p", k, 0.3)}
    assert small < large


def test_each_product_splits_its_keys_independently() -> None:
    a = {k for k in KEYS if takes_canary("product-a", k, 0.5)}
    b = {k for k in KEYS if takes_canary("product-b", k, 0.5)}
    overlap = len(a & b) / len(KEYS)  # independent halves overlap on about a quarter
    assert 0.22 < overlap < 0.28


@pytest.mark.parametrize(("share", "ok"), [(0.0, True), (0.1, True), (0.99, True), (1.0, False)])
def test_a_share_is_0_for_none_or_strictly_between_0_and_1(share: float, ok: bool) -> None:
    if ok:
        assert check_share(share) == share
    else:
        with pytest.raises(CanaryError, match="out of range"):
            check_share(share)


def test_a_negative_share_is_refused() -> None:
    with pytest.raises(CanaryError, match=r"-0\.1 is out of range"):
        check_share(-0.1)


def test_the_record_round_trips_through_its_tag_text() -> None:
    spec = start_spec(5, 3, 0.2, "approver: alice")
    assert spec.started_at.tzinfo is not None
    assert read_spec(spec.model_dump_json()) == spec
    assert (spec.version, spec.champion_version, spec.share) == ("5", "3", 0.2)
    assert read_spec(None) is None and read_spec("{not json") is None
    assert read_spec('{"version": "2", "share": 1.5, "started_at": "2026-01-01T00:00:00Z"}') is None


AT = datetime(2026, 11, 22, tzinfo=UTC)


def spec(version: str, share: float = 0.1) -> CanarySpec:
    return CanarySpec(version=version, champion_version="1", share=share, started_at=AT)


@pytest.mark.parametrize(
    ("alias", "champion", "record", "problem"),
    [
        (2, 1, spec("2"), None),
        (None, 1, spec("2"), "a canary record but no @canary alias"),
        (2, 1, None, "@canary v2 without a readable factory.canary record"),
        (3, 1, spec("2"), "factory.canary says v2 but @canary is v3"),
        (2, None, spec("2"), "no @champion to share requests with"),
        (2, 2, spec("2"), "@canary and @champion are both v2"),
    ],
)
def test_a_canary_whose_alias_and_record_disagree_names_the_problem(
    alias: int | None, champion: int | None, record: CanarySpec | None, problem: str | None
) -> None:
    assert RunningCanary("p", "f.production.p", alias, champion, record).problem == problem


def test_the_plan_note_names_the_share_only_when_there_is_one() -> None:
    assert canary_note(0.0) == ""
    assert "on 10% of requests" in canary_note(0.1)


def write(tmp_path: Path, promotion: str) -> Path:
    text = (REPO / "fleet.yaml").read_text()
    rest = text.split("retirement:", 1)[1]
    path = tmp_path / "fleet.yaml"
    path.write_text(textwrap.dedent(promotion) + "retirement:" + rest)
    return path


def test_fleet_yaml_canary_share_defaults_to_none_and_is_read(tmp_path: Path) -> None:
    assert PromotionSpec().canary_share == 0.0
    assert load_fleet(REPO / "fleet.yaml").spec.promotion.canary_share == 0.0
    path = write(tmp_path, "promotion:\n  mode: approve\n  canary_share: 0.1\n")
    assert load_fleet(path).spec.promotion.canary_share == 0.1


@pytest.mark.parametrize(
    ("promotion", "needle"),
    [
        ("promotion:\n  mode: approve\n  canary_share: 1.0\n", "promotion.canary_share"),
        ("promotion:\n  mode: approve\n  canary_share: -0.5\n", "promotion.canary_share"),
        ("promotion:\n  mode: auto\n  canary_share: 0.1\n", "canary_share needs mode approve"),
    ],
)
def test_a_bad_canary_share_in_fleet_yaml_is_a_clear_error(
    tmp_path: Path, promotion: str, needle: str
) -> None:
    with pytest.raises(FleetError) as info:
        load_fleet(write(tmp_path, promotion))
    assert needle in str(info.value)


def models(canary_key: str | None) -> list[ModelState]:
    """Staging winner v3 (key 'new'); production v1 champion (key 'old') and, when given,
    v2 as canary with that training key."""
    stag = ModelState(
        "f.staging.p", "p", "staging", [VersionInfo(3, "new", "{}", "fp")], {"candidate": 3}
    )
    versions = [VersionInfo(1, "old", "{}", "fp")]
    aliases = {"champion": 1}
    if canary_key is not None:
        versions.append(VersionInfo(2, canary_key, "{}", "fp"))
        aliases["canary"] = 2
    return [stag, ModelState("f.production.p", "p", "production", versions, aliases)]


def test_a_winner_already_running_as_the_canary_is_not_proposed_again() -> None:
    assert [c.product_id for c in pending_changes(models(None))] == ["p"]
    assert pending_changes(models("new")) == []  # `factory canary complete|abort` decides


def test_a_newer_winner_than_the_canary_is_proposed_against_the_champion() -> None:
    (change,) = pending_changes(models("older"))
    assert change.production is not None and change.production.version == 1
    assert change.staging.version == 3
