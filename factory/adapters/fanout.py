"""Ray: start or join a cluster and train shards of products on it."""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

import psutil
import ray

from factory.core.fleet import FamilySpec, GateSpec
from factory.core.forecaster import Series
from factory.core.training import ChampionRef, ProductOutcome, train_many
from factory.settings import Settings

log = logging.getLogger(__name__)


def ensure_ray(settings: Settings) -> dict[str, Any]:
    """Join the cluster at settings/RAY_ADDRESS, else start a local Ray on this machine's cores."""
    if not ray.is_initialized():
        address = settings.ray_address or os.environ.get("RAY_ADDRESS")
        if address:
            ray.init(address=address, logging_level=logging.WARNING, log_to_driver=False)
        else:
            temp = os.path.join(tempfile.gettempdir(), f"factory-ray-{os.getuid()}")
            # Ray stops the local node it starts here at exit (its atexit hook, and a reaper
            # process when the driver is killed); it only leaves the session folder behind.
            ray.init(
                num_cpus=settings.ray_num_cpus or os.cpu_count(),
                include_dashboard=False,
                logging_level=logging.WARNING,
                log_to_driver=False,
                _temp_dir=temp,
            )
            removed = prune_ray_sessions(Path(temp))
            if removed:
                log.info("removed %d old Ray session folder(s) from %s", len(removed), temp)
    info: dict[str, Any] = {"gcs": ray.get_runtime_context().gcs_address, "nodes": len(ray.nodes())}
    info |= {k: float(v) for k, v in ray.cluster_resources().items() if k in ("CPU", "memory")}
    return info


def prune_ray_sessions(temp_dir: Path) -> list[Path]:
    """Remove the `session_*` folders no live Ray uses (another local Ray may share temp_dir)."""
    sessions = [
        p
        for p in temp_dir.glob("session_*")
        if p.is_dir() and not p.is_symlink() and _SESSION.fullmatch(p.name)
    ]
    if not sessions:
        return []
    mentioned = _session_args()
    removed = []
    for session in sessions:
        if not _session_alive(session, mentioned):
            shutil.rmtree(session, ignore_errors=True)
            removed.append(session)
    return removed


# session_<date>_<time>_<microseconds>_<pid of the process that started the head node>
_SESSION = re.compile(r"session_\d{4}-\d{2}-\d{2}_\d{2}-\d{2}-\d{2}_\d+_(\d+)")


def _session_args() -> str:
    """Every process's command line: Ray's daemons (gcs_server, raylet, log monitor) name
    their session folder in their arguments (--log_dir, --session-dir, socket paths)."""
    lines = []
    for proc in psutil.process_iter(["cmdline"]):
        with contextlib.suppress(psutil.Error):
            lines.append(" ".join(proc.info["cmdline"] or ()))
    return "\n".join(lines)


def _session_alive(session: Path, mentioned: str) -> bool:
    """A session is in use while any process names its folder, or while the process that
    created it runs (between making the folder and starting the daemons)."""
    if re.search(re.escape(str(session)) + r"(?![\w.-])", mentioned):
        return True
    match = _SESSION.fullmatch(session.name)
    return match is not None and psutil.pid_exists(int(match[1]))


@ray.remote(num_cpus=1, max_retries=2)
def _train_remote(
    items: list[tuple[str, Series]],
    family: FamilySpec,
    gate: GateSpec,
    champions: dict[str, ChampionRef],
) -> list[ProductOutcome]:
    return train_many(items, family, gate, champions)


def put_shard(items: list[tuple[str, Series]]) -> ray.ObjectRef:
    """Place a shard's series in the object store once; tasks pass the reference around."""
    return ray.put(items)


def train_on_ray(
    items_ref: ray.ObjectRef,
    family: FamilySpec,
    gate: GateSpec,
    champions: dict[str, ChampionRef],
) -> list[ProductOutcome]:
    """Train one shard on a Ray worker and wait for its outcomes."""
    return ray.get(_train_remote.remote(items_ref, family, gate, champions))
