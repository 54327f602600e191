"""Integration: a flow run whose process was killed is marked Crashed by the zombie automation
that `factory up` creates, on the real Prefect server `factory up` starts (free loopback ports)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import TypeVar
from uuid import UUID

import httpx
import pytest
from prefect.client.schemas.objects import StateType

from factory.adapters.prefect_env import HEARTBEAT_SECONDS
from factory.adapters.zombies import ZOMBIE_AUTOMATION, ensure_zombie_automation, zombie_window
from factory.local import free_port, load_services
from tests.support.fleets import REPO
from tests.support.prefect_api import PrefectApi

pytestmark = pytest.mark.integration
T = TypeVar("T")

PROBE = """
import sys, time
from pathlib import Path
from prefect import flow
from prefect.runtime import flow_run

@flow(name="zombie-probe")
def probe() -> None:
    Path(sys.argv[1]).write_text(flow_run.id)
    time.sleep(600)

probe()
"""


def clean_env(**extra: str) -> dict[str, str]:
    """This environment without Prefect or factory settings, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "FACTORY_"))}
    return env | extra


def factory_up(home: Path) -> subprocess.CompletedProcess:
    ports = ["--prefect-port", str(free_port()), "--mlflow-port", str(free_port())]
    return subprocess.run(
        [sys.executable, "-m", "factory.cli", "up", *ports],
        env=clean_env(FACTORY_HOME=str(home)),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )


def wait_for(what: str, check: Callable[[], T | None], timeout: float) -> T:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if found := check():
            return found
        time.sleep(1)
    raise AssertionError(f"no {what} within {timeout:.0f}s")


@pytest.fixture(scope="module")
def up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, str]]:
    """`factory up` in a fresh FACTORY_HOME: the factory home and the Prefect API URL."""
    home = tmp_path_factory.mktemp("zombies") / "factory"
    done = factory_up(home)
    try:
        assert done.returncode == 0, done.stderr[-3000:]
        prefect = next(s for s in load_services(home) if s.name == "prefect")
        yield home, f"{prefect.url}/api"
    finally:
        for service in load_services(home):
            service.stop()


def automation_json(api: str) -> list[dict]:
    """The stored zombie automations, as the server returns them (with `updated`)."""
    body = {"automations": {"name": {"any_": [ZOMBIE_AUTOMATION]}}}
    return httpx.post(f"{api}/automations/filter", json=body, timeout=30).json()


def test_factory_up_creates_the_zombie_automation_once(up: tuple[Path, str]) -> None:
    home, api = up
    (first,) = automation_json(api)
    assert first["enabled"] and first["trigger"]["posture"] == "Proactive"
    assert first["trigger"]["within"] == zombie_window(HEARTBEAT_SECONDS).total_seconds()

    again = factory_up(home)  # servers already up: nothing started, automation kept as is
    assert again.returncode == 0, again.stderr[-3000:]
    assert "zombies" in again.stdout
    assert automation_json(api) == [first]


def test_a_killed_run_becomes_crashed_and_a_live_one_keeps_running(
    up: tuple[Path, str], tmp_path: Path
) -> None:
    _home, api = up
    # The automation `factory up` made, with a short window (heartbeats are >= 30 s apart)
    ensure_zombie_automation(api, within=timedelta(seconds=45))
    env = clean_env(
        PREFECT_API_URL=api,
        PREFECT_HOME=str(tmp_path / "prefect"),
        PREFECT_FLOWS_HEARTBEAT_FREQUENCY=str(HEARTBEAT_SECONDS),
    )
    probes, ids = [], []
    try:
        for name in ("killed", "alive"):
            id_file = tmp_path / name
            cmd = [sys.executable, "-c", PROBE, str(id_file)]
            probes.append(subprocess.Popen(cmd, env=env, start_new_session=True))
            ids.append(UUID(wait_for(f"{name} run id", lambda f=id_file: _read(f), 90)))
        with PrefectApi(api) as prefect:

            def last_beat_of(run: UUID) -> float | None:
                beats = prefect.events("prefect.flow-run.heartbeat")
                times = [e.occurred for e in beats if e.resource.id == f"prefect.flow-run.{run}"]
                return max(times).timestamp() if times else None

            wait_for("heartbeat of the run to kill", lambda: last_beat_of(ids[0]), 60)
            wait_for("heartbeat of the live run", lambda: last_beat_of(ids[1]), 60)
            probes[0].send_signal(signal.SIGKILL)  # no final state, no goodbye: a zombie
            probes[0].wait()

            def crashed() -> object | None:
                run = prefect.client.read_flow_run(ids[0])
                return run if run.state_type == StateType.CRASHED else None

            run = wait_for("Crashed state for the killed run", crashed, 45 + 45)
            assert run.state is not None and "heartbeat" in (run.state.message or "")
            last_beat = last_beat_of(ids[0])
            assert last_beat is not None
            assert run.state.timestamp.timestamp() - last_beat >= 45  # not before the window
            alive = prefect.client.read_flow_run(ids[1])
            assert alive.state_type == StateType.RUNNING  # it beat again within the window
            assert probes[1].poll() is None
    finally:
        for proc in probes:
            proc.kill()
            proc.wait()


def _read(path: Path) -> str | None:
    return path.read_text() if path.exists() and path.stat().st_size else None
