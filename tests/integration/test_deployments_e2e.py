"""End to end on real parts: `prefect server start`, `prefect deploy` of deployments/prefect.yaml,
a real process worker running the flows from this checkout, events and deployment triggers.

Each test gets its own server (SQLite, free loopback port), work pool, deployments, worker and
factory home, all stopped by fixtures, including flow-run processes the worker started.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
import yaml
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
from prefect.client.schemas.objects import FlowRun, StateType
from prefect.events.schemas.deployment_triggers import DeploymentEventTrigger
from prefect.events.schemas.events import Resource

from factory.adapters.data import read_panel, write_panel
from factory.adapters.events import LANDED as LANDED_EVENT
from factory.adapters.events import ProductsPayload, event_body
from factory.adapters.landing_zone import LEDGER_FILE
from factory.adapters.registry.names import STAGING
from factory.core.synthetic import PanelSpec, generate_panel
from tests.support.deployed import (
    Stack,
    champions,
    clean_env,
    deployed,
    finished,
    is_suspended,
    models_in,
    train_nightly,
    versions,
    worker_stack,
)
from tests.support.fleets import REPO

pytestmark = pytest.mark.integration

HISTORY_END = "2026-10-31"
# Products chosen so their champion is refreshed (same config, new data) by 3 new days; the
# test still checks every claim against the registry rather than trusting this choice.
LANDED = ["apparel-00002", "grocery-00005", "toys-00003"]
DECAYED = ["electronics-00004", "household-00006"]


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    """Server + work pool + `prefect deploy --all` + a worker with this test's FACTORY_HOME."""
    with worker_stack(tmp_path) as running:
        yield running


def drop(folder: Path, name: str, frame: pd.DataFrame) -> float:
    """Deliver a file into the landing zone (write, then rename); returns the time it landed."""
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".{name}.part"
    frame.to_parquet(tmp)
    tmp.rename(folder / name)
    return time.time()


def one_retrain(stack: Stack) -> list[FlowRun]:
    """Wait for retrain-products/on-data to end; exactly one run, and it completed."""
    retrain = stack.wait(
        "a retrain-products run to finish",
        lambda: finished(stack, "retrain-products/on-data"),
        150,
    )
    assert len(retrain) == 1 and retrain[0].state_type == StateType.COMPLETED, stack.log_tail()
    return retrain


def test_deployments_file_declares_schedules_triggers_and_limits() -> None:
    from prefect.cli.deploy._triggers import _initialize_deployment_triggers

    spec = yaml.safe_load((REPO / "deployments" / "prefect.yaml").read_text())
    by_name = {(d["entrypoint"].rsplit(":", 1)[1], d["name"]): d for d in spec["deployments"]}
    assert set(by_name) == {
        ("train_fleet", "nightly"),
        ("retrain_products", "on-data"),
        ("watch_landing", "poll"),
        ("monitor_drift", "daily"),
        ("forecast_products_flow", "daily"),
        ("promote_fleet", "on-trained"),
        ("rollback", "by-hand"),
        ("sync_production", "by-hand"),
    }
    assert all(d["concurrency_limit"]["limit"] == 1 for d in by_name.values())
    on_data = by_name[("retrain_products", "on-data")]
    triggers = _initialize_deployment_triggers("on-data", on_data["triggers"])
    assert {next(iter(t.expect)) for t in triggers} == {
        "factory.data.landed",
        "factory.model.drifted",
    }
    for t in triggers:
        assert t.for_each == {"prefect.resource.id"} and t.within.total_seconds() >= 60
        assert t.parameters is not None
        assert t.parameters["products"]["__prefect_kind"] == "json"
    on_trained = by_name[("promote_fleet", "on-trained")]
    (promote,) = _initialize_deployment_triggers("on-trained", on_trained["triggers"])
    assert isinstance(promote, DeploymentEventTrigger)
    assert promote.expect == {"factory.fleet.trained"}
    assert promote.for_each == {"prefect.resource.id"}
    assert promote.match.matches(Resource({"prefect.resource.id": "factory.fleet.<run id>"}))


def test_schedules_create_runs_on_the_server(tmp_path: Path) -> None:
    with (
        deployed(tmp_path) as (server, _env),
        Stack(server, {}, tmp_path, tmp_path / "logs" / "prefect.log") as stack,
    ):
        scheduled = stack.wait(
            "the scheduler to create the nightly and watcher runs",
            lambda: stack.runs("train-fleet/nightly") and stack.runs("watch-landing/poll"),
            20,
        )
        assert all(r.state_type == StateType.SCHEDULED for r in scheduled)


def test_landed_file_retrains_exactly_its_products_once(stack: Stack) -> None:
    full = generate_panel(PanelSpec(n_products=12, seed=5, end="2026-11-10")).frame
    write_panel(full[full["ds"] <= HISTORY_END], str(stack.home / "data"))
    train_nightly(stack)
    before, serving = versions(stack.home), champions(stack.home)
    assert {t["factory.product_id"] for t in before.values()} >= set(LANDED)
    assert set(serving) >= set(LANDED)

    watcher = stack.run("watch-landing/poll", poll_seconds=1, run_for_seconds=240)
    stack.wait(
        "the watcher to start",
        lambda: stack.client.read_flow_run(watcher).state_type == StateType.RUNNING,
        60,
    )
    landed = full[full["unique_id"].isin(LANDED) & (full["ds"] > HISTORY_END)]
    landed = landed[landed["ds"] <= "2026-11-03"]
    drop(stack.home / "landing", "sales-2026-11-03.parquet", landed)

    retrain = one_retrain(stack)
    assert retrain[0].parameters["products"] == LANDED
    (event,) = stack.events("factory.data.landed")
    assert event.payload["product_ids"] == LANDED
    fingerprints = event.payload["fingerprints"]

    # Training writes staging only. The promote-fleet run its factory.fleet.trained event starts
    # would replace production for 3 of 12 products (> 5% of recent sales): it suspends for an
    # approval, and production serves what it served before.
    (promotion,) = stack.promotions_since(retrain[0])
    assert is_suspended(promotion), f"{promotion.state}\n{stack.log_tail()}"
    after = versions(stack.home)
    new = {key: tags for key, tags in after.items() if key not in before}
    assert {tags["factory.product_id"] for tags in new.values()} == set(LANDED)
    assert {name for name, _ in new} <= models_in(stack.home, STAGING)
    for pid in LANDED:  # one staging version each, on the new data
        (mine,) = [tags for tags in new.values() if tags["factory.product_id"] == pid]
        assert mine["factory.data_fingerprint"] == fingerprints[pid]
        assert mine["factory.trained_until"] == "2026-11-03"
    assert champions(stack.home) == serving
    history = read_panel(str(stack.home / "data"))
    assert len(history) == len(full[full["ds"] <= HISTORY_END]) + len(landed)

    # Re-delivery: the same bytes under a new name, and the same name rewritten.
    ledger = stack.home / "state" / LEDGER_FILE

    def stamps() -> dict[str, str]:
        return {Path(u).name: s for u, (s, _) in json.loads(ledger.read_text())["stamps"].items()}

    first = stamps()["sales-2026-11-03.parquet"]
    time.sleep(0.05)
    again = drop(stack.home / "landing", "resend.parquet", landed)
    drop(stack.home / "landing", "sales-2026-11-03.parquet", landed)
    stack.wait(
        "the watcher to see the re-delivered files",
        lambda: "resend.parquet" in stamps() and stamps()["sales-2026-11-03.parquet"] != first,
        30,
    )
    time.sleep(max(0.0, again + 10 - time.time()))  # longer than event -> run takes here
    assert len(stack.events("factory.data.landed")) == 1
    assert len(stack.runs("retrain-products/on-data")) == 1
    assert versions(stack.home) == after
    assert len(read_panel(str(stack.home / "data"))) == len(history)

    # Another system posts the event for one product, then retries the same post: one run.
    external = ProductsPayload(product_ids=[LANDED[0]], fingerprint="erp-batch-17")
    for _ in range(2):
        stack.post_event(event_body(LANDED_EVENT, external))
    runs = stack.wait(
        "the externally triggered run",
        lambda: len(done := finished(stack, "retrain-products/on-data")) == 2 and done,
        120,
    )
    time.sleep(5)
    assert len(stack.runs("retrain-products/on-data")) == 2
    newest = max(runs, key=lambda r: r.created)
    assert newest.state_type == StateType.COMPLETED
    assert newest.parameters["products"] == [LANDED[0]]
    # Its train run still announces itself; the promote-fleet run finds the same pending batch.
    (pending,) = stack.promotions_since(newest)
    assert is_suspended(pending), f"{pending.state}\n{stack.log_tail()}"
    assert versions(stack.home) == after  # nothing changed in its data: nothing to register
    assert champions(stack.home) == serving


def test_drifted_products_and_only_those_are_retrained(stack: Stack) -> None:
    full = generate_panel(PanelSpec(n_products=12, seed=5, end="2026-11-21")).frame
    write_panel(full[full["ds"] <= HISTORY_END], str(stack.home / "data"))
    train_nightly(stack)
    stack.finished(stack.run("forecast-products/daily"), timeout=120)
    before, serving = versions(stack.home), champions(stack.home)
    assert {t["factory.product_id"] for t in before.values()} >= set(DECAYED)
    assert set(serving) >= set(DECAYED)

    # Three weeks of actuals arrive for every product (straight into the history, as a nightly
    # load would); two products' demand has collapsed to 30% of what the models expect.
    actuals = full.copy()
    decayed = actuals["unique_id"].isin(DECAYED) & (actuals["ds"] > HISTORY_END)
    actuals.loc[decayed, "y"] = (actuals.loc[decayed, "y"] * 0.3).round()
    write_panel(actuals, str(stack.home / "data"))

    stack.finished(stack.run("monitor-drift/daily"), timeout=120)
    retrain = one_retrain(stack)
    assert retrain[0].parameters["products"] == DECAYED
    assert retrain[0].parameters["reason"].startswith("factory.model.drifted")
    (event,) = stack.events("factory.model.drifted")
    assert event.payload["product_ids"] == DECAYED

    drift_status = ArtifactFilter(key=ArtifactFilterKey(any_=["drift-status"]))
    (table,) = stack.client.read_artifacts(artifact_filter=drift_status)
    assert isinstance(table.data, str)  # a table artifact's rows, as JSON
    rows = {row["product"]: row["status"] for row in json.loads(table.data)}
    assert {p for p, status in rows.items() if status != "ok"} == set(DECAYED)
    drift = pd.read_parquet(stack.home / "state" / "drift.parquet").set_index("product_id")
    assert set(drift.index[drift["drift_status"] != "ok"]) == set(DECAYED)
    assert (drift.loc[DECAYED, "drift_status"] == "performance").all()
    trained = pd.read_parquet(stack.home / "state" / "products.parquet").set_index("product_id")
    subflow = trained.loc[DECAYED[0], "flow_run_id"]
    assert set(trained.index[trained["flow_run_id"] == subflow]) == set(DECAYED)
    # Training writes staging only; the retrain's promote-fleet run would replace production
    # for 2 of 12 products (> 5% of recent sales even after the collapse): it waits for approval.
    (promotion,) = stack.promotions_since(retrain[0])
    assert is_suspended(promotion), f"{promotion.state}\n{stack.log_tail()}"
    new = {k: t for k, t in versions(stack.home).items() if k not in before}
    assert {t["factory.product_id"] for t in new.values()} <= set(DECAYED)
    assert champions(stack.home) == serving

    status = subprocess.run(
        [sys.executable, "-m", "factory.cli", "status", "--drift", "performance"],
        env={**clean_env(FACTORY_HOME=str(stack.home)), "COLUMNS": "250"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert status.returncode == 0, status.stderr
    shown = [line.split("│")[1].strip() for line in status.stdout.splitlines() if "│" in line]
    assert set(shown) - {"product"} == set(DECAYED)
