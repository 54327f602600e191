"""Prefect's home on embedded defaults: under FACTORY_HOME, unless the user configured Prefect."""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from factory.adapters.prefect_env import (
    HEARTBEAT_SECONDS,
    TELEMETRY_OFF,
    UserErrorFilter,
    prefect_defaults,
    telemetry_defaults,
)
from factory.core.contract import DataError
from tests.support.fleets import REPO

HOME = Path("/srv/factory-home")


@pytest.fixture
def user_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A user home of our own (Prefect's profiles default to ~/.prefect/profiles.toml)."""
    home = tmp_path / "user"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    return home


def write_profiles(user_home: Path, text: str) -> Path:
    path = user_home / ".prefect" / "profiles.toml"
    path.parent.mkdir()
    path.write_text(text)
    return path


def test_embedded_defaults_keep_prefect_home_under_factory_home(user_home: Path) -> None:
    assert prefect_defaults(HOME, {}) == {
        "PREFECT_HOME": str(HOME / "prefect"),
        "PREFECT_FLOWS_HEARTBEAT_FREQUENCY": str(HEARTBEAT_SECONDS),
    }


@pytest.mark.parametrize(
    "environ",
    [
        {"PREFECT_API_URL": "http://prefect.internal:4200/api"},
        {"PREFECT_HOME": "/opt/prefect"},
    ],
)
def test_a_prefect_server_or_home_in_the_environment_is_left_alone(
    user_home: Path, environ: dict[str, str]
) -> None:
    assert "PREFECT_HOME" not in prefect_defaults(HOME, environ)


def test_a_profile_naming_a_server_is_left_alone(user_home: Path) -> None:
    write_profiles(
        user_home,
        'active = "team"\n[profiles.team]\nPREFECT_API_URL = "http://prefect.internal:4200/api"\n'
        '[profiles.local]\nPREFECT_LOGGING_LEVEL = "DEBUG"\n',
    )
    assert "PREFECT_HOME" not in prefect_defaults(HOME, {})
    # PREFECT_PROFILE picks another profile, which names no server
    local = prefect_defaults(HOME, {"PREFECT_PROFILE": "local"})
    assert local["PREFECT_HOME"] == str(HOME / "prefect")


def test_the_users_profiles_stay_in_use_when_the_home_moves(user_home: Path) -> None:
    path = write_profiles(
        user_home, 'active = "dev"\n[profiles.dev]\nPREFECT_LOGGING_LEVEL = "DEBUG"\n'
    )
    updates = prefect_defaults(HOME, {})
    assert updates["PREFECT_HOME"] == str(HOME / "prefect")
    assert updates["PREFECT_PROFILES_PATH"] == str(path)


@pytest.mark.parametrize(
    "source", ["PREFECT_FLOWS_HEARTBEAT_FREQUENCY", "PREFECT_RUNNER_HEARTBEAT_FREQUENCY", "profile"]
)
def test_a_chosen_heartbeat_frequency_is_kept(user_home: Path, source: str) -> None:
    environ = {} if source == "profile" else {source: "120"}
    if source == "profile":
        write_profiles(
            user_home, 'active = "dev"\n[profiles.dev]\nPREFECT_FLOWS_HEARTBEAT_FREQUENCY = 120\n'
        )
    assert "PREFECT_FLOWS_HEARTBEAT_FREQUENCY" not in prefect_defaults(HOME, environ)


def test_telemetry_is_off_unless_the_user_chose(user_home: Path) -> None:
    assert telemetry_defaults({}) == TELEMETRY_OFF
    assert set(TELEMETRY_OFF) == {
        "PREFECT_SERVER_ANALYTICS_ENABLED",
        "DO_NOT_TRACK",
        "MLFLOW_DISABLE_TELEMETRY",
    }
    assert "DO_NOT_TRACK" not in telemetry_defaults({"DO_NOT_TRACK": "0"})
    write_profiles(
        user_home, 'active = "dev"\n[profiles.dev]\nPREFECT_SERVER_ANALYTICS_ENABLED = true\n'
    )
    assert "PREFECT_SERVER_ANALYTICS_ENABLED" not in telemetry_defaults({})


def record(exc: BaseException) -> logging.LogRecord:
    """The record Prefect's engine logs for a failed run: a message and the exception."""
    try:
        raise exc
    except BaseException:
        return logging.LogRecord(
            "prefect.flow_runs",
            logging.ERROR,
            __file__,
            1,
            "Encountered exception: %r",
            (exc,),
            sys.exc_info(),
        )


def test_a_user_error_is_logged_as_its_message_without_traceback() -> None:
    rec = record(DataError("sales.parquet: missing column(s) y"))

    assert UserErrorFilter().filter(rec)
    assert logging.Formatter().format(rec) == "sales.parquet: missing column(s) y"


def test_any_other_exception_keeps_its_traceback() -> None:
    rec = record(KeyError("family"))

    assert UserErrorFilter().filter(rec)
    text = logging.Formatter().format(rec)
    assert text.startswith("Encountered exception: KeyError('family')\nTraceback")


def test_factory_cli_on_embedded_defaults_puts_prefects_database_under_factory_home(
    tmp_path: Path,
) -> None:
    """A real `factory watch` (one flow run on Prefect's ephemeral server) with its own HOME."""
    home, factory_home = tmp_path / "user", tmp_path / "factory"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "FACTORY_"))}
    env |= {"HOME": str(home), "FACTORY_HOME": str(factory_home)}
    done = subprocess.run(
        [sys.executable, "-m", "factory.cli", "watch", "--fleet", str(REPO / "fleet.yaml")],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "1 scan(s)" in done.stdout
    db = factory_home / "prefect" / "prefect.db"
    with contextlib.closing(sqlite3.connect(db)) as con:
        flows = {name for (name,) in con.execute("SELECT name FROM flow")}
    assert "watch-landing" in flows  # the run was recorded there
    assert not (home / ".prefect").exists()
