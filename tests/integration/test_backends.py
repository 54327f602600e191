"""Integration: the same code on production backends, chosen by settings only.

Prefect server on PostgreSQL with the Redis message broker, the MLflow tracking server on
PostgreSQL (2 workers), and a two-node Ray cluster, all on this machine's loopback, each
started and stopped by a fixture (databases are created with unique names and dropped).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psycopg2
import pytest
import redis
from mlflow import MlflowClient

from factory.adapters.data import write_panel
from factory.core.synthetic import PanelSpec, generate_panel, product_ids
from factory.local import (
    free_port,
    start_mlflow,
    start_prefect,
)
from tests.support.fleets import AS_OF, write_fleet
from tests.support.postgres import temporary_database
from tests.support.ray_cluster import start_ray_cluster

pytestmark = pytest.mark.integration
PG = "root@127.0.0.1:5432"


def _query(db: str, sql: str) -> list[tuple]:
    conn = psycopg2.connect(host="127.0.0.1", port=5432, user="root", dbname=db)
    with conn.cursor() as cur:
        cur.execute(sql)
        rows = cur.fetchall()
    conn.close()
    return rows


@pytest.fixture(scope="module")
def databases() -> Iterator[dict[str, str]]:
    """Two fresh PostgreSQL databases with unique names, dropped afterwards."""
    with (
        temporary_database("factory_prefect") as prefect,
        temporary_database("factory_mlflow") as mlflow,
    ):
        yield {"prefect": prefect, "mlflow": mlflow}


@pytest.fixture(scope="module")
def redis_db() -> Iterator[int]:
    """An empty Redis database index of our own, flushed afterwards."""
    for index in range(15, 0, -1):
        client = redis.Redis(host="127.0.0.1", port=6379, db=index)
        if client.dbsize() == 0:
            yield index
            client.flushdb()
            return
    pytest.fail("no empty Redis database index on 127.0.0.1:6379")


@pytest.fixture(scope="module")
def stack(tmp_path_factory, databases, redis_db) -> Iterator[dict]:
    """Prefect (PostgreSQL + Redis), MLflow server (PostgreSQL), Ray (2 nodes)."""
    home = tmp_path_factory.mktemp("backends")
    started: list = []
    try:
        prefect = start_prefect(
            home,
            free_port(),
            database_url=f"postgresql+asyncpg://{PG}/{databases['prefect']}",
            redis_url=f"redis://127.0.0.1:6379/{redis_db}",
        )
        started.append(prefect)
        ml = start_mlflow(
            home,
            free_port(),
            f"postgresql+psycopg2://{PG}/{databases['mlflow']}",
            str(home / "mlartifacts"),
            workers=2,
        )
        started.append(ml)
        cluster = start_ray_cluster(Path(f"/tmp/factory-rc-{os.getpid()}"), nodes=2)
        started.append(cluster)
        yield {"prefect": prefect, "mlflow": ml, "ray": cluster, "home": home}
    finally:
        for service in reversed(started):
            service.stop()


def test_small_fleet_on_postgres_redis_and_a_ray_cluster(stack, databases, redis_db, tmp_path):
    ids = product_ids(20)
    panel = generate_panel(PanelSpec(n_products=20, seed=31, defects={ids[2]: "gap"}))
    home = tmp_path / "factory"
    write_panel(panel.frame, str(home / "data"))
    fleet = write_fleet(tmp_path / "fleet.yaml", shard_size=5)
    env = {
        **os.environ,
        **stack["ray"].env(),
        "FACTORY_HOME": str(home),
        "FACTORY_AS_OF": AS_OF,
        "FACTORY_MLFLOW_TRACKING_URI": stack["mlflow"].url,
        "FACTORY_RAY_ADDRESS": stack["ray"].address,
        "PREFECT_API_URL": f"{stack['prefect'].url}/api",
    }
    done = subprocess.run(
        [sys.executable, "-m", "factory.cli", "train", "--fleet", str(fleet)],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    logs = done.stdout + done.stderr
    assert "'nodes': 2" in logs, logs[-2000:]  # it joined the two-node cluster, not a local Ray

    # Prefect's state lives in PostgreSQL; its events went through Redis
    runs = _query(databases["prefect"], "SELECT state_type FROM flow_run")
    assert [r[0] for r in runs] == ["COMPLETED"]
    task_runs = _query(databases["prefect"], "SELECT count(*) FROM task_run")[0][0]
    assert task_runs >= 4
    broker = redis.Redis(host="127.0.0.1", port=6379, db=redis_db)
    assert any(k.startswith(b"events") or b"messaging" in k for k in broker.keys("*"))

    # MLflow's registry lives in PostgreSQL behind the tracking server
    uri = stack["mlflow"].url
    client = MlflowClient(uri, registry_uri=uri)
    models = client.search_registered_models("name LIKE 'factory.production.%'", max_results=100)
    rows = _query(databases["mlflow"], "SELECT count(*) FROM registered_models")[0][0]
    assert len(models) >= 12 and rows == 2 * len(models)  # staging + production per winner
    names = {m.name for m in models}
    assert f"factory.production.{ids[2]}" not in names  # the gapped product was quarantined
