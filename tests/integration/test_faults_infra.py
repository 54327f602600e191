"""Fault injection in what `factory train` runs on: a Ray worker killed mid-shard, the sales
data replaced mid-run, the Prefect server restarted mid-run. Real processes, as in
test_faults.py; every scenario ends with the invariant checker finding nothing."""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path

import httpx
import pandas as pd
import psutil
import pytest
from mlflow import MlflowClient

from factory.adapters.data import read_panel, write_panel
from factory.core.contract import fleet_series, validate_panel
from factory.core.fingerprints import series_fingerprint
from factory.core.fleet import load_fleet
from factory.local import free_port, start_prefect
from tests.support.faults import FactoryHome, kill_tree, make_home, wait_for
from tests.support.fleets import AS_OF

pytestmark = pytest.mark.integration


def training_workers(pid: int) -> list[psutil.Process]:
    """Ray workers below `pid` running the training task right now: Ray retitles a worker
    `ray::_train_remote` while it runs that task and `ray::IDLE` between tasks."""
    found = []
    for proc in psutil.Process(pid).children(recursive=True):
        with contextlib.suppress(psutil.Error):
            title = proc.cmdline()
            if title and title[0].startswith("ray::_train_remote"):
                found.append(proc)
    return found


def registry(h: FactoryHome) -> MlflowClient:
    """The home's registry through MLflow's public client."""
    s = h.settings()
    return MlflowClient(s.tracking_uri, s.mlflow_registry_uri or s.tracking_uri)


def staging_models(h: FactoryHome) -> dict[str, str]:
    """Product id -> name of its registered staging model."""
    prefix = h.settings().model_prefix
    found = registry(h).search_registered_models(f"name LIKE '{prefix}.%'", max_results=1000)
    return {
        rm.tags["factory.product_id"]: rm.name
        for rm in found
        if rm.tags.get("factory.environment") == "staging"
    }


def tagged_fingerprints(h: FactoryHome, rows: pd.DataFrame) -> dict[str, str | None]:
    """Per status row, the `factory.data_fingerprint` tag of the staging version it names."""
    client, names = registry(h), staging_models(h)
    return {
        pid: client.get_model_version(names[pid], str(v)).tags.get("factory.data_fingerprint")
        for pid, v in zip(rows["product_id"], rows["staging_version"], strict=True)
    }


def fingerprints(rows: pd.DataFrame) -> dict[str, str]:
    """The data fingerprint the status store recorded per product."""
    return dict(zip(rows["product_id"], rows["data_fingerprint"], strict=True))


def panel_fingerprints(h: FactoryHome, panel: pd.DataFrame) -> dict[str, str]:
    """Each product's fingerprint in a panel, computed as validation computes it."""
    fleet = load_fleet(h.fleet).spec
    clean, report = validate_panel(panel, fleet, pd.Timestamp(AS_OF))
    return {
        p: series_fingerprint(s) for p, s in fleet_series(clean, fleet, report.assignment).items()
    }


def pending(h: FactoryHome) -> list[str]:
    """Products without a recorded outcome yet."""
    return sorted(set(h.products) - set(h.state()["product_id"]))


def test_kill_9_of_a_ray_worker_mid_shard_is_retried_by_ray(home: FactoryHome) -> None:
    proc = home.start("first")
    workers: list[psutil.Process] = []

    def training() -> bool:
        workers[:] = training_workers(proc.pid)
        return bool(workers)

    wait_for("a Ray worker training a shard", training, timeout=420)
    victim = workers[0]
    victim.kill()  # kill -9, once, one worker

    assert proc.wait(600) == 0, home.log("first")[-3000:]
    out = home.log("first")
    assert f"Worker PID: {victim.pid}" in out, out[-3000:]  # it died running a task...
    assert "so the task will be retried" in out, out[-3000:]  # ...which Ray ran again
    assert "Task run failed" not in out  # Prefect never had to retry the shard
    state = home.state().set_index("product_id")
    assert sorted(state.index) == sorted(home.products)
    assert state["status"].isin(["registered", "kept", "rejected"]).all(), state["reason"]
    assert set(staging_models(home)) == set(state.index[state["status"] == "registered"])
    assert home.violations() == []


def test_data_replaced_mid_run_is_trained_from_one_snapshot_then_retrained(
    home: FactoryHome,
) -> None:
    data = home.settings().resolved_home / "data"
    original = read_panel(str(data))
    proc = home.start("first")
    wait_for("the first shard recorded", lambda: home.trained() >= 5, timeout=420)
    while True:  # changed: 5 products whose shards had not finished when the file changed
        changed = pending(home)[-5:]
        assert len(changed) == 5, "the run was nearly over before the data could change"
        new = original.copy()
        new.loc[new["unique_id"].isin(changed), "y"] *= 1.5
        incoming = write_panel(new, str(home.root / "incoming"))
        if set(changed) <= set(pending(home)):
            os.replace(incoming, data / "sales.parquet")  # atomic, as an upstream job would
            replaced_at = pd.Timestamp.now(tz="UTC")
            break

    assert proc.wait(600) == 0, home.log("first")[-3000:]
    first = home.state()
    assert (first.set_index("product_id").loc[changed, "updated_at"] > replaced_at).all()
    before = panel_fingerprints(home, original)
    after = panel_fingerprints(home, read_panel(str(data)))
    assert {p for p in before if before[p] != after[p]} == set(changed)
    assert first["flow_run_id"].nunique() == 1
    assert fingerprints(first) == before  # one snapshot, read once at validation
    made = first[first["status"] == "registered"]
    assert tagged_fingerprints(home, made) == fingerprints(made)

    code, out = home.run("rerun")
    assert code == 0, out[-3000:]
    second = home.state()
    retrained = second[second["status"] != "skipped"]
    assert sorted(retrained["product_id"]) == sorted(changed)
    assert retrained["status"].isin(["registered", "kept", "rejected"]).all(), retrained["reason"]
    assert fingerprints(second) == after
    served = second[second["status"].isin(["registered", "skipped"])]
    served = served[served["staging_version"].notna()]  # skipped: registered in the first run
    assert tagged_fingerprints(home, served) == fingerprints(served)
    assert home.violations() == []


def test_a_prefect_server_restart_mid_run_does_not_stop_the_run(tmp_path: Path) -> None:
    port = free_port()
    server = start_prefect(tmp_path / "prefect", port)
    h = make_home(tmp_path / "h", f"{server.url}/api")
    try:
        proc = h.start("first")
        wait_for("the first shard recorded", lambda: h.trained() >= 5, timeout=420)
        kill_tree(server.pid)  # kill -9 of the server mid-run, down for 10 s
        assert proc.poll() is None, "the run ended before the server went down"
        time.sleep(10)
        server = start_prefect(tmp_path / "prefect", port)  # same port, same SQLite database

        assert proc.wait(600) == 0, h.log("first")[-3000:]
        state = h.state().set_index("product_id")
        assert sorted(state.index) == sorted(h.products)
        assert state["status"].isin(["registered", "kept", "rejected"]).all(), state["reason"]
        run = httpx.get(f"{server.url}/api/flow_runs/{state['flow_run_id'].iloc[0]}").json()
        assert run["state"]["type"] == "COMPLETED"  # what the restarted server shows
        assert h.violations() == []
    finally:
        h.stop_all()
        server.stop()
