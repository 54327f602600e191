"""Local Prefect and MLflow servers for the demo and the tests (loopback only)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx

SERVICES_FILE = "services.json"


class ServiceError(RuntimeError):
    """A server did not come up; the message points at its log."""


@dataclass(frozen=True)
class Service:
    """A background server this project started."""

    name: str
    pid: int
    url: str
    log: str

    def stop(self, timeout: float = 20) -> None:
        """Terminate the server's whole process group and wait for it."""
        stop_pid(self.pid, timeout)


def stop_pid(pid: int, timeout: float = 20) -> None:
    """SIGTERM a process group, then SIGKILL it if it lingers. A leader that is our own child
    is reaped meanwhile: as a zombie it would look alive to `killpg(pid, 0)` until the end."""
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        try:
            os.killpg(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.2)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)


class PrefectApi:
    """The few Prefect REST calls the tests and benchmarks make against a server they started."""

    def __init__(self, url: str) -> None:
        self.url = url  # .../api

    def call(self, method: str, path: str, body: Any = None) -> Any:
        """One call; a busy SQLite server answers 503 now and then: retry those a few times."""
        for attempt in range(5):
            response = httpx.request(method, f"{self.url}{path}", json=body, timeout=30)
            if response.status_code != 503 or attempt == 4:
                break
            time.sleep(1 + attempt)
        response.raise_for_status()
        return response.json() if response.content else None

    def post(self, path: str, body: Any = None) -> Any:
        """POST a JSON body (an empty object by default)."""
        return self.call("POST", path, {} if body is None else body)

    def get(self, path: str) -> Any:
        """GET a JSON document."""
        return self.call("GET", path)

    def deployment_id(self, name: str) -> str:
        """The id of a deployment named `flow-name/deployment-name`."""
        return str(self.get(f"/deployments/name/{name}")["id"])

    def run(self, name: str, **parameters: Any) -> str:
        """Create a flow run of a deployment (what `prefect deployment run` does)."""
        body = {"parameters": parameters} if parameters else {}
        return str(
            self.post(f"/deployments/{self.deployment_id(name)}/create_flow_run", body)["id"]
        )

    def runs(self, deployment: str) -> list[dict[str, Any]]:
        """Every flow run of a deployment."""
        flt = {"deployments": {"id": {"any_": [self.deployment_id(deployment)]}}}
        return list(self.post("/flow_runs/filter", flt))

    def events(self, name: str) -> list[dict[str, Any]]:
        """The events of one name the server has recorded (first page)."""
        return list(self.post("/events/filter", {"filter": {"event": {"name": [name]}}})["events"])


@contextlib.contextmanager
def temporary_database(
    prefix: str, host: str = "127.0.0.1", port: int = 5432, user: str = "root"
) -> Iterator[str]:
    """A PostgreSQL database with a unique name (`<prefix>_<hex>`), dropped on exit."""
    import secrets

    import psycopg2

    def admin(sql: str) -> None:
        conn = psycopg2.connect(host=host, port=port, user=user, dbname="postgres")
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(sql)
        conn.close()

    name = f"{prefix}_{secrets.token_hex(4)}"
    admin(f"CREATE DATABASE {name}")
    try:
        yield name
    finally:
        admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def descendants(pid: int) -> list[int]:
    """Every process below `pid`, found by walking /proc (flow-run processes, Ray workers)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(stat.parent.name))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def stop_tree(pid: int, timeout: float = 20) -> None:
    """Stop a process group and anything it started in other sessions (flow runs, Ray)."""
    below = descendants(pid)
    stop_pid(pid, timeout)
    for child in below:
        with contextlib.suppress(ProcessLookupError):
            os.kill(child, signal.SIGKILL)


def free_port(preferred: int | None = None) -> int:
    """The preferred loopback port when it is free, else any free one."""
    for port in ([preferred] if preferred else []) + [0]:
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return int(s.getsockname()[1])
    raise ServiceError("no free loopback port")


def _bin(name: str) -> str:
    return str(Path(sys.executable).with_name(name))


def _spawn(
    name: str, cmd: list[str], env: dict[str, str], log: Path, url: str, health: str, timeout: float
) -> Service:
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        proc = subprocess.Popen(
            cmd,
            env={**os.environ, **env},
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ServiceError(f"{name} exited with code {proc.returncode}; see {log}")
        try:
            if httpx.get(health, timeout=2).status_code == 200:
                return Service(name, proc.pid, url, str(log))
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    stop_pid(proc.pid)
    raise ServiceError(f"{name} did not answer {health} within {timeout:.0f}s; see {log}")


def start_prefect(
    home: Path,
    port: int,
    database_url: str | None = None,
    redis_url: str | None = None,
    timeout: float = 180,
) -> Service:
    """`prefect server start` on 127.0.0.1: SQLite in <home>/prefect by default, or PostgreSQL
    (`postgresql+asyncpg://...`) with Redis (`redis://host:port/db`) as message broker."""
    api = f"http://127.0.0.1:{port}/api"
    env = {
        "PREFECT_HOME": str(home / "prefect"),
        "PREFECT_SERVER_API_HOST": "127.0.0.1",
        "PREFECT_SERVER_API_PORT": str(port),
        "PREFECT_UI_API_URL": api,
        "PREFECT_API_URL": api,
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_SERVER_UI_SHOW_PROMOTIONAL_CONTENT": "false",
    }
    if database_url:
        env["PREFECT_API_DATABASE_CONNECTION_URL"] = database_url
    if redis_url:
        env |= redis_broker_env(redis_url)
    cmd = [_bin("prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)]
    url = f"http://127.0.0.1:{port}"
    return _spawn("prefect", cmd, env, home / "logs" / "prefect.log", url, f"{api}/health", timeout)


def redis_broker_env(redis_url: str) -> dict[str, str]:
    """Prefect settings that move its messaging, ordering and leases from memory to Redis."""
    return {
        "PREFECT_MESSAGING_BROKER": "prefect_redis.messaging",
        "PREFECT_MESSAGING_CACHE": "prefect_redis.messaging",
        "PREFECT_SERVER_EVENTS_CAUSAL_ORDERING": "prefect_redis.ordering",
        "PREFECT_SERVER_CONCURRENCY_LEASE_STORAGE": "prefect_redis.lease_storage",
        "PREFECT_REDIS_MESSAGING_URL": redis_url,
        "PREFECT_SERVER_DOCKET_URL": redis_url,
    }


def start_mlflow(
    home: Path,
    port: int,
    backend_uri: str,
    artifacts: str,
    workers: int = 1,
    timeout: float = 120,
) -> Service:
    """`mlflow server` on 127.0.0.1 over a backend store, serving (proxying) an artifact folder."""
    url = f"http://127.0.0.1:{port}"
    cmd = [_bin("mlflow"), "server", "--host", "127.0.0.1", "--port", str(port)]
    cmd += ["--backend-store-uri", backend_uri, "--workers", str(workers)]
    cmd += ["--serve-artifacts", "--artifacts-destination", artifacts]
    return _spawn("mlflow", cmd, {}, home / "logs" / "mlflow.log", url, f"{url}/health", timeout)


def save_services(home: Path, services: list[Service]) -> None:
    """Remember started servers so `factory down` can stop them."""
    (home / SERVICES_FILE).write_text(json.dumps([asdict(s) for s in services], indent=2))


def load_services(home: Path) -> list[Service]:
    """Servers started earlier by `factory up` / `factory demo`."""
    path = home / SERVICES_FILE
    if not path.exists():
        return []
    return [Service(**s) for s in json.loads(path.read_text())]


def alive(service: Service) -> bool:
    """True while the server answers."""
    health = f"{service.url}/api/health" if service.name == "prefect" else f"{service.url}/health"
    try:
        return httpx.get(health, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


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
    head = [_bin("ray"), "start", "--head", f"--port={port}", "--include-dashboard=false"]
    head.append("--disable-usage-stats")
    join = [_bin("ray"), "start", f"--address=127.0.0.1:{port}"]
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
