"""Ray session folders: old ones are pruned when a local Ray starts, never one a live Ray uses."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from factory.adapters.fanout import prune_ray_sessions
from tests.support.fleets import REPO
from tests.support.processes import stop_tree

STAMP = "session_2026-01-02_03-04-05_123456"
NO_PID = 99_999_999  # above any pid_max: no such process


def session(temp: Path, pid: int) -> Path:
    """A session folder as Ray names it (the pid is the process that started the head node)."""
    path = temp / f"{STAMP}_{pid}"
    (path / "logs").mkdir(parents=True)
    return path


@pytest.fixture
def sleeper() -> Iterator[list[subprocess.Popen]]:
    """Processes whose command lines name a session folder, as Ray's daemons do."""
    started: list[subprocess.Popen] = []
    yield started
    for proc in started:
        proc.kill()
        proc.wait()


def test_prune_removes_only_sessions_nobody_uses(tmp_path: Path, sleeper) -> None:
    dead = session(tmp_path, NO_PID // 10)
    starting = session(tmp_path, os.getpid())  # its creator runs: daemons not up yet
    served = session(tmp_path, NO_PID)  # creator gone (`ray start` exits), daemons live
    cmd = [sys.executable, "-c", "import time; time.sleep(60)", f"--log_dir={served}/logs"]
    sleeper.append(subprocess.Popen(cmd))
    (tmp_path / "session_latest").symlink_to(served)
    (tmp_path / "session_notes").mkdir()  # not Ray's

    # `served`'s name extends `dead`'s by one digit: being named must not rub off on `dead`
    assert str(served).startswith(str(dead))
    assert prune_ray_sessions(tmp_path) == [dead]
    assert not dead.exists()
    for kept in (starting, served, tmp_path / "session_latest", tmp_path / "session_notes"):
        assert kept.exists()


def test_prune_of_an_empty_or_missing_folder_removes_nothing(tmp_path: Path) -> None:
    assert prune_ray_sessions(tmp_path) == []
    assert prune_ray_sessions(tmp_path / "missing") == []


LIVE_RAY = """
import logging, sys, ray
ray.init(num_cpus=1, include_dashboard=False, logging_level=logging.WARNING, _temp_dir=sys.argv[1])
print(ray._private.worker._global_node.get_session_dir_path(), flush=True)
sys.stdin.readline()
print(ray.get(ray.put(41)) + 1, flush=True)
"""

FACTORY_RAY = """
from factory.adapters.fanout import ensure_ray
from factory.settings import Settings
import ray

info = ensure_ray(Settings(ray_num_cpus=1))
print(ray._private.worker._global_node.get_session_dir_path(), info["CPU"], flush=True)
"""


def test_a_factory_ray_start_prunes_dead_sessions_beside_a_live_ray() -> None:
    # Ray's socket paths must stay short (108 bytes): not under pytest's tmp_path
    tmp = Path(tempfile.mkdtemp(prefix="fr-", dir="/tmp"))
    temp = tmp / f"factory-ray-{os.getuid()}"
    live = subprocess.Popen(
        [sys.executable, "-c", LIVE_RAY, str(temp)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        assert live.stdout is not None and live.stdin is not None
        live_session = Path(live.stdout.readline().strip())
        assert live_session.parent == temp
        stale = session(temp, NO_PID)

        env = {**os.environ, "TMPDIR": str(tmp)}
        env.pop("RAY_ADDRESS", None)
        env.pop("FACTORY_RAY_ADDRESS", None)
        done = subprocess.run(
            [sys.executable, "-c", FACTORY_RAY], env=env, cwd=REPO, capture_output=True, text=True
        )
        assert done.returncode == 0, done.stderr[-3000:]
        own, cpus = done.stdout.split()
        assert Path(own).parent == temp and own != str(live_session) and cpus == "1.0"

        assert not stale.exists()
        assert live_session.exists()
        live.stdin.write("\n")
        live.stdin.flush()
        assert live.stdout.readline().strip() == "42"  # the other Ray still works
        # Ray shut the factory's node down at exit: no process names its session any more
        deadline = time.monotonic() + 30
        while _named(own) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert not _named(own)
    finally:
        stop_tree(live.pid)
        shutil.rmtree(tmp, ignore_errors=True)


def _named(folder: str) -> list[int]:
    """Processes whose command line names `folder`."""
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        if folder in " ".join(proc.info["cmdline"] or ()):
            found.append(proc.pid)
    return found
