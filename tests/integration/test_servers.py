"""Integration: `factory train` against a real `prefect server start` and `mlflow server`.

Both servers run on free loopback ports in a temp folder, started and stopped by fixtures.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import mlflow
import pandas as pd
import pytest
from mlflow import MlflowClient

from factory.adapters.data import write_panel
from factory.core.fleet import load_fleet
from factory.core.synthetic import PanelSpec, generate_panel, product_ids
from factory.local import Service, free_port, start_mlflow, start_prefect
from tests.support.fleets import AS_OF, write_fleet

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Service, Service]]:
    """A Prefect server (SQLite) and an MLflow tracking server (SQLite + proxied artifacts)."""
    home = tmp_path_factory.mktemp("servers")
    prefect = start_prefect(home, free_port())
    try:
        ml = start_mlflow(
            home, free_port(), f"sqlite:///{home / 'mlflow.db'}", str(home / "mlartifacts")
        )
    except Exception:
        prefect.stop()
        raise
    yield home, prefect, ml
    ml.stop()
    prefect.stop()


def factory(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    """Run the `factory` CLI as a user would, in its own process."""
    return subprocess.run(
        [sys.executable, "-m", "factory.cli", *args],
        env={**os.environ, **env},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=600,
    )


def api(prefect: Service, path: str, body: dict) -> list[dict]:
    """POST a filter to the Prefect REST API."""
    response = httpx.post(f"{prefect.url}/api{path}", json=body, timeout=30)
    response.raise_for_status()
    return response.json()


def test_train_against_real_servers(servers, tmp_path: Path) -> None:
    _home, prefect, ml = servers
    ids = product_ids(24)
    panel = generate_panel(PanelSpec(n_products=24, seed=21, defects={ids[5]: "negative"}))
    env = {
        "FACTORY_HOME": str(tmp_path / "factory"),
        "FACTORY_AS_OF": AS_OF,
        "FACTORY_MLFLOW_TRACKING_URI": ml.url,
        "PREFECT_API_URL": f"{prefect.url}/api",
        "PREFECT_UI_URL": prefect.url,
    }
    write_panel(panel.frame, str(tmp_path / "factory" / "data"))
    fleet = write_fleet(tmp_path / "fleet.yaml", shard_size=6)

    done = factory(["train", "--fleet", str(fleet)], env, tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "registered" in done.stdout

    runs = api(
        prefect, "/flow_runs/filter", {"flow_runs": {"state": {"type": {"any_": ["COMPLETED"]}}}}
    )
    assert len(runs) == 1
    run_id = runs[0]["id"]
    tasks = api(prefect, "/task_runs/filter", {"flow_runs": {"id": {"any_": [run_id]}}})
    shards = {t["name"] for t in tasks if t["name"].startswith("train-")}
    families = load_fleet(fleet).spec.assign(set(ids) - {ids[5]})
    assert len(shards) == sum(math.ceil(len(v) / 6) for v in families.values())
    assert len(tasks) == len(shards) + 3  # validate-data, repair-registry, report-fleet
    assert all(t["state_type"] == "COMPLETED" for t in tasks)
    artifacts = api(
        prefect, "/artifacts/filter", {"artifacts": {"flow_run_id": {"any_": [run_id]}}}
    )
    by_key = {a["key"]: a for a in artifacts}
    assert {
        "fleet-outcomes",
        "fleet-summary",
        "fleet-quarantine",
        "fleet-report",
        "train-fleet-progress",
    } <= set(by_key)
    assert by_key["train-fleet-progress"]["data"] == 100.0
    table = json.loads(by_key["fleet-outcomes"]["data"])
    assert {row["product"] for row in table} == set(ids)
    assert next(r for r in table if r["product"] == ids[5])["status"] == "quarantined"

    client = MlflowClient(ml.url, registry_uri=ml.url)
    prod = client.search_registered_models("name LIKE 'factory.production.%'", max_results=100)
    assert len(prod) >= 15
    version = client.get_model_version_by_alias(prod[0].name, "champion")
    assert version.tags["factory.flow_run_id"] == run_id
    assert version.tags["factory.flow_run_url"].startswith(prefect.url)

    mlflow.set_tracking_uri(ml.url)
    mlflow.set_registry_uri(ml.url)
    model = mlflow.pyfunc.load_model(f"models:/{prod[0].name}@champion")
    forecast = model.predict(pd.DataFrame({"h": [7]}))
    assert len(forecast) == 7 and (forecast["yhat"] >= 0).all()

    # `factory forecast` loads every served model through the server's artifact proxy, with
    # the factory's own URIs (MLflow's process-wide ones are never set in its process).
    done = factory(["forecast", "--horizon", "7"], env, tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    written = pd.read_parquet(tmp_path / "factory" / "forecasts" / "forecasts.parquet")
    served = client.search_registered_models("name LIKE 'factory.staging.%'", max_results=100)
    assert written["unique_id"].nunique() == len(served)
    assert (written.groupby("unique_id").size() == 7).all()
    assert (written["model_version"] != "").all() and (written["yhat"] >= 0).all()

    assert httpx.get(prefect.url, timeout=30).status_code == 200
    ui = httpx.get(f"{prefect.url}/ui-settings", timeout=30).json()
    assert ui["api_url"] == f"{prefect.url}/api"  # the UI talks to this server, not :4200
    assert httpx.get(ml.url, timeout=30).status_code == 200
