"""Fault injection with real processes: `factory train` killed, run twice at once, its
registry down for longer than the client retries. Every scenario ends with the invariant
checker (tests/support/invariants.py) finding nothing."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from factory.local import Service, free_port, start_mlflow
from tests.support.faults import FactoryHome, kill_tree, make_home, wait_for

pytestmark = pytest.mark.integration


def test_kill_9_of_the_flow_keeps_finished_shards_and_the_rerun_completes(
    home: FactoryHome,
) -> None:
    proc = home.start("first")
    wait_for("two shards recorded", lambda: home.trained() >= 10, timeout=420)
    kill_tree(proc.pid)
    recorded = set(home.state()["product_id"])
    assert len(recorded) >= 10  # outcomes are written per shard, not at the end

    code, out = home.run("rerun")
    assert code == 0, out[-3000:]
    state = home.state().set_index("product_id")
    skipped = state.index[state["status"] == "skipped"]
    assert len(skipped) >= 10  # what the killed run finished is not trained again
    assert home.violations() == []


def test_two_train_runs_at_once_register_each_model_once(tmp_path: Path) -> None:
    # on embedded defaults and a fresh FACTORY_HOME: both also create Prefect's database
    home = make_home(tmp_path, None, PREFECT_HOME=None)
    try:
        first, second = home.start("first"), home.start("second")
        assert first.wait(600) == 0, home.log("first")[-3000:]
        assert second.wait(600) == 0, home.log("second")[-3000:]
        logs = home.log("first") + home.log("second")
        assert "another training run holds the registry: flow run" in logs
        state = home.state()
        assert (state["status"] == "skipped").sum() >= len(home.products) // 2  # the later run
        assert home.violations() == []
    finally:
        home.stop_all()


def test_a_registry_outage_longer_than_the_retries_is_repaired_by_the_rerun(
    tmp_path: Path, prefect: Service
) -> None:
    port = free_port()
    backend = f"sqlite:///{tmp_path / 'mlflow.db'}"
    server = start_mlflow(tmp_path, port, backend, str(tmp_path / "art"))
    h = make_home(
        tmp_path / "h",
        f"{prefect.url}/api",
        FACTORY_MLFLOW_TRACKING_URI=server.url,
        MLFLOW_HTTP_REQUEST_MAX_RETRIES="2",
        MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR="1",
    )
    try:
        proc = h.start("first")
        wait_for("the first shard recorded", lambda: h.trained() >= 5, timeout=420)
        kill_tree(server.pid)  # down for 20 s: longer than the client's retries
        time.sleep(20)
        server = start_mlflow(tmp_path, port, backend, str(tmp_path / "art"))
        proc.wait(600)  # whatever the first run made of it
        code, out = h.run("rerun")
        assert code == 0, out[-3000:]
        assert h.violations() == []
    finally:
        h.stop_all()
        server.stop()
