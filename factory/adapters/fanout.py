"""Ray: start or join a cluster and train shards of products on it."""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import ray

from factory.core.fleet import FamilySpec, GateSpec
from factory.core.forecaster import Series
from factory.core.training import ChampionRef, ProductOutcome, train_many
from factory.local import free_port
from factory.settings import Settings

log = logging.getLogger(__name__)

# Ray Serve's high-throughput mode: HAProxy (C) as the HTTP ingress and replicas answering HTTP
# themselves, instead of a Python proxy relaying each request to a replica: ~0.8 instead of
# ~8 ms of CPU per request. Every Ray process reads these when it imports Serve, so they are
# set before a local Ray starts (and before Serve is imported); values already set win.
# HAProxy sends requests with the same `serve_multiplexed_model_id` header (Serve's header for
# multiplexed models: the product) to the same replica, so each product is loaded once, and
# spreads the others round robin. A short drain: a stopping replica waits this long for
# HAProxy to stop sending it requests.
SERVE_ENV = {
    "RAY_SERVE_ENABLE_HA_PROXY": "1",
    "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1",
    "RAY_SERVE_HAPROXY_BALANCE_ALGORITHM": "hdr(serve_multiplexed_model_id)",
    "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": "2",
}


SERVE_PORTS = (
    "RAY_SERVE_HAPROXY_STATS_PORT",
    "RAY_SERVE_HAPROXY_METRICS_PORT",
    "RAY_SERVE_FALLBACK_PROXY_HTTP_PORT",
    "RAY_SERVE_FALLBACK_PROXY_GRPC_PORT",
)
# Where Serve keeps each node's HAProxy config, sockets and state (a folder per node id).
HAPROXY_FILES = Path(
    os.environ.get("RAY_SERVE_HAPROXY_CONFIG_FILE_LOC", "/tmp/haproxy-serve/haproxy.cfg")
).parent


def use_serve_env() -> None:
    """Ray Serve's high-throughput settings for this process and a local Ray it starts."""
    for key, value in SERVE_ENV.items():
        os.environ.setdefault(key, value)


@contextlib.contextmanager
def local_serve_env() -> Iterator[None]:
    """Ray Serve's settings for a local Ray started inside, with free ports for HAProxy's stats
    page and metrics exporter and Serve's fallback proxy behind it (fixed, 8404, 9101, 8500 and
    9500, unless told): set only while it starts, so a local Ray started later from here
    (`factory serve` in a subprocess) takes its own."""
    use_serve_env()
    added = {key: str(free_port()) for key in SERVE_PORTS if key not in os.environ}
    os.environ.update(added)
    try:
        yield
    finally:
        for key in added:
            os.environ.pop(key, None)


def ensure_ray(settings: Settings) -> dict[str, Any]:
    """Join the cluster at settings/RAY_ADDRESS, else start a local Ray on this machine's cores."""
    if not ray.is_initialized():
        address = settings.ray_address or os.environ.get("RAY_ADDRESS")
        if address:
            ray.init(address=address, logging_level=logging.WARNING, log_to_driver=False)
        else:
            temp = ray_temp_dir()
            # Ray stops the local node it starts here at exit (its atexit hook, and a reaper
            # process when the driver is killed); it would leave the session folder behind.
            with _without_token_auth_notice(), local_serve_env():
                ray.init(
                    num_cpus=settings.ray_num_cpus or os.cpu_count(),
                    include_dashboard=False,
                    logging_level=logging.WARNING,
                    log_to_driver=False,
                    _temp_dir=temp,
                )
            atexit.register(
                _stop_and_remove_session,
                (Path(temp) / "session_latest").resolve(),
                HAPROXY_FILES / ray.get_runtime_context().get_node_id(),
            )
            removed = prune_ray_sessions(Path(temp))
            if removed:
                log.info("removed %d old Ray session folder(s) from %s", len(removed), temp)
    info: dict[str, Any] = {"gcs": ray.get_runtime_context().gcs_address, "nodes": len(ray.nodes())}
    info |= {k: float(v) for k, v in ray.cluster_resources().items() if k in ("CPU", "memory")}
    return info


# Ray's unix sockets live at <temp>/session_<date>_<time>_<us>_<pid>/sockets/plasma_store, and
# AF_UNIX paths stop at 107 bytes: the session part takes up to 66 of them.
MAX_RAY_TEMP_LEN = 40


def ray_temp_dir() -> str:
    """Where a local Ray keeps its session: the system temp folder (TMPDIR), or /tmp when that
    path is too long for Ray's sockets."""
    temp = os.path.join(tempfile.gettempdir(), f"factory-ray-{os.getuid()}")
    return temp if len(temp) <= MAX_RAY_TEMP_LEN else f"/tmp/factory-ray-{os.getuid()}"


def _stop_and_remove_session(session: Path, haproxy: Path) -> None:
    """At exit (before Ray's own hook): stop the local node, then remove its session folder
    and its HAProxy's files."""
    ray.shutdown()
    shutil.rmtree(haproxy, ignore_errors=True)
    if _SESSION.fullmatch(session.name):
        shutil.rmtree(session, ignore_errors=True)
        latest = session.parent / "session_latest"
        if latest.is_symlink() and not latest.exists():
            latest.unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            session.parent.rmdir()  # only when no other session is left


TOKEN_AUTH_LOGGER = "ray._private.authentication.authentication_token_setup"


class _TokenAuthNotice(logging.Filter):
    """Drops Ray's notice that it turned token authentication on, and nothing else."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Token authentication is enabled")


@contextlib.contextmanager
def _without_token_auth_notice() -> Iterator[None]:
    """A local cluster Ray starts gets token authentication (a token in ~/.ray/auth_token)
    unless RAY_AUTH_MODE says otherwise, and Ray warns about it on every start. Keep the
    protection, drop the notice: RAY_AUTH_MODE cannot say "token" from here, since Ray reads
    it once when imported (set it before the process starts; Ray is then silent itself)."""
    logger, notice = logging.getLogger(TOKEN_AUTH_LOGGER), _TokenAuthNotice()
    logger.addFilter(notice)
    try:
        yield
    finally:
        logger.removeFilter(notice)


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
