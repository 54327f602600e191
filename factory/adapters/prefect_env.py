"""Prefect's environment for the runs the factory starts, set before Prefect reads its settings.

On embedded defaults (no Prefect server configured) Prefect starts an ephemeral server with its
SQLite database in PREFECT_HOME, `~/.prefect` unless set: one database shared by every
FACTORY_HOME on the machine. The factory keeps it in `<FACTORY_HOME>/prefect` instead, the
folder `factory up` gives its server. Flow runs beat every HEARTBEAT_SECONDS, so the zombie
automation (factory/adapters/zombies.py) can tell a dead run from a quiet one.
"""

from __future__ import annotations

import asyncio
import os
import sys
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from filelock import FileLock

# Prefect's minimum (prefect/flow_engine.py MINIMUM_HEARTBEAT_INTERVAL); its default is 180.
HEARTBEAT_SECONDS = 30
DATABASE = "prefect.db"  # Prefect's default SQLite file in PREFECT_HOME
HEARTBEAT_VARS = ("PREFECT_FLOWS_HEARTBEAT_FREQUENCY", "PREFECT_RUNNER_HEARTBEAT_FREQUENCY")


def configure_prefect(home: Path, create: bool = False) -> dict[str, str]:
    """Apply `prefect_defaults` to this process's environment (inherited by its subprocesses);
    nothing once Prefect is imported, since it read its settings then. With `create`, the
    embedded database is made now (once). Returns what was set."""
    if "prefect" in sys.modules:
        return {}
    updates = prefect_defaults(home, os.environ)
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
    chosen = {k for k, v in environ.items() if v} | active_profile(profiles, environ).keys()
    updates: dict[str, str] = {}
    if not chosen & {"PREFECT_HOME", "PREFECT_API_URL"}:
        updates["PREFECT_HOME"] = str(home / "prefect")
        if profiles.is_file() and not environ.get("PREFECT_PROFILES_PATH"):
            # Prefect looks for profiles in its home: keep reading the user's own.
            updates["PREFECT_PROFILES_PATH"] = str(profiles)
    if not chosen & set(HEARTBEAT_VARS):
        updates["PREFECT_FLOWS_HEARTBEAT_FREQUENCY"] = str(HEARTBEAT_SECONDS)
    return updates


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
