"""Preflight checks one by one: URI schemes, SQLite files, server probes, storage, Ray, products."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from fsspec.registry import known_implementations

from factory.adapters.data import write_panel
from factory.adapters.forecasts import ForecastError
from factory.adapters.preflight import (
    check_forecast_products,
    check_mlflow_uri,
    check_train_products,
    database_problem,
    mask_password,
    probe_mlflow_server,
    ray_address_problem,
    sqlite_problem,
    storage_problem,
)
from factory.core.fleet import load_fleet
from factory.core.outcomes import UnknownProducts
from factory.core.synthetic import PanelSpec, generate_panel, product_ids
from factory.settings import get_settings
from tests.support.fleets import REPO


def closed_port() -> int:
    """A loopback port nothing listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def silent_listener() -> Iterator[int]:
    """A loopback port that accepts connections and never answers."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(8)
        yield int(s.getsockname()[1])


def serve(routes: dict[str, int]) -> tuple[ThreadingHTTPServer, str]:
    """An HTTP server on loopback answering each path (query ignored) with its status code."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(routes.get(self.path.split("?")[0], 404))
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


SEARCH = "/api/2.0/mlflow/experiments/search"


@pytest.mark.parametrize(
    ("routes", "problem"),
    [
        ({"/health": 200}, None),
        ({SEARCH: 200}, None),  # no /health (e.g. behind a path-routing proxy): the API answers
        ({SEARCH: 401}, "refused access (HTTP 401); set MLFLOW_TRACKING_TOKEN"),
        ({}, "a server answers, but not as MLflow (HTTP 404 from http://127.0.0.1:"),
    ],
)
def test_probe_asks_health_then_the_experiments_api(
    routes: dict[str, int], problem: str | None
) -> None:
    server, url = serve(routes)
    try:
        found = probe_mlflow_server(url + "/", timeout=2)
    finally:
        server.shutdown()
    if problem is None:
        assert found is None
    else:
        assert found is not None and problem in found


def test_probe_of_a_closed_port_is_refused_at_once() -> None:
    started = time.monotonic()
    assert probe_mlflow_server(f"http://127.0.0.1:{closed_port()}", timeout=3) == (
        "no MLflow server answers (connection refused)"
    )
    assert time.monotonic() - started < 3


def test_probe_of_a_server_that_never_answers_gives_up_after_its_timeout(
    silent_listener: int,
) -> None:
    started = time.monotonic()
    found = probe_mlflow_server(f"http://127.0.0.1:{silent_listener}", timeout=0.5)
    assert found == "no MLflow server answered within 0.5 s"
    assert time.monotonic() - started < 3  # one request, not MLflow's minutes of retries


def test_database_probe(silent_listener: int) -> None:
    assert database_problem(f"postgresql://u@127.0.0.1:{silent_listener}/db", "postgresql") is None
    port = closed_port()
    assert database_problem(f"mysql://u@127.0.0.1:{port}/db", "mysql") == (
        f"no database server answers at 127.0.0.1:{port} (connection refused)"
    )
    assert database_problem("postgresql:///db?host=/var/run/postgresql", "postgresql") is None


@pytest.mark.parametrize(
    ("uri", "registry", "problem"),
    [
        ("./mlruns", False, None),
        ("file:///tmp/factory-mlruns", False, None),
        ("databricks", False, None),
        ("databricks://my-profile", True, None),
        ("postgresql+psycopg2://u:p@db.example:5432/mlflow", False, None),  # not probed
        ("mssql+pyodbc://u:p@db.example/mlflow", False, None),
        ("databricks-uc", True, None),
        ("databricks-uc", False, "serves only as FACTORY_MLFLOW_REGISTRY_URI"),
        ("bogus://x", False, "unknown scheme 'bogus'; MLflow supports file, sqlite, postgresql"),
        ("mongodb://h/db", True, "unknown scheme 'mongodb'"),
    ],
)
def test_mlflow_uri_schemes(uri: str, registry: bool, problem: str | None) -> None:
    _, found = check_mlflow_uri(uri, registry, probe=False)
    if problem is None:
        assert found is None
    else:
        assert found is not None and problem in found


def test_sqlite_uris(tmp_path: Path) -> None:
    existing = tmp_path / "mlflow.db"
    existing.write_bytes(b"")
    assert sqlite_problem(f"sqlite:///{existing}") is None
    assert sqlite_problem(f"sqlite:///{tmp_path}/new/deeper/mlflow.db") is None
    assert sqlite_problem("sqlite:///relative/mlflow.db") is None
    assert sqlite_problem(f"sqlite:///{tmp_path}") == f"{tmp_path} is a folder, not a database file"
    assert sqlite_problem(f"sqlite:///{existing}/x.db") == (
        f"cannot create {existing}/x.db: {existing} is a file, not a folder"
    )
    assert "in-memory" in str(sqlite_problem("sqlite:///:memory:"))
    assert "expected sqlite:////absolute/path" in str(sqlite_problem("sqlite://"))


def test_passwords_are_masked() -> None:
    assert mask_password("postgresql://me:s3cr#t@db:5432/x") == "postgresql://me:***@db:5432/x"
    assert mask_password("http://127.0.0.1:5000") == "http://127.0.0.1:5000"


def test_storage_protocols(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(
        known_implementations,
        "factorytest",
        {"class": "no_such_module.FileSystem", "err": "Install no-such-package for factorytest"},
    )
    assert storage_problem("/data/sales") is None
    assert storage_problem("memory://sales") is None
    assert storage_problem("simplecache::memory://sales") is None
    assert "unknown storage protocol 'bogus'" in str(storage_problem("bogus://x"))
    assert "unknown storage protocol 'bogus'" in str(storage_problem("simplecache::bogus://x"))
    assert storage_problem("factorytest://x") == (
        "storage protocol 'factorytest' needs a package that is not installed"
        " (Install no-such-package for factorytest)"
    )


@pytest.mark.parametrize(
    ("address", "problem"),
    [
        ("auto", None),
        ("local", None),
        ("10.0.0.5:6379", None),
        ("head-node:6379", None),
        ("[::1]:6379", None),
        ("ray://head-node:10001", None),
        ("head-node", "not a Ray address"),
        ("head-node:99999", "port 99999 is out of range"),
        ("http://head-node:8265", "a dashboard or jobs URL"),
        ("nosuchclientmodule://head", "unknown Ray client protocol 'nosuchclientmodule'"),
        ("ray://", "no host"),
    ],
)
def test_ray_addresses(address: str, problem: str | None) -> None:
    found = ray_address_problem(address)
    if problem is None:
        assert found is None
    else:
        assert found is not None and problem in found


# --- products asked for on the command line ----------------------------------------------------


def test_train_products_not_in_the_data_fail_before_any_run(factory_home: Path) -> None:
    ids = product_ids(6)
    write_panel(generate_panel(PanelSpec(n_products=6, seed=2)).frame, str(factory_home / "data"))
    spec = load_fleet(REPO / "fleet.yaml").spec
    settings = get_settings()

    with pytest.raises(UnknownProducts) as caught:
        check_train_products(settings, spec, ["NOPE", "gone-1"])
    assert str(caught.value) == "unknown product(s): NOPE, gone-1 (not in the sales data)"
    assert check_train_products(settings, spec, [ids[0], "NOPE"]) == (
        "unknown product(s): NOPE (not in the sales data); training the other 1"
    )
    assert check_train_products(settings, spec, ids[:2]) is None


def test_forecast_products_without_a_model_fail_before_any_run(factory_home: Path) -> None:
    with pytest.raises(ForecastError) as caught:
        check_forecast_products(get_settings(), ["NOPE"])
    assert str(caught.value) == "unknown product(s): NOPE (no registered model)"
