"""A local multi-node Ray cluster for tests and benchmarks that need a Ray address."""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from factory.local import ServiceError, free_port, stop_pid, venv_bin


@dataclass(frozen=True)
class RayCluster:
    """A local multi-node Ray cluster started with `ray start` (each node in its own group)."""

    address: str
    token: str
    pgids: tuple[int, ...]
    temp_dir: str

    def env(self) -> dict[str, str]:
        """What a driver needs to join it."""
        return {"RAY_ADDRESS": self.address, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": self.token}

    def stop(self) -> None:
        """Stop only this cluster's processes (never `ray stop`, which stops every Ray here)."""
        for pgid in self.pgids:
            stop_pid(pgid, timeout=10)


def start_ray_cluster(temp_dir: Path, nodes: int = 2, cpus_per_node: int = 1) -> RayCluster:
    """A head node plus `nodes - 1` workers on this machine, with token authentication."""
    import secrets

    token = secrets.token_hex(16)
    port = free_port()
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token}
    common = [
        "--node-ip-address=127.0.0.1",
        f"--num-cpus={cpus_per_node}",
        f"--temp-dir={temp_dir}",
    ]
    head = [venv_bin("ray"), "start", "--head", f"--port={port}", "--include-dashboard=false"]
    head.append("--disable-usage-stats")
    join = [venv_bin("ray"), "start", f"--address=127.0.0.1:{port}"]
    pgids = []
    for cmd in [head + common] + [join + common] * (nodes - 1):
        # a new session: the node's daemons keep `ray start`'s process group, so it can be stopped
        proc = subprocess.Popen(
            cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True
        )
        out, _ = proc.communicate(timeout=120)
        pgids.append(proc.pid)
        if proc.returncode:
            RayCluster("", token, tuple(pgids), str(temp_dir)).stop()
            raise ServiceError(f"ray start failed: {out.decode(errors='replace')[-500:]}")
    return RayCluster(f"127.0.0.1:{port}", token, tuple(pgids), str(temp_dir))
