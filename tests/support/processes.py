"""Process trees the tests and benchmarks stop: workers, flow-run processes, Ray daemons."""

from __future__ import annotations

import contextlib

import psutil

from factory.local import stop_pid


def descendants(pid: int) -> list[int]:
    """Every process below `pid` (flow-run processes, Ray workers), wherever their session."""
    try:
        return [p.pid for p in psutil.Process(pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def stop_tree(pid: int, timeout: float = 20) -> None:
    """Stop a process group and anything it started in other sessions (flow runs, Ray)."""
    below = descendants(pid)
    stop_pid(pid, timeout)
    for child in below:
        with contextlib.suppress(psutil.NoSuchProcess):
            psutil.Process(child).kill()
