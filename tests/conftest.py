"""Shared fixtures: one Prefect test harness, one local Ray, a fresh factory home per test."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.fleets import AS_OF


@pytest.fixture(scope="session")
def prefect_harness() -> Iterator[None]:
    """A temporary Prefect server for flow tests (started once per session)."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture(scope="session")
def local_ray() -> Iterator[None]:
    """Real local Ray with 2 CPUs and its own temp dir."""
    import ray

    from factory.adapters.fanout import HAPROXY_FILES, local_serve_env

    temp = os.path.join(tempfile.gettempdir(), f"factory-ray-test-{os.getpid()}")
    with local_serve_env():  # as `ensure_ray` starts a local Ray
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, _temp_dir=temp)
    node = ray.get_runtime_context().get_node_id()
    yield
    ray.shutdown()
    shutil.rmtree(HAPROXY_FILES / node, ignore_errors=True)


@pytest.fixture
def factory_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """FACTORY_HOME in a temp folder: its own data, SQLite MLflow store and artifacts."""
    from factory.settings import get_settings

    home = tmp_path / "factory"
    monkeypatch.setenv("FACTORY_HOME", str(home))
    monkeypatch.setenv("FACTORY_AS_OF", AS_OF)
    for var in ("FACTORY_DATA_URL", "FACTORY_MLFLOW_TRACKING_URI", "RAY_ADDRESS"):
        monkeypatch.delenv(var, raising=False)
    get_settings.cache_clear()
    yield home
    get_settings.cache_clear()
