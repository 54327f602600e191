"""Settings a user gets wrong: each is one SettingsError line naming its FACTORY_* variable."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from factory.adapters.preflight import preflight
from factory.core.errors import UserError
from factory.settings import Settings, SettingsError, get_settings


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    """A clean FACTORY_* environment with FACTORY_HOME in a temp folder; settings re-read."""
    import os

    for var in [v for v in os.environ if v.startswith("FACTORY_")] + ["RAY_ADDRESS"]:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.chdir(tmp_path)  # no stray .env file
    monkeypatch.setenv("FACTORY_HOME", str(tmp_path / "home"))
    get_settings.cache_clear()
    yield monkeypatch
    get_settings.cache_clear()


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def settings_error(**env: str) -> str:
    """The message get_settings() raises for these variables."""
    with pytest.MonkeyPatch.context() as mp:
        for var, value in env.items():
            mp.setenv(var, value)
        get_settings.cache_clear()
        with pytest.raises(SettingsError) as caught:
            get_settings()
    get_settings.cache_clear()
    return str(caught.value)


@pytest.mark.parametrize(
    ("var", "value", "reason"),
    [
        ("FACTORY_AS_OF", "yesterday-ish", "not a date (expected YYYY-MM-DD"),
        ("FACTORY_AS_OF", "2026-02-30", "not a date"),
        ("FACTORY_AS_OF", "20261122", "not a date"),
        ("FACTORY_RAY_NUM_CPUS", "abc", "not an integer"),
        ("FACTORY_RAY_NUM_CPUS", "0", "must be greater than 0"),
        ("FACTORY_REGISTRY_THREADS", "-2", "must be greater than 0"),
        ("FACTORY_LEASE_WAIT_S", "soon", "not a number"),
        ("FACTORY_LEASE_WAIT_S", "-1", "must be at least 0"),
    ],
)
def test_a_bad_value_is_one_line_naming_its_variable(
    env: pytest.MonkeyPatch, var: str, value: str, reason: str
) -> None:
    message = settings_error(**{var: value})
    assert message.startswith(f"{var}={value!r}: "), message
    assert reason in message
    assert len(message.splitlines()) == 1


def test_home_may_not_be_a_file_nor_lie_under_one(env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    file = tmp_path / "notes.txt"
    file.write_text("x")
    assert (
        settings_error(FACTORY_HOME=str(file))
        == f"FACTORY_HOME={str(file)!r}: is a file, not a folder"
    )
    under = file / "home"
    assert settings_error(FACTORY_HOME=str(under)).endswith(
        f"{file} is a file, so no folder can be made under it"
    )


def test_every_bad_variable_gets_its_own_line(env: pytest.MonkeyPatch) -> None:
    message = settings_error(FACTORY_AS_OF="soon", FACTORY_RAY_NUM_CPUS="many")
    lines = sorted(message.splitlines())
    assert lines == [
        "FACTORY_AS_OF='soon': not a date (expected YYYY-MM-DD, e.g. 2026-11-22)",
        "FACTORY_RAY_NUM_CPUS='many': not an integer",
    ]


def test_good_values_parse_and_empty_ones_mean_unset(env: pytest.MonkeyPatch) -> None:
    env.setenv("FACTORY_AS_OF", " 2026-11-22 ")
    env.setenv("FACTORY_RAY_NUM_CPUS", "")
    env.setenv("FACTORY_DATA_URL", "")
    settings = Settings()
    assert settings.as_of == "2026-11-22"
    assert settings.ray_num_cpus is None
    assert settings.data_url is None


def test_settings_error_is_a_user_error(env: pytest.MonkeyPatch) -> None:
    """The CLI shows every UserError as one line without a traceback, exit code 2."""
    assert issubclass(SettingsError, UserError)
    assert "factory validate" in SettingsError.hint


# --- preflight: the locations the settings name ------------------------------------------------


def test_default_settings_in_a_fresh_home_pass(env: pytest.MonkeyPatch) -> None:
    checks = preflight(get_settings())
    assert all(c.problem is None for c in checks)
    assert {c.variable for c in checks} >= {"FACTORY_HOME", "FACTORY_MLFLOW_TRACKING_URI"}


def test_a_real_sqlite_path_passes(env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'not-yet' / 'mlflow.db'}"
    env.setenv("FACTORY_MLFLOW_TRACKING_URI", uri)
    checks = preflight(get_settings())
    tracking = next(c for c in checks if c.variable == "FACTORY_MLFLOW_TRACKING_URI")
    assert (tracking.value, tracking.problem) == (uri, None)
    assert not (tmp_path / "not-yet").exists()  # checking creates nothing


@pytest.mark.parametrize("var", ["FACTORY_MLFLOW_TRACKING_URI", "FACTORY_MLFLOW_REGISTRY_URI"])
def test_a_closed_server_port_fails_within_seconds(env: pytest.MonkeyPatch, var: str) -> None:
    uri = f"http://127.0.0.1:{closed_port()}"
    env.setenv(var, uri)
    started = time.monotonic()
    with pytest.raises(SettingsError) as caught:
        preflight(get_settings())
    assert time.monotonic() - started < 10
    assert str(caught.value) == f"{var}={uri!r}: no MLflow server answers (connection refused)"


@pytest.mark.parametrize(
    ("var", "value", "needle"),
    [
        ("FACTORY_MLFLOW_TRACKING_URI", "bogus://x", "unknown scheme 'bogus'; MLflow supports"),
        ("FACTORY_MLFLOW_TRACKING_URI", "sqlite:////dev/null/mlflow.db", "/dev/null is a file"),
        ("FACTORY_MLFLOW_REGISTRY_URI", "bogus://x", "unknown scheme 'bogus'"),
        ("FACTORY_DATA_URL", "bogus://x/sales", "unknown storage protocol 'bogus'"),
        ("FACTORY_LANDING_URL", "nope://x", "unknown storage protocol 'nope'"),
        ("FACTORY_FORECASTS_URL", "bogus://x", "unknown storage protocol 'bogus'"),
        ("FACTORY_RAY_ADDRESS", "my cluster", "not a Ray address"),
    ],
)
def test_a_bad_location_is_one_line_naming_its_variable(
    env: pytest.MonkeyPatch, var: str, value: str, needle: str
) -> None:
    env.setenv(var, value)
    with pytest.raises(SettingsError) as caught:
        preflight(get_settings(), probe=False)
    message = str(caught.value)
    assert message.startswith(f"{var}={value!r}: "), message
    assert needle in message
    assert len(message.splitlines()) == 1


def test_problems_of_several_variables_are_all_reported(env: pytest.MonkeyPatch) -> None:
    env.setenv("FACTORY_MLFLOW_TRACKING_URI", "bogus://x")
    env.setenv("FACTORY_RAY_ADDRESS", "nope")
    with pytest.raises(SettingsError) as caught:
        preflight(get_settings(), probe=False)
    lines = str(caught.value).splitlines()
    assert [line.split("=", 1)[0] for line in lines] == [
        "FACTORY_MLFLOW_TRACKING_URI",
        "FACTORY_RAY_ADDRESS",
    ]


def test_a_short_password_is_named_and_never_echoed(env: pytest.MonkeyPatch) -> None:
    message = settings_error(FACTORY_PROMOTER_PASSWORD="hunter2-abc")
    assert "FACTORY_PROMOTER_PASSWORD" in message and "at least 12" in message
    assert "hunter2" not in message


def test_passwords_are_secret_in_every_rendering(env: pytest.MonkeyPatch) -> None:
    env.setenv("FACTORY_TRAINER_PASSWORD", "trainer-password-1234")
    settings = get_settings()
    assert settings.least_privilege
    for text in (str(settings), repr(settings), settings.model_dump_json()):
        assert "trainer-password-1234" not in text


def test_auth_without_a_running_server_says_how_to_start_it(env: pytest.MonkeyPatch) -> None:
    env.setenv("FACTORY_MLFLOW_AUTH", "true")
    with pytest.raises(SettingsError) as info:
        _ = get_settings().tracking_uri
    assert "FACTORY_MLFLOW_AUTH" in str(info.value) and "factory up" in str(info.value)


def test_factory_up_with_auth_names_every_missing_password(env: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from factory.cli import app

    env.setenv("FACTORY_MLFLOW_AUTH", "true")
    env.setenv("FACTORY_TRAINER_PASSWORD", "trainer-password-1234")
    result = CliRunner().invoke(app, ["up"])
    assert result.exit_code != 0
    out = result.output
    for var in ("FACTORY_MLFLOW_ADMIN_PASSWORD", "FACTORY_PROMOTER_PASSWORD"):
        assert var in out
    assert "FACTORY_TRAINER_PASSWORD" not in out and "Traceback" not in out
    assert not (Path(os.environ["FACTORY_HOME"]) / "services.json").exists()
