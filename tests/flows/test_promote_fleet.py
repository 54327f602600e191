"""The governed path to production, end to end in-process: real Prefect (test harness, its
event store included), real local Ray, a real MLflow store, the real audit database.

(Suspension in a deployment run and resumption through the Prefect API are in
tests/integration/test_promotion_e2e.py: only a worker can resume a suspended run.)
"""

from __future__ import annotations

import sqlite3
import time
from collections import Counter
from datetime import datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest
import yaml
from mlflow import MlflowClient

from factory.adapters.audit_log import audit_log
from factory.adapters.data import read_panel, write_panel
from factory.adapters.registry.doctor import repair
from factory.adapters.registry.registry import Registry
from factory.core.audit import ACTIONS
from factory.core.manifest import dump_manifest, load_manifest
from factory.core.promotion import PromotionError
from factory.core.synthetic import PanelSpec, generate_panel
from factory.settings import get_settings
from flows.promote_fleet import PromotionApproval, promote_fleet
from flows.rollback import rollback
from flows.sync_production import sync_production
from flows.train_fleet import train_fleet
from tests.support.fleets import write_fleet

pytestmark = pytest.mark.usefixtures("prefect_harness", "local_ray")

N = 12


def client() -> MlflowClient:
    uri = get_settings().tracking_uri
    return MlflowClient(uri, registry_uri=uri)


def production() -> dict[str, int]:
    """product -> the version production's @champion points at (retired: absent)."""
    out = {}
    for rm in client().search_registered_models(
        "name LIKE 'factory.production.%'", max_results=1000
    ):
        if "champion" in rm.aliases:
            out[rm.tags["factory.product_id"]] = int(rm.aliases["champion"])
    return out


def audit() -> list:
    return audit_log(get_settings().resolved_audit_url).all_records()


def boost_recent_demand(factor: float = 1.3, days: int = 20) -> None:
    """New data for every product (so every gate winner is a refresh on new data)."""
    url = get_settings().resolved_data_url
    panel = read_panel(url)
    recent = panel["ds"] > panel["ds"].max() - pd.Timedelta(days=days)
    panel.loc[recent, "y"] = (panel.loc[recent, "y"] * factor).round()
    panel.loc[panel["ds"] == panel["ds"].max(), "y"] += 1  # every product's data changes
    write_panel(panel, url)


@pytest.fixture
def fleet(factory_home: Path, tmp_path: Path) -> Path:
    """12 products trained once on the repository's governed promotion settings."""
    panel = generate_panel(PanelSpec(n_products=N, seed=5))
    write_panel(panel.frame, get_settings().resolved_data_url)
    path = write_fleet(
        tmp_path / "fleet.yaml",
        shard_size=6,
        promotion={"mode": "approve", "auto_max_share": 0.05, "max_regression": 0.0},
    )
    train_fleet(str(path))
    return path


@pytest.fixture
def promoted(fleet: Path) -> tuple[Path, dict[str, int]]:
    """The first promotion (new products only: within limits) done; production as it was."""
    report = promote_fleet(str(fleet))
    assert report.status == "promoted"
    return fleet, production()


def retrain_all(fleet: Path, before: dict[str, int]) -> dict[str, int]:
    """New data for every product, trained: the products with a new staging version (a
    product whose champion holds on its new data, or whose best candidate changed without
    beating it, keeps its model) and their production versions before."""
    boost_recent_demand()
    train_fleet(str(fleet))
    state = pd.read_parquet(get_settings().state_dir / "products.parquet")
    registered = set(state.loc[state["status"] == "registered", "product_id"])
    restaged = {p: v for p, v in before.items() if p in registered}
    assert len(restaged) >= 4, state[["product_id", "status", "reason"]]
    return restaged


def test_training_writes_staging_only_and_new_products_are_promoted_within_limits(
    fleet: Path,
) -> None:
    assert production() == {}  # approve mode: nothing reaches production at training time
    staged = {
        rm.tags["factory.product_id"]
        for rm in client().search_registered_models("name LIKE 'factory.staging.%'")
    }
    report = promote_fleet(str(fleet))
    assert report.status == "promoted" and not report.needs_approval
    assert set(report.promoted) == staged and set(production()) == staged
    for pid, version in production().items():
        tags = client().get_model_version(f"factory.production.{pid}", str(version)).tags
        assert tags["factory.promotion.batch"] == report.batch
        assert tags["factory.promoted_from"] == f"factory.staging.{pid}/1"
        assert tags["factory.model_digest"].startswith("sha256:")
    actions = Counter(r.action for r in audit())
    assert actions["promote"] == 1 and actions["register"] == 2  # one per shard
    (record,) = [r for r in audit() if r.action == "promote"]
    assert record.batch == report.batch and set(record.products) == staged
    assert record.actor.startswith("policy: within limits")
    assert record.flow_run_id  # the promote-fleet run


def test_a_batch_over_the_limits_waits_and_an_approval_promotes_exactly_its_subset(
    promoted: tuple[Path, dict[str, int]],
) -> None:
    fleet, before = promoted
    restaged = retrain_all(fleet, before)
    waiting = promote_fleet(str(fleet))
    assert waiting.status == "awaiting approval"
    assert any("of fleet volume" in r for r in waiting.needs_approval)
    assert "| product |" in waiting.description and production() == before
    chosen = sorted(restaged)[:2]
    approval = PromotionApproval(
        approver="alice", products=[*chosen, "NOPE"], reason="checked the plots"
    )
    report = promote_fleet(str(fleet), approval=approval)
    assert report.status == "promoted" and report.ignored == ["NOPE"]
    after = production()
    assert {p for p in after if after[p] != before[p]} == set(chosen)
    assert all(after[p] == before[p] + 1 for p in chosen)
    (approve,) = [r for r in audit() if r.action == "approve"]
    assert "approver: alice" in approve.actor and approve.reason == "checked the plots"
    assert sorted(approve.products) == chosen and approve.detail["ignored"] == ["NOPE"]
    last = [r for r in audit() if r.action == "promote"][-1]
    assert sorted(last.products) == chosen and last.batch == report.batch == approve.batch


def test_a_rejection_promotes_nothing_and_records_why(
    promoted: tuple[Path, dict[str, int]],
) -> None:
    fleet, before = promoted
    restaged = retrain_all(fleet, before)
    approval = PromotionApproval(approver="bob", decision="reject", reason="holiday freeze")
    report = promote_fleet(str(fleet), approval=approval)
    assert report.status == "rejected" and report.promoted == {}
    assert production() == before
    (reject,) = [r for r in audit() if r.action == "reject"]
    assert reject.reason == "holiday freeze" and "approver: bob" in reject.actor
    assert set(reject.products) == set(restaged)


def test_rolling_back_a_batch_restores_every_previous_version_and_stays_rolled_back(
    promoted: tuple[Path, dict[str, int]],
) -> None:
    fleet, before = promoted
    restaged = retrain_all(fleet, before)
    batch = promote_fleet(str(fleet), approval=PromotionApproval(approver="alice")).batch
    assert all(v == before[p] + (p in restaged) for p, v in production().items())

    moves = rollback("forecasts too high", batch=batch)  # its speed: bench/lifecycle.py
    assert production() == before and len(moves) == len(restaged)
    for pid, version in restaged.items():
        left = client().get_model_version(f"factory.production.{pid}", str(version + 1))
        assert "forecasts too high" in left.tags["factory.rolled_back"]

    settings = get_settings()
    for promote in (False, True):  # the doctor keeps the rollback, governed or not
        assert repair(Registry(settings), settings.state_dir, promote).fixes == []
    assert production() == before
    again = promote_fleet(str(fleet))  # the rolled-back models are not promoted unasked
    assert again.status == "awaiting approval" and production() == before
    assert any("rolled back before" in r for r in again.needs_approval)
    (record,) = [r for r in audit() if r.action == "rollback"]
    assert record.batch == batch and record.reason == "forecasts too high"
    assert {p: int(v) for p, v in record.versions.items()} == restaged


def test_a_rollback_to_a_tampered_version_is_refused_and_production_is_unchanged(
    promoted: tuple[Path, dict[str, int]],
) -> None:
    fleet, before = promoted
    restaged = retrain_all(fleet, before)
    batch = promote_fleet(str(fleet), approval=PromotionApproval(approver="alice")).batch
    after = production()
    victim = sorted(restaged)[0]
    name = f"factory.production.{victim}"
    uri = client().get_model_version_download_uri(name, str(before[victim]))
    folder = Path(uri.removeprefix("file://"))
    changed = sorted(p for p in folder.rglob("*") if p.is_file())[-1]
    changed.write_bytes(changed.read_bytes() + b" ")  # one byte on the version to go back to

    with pytest.raises(PromotionError) as refused:
        rollback("forecasts too high", batch=batch)
    line = f"product {victim!r} version {before[victim]} ({name}): model files changed"
    assert line in str(refused.value) and "production unchanged" in str(refused.value)
    assert str(refused.value).count("product '") == 1  # only the tampered one is named
    assert production() == after  # not one alias moved, the good ones included
    assert not [r for r in audit() if r.action == "rollback"]


def test_retire_then_restore(promoted: tuple[Path, dict[str, int]], tmp_path: Path) -> None:
    fleet, before = promoted
    gone = sorted(before)[0]
    spec = yaml.safe_load(fleet.read_text())
    for family in spec["families"]:
        family["products"]["exclude"] = [gone]
    smaller = tmp_path / "smaller.yaml"
    smaller.write_text(yaml.safe_dump(spec, sort_keys=False))

    report = promote_fleet(str(smaller))
    assert report.retired == [gone]
    assert gone not in production()
    registry = Registry(get_settings())
    assert gone in registry.retired()
    assert gone not in registry.current_models("staging")  # no forecast, drift or serving
    (retire,) = [r for r in audit() if r.action == "retire"]
    assert retire.products == [gone] and "no longer in the fleet" in retire.reason
    status = pd.read_parquet(get_settings().state_dir / "products.parquet")
    assert status.set_index("product_id").loc[gone, "status"] == "retired"

    from factory.adapters.registry.lifecycle import restore

    assert restore(registry, [gone], "os: test", "back in range") == [gone]
    assert production() == before
    assert gone not in registry.retired()
    assert [r.action for r in audit()][-1] == "restore"


def test_manifest_export_edit_apply_changes_exactly_the_edited_products(
    promoted: tuple[Path, dict[str, int]], tmp_path: Path
) -> None:
    fleet, before = promoted
    restaged = retrain_all(fleet, before)
    promote_fleet(str(fleet), approval=PromotionApproval(approver="alice"))
    from factory.adapters.registry.manifest import production_manifest

    exported = production_manifest(Registry(get_settings()))
    assert {p: e.version for p, e in exported.production.items()} == production()
    edited = sorted(restaged)[3]
    lines = dump_manifest(exported).splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith(f"  {edited}:"))
    path = tmp_path / "production.yaml"
    lines[at] = f"  {edited}: {{version: {before[edited] + 1}, digest: 'sha256:forged'}}"
    path.write_text("\n".join(lines))
    with pytest.raises(PromotionError, match=f"{edited}: v{before[edited] + 1} digest differs"):
        sync_production(str(path))  # a digest that is not the registry's refuses the file
    lines[at] = f"  {edited}: {{version: {before[edited]}}}"  # the engineer's edit: roll back
    text = "\n".join(lines)
    path.write_text(text)
    assert load_manifest(text, str(path)).production[edited].version == before[edited]

    current = production()
    dry = sync_production(str(path))
    assert [(c.product_id, c.action) for c in dry] == [(edited, "rollback")]
    assert production() == current  # a dry run changes nothing
    applied = sync_production(str(path), execute=True)
    assert [c.product_id for c in applied] == [edited]
    after = production()
    assert {p for p in after if after[p] != current[p]} == {edited}
    assert after[edited] == before[edited]
    assert sync_production(str(path)) == []  # in sync now


def test_every_action_leaves_one_audit_record_and_one_event_and_the_chain_detects_edits(
    promoted: tuple[Path, dict[str, int]],
) -> None:
    from factory.adapters.registry.lifecycle import restore, retire
    from factory.core.promotion import Retirement

    fleet, before = promoted
    first = sorted(retrain_all(fleet, before))[0]
    promote_fleet(str(fleet), approval=PromotionApproval(approver="a", reason="r"))
    rollback("r", products=[first])
    promote_fleet(str(fleet), approval=PromotionApproval(approver="b", decision="reject"))
    registry = Registry(get_settings())
    retire(registry, [Retirement(first, "discontinued")], "os: test")
    restore(registry, [first], "os: test", "back")
    records = audit()
    assert audit_log(get_settings().resolved_audit_url).verify() == []
    expected = Counter(f"factory.model.{r.action}" for r in records)
    assert set(expected) == {f"factory.model.{a}" for a in ACTIONS}  # each kind, once or more
    seen = wait_for_events(expected, since=records[0].at)  # this test's (one harness server)
    assert {name: seen[name] for name in expected} == dict(expected)

    db = get_settings().resolved_audit_url.removeprefix("sqlite:///")
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE factory_audit SET reason = 'nothing to see' WHERE seq = 2")
    problems = audit_log(get_settings().resolved_audit_url).verify()
    assert problems and "record 2" in problems[0]


def wait_for_events(expected: Counter, since: datetime, timeout: float = 60) -> Counter:
    """The harness server's count of each expected event name since a time, once it has them
    all (or the timeout passed)."""
    from prefect.client.orchestration import get_client
    from prefect.events.filters import EventFilter, EventNameFilter, EventOccurredFilter
    from prefect.events.worker import EventsWorker

    EventsWorker.drain_all()
    deadline = time.monotonic() + timeout
    seen: Counter = Counter()
    while time.monotonic() < deadline:
        with get_client(sync_client=True) as c:
            only = EventFilter(
                event=EventNameFilter(name=list(expected)),
                occurred=EventOccurredFilter(since=since - timedelta(seconds=1)),
            )
            page = c.read_events(filter=only, limit=50)
            seen = Counter(e.event for e in page.events)
        if all(seen[k] >= v for k, v in expected.items()):
            return seen
        time.sleep(1)
    return seen
