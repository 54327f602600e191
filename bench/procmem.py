"""Peak memory and CPU of whole process trees, sampled from /proc in a background thread.

This kernel has no /proc/<pid>/task/*/children, so each sample maps every live process to
its parent from /proc/<pid>/stat and walks down from the roots. RSS and PSS come from
/proc/<pid>/smaps_rollup: RSS sums count shared pages (libraries, Ray's object store, forked
copy-on-write pages) once per process, so they over-state; PSS shares them out.

CPU is each process's own user + system time at its last sample, summed over every process
seen (minus what those alive at the first sample had already used). It misses the last
< interval of each process's life; it does catch processes whose CPU never reaches a parent's
rusage (Ray's raylet lets the kernel reap its workers).
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

PROC = Path("/proc")
KIB = 1024
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class ProcStat:
    """The few /proc/<pid>/stat fields the sampler needs."""

    ppid: int
    start: int  # start time in clock ticks: (pid, start) names a process even if pids recycle
    cpu_s: float  # own user + system time


@dataclass
class TreePeak:
    """The largest summed memory seen across samples of some trees, and the CPU they used."""

    rss_bytes: int = 0
    pss_bytes: int = 0
    processes: int = 0
    samples: int = 0
    exceeded_limit: bool = False
    root_rss_bytes: dict[str, int] = field(default_factory=dict)
    root_cpu_s: dict[str, float] = field(default_factory=dict)


def scan_processes() -> dict[int, ProcStat]:
    """Every live process's parent, start time and CPU, from /proc/<pid>/stat."""
    out = {}
    for entry in PROC.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:  # exited while we looked
            continue
        f = stat.rsplit(")", 1)[1].split()  # the command name may hold ") "; f[0] is field 3
        cpu = (int(f[11]) + int(f[12])) / CLOCK_TICKS  # utime, stime
        out[int(entry.name)] = ProcStat(int(f[1]), int(f[19]), cpu)
    return out


def children_map(procs: dict[int, ProcStat]) -> dict[int, list[int]]:
    """Each process's children."""
    children: dict[int, list[int]] = {}
    for pid, stat in procs.items():
        children.setdefault(stat.ppid, []).append(pid)
    return children


def process_tree(root: int, children: dict[int, list[int]]) -> list[int]:
    """The root and all of its descendants."""
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, ()))
    return out


def memory_bytes(pid: int) -> tuple[int, int]:
    """(RSS, PSS) of one process in bytes; zeros once it has exited."""
    try:
        text = (PROC / str(pid) / "smaps_rollup").read_text()
    except OSError:
        return 0, 0
    values = {}
    for line in text.splitlines()[1:]:
        key, _, rest = line.partition(":")
        if key in ("Rss", "Pss"):
            values[key] = int(rest.split()[0]) * KIB
    return values.get("Rss", 0), values.get("Pss", 0)


def kill_tree(root: int) -> None:
    """SIGKILL a process and all of its descendants, children first."""
    for pid in reversed(process_tree(root, children_map(scan_processes()))):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


class TreeSampler:
    """Samples the memory and CPU of named process trees every `interval` seconds.

    Use as a context manager; the yielded TreePeak is final once the block exits. When the
    summed RSS passes `limit_bytes`, `on_limit` is called once (e.g. to kill a runaway tree).
    """

    def __init__(
        self,
        roots: dict[str, int],
        interval: float = 0.5,
        limit_bytes: int | None = None,
        on_limit: Callable[[], None] | None = None,
    ) -> None:
        self.roots = roots
        self.interval = interval
        self.limit_bytes = limit_bytes
        self.on_limit = on_limit
        self.peak = TreePeak(root_rss_bytes=dict.fromkeys(roots, 0))
        self._cpu_first: dict[tuple[int, int], float] = {}
        self._cpu_last: dict[tuple[int, int], tuple[str, float]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="tree-sampler", daemon=True)

    def __enter__(self) -> TreePeak:
        self._thread.start()
        return self.peak

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._thread.join()
        self.peak.root_cpu_s = dict.fromkeys(self.roots, 0.0)
        for key, (name, cpu) in self._cpu_last.items():
            self.peak.root_cpu_s[name] += cpu - self._cpu_first.get(key, 0.0)

    def _run(self) -> None:
        self.sample()
        self._cpu_first = {key: cpu for key, (_, cpu) in self._cpu_last.items()}
        while not self._stop.wait(self.interval):
            self.sample()

    def sample(self) -> None:
        """Take one sample of every tree: raise the memory peaks, note each process's CPU."""
        procs = scan_processes()
        children = children_map(procs)
        rss = pss = count = 0
        for name, root in self.roots.items():
            root_rss = 0
            for pid in process_tree(root, children):
                p_rss, p_pss = memory_bytes(pid)
                root_rss += p_rss
                pss += p_pss
                count += p_rss > 0
                if pid in procs:
                    self._cpu_last[(pid, procs[pid].start)] = (name, procs[pid].cpu_s)
            rss += root_rss
            self.peak.root_rss_bytes[name] = max(self.peak.root_rss_bytes[name], root_rss)
        self.peak.rss_bytes = max(self.peak.rss_bytes, rss)
        self.peak.pss_bytes = max(self.peak.pss_bytes, pss)
        self.peak.processes = max(self.peak.processes, count)
        self.peak.samples += 1
        over = self.limit_bytes is not None and rss > self.limit_bytes
        if over and not self.peak.exceeded_limit:
            self.peak.exceeded_limit = True
            if self.on_limit is not None:
                self.on_limit()
