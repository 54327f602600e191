"""The training lease: one holder per registry, named to whoever waits, freed when it dies."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from factory.adapters.lease import LeaseTimeout, training_lease
from factory.settings import Settings
from tests.support.postgres import temporary_database

HOLD = textwrap.dedent(
    """
    import sys, time
    from factory.adapters.lease import training_lease
    from factory.settings import Settings
    with training_lease(Settings(), "run holder-1", 5, print):
        print("held", flush=True)
        time.sleep(600)
    """
)


@pytest.fixture(params=["file", "postgresql"])
def settings(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Settings]:
    """Settings whose registry is a SQLite file (file lease) or a PostgreSQL database."""
    if request.param == "file":
        yield Settings(home=tmp_path)
        return
    with temporary_database("factory_lease") as name:
        uri = f"postgresql+psycopg2://root@127.0.0.1:5432/{name}"
        yield Settings(home=tmp_path, mlflow_tracking_uri=uri)


def holder_process(settings: Settings) -> subprocess.Popen[str]:
    """Another process that takes the lease and keeps it."""
    env = {**os.environ, "FACTORY_HOME": str(settings.home)}
    if settings.mlflow_tracking_uri:
        env["FACTORY_MLFLOW_TRACKING_URI"] = settings.mlflow_tracking_uri
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD], env=env, stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    return proc


def test_a_second_run_waits_names_the_holder_and_gets_the_lease_when_it_dies(
    settings: Settings,
) -> None:
    proc = holder_process(settings)
    heard: list[str] = []
    try:
        t0 = time.monotonic()
        with (
            pytest.raises(LeaseTimeout, match="holds the registry: run holder-1"),
            training_lease(settings, "run second", 1.5, heard.append),
        ):
            pytest.fail("the lease was given twice")
        assert time.monotonic() - t0 >= 1.5
        assert len(heard) == 1 and "run holder-1" in heard[0]
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    t0 = time.monotonic()
    with training_lease(settings, "run second", 30, heard.append):
        assert time.monotonic() - t0 < 5  # kill -9 freed it: no stale lease
    with training_lease(settings, "run third", 0, heard.append):  # released on exit
        pass


def test_factory_homes_do_not_share_a_file_lease(tmp_path: Path) -> None:
    a = Settings(home=tmp_path / "a")
    b = Settings(home=tmp_path / "b")
    with training_lease(a, "run a", 0, print), training_lease(b, "run b", 0, print):
        pass
