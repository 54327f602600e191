"""Canary releases end to end in-process: `factory promote --canary` (and fleet.yaml's
`promotion.canary_share`), `factory canary status | complete | abort`, and what other lifecycle
actions do to a running canary. Real Prefect (test harness), real local Ray, a real MLflow
store and the real audit database."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from mlflow import MlflowClient
from mlflow.entities.model_registry import RegisteredModel

from factory.adapters.audit_log import audit_log
from factory.adapters.data import read_panel, write_panel
from factory.adapters.registry.lifecycle import complete_canaries, restore, retire
from factory.adapters.registry.registry import Registry
from factory.core.audit import AuditRecord
from factory.core.canary import CANARY_TAG, CanarySpec
from factory.core.promotion import PromotionError, Retirement
from factory.core.synthetic import PanelSpec, generate_panel
from factory.settings import get_settings
from flows.promote_fleet import PromotionApproval, promote_fleet
from flows.rollback import rollback
from flows.train_fleet import train_fleet
from tests.support.fleets import write_fleet
from tests.test_cli import assert_user_error, invoke, table_rows

pytestmark = pytest.mark.usefixtures("prefect_harness", "local_ray")

N = 6
LIMITS = {"mode": "approve", "auto_max_share": 1.0, "max_regression": 10.0}  # never asks


def client() -> MlflowClient:
    uri = get_settings().tracking_uri
    return MlflowClient(uri, registry_uri=uri)


def model(pid: str) -> RegisteredModel:
    return client().get_registered_model(f"factory.production.{pid}")


def champions() -> dict[str, int]:
    """product -> production's @champion."""
    found = client().search_registered_models("name LIKE 'factory.production.%'")
    return {
        rm.tags["factory.product_id"]: int(rm.aliases["champion"])
        for rm in found
        if "champion" in rm.aliases
    }


def canaries() -> dict[str, int]:
    """product -> production's @canary (only the products that have one)."""
    found = client().search_registered_models("name LIKE 'factory.production.%'")
    return {
        rm.tags["factory.product_id"]: int(rm.aliases["canary"])
        for rm in found
        if "canary" in rm.aliases
    }


def audit() -> list[AuditRecord]:
    return audit_log(get_settings().resolved_audit_url).all_records()


def boost_recent_demand(factor: float = 1.3, days: int = 20) -> None:
    """New data for every product, so every product's next gate winner is a new version."""
    url = get_settings().resolved_data_url
    panel = read_panel(url)
    last = panel.groupby("unique_id")["ds"].transform("max")  # each product's own last days
    recent = panel["ds"] > last - pd.Timedelta(days=days)
    panel.loc[recent, "y"] = np.ceil(panel.loc[recent, "y"] * factor)  # small counts too
    write_panel(panel, url)


def lag_models_only(fleet: Path) -> None:
    """Each family's ridge and LightGBM only: a retrain on new data then refreshes every
    product's model (with more candidates, a product's best may change without beating its
    champion, and keep it)."""
    spec = yaml.safe_load(fleet.read_text())
    for family in spec["families"]:
        family["models"] = [m for m in family["models"] if m["kind"] in ("ridge", "lightgbm")]
    fleet.write_text(yaml.safe_dump(spec, sort_keys=False))


@pytest.fixture
def retrained(
    factory_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> tuple[Path, dict[str, int]]:
    """Six products in production (v1), then retrained: each has a newer staging winner.
    Returns the fleet.yaml (no canary share; limits that never ask) and production then."""
    monkeypatch.chdir(tmp_path)
    write_panel(
        generate_panel(PanelSpec(n_products=N, seed=5)).frame, get_settings().resolved_data_url
    )
    fleet = write_fleet(tmp_path / "fleet.yaml", shard_size=N, promotion=LIMITS)
    lag_models_only(fleet)
    train_fleet(str(fleet))
    assert promote_fleet(str(fleet)).status == "promoted"
    before = champions()
    assert len(before) == N and set(before.values()) == {1}
    boost_recent_demand()
    train_fleet(str(fleet))
    return fleet, before


def test_promote_with_a_canary_share_starts_canaries_that_status_lists_and_that_complete_or_abort(
    retrained: tuple[Path, dict[str, int]],
) -> None:
    fleet, before = retrained
    ids = sorted(before)
    started = invoke("promote", "--fleet", str(fleet), "--canary", "0.25")
    assert started.exit_code == 0, started.output
    assert f"started {N} canary(ies)" in started.stdout

    assert champions() == before  # the champion keeps serving the other 75%
    assert canaries() == {p: v + 1 for p, v in before.items()}
    for pid in ids:
        rm = model(pid)
        spec = CanarySpec.model_validate_json(rm.tags[CANARY_TAG])  # what the endpoint reads
        assert (spec.version, spec.champion_version, spec.share) == ("2", "1", 0.25)
        assert spec.started_by.startswith("policy: within limits")
        assert json.loads(rm.tags["factory.current"])["version"] == "1"  # still the champion's
    (start,) = [r for r in audit() if r.action == "promote" and "canary" in r.detail]
    assert sorted(start.products) == ids and start.reason.startswith("canary on 25% of requests")
    assert {p: d["outcome"] for p, d in start.detail["canary"].items()} == dict.fromkeys(
        ids, "started"
    )
    assert start.versions == dict.fromkeys(ids, "2") and start.batch

    shown = invoke("canary", "status")
    assert shown.exit_code == 0, shown.output
    rows = {r[0]: r for r in table_rows(shown.stdout) if r[0]}  # a wrapped cell: ''
    assert sorted(rows) == ids
    assert rows[ids[0]][1:4] == ["v1", "v2", "25.0%"] and "policy" in rows[ids[0]][5]
    listed = json.loads(invoke("canary", "status", "--json").stdout)
    assert [c["product_id"] for c in listed] == ids
    assert listed[0]["champion_version"] == 1 and listed[0]["canary_version"] == 2
    assert listed[0]["share"] == 0.25 and listed[0]["problem"] is None

    done, dropped = ids[0], ids[1]
    completed = invoke("canary", "complete", done, "--approver", "alice")
    assert completed.exit_code == 0, completed.output
    assert champions()[done] == 2 and done not in canaries()
    rm = model(done)
    assert CANARY_TAG not in rm.tags and json.loads(rm.tags["factory.current"])["version"] == "2"
    last = audit()[-1]
    assert last.action == "promote" and last.products == [done] and "approver: alice" in last.actor
    assert last.versions == {done: "2"} and last.detail["previous"] == {done: 1}
    assert last.detail["canary"][done]["outcome"] == "completed"

    aborted = invoke("canary", "abort", dropped, "-r", "errors up on the canary")
    assert aborted.exit_code == 0, aborted.output
    assert champions()[dropped] == 1 and dropped not in canaries()
    assert CANARY_TAG not in model(dropped).tags
    left = client().get_model_version(f"factory.production.{dropped}", "2")
    assert "errors up on the canary" in left.tags["factory.rolled_back"]
    last = audit()[-1]
    assert last.action == "rollback" and last.products == [dropped]
    assert last.reason == "errors up on the canary" and last.versions == {dropped: "1"}
    assert last.detail["canary"][dropped]["outcome"] == "aborted"

    assert [c["product_id"] for c in json.loads(invoke("canary", "status", "--json").stdout)] == (
        ids[2:]
    )
    assert_user_error(invoke("canary", "complete", done), f"no canary running for {done!r}")
    assert_user_error(
        invoke("canary", "abort", "nope", "-r", "x"), "no production model for 'nope'"
    )
    assert_user_error(invoke("canary", "complete"), "name the products (or give --all)")
    assert_user_error(invoke("canary", "complete", ids[2], "--all"), "not both")
    assert_user_error(invoke("promote", "--fleet", str(fleet), "--canary", "1.5"), "out of range")

    # the running canaries are not offered again; the aborted one is, flagged
    plan = promote_fleet(str(fleet), dry_run=True)
    offered = [line for line in plan.description.splitlines() if line.startswith("| `")]
    assert len(offered) == 1 and f"`{dropped}`" in offered[0] and "rolled back before" in offered[0]

    rest = invoke("canary", "complete", "--all")
    assert rest.exit_code == 0, rest.output
    assert canaries() == {} and champions() == {p: 1 if p == dropped else 2 for p in ids}
    assert "no canary running" in invoke("canary", "status").stdout
    assert invoke("canary", "complete", "--all").stdout.strip().startswith("no canary running")
    assert invoke("audit", "verify").exit_code == 0


def test_a_tampered_canary_version_is_refused_at_complete_and_nothing_moves(
    retrained: tuple[Path, dict[str, int]],
) -> None:
    fleet, before = retrained
    report = promote_fleet(str(fleet), canary_share=0.1)
    assert report.canaries == {p: 2 for p in before} and report.promoted == {}
    victim = sorted(before)[0]
    name = f"factory.production.{victim}"
    folder = Path(client().get_model_version_download_uri(name, "2").removeprefix("file://"))
    changed = sorted(p for p in folder.rglob("*") if p.is_file())[-1]
    changed.write_bytes(changed.read_bytes() + b" ")
    records = len(audit())

    refused = invoke("canary", "complete", "--all")
    assert_user_error(refused, f"product {victim!r} version 2", "production unchanged")
    with pytest.raises(PromotionError, match="model files changed"):
        complete_canaries(Registry(get_settings()), [victim], "os: test", "go")
    assert champions() == before and canaries() == {p: 2 for p in before}  # not one moved
    assert len(audit()) == records

    assert invoke("canary", "abort", victim, "-r", "tampered").exit_code == 0  # no load needed
    assert victim not in canaries() and champions() == before


def test_a_retirement_or_a_batch_rollback_leaves_no_canary(
    retrained: tuple[Path, dict[str, int]], tmp_path: Path
) -> None:
    _, before = retrained
    ids = sorted(before)
    canary_fleet = write_fleet(
        tmp_path / "canary.yaml", shard_size=N, promotion={**LIMITS, "canary_share": 0.5}
    )
    report = promote_fleet(str(canary_fleet))  # fleet.yaml's share
    assert report.canaries == {p: 2 for p in ids}
    assert CanarySpec.model_validate_json(model(ids[0]).tags[CANARY_TAG]).share == 0.5

    registry = Registry(get_settings())
    gone = ids[0]
    assert retire(registry, [Retirement(gone, "discontinued")], "os: test") == [gone]
    assert "canary" not in model(gone).aliases and CANARY_TAG not in model(gone).tags
    assert audit()[-1].detail["canary"][gone]["outcome"] == "ended by retire"
    restore(registry, [gone], "os: test", "back")
    assert champions()[gone] == 1 and gone not in canaries()  # the canary is not restored

    moves = rollback("the canaries look wrong", batch=report.batch)
    assert sorted(m.product_id for m in moves) == ids[1:] and all(m.canary for m in moves)
    assert canaries() == {} and champions() == before
    assert all(CANARY_TAG not in model(p).tags for p in ids)
    for pid in ids[1:]:
        left = client().get_model_version(f"factory.production.{pid}", "2")
        assert "the canaries look wrong" in left.tags["factory.rolled_back"]
    last = audit()[-1]
    assert last.action == "rollback" and last.batch == report.batch
    assert {p: d["outcome"] for p, d in last.detail["canary"].items()} == dict.fromkeys(
        ids[1:], "aborted"
    )


def test_a_newer_winner_supersedes_a_running_canary_as_champion_or_as_the_next_canary(
    retrained: tuple[Path, dict[str, int]],
) -> None:
    fleet, before = retrained
    ids = sorted(before)
    assert promote_fleet(str(fleet), canary_share=0.1).canaries == {p: 2 for p in ids}
    boost_recent_demand(1.2)
    train_fleet(str(fleet))  # a third winner per product, newer than the canary

    first = ids[0]
    again = promote_fleet(str(fleet), products=[first], canary_share=0.3)
    assert again.canaries == {first: 3}
    spec = CanarySpec.model_validate_json(model(first).tags[CANARY_TAG])
    assert (spec.version, spec.share, spec.champion_version) == ("3", 0.3, "1")
    assert audit()[-1].detail["canary"][first]["superseded"]["version"] == 2

    report = promote_fleet(str(fleet))  # a normal promotion: the old canaries end
    assert report.promoted == {p: 3 for p in ids[1:]} and report.canaries == {}
    assert champions() == {p: 1 if p == first else 3 for p in ids}
    assert canaries() == {first: 3}  # still running: its winner is not offered twice
    assert all(CANARY_TAG not in model(p).tags for p in ids[1:])
    last = audit()[-1]
    assert last.action == "promote" and sorted(last.products) == ids[1:]
    superseded = {p: d["superseded"] for p, d in last.detail["canary"].items()}
    assert superseded == {p: {"version": 2, "outcome": "superseded", "by": 3} for p in ids[1:]}
    approval = PromotionApproval(approver="alice")
    assert promote_fleet(str(fleet), approval=approval).status == "nothing to do"
