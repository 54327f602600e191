"""Local Prefect and MLflow servers that `factory up` and `factory demo` start (loopback only)."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx
from pydantic import SecretStr

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


def venv_bin(name: str) -> str:
    """A console script installed beside this Python (prefect, mlflow, ray)."""
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
    cmd = [venv_bin("prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)]
    url = f"http://127.0.0.1:{port}"
    return _spawn("prefect", cmd, env, home / "logs" / "prefect.log", url, f"{api}/health", timeout)


def start_serve(
    home: Path, port: int, replicas: int = 1, max_models: int = 256, timeout: float = 180
) -> Service:
    """`factory serve` (the online endpoint on a local Ray) on 127.0.0.1 in the background."""
    url = f"http://127.0.0.1:{port}"
    cmd = [venv_bin("factory"), "serve", "--port", str(port), "--replicas", str(replicas)]
    cmd += ["--max-models", str(max_models)]
    return _spawn("serve", cmd, {}, home / "logs" / "serve.log", url, f"{url}/healthz", timeout)


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
    admin_password: SecretStr | None = None,
    model_prefix: str = "factory",
) -> Service:
    """`mlflow server` on 127.0.0.1 over a backend store, serving (proxying) an artifact folder.

    With `admin_password`, the auth server (`--app-name factory-auth`): users and grants in
    <home>/mlflow-auth/users.db, `admin` bootstrapped with that password, READ by default."""
    url = f"http://127.0.0.1:{port}"
    cmd = [venv_bin("mlflow"), "server", "--host", "127.0.0.1", "--port", str(port)]
    cmd += ["--backend-store-uri", backend_uri, "--workers", str(workers)]
    cmd += ["--serve-artifacts", "--artifacts-destination", artifacts]
    env = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}  # its job runners: unused CPU here
    if admin_password is not None:
        cmd += ["--app-name", "factory-auth"]
        env |= auth_server_env(home / "mlflow-auth", admin_password, model_prefix)
    return _spawn("mlflow", cmd, env, home / "logs" / "mlflow.log", url, f"{url}/health", timeout)


def auth_server_env(folder: Path, admin_password: SecretStr, model_prefix: str) -> dict[str, str]:
    """The auth app's config file and secrets, kept in `folder` (0700): the user database, a
    Flask session key made once, and the admin password passed by environment only."""
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    key_file = folder / "flask.key"
    if not key_file.exists():
        fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_hex(32))
    config = folder / "basic_auth.ini"
    config.write_text(
        "[mlflow]\n"
        "default_permission = READ\n"
        f"database_uri = sqlite:///{folder / 'users.db'}\n"
        "admin_username = admin\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
        # one PBKDF2 check per user and minute instead of per request (3x the throughput)
        "auth_cache_ttl_seconds = 60\n"
    )
    return {
        "MLFLOW_AUTH_CONFIG_PATH": str(config),
        "MLFLOW_AUTH_ADMIN_PASSWORD": admin_password.get_secret_value(),
        "MLFLOW_FLASK_SERVER_SECRET_KEY": key_file.read_text().strip(),
        "FACTORY_MODEL_PREFIX": model_prefix,
    }


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
