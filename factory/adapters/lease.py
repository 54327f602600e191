"""One training run per registry at a time: a lease that its holder's death releases.

Two train or retrain runs that overlap would read the same champions and register the same
products twice. Every run holds this lease from reading the data to its last registration,
so the second run waits (or gives up with one line naming the holder). On a PostgreSQL
registry the lease is a session advisory lock, shared by every machine that uses it; else it
is an flock on a file under FACTORY_HOME. Either way the operating system or the database
frees it when the holding process dies: no stale lease outlives a killed run.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import sqlalchemy
from filelock import FileLock, Timeout

from factory.core.errors import UserError
from factory.settings import Settings

LOCK_FILE = "train.lock"
POLL_S = 1.0


class LeaseTimeout(UserError, RuntimeError):
    """Another run held the training lease for longer than this run would wait."""

    hint = "wait for that run, or cancel it in the Prefect UI"


def holder_label(run: str) -> str:
    """Who holds a lease: the run, its process and host, and since when."""
    since = datetime.now(UTC).strftime("%H:%M:%SZ")
    return f"{run} (pid {os.getpid()} on {socket.gethostname()}, since {since})"


@contextmanager
def training_lease(
    settings: Settings, holder: str, wait_s: float, on_wait: Callable[[str], None]
) -> Iterator[None]:
    """Hold the training lease of this registry; wait up to `wait_s` for it (`on_wait` hears
    once who holds it), else raise LeaseTimeout naming the holder."""
    uri = settings.mlflow_registry_uri or settings.tracking_uri
    lease = _pg_lease if uri.startswith("postgresql") else _file_lease
    with lease(settings, holder, wait_s, on_wait):
        yield


@contextmanager
def _file_lease(
    settings: Settings, holder: str, wait_s: float, on_wait: Callable[[str], None]
) -> Iterator[None]:
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    path = settings.state_dir / LOCK_FILE
    lock = FileLock(path, thread_local=False)
    _acquire(lambda: _try(lock), lambda: _file_holder(path), wait_s, on_wait)
    try:
        _holder_path(path).write_text(json.dumps({"holder": holder}))
        yield
    finally:
        lock.release()


def _try(lock: FileLock) -> bool:
    try:
        lock.acquire(timeout=0)
    except Timeout:
        return False
    return True


def _holder_path(path: Path) -> Path:
    return path.with_name(path.name + ".holder")


def _file_holder(path: Path) -> str:
    try:
        return str(json.loads(_holder_path(path).read_text())["holder"])
    except (OSError, ValueError, KeyError):
        return "an unknown run"


@contextmanager
def _pg_lease(
    settings: Settings, holder: str, wait_s: float, on_wait: Callable[[str], None]
) -> Iterator[None]:
    uri = settings.mlflow_registry_uri or settings.tracking_uri
    engine = sqlalchemy.create_engine(uri, poolclass=sqlalchemy.pool.NullPool)
    key = lock_key(settings.model_prefix)
    try:
        with engine.connect() as conn:
            conn.execute(
                sqlalchemy.text("SELECT set_config('application_name', :h, false)"),
                {"h": holder[:63]},
            )
            conn.commit()
            _acquire(
                lambda: bool(
                    conn.scalar(sqlalchemy.text("SELECT pg_try_advisory_lock(:k)"), {"k": key})
                ),
                lambda: _pg_holder(conn, key),
                wait_s,
                on_wait,
            )
            try:
                yield
            finally:
                _sql(conn, "SELECT pg_advisory_unlock(:k)", k=key)
    finally:
        engine.dispose()


def _sql(conn: sqlalchemy.Connection, query: str, **params: object) -> object:
    """One statement's scalar result, committed (a session advisory lock outlives it)."""
    value = conn.scalar(sqlalchemy.text(query), params)
    conn.commit()
    return value


def lock_key(prefix: str) -> int:
    """The advisory-lock key of a registry's models (a signed 64-bit number)."""
    digest = hashlib.sha256(f"factory-train:{prefix}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def _pg_holder(conn: sqlalchemy.Connection, key: int) -> str:
    unsigned = key & 0xFFFFFFFFFFFFFFFF
    found = _sql(
        conn,
        "SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid"
        " WHERE l.locktype = 'advisory' AND l.granted AND l.classid = :hi AND l.objid = :lo"
        " AND l.objsubid = 1",
        hi=unsigned >> 32,
        lo=unsigned & 0xFFFFFFFF,
    )
    return str(found) if found else "an unknown run"


def _acquire(
    attempt: Callable[[], bool],
    holder: Callable[[], str],
    wait_s: float,
    on_wait: Callable[[str], None],
) -> None:
    deadline = time.monotonic() + wait_s
    told = False
    while not attempt():
        who = holder()
        if time.monotonic() >= deadline:
            raise LeaseTimeout(
                f"another training run holds the registry: {who}; gave up after {wait_s:.0f} s"
                " (FACTORY_LEASE_WAIT_S)"
            )
        if not told:
            on_wait(f"another training run holds the registry: {who}; waiting up to {wait_s:.0f} s")
            told = True
        time.sleep(POLL_S)
