"""Run bookkeeping: failure budgets, served versions, status records and the fleet summary."""

from __future__ import annotations

from collections import Counter

import pytest

from factory.core.contract import ValidationReport
from factory.core.fleet import Shard, load_fleet
from factory.core.outcomes import (
    BudgetExceeded,
    ProductRecord,
    Registered,
    ShardReport,
    UnknownProducts,
    check_failure_budget,
    check_quarantine_budget,
    current_versions,
    failed_shard,
    restrict,
    shard_records,
    skipped_record,
    summarize,
    untrained_records,
)
from factory.core.training import ChampionRef, ProductOutcome
from tests.support.fleets import REPO

SPEC = load_fleet(REPO / "fleet.yaml").spec.model_copy(update={"failure_budget": 0.1})
FAMILY = SPEC.families[0].name


def report(ok: int, quarantined: int) -> ValidationReport:
    """A validation report with `ok` good products and `quarantined` bad ones."""
    good = [f"p{i}" for i in range(ok)]
    bad = {f"q{i}": ["too short"] for i in range(quarantined)}
    return ValidationReport(ok + quarantined, ok + quarantined, {FAMILY: good}, bad)


@pytest.mark.parametrize(
    ("ok", "quarantined", "stops"),
    [(90, 10, False), (89, 11, True), (0, 0, False), (0, 1, True)],
)
def test_quarantine_budget_stops_the_run_only_past_the_limit(
    ok: int, quarantined: int, stops: bool
) -> None:
    if stops:
        with pytest.raises(BudgetExceeded, match="nothing trained"):
            check_quarantine_budget(report(ok, quarantined), SPEC)
    else:
        check_quarantine_budget(report(ok, quarantined), SPEC)


def champion(name: str) -> ChampionRef:
    return ChampionRef(name, "4", "{}", "fp", in_production=".production." in name)


@pytest.mark.parametrize(
    ("registered", "champ", "expected"),
    [
        (Registered("a", "3", "2"), champion("factory.production.a"), ("3", "2")),
        (Registered("a", "3", None), None, ("3", None)),
        (None, champion("factory.production.a"), (None, "4")),
        (None, champion("factory.staging.a"), ("4", None)),
        (None, None, (None, None)),
    ],
)
def test_current_versions(registered, champ, expected) -> None:
    assert current_versions(registered, champ) == expected


def outcome(pid: str, status: str) -> ProductOutcome:
    scores = {"ridge": {"mase": 0.8}, "seasonal_naive": {"mase": 1.0}}
    return ProductOutcome(pid, FAMILY, status, "why", challenger="ridge", scores=scores)  # type: ignore[arg-type]


def test_records_and_summary_cover_every_product_once() -> None:
    rep = report(4, 1)
    shard = ShardReport(
        "s-0000",
        [outcome("p0", "registered"), outcome("p1", "kept"), outcome("p2", "failed")],
        {"p0": Registered("p0", "2", "2")},
        0.5,
        {"p1": champion("factory.production.p1")},
    )
    skipped = {"p3": ProductRecord("p3", FAMILY, "registered", "first model", train_key="k3")}
    keys = {p: f"k{p[1:]}" for p in ("p0", "p1", "p2", "p3")}
    records = untrained_records(SPEC, rep, skipped, "run-1")
    records += shard_records(shard, SPEC.gate.metric, keys, "run-1")

    by_id = {r.product_id: r for r in records}
    assert sorted(by_id) == ["p0", "p1", "p2", "p3", "q0"]
    owner = next(f for f, ids in SPEC.assign(["q0"]).items() if ids)
    assert by_id["q0"].status == "quarantined" and by_id["q0"].family == owner
    assert by_id["p3"].status == "skipped" and by_id["p3"].reason.startswith("unchanged")
    assert (by_id["p0"].staging_version, by_id["p0"].production_version) == ("2", "2")
    assert by_id["p0"].model_kind == "ridge" and by_id["p0"].score == 0.8
    assert by_id["p1"].production_version == "4"  # the champion still serves
    assert by_id["p2"].train_key is None  # a failed product is retried next run
    assert by_id["p1"].train_key == "k1"
    assert {r.flow_run_id for r in records} == {"run-1"}

    counts = Counter(o.status for o in shard.outcomes) + Counter(skipped=1)
    summary = summarize(SPEC, rep, counts, [shard], 0.1, 2.0, "run-1")
    assert summary.products == 5 and summary.task_runs == 4
    assert summary.counts == {
        "registered": 1,
        "kept": 1,
        "failed": 1,
        "skipped": 1,
        "quarantined": 1,
    }
    assert summary.failed == {"p2": "why"}
    assert summary.budget_exceeded  # 2 of 5 bad > 10%
    with pytest.raises(BudgetExceeded, match="2 of 5 products"):
        check_failure_budget(summary, SPEC)


def test_a_skipped_product_keeps_its_last_reason_once() -> None:
    first = ProductRecord("p", FAMILY, "kept", "champion v1 holds")
    once = skipped_record(first, "run-2")
    twice = skipped_record(once, "run-3")
    assert once.reason == "unchanged since last run (kept: champion v1 holds)"
    assert twice.reason == once.reason and twice.flow_run_id == "run-3"


def test_a_shard_out_of_retries_fails_each_of_its_products_with_the_error() -> None:
    shard = Shard("s-0001", FAMILY, ("a", "b"))
    report = failed_shard(shard, RuntimeError("worker died\nlong traceback"))
    records = shard_records(report, SPEC.gate.metric, {"a": "ka", "b": "kb"}, "run-2")
    assert [(r.product_id, r.status, r.train_key) for r in records] == [
        ("a", "failed", None),
        ("b", "failed", None),
    ]
    assert records[0].reason == "shard s-0001 failed after its retries: RuntimeError: worker died"


def test_restrict_keeps_only_the_asked_products() -> None:
    warnings: list[str] = []
    rep = restrict(report(3, 2), ["p1", "q0"], warnings.append)
    assert rep.valid_ids == ["p1"]
    assert list(rep.quarantined) == ["q0"]
    assert warnings == []


def test_restrict_warns_about_products_it_cannot_train_and_keeps_the_others() -> None:
    rep = report(3, 0)
    rep.unassigned = ["stray"]
    warnings: list[str] = []
    rep = restrict(rep, ["p0", "NOPE", "stray"], warnings.append)
    assert rep.valid_ids == ["p0"]
    assert warnings == [
        "unknown product(s): NOPE (not in the sales data); stray (in no family of fleet.yaml);"
        " training the other 1"
    ]


def test_restrict_refuses_when_no_asked_product_can_train() -> None:
    rep = report(3, 1)
    rep.unassigned = ["stray"]
    with pytest.raises(UnknownProducts) as caught:
        restrict(rep, ["NOPE", "stray", "NOPE"])
    assert str(caught.value) == (
        "unknown product(s): NOPE (not in the sales data); stray (in no family of fleet.yaml)"
    )


def test_many_unknown_products_are_named_in_one_short_line() -> None:
    with pytest.raises(UnknownProducts) as caught:
        restrict(report(1, 0), [f"x{i}" for i in range(25)])
    assert str(caught.value) == (
        "unknown product(s): x0, x1, x2, x3, x4, x5, x6, x7, x8, x9 and 15 more"
        " (not in the sales data)"
    )
