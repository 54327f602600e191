"""Fixtures of the fault-injection tests: a real Prefect server and a factory home on it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from factory.local import Service, free_port, start_prefect
from tests.support.faults import FactoryHome, make_home


@pytest.fixture(scope="module")
def prefect(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """One real Prefect server for a module's runs."""
    server = start_prefect(tmp_path_factory.mktemp("prefect"), free_port())
    yield server
    server.stop()


@pytest.fixture
def home(tmp_path: Path, prefect: Service) -> Iterator[FactoryHome]:
    """A factory home on embedded defaults (SQLite registry) reporting to the Prefect server."""
    h = make_home(tmp_path, f"{prefect.url}/api")
    yield h
    h.stop_all()
