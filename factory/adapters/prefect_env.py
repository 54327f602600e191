"""Prefect's environment for the runs the factory starts, set before Prefect reads its settings.

On embedded defaults (no Prefect server configured) Prefect starts an ephemeral server with its
SQLite database in PREFECT_HOME, `~/.prefect` unless set: one database shared by every
FACTORY_HOME on the machine. The factory keeps it in `<FACTORY_HOME>/prefect` instead, the
folder `factory up` gives its server. Flow runs beat every HEARTBEAT_SECONDS, so the zombie
automation (factory/adapters/zombies.py) can tell a dead run from a quiet one. Telemetry is
off (TELEMETRY_OFF) unless the user chose otherwise.

A user mistake (factory.core.errors.UserError) reaches Prefect's run logs as its one-line
message: UserErrorFilter drops the traceback Prefect's engine attaches, and
`retry_unless_user_error` keeps tasks from retrying it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from filelock import FileLock

from factory.core.errors import UserError

if TYPE_CHECKING:
    from prefect import Task
    from prefect.client.schemas.objects import TaskRun
    from prefect.states import State

# Prefect's minimum (prefect/flow_engine.py MINIMUM_HEARTBEAT_INTERVAL); its default is 180.
HEARTBEAT_SECONDS = 30
DATABASE = "prefect.db"  # Prefect's default SQLite file in PREFECT_HOME
HEARTBEAT_VARS = ("PREFECT_FLOWS_HEARTBEAT_FREQUENCY", "PREFECT_RUNNER_HEARTBEAT_FREQUENCY")
# Usage reports the libraries send home: most training machines have no way out, and Prefect's
# server then logs "ERROR Failed to send telemetry" on every run.
TELEMETRY_OFF = {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",  # the Prefect server's telemetry service
    "DO_NOT_TRACK": "true",  # Prefect's client analytics; MLflow reads it too (only "true")
    "MLFLOW_DISABLE_TELEMETRY": "true",  # MLflow 3's client and server telemetry
}
# Where Prefect's engine logs a run's exception with its traceback (flow_engine.py, task_engine.py
# and engine.py); the first two also send their records to the run's logs in the API.
RUN_LOGGERS = ("prefect.flow_runs", "prefect.task_runs", "prefect.engine")


def configure_prefect(home: Path, create: bool = False) -> dict[str, str]:
    """Install UserErrorFilter, and apply `prefect_defaults` and `telemetry_defaults` to this
    process's environment (inherited by its subprocesses); nothing once Prefect is imported,
    since it read its settings then. With `create`, the embedded database is made now (once).
    Returns what was set."""
    install_user_error_filter()
    if "prefect" in sys.modules:
        return {}
    updates = prefect_defaults(home, os.environ) | telemetry_defaults(os.environ)
    if "PREFECT_HOME" in updates:
        # Prefect creates its home without parents: a fresh FACTORY_HOME would make it fail.
        Path(updates["PREFECT_HOME"]).mkdir(parents=True, exist_ok=True)
    os.environ.update(updates)
    if create and "PREFECT_HOME" in updates:
        create_database(Path(updates["PREFECT_HOME"]))
    return updates


def create_database(prefect_home: Path) -> None:
    """Create the embedded database once, under a file lock: two commands started at the same
    moment on a fresh FACTORY_HOME would otherwise both migrate one new SQLite file from their
    ephemeral servers, and both time out waiting for them."""
    with FileLock(prefect_home / "database.lock", thread_local=False):
        if (prefect_home / DATABASE).exists():
            return
        from prefect.server.database import provide_database_interface

        asyncio.run(provide_database_interface().create_db())


def prefect_defaults(home: Path, environ: Mapping[str, str]) -> dict[str, str]:
    """The Prefect variables to set, leaving alone whatever the user chose in the environment
    or in the active Prefect profile: Prefect's home under `home` unless PREFECT_HOME or
    PREFECT_API_URL is set, and heartbeats every HEARTBEAT_SECONDS unless a frequency is set."""
    profiles = profiles_path(environ)
    chosen = chosen_settings(environ)
    updates: dict[str, str] = {}
    if not chosen & {"PREFECT_HOME", "PREFECT_API_URL"}:
        updates["PREFECT_HOME"] = str(home / "prefect")
        if profiles.is_file() and not environ.get("PREFECT_PROFILES_PATH"):
            # Prefect looks for profiles in its home: keep reading the user's own.
            updates["PREFECT_PROFILES_PATH"] = str(profiles)
    if not chosen & set(HEARTBEAT_VARS):
        updates["PREFECT_FLOWS_HEARTBEAT_FREQUENCY"] = str(HEARTBEAT_SECONDS)
    return updates


def telemetry_defaults(environ: Mapping[str, str]) -> dict[str, str]:
    """TELEMETRY_OFF, less what the environment or the active Prefect profile already sets."""
    chosen = chosen_settings(environ)
    return {k: v for k, v in TELEMETRY_OFF.items() if k not in chosen}


def chosen_settings(environ: Mapping[str, str]) -> set[str]:
    """Variables the user set: non-empty in the environment, or in the active Prefect profile."""
    profile = active_profile(profiles_path(environ), environ)
    return {k for k, v in environ.items() if v} | profile.keys()


def profiles_path(environ: Mapping[str, str]) -> Path:
    """Where Prefect reads profiles from: PREFECT_PROFILES_PATH, else `<PREFECT_HOME or
    ~/.prefect>/profiles.toml` (prefect/settings/sources.py `_get_profiles_path`)."""
    if path := environ.get("PREFECT_PROFILES_PATH"):
        return Path(path).expanduser()
    home = environ.get("PREFECT_HOME") or str(Path.home() / ".prefect")
    return Path(home).expanduser() / "profiles.toml"


def active_profile(path: Path, environ: Mapping[str, str]) -> dict[str, Any]:
    """The settings of the active profile (PREFECT_PROFILE, else the file's `active`)."""
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError):
        return {}
    name = environ.get("PREFECT_PROFILE") or data.get("active")
    profile = data.get("profiles", {}).get(name, {})
    return profile if isinstance(profile, dict) else {}


class UserErrorFilter(logging.Filter):
    """Log a record about a user mistake as the mistake's message, without a traceback; records
    about any other exception pass unchanged. On a logger (not a handler), it rewrites the
    record before every handler sees it: the console and Prefect's APILogHandler alike."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, UserError):
            record.msg, record.args = str(exc), ()
            record.exc_info, record.exc_text = None, None
        return True


def install_user_error_filter() -> None:
    """Add UserErrorFilter to Prefect's RUN_LOGGERS, once per process. Prefect's logging setup
    (logging.config.dictConfig) replaces their handlers but keeps their filters."""
    for name in RUN_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, UserErrorFilter) for f in logger.filters):
            logger.addFilter(UserErrorFilter())


def retry_unless_user_error(task: Task, task_run: TaskRun, state: State) -> bool:
    """A task's `retry_condition_fn`: retry what may pass on another try, never a user mistake."""
    return not isinstance(state.result(raise_on_failure=False), UserError)
