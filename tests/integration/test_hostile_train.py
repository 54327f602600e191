"""Hostile product ids and bad values end to end: `factory train` then `factory forecast` in their
own processes on embedded defaults. Every hostile id gets its own model and forecast, exactly the
bad products are quarantined, and nothing lands outside FACTORY_HOME."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient

from factory.adapters.registry.names import PRODUCTION, model_name
from factory.adapters.state import read_state
from factory.settings import Settings
from tests.support.hostile import (
    AS_OF,
    BLANK_IDS,
    FLEET,
    GOOD,
    collisions,
    hostile_ids,
    panel,
    series,
    with_value,
)

pytestmark = pytest.mark.integration
BAD_VALUES = {"inf": "non-finite y", "spike": "y too large", "text": "non-numeric y"}


@dataclass
class Ran:
    """What the two commands left behind."""

    root: Path
    settings: Settings
    train: subprocess.CompletedProcess[str]
    forecast: subprocess.CompletedProcess[str]
    before: set[str]
    sessions: set[str]


def ray_sessions() -> set[str]:
    """Local Ray session folders (the temp folder here is too long for Ray's sockets: /tmp)."""
    return {str(p) for p in Path(f"/tmp/factory-ray-{os.getuid()}").glob("session_2*")}


def files(root: Path) -> set[str]:
    """Every file under root, outside FACTORY_HOME."""
    home = root / "home"
    return {str(p) for p in root.rglob("*") if p.is_file() and home not in p.parents}


@pytest.fixture(scope="module")
def ran(tmp_path_factory: pytest.TempPathFactory) -> Ran:
    root = tmp_path_factory.mktemp("hostile")
    data = root / "home" / "data"
    data.mkdir(parents=True)
    ids = list(hostile_ids().values())
    frames = [series(pid, seed=i) for i, pid in enumerate(ids)]
    blanks = [series(pid) for pid in BLANK_IDS.values()]
    inf = with_value("inf", "y", np.inf, slice(50, 51))
    spike = with_value("spike", "y", 1e300, slice(60, 61))
    pairs = [series(pid) for pair in collisions().values() for pid in pair]
    panel(*frames, *blanks, *pairs, inf, spike).to_parquet(data / "a.parquet", index=False)
    with_value("text", "y", "twelve", slice(7, 8)).to_csv(data / "b.csv", index=False)
    (root / "fleet.yaml").write_text(FLEET)
    (root / "tmp").mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FACTORY_", "PREFECT_"))}
    env |= {"FACTORY_HOME": str(root / "home"), "FACTORY_AS_OF": AS_OF, "TMPDIR": str(root / "tmp")}
    before = files(root)
    sessions = ray_sessions()

    def factory(*args: str) -> subprocess.CompletedProcess[str]:
        cmd = [sys.executable, "-m", "factory.cli", *args]
        return subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=900)

    train = factory("train", "--fleet", "fleet.yaml")
    forecast = factory("forecast")
    return Ran(root, Settings(home=root / "home"), train, forecast, before, sessions)


def test_train_and_forecast_succeed_without_a_traceback(ran: Ran) -> None:
    for done in (ran.train, ran.forecast):
        assert done.returncode == 0, done.stdout + done.stderr
        assert "Traceback" not in done.stdout + done.stderr


def test_exactly_the_bad_products_are_quarantined(ran: Ran) -> None:
    state = read_state(ran.settings.state_dir).set_index("product_id")
    quarantined = state[state["status"] == "quarantined"]
    expected = {**dict.fromkeys(BLANK_IDS.values(), "blank unique_id"), **BAD_VALUES}
    expected |= {pid: "registry name collides" for pair in collisions().values() for pid in pair}
    assert set(quarantined.index) == set(expected)
    for pid, words in expected.items():
        assert words in quarantined.at[pid, "reason"], quarantined.at[pid, "reason"]


@pytest.mark.parametrize("name", [*hostile_ids(), *GOOD])
def test_each_hostile_id_gets_its_own_model_and_forecast(ran: Ran, name: str) -> None:
    pid = hostile_ids().get(name, name)
    state = read_state(ran.settings.state_dir).set_index("product_id")
    assert state.at[pid, "status"] in ("registered", "rejected"), state.at[pid, "reason"]
    client = MlflowClient(ran.settings.tracking_uri)
    if state.at[pid, "status"] == "registered":
        name_ = model_name(ran.settings.model_prefix, PRODUCTION, pid)
        model = client.get_registered_model(name_)
        assert model.tags["factory.product_id"] == pid
        forecasts = pd.read_parquet(ran.settings.resolved_forecasts_url + "/forecasts.parquet")
        rows = forecasts[forecasts["unique_id"] == pid]
        assert len(rows) == 7 and (rows["model_name"] == name_).all()


def test_nothing_written_outside_factory_home(ran: Ran) -> None:
    assert files(ran.root) == ran.before
    assert not any((ran.root / "tmp").iterdir()), list((ran.root / "tmp").iterdir())
    assert ray_sessions() <= ran.sessions, "a Ray session folder was left behind"
