"""Preflight: are the settings usable? Schemes, folders and a short probe of each server.

Runs in the CLI before a command starts Prefect, so a wrong URI fails in seconds with one line
naming its variable, not after minutes of MLflow's own retries.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import re
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import httpx

from factory.settings import Settings, SettingsError, setting_name

if TYPE_CHECKING:
    from factory.core.fleet import FleetSpec

PROBE_TIMEOUT_S = 3.0
BUILTIN_SCHEMES = ("file", "sqlite", "postgresql", "mysql", "mssql", "http", "https", "databricks")
REGISTRY_ONLY_SCHEMES = ("databricks-uc", "uc")  # Unity Catalog: a model registry, not tracking
STORAGE = {"data_url": "sales data", "landing_url": "landing zone", "forecasts_url": "forecasts"}
DATABASE_PORTS = {"postgresql": 5432, "mysql": 3306, "mssql": 1433}
_HOST_PORT = re.compile(r"(?P<host>\[[0-9A-Fa-f:.]+\]|[^\s:/\[\]]+):(?P<port>\d{1,5})")


@dataclass(frozen=True)
class SettingCheck:
    """One setting as checked: its variable, value, what it points at, and any problem."""

    variable: str
    value: str
    target: str
    problem: str | None = None

    def line(self) -> str:
        """`FACTORY_X='value': problem` (passwords in URIs masked)."""
        return f"{self.variable}={self.value!r}: {self.problem}"


def preflight(
    settings: Settings, probe: bool = True, timeout: float = PROBE_TIMEOUT_S
) -> list[SettingCheck]:
    """Check every location setting; raise SettingsError with one line per problem.

    `probe` also asks each MLflow server (and database server) whether it answers."""
    checks = check_settings(settings, probe, timeout)
    problems = [c.line() for c in checks if c.problem]
    if problems:
        raise SettingsError("\n".join(problems))
    return checks


def check_settings(
    settings: Settings, probe: bool = True, timeout: float = PROBE_TIMEOUT_S
) -> list[SettingCheck]:
    """Every location setting with what it points at and its problem, if any. Defaults lie
    under FACTORY_HOME, so the check of that folder covers them."""
    home = settings.resolved_home
    checks = [_check("home", str(settings.home), "state folder", _folder_problem(home))]
    probed: dict[str, SettingCheck] = {}
    for field, registry in (("mlflow_tracking_uri", False), ("mlflow_registry_uri", True)):
        uri = getattr(settings, field)
        if uri is None:
            default = settings.tracking_uri if field == "mlflow_tracking_uri" else None
            target = "local SQLite database (default, under FACTORY_HOME)"
            checks += [_check(field, default, target)] if default else []
        elif uri in probed:  # the same server is asked once
            checks.append(_check(field, uri, probed[uri].target, probed[uri].problem))
        else:
            probed[uri] = _check(field, uri, *check_mlflow_uri(uri, registry, probe, timeout))
            checks.append(probed[uri])
    checks.append(_audit_check(settings, probe, timeout))
    for field, role in STORAGE.items():
        url = getattr(settings, field)
        resolved = getattr(settings, f"resolved_{field}")
        checks.append(
            _check(field, resolved, f"{role} (default, under FACTORY_HOME)")
            if url is None
            else _check(field, url, role, storage_problem(url))
        )
    address = settings.ray_address or os.environ.get("RAY_ADDRESS")
    field = "ray_address" if settings.ray_address else "RAY_ADDRESS"
    checks.append(
        _check(field, address, "Ray cluster", ray_address_problem(address))
        if address
        else _check("ray_address", "", "local Ray on this machine")
    )
    return checks


def _audit_check(settings: Settings, probe: bool, timeout: float) -> SettingCheck:
    """The audit trail's database: SQLite under FACTORY_HOME by default, or a server."""
    url = settings.audit_url
    if url is None:
        return _check("audit_url", settings.resolved_audit_url, "audit trail (default, SQLite)")
    kind = urlsplit(url).scheme.lower().split("+", 1)[0]
    if kind == "sqlite":
        return _check("audit_url", url, "audit trail (SQLite)", sqlite_problem(url))
    if kind in ("postgresql", "postgres"):
        problem = database_problem(url, "postgresql", timeout) if probe else None
        return _check("audit_url", url, "audit trail (PostgreSQL)", problem)
    return _check("audit_url", url, "audit trail", "expected sqlite:/// or postgresql:// URL")


def _check(field: str, value: str, target: str, problem: str | None = None) -> SettingCheck:
    variable = field if field.isupper() else setting_name(field)
    return SettingCheck(variable, mask_password(value), target, problem)


def mask_password(uri: str) -> str:
    """The URI with any password replaced by ***, fit to print."""
    return re.sub(r"(://[^/:@\s]*:)[^/@\s]*@", r"\1***@", uri)


# --- MLflow tracking and registry URIs ---------------------------------------------------------


def mlflow_schemes(registry: bool) -> list[str]:
    """The URI schemes MLflow accepts here: its built-in stores plus installed plugins."""
    group = "mlflow.model_registry_store" if registry else "mlflow.tracking_store"
    plugins = [ep.name for ep in importlib.metadata.entry_points(group=group)]
    return [*BUILTIN_SCHEMES, *(REGISTRY_ONLY_SCHEMES if registry else ()), *plugins]


def check_mlflow_uri(
    uri: str, registry: bool = False, probe: bool = True, timeout: float = PROBE_TIMEOUT_S
) -> tuple[str, str | None]:
    """(what the URI points at, its problem or None) for a tracking or registry URI."""
    scheme = _mlflow_scheme(uri)
    kind = scheme.split("+", 1)[0]
    if kind in ("", "file"):
        path = Path(urlsplit(uri).path if kind else uri).expanduser()
        return "local MLflow file store", _folder_problem(path)
    if kind == "sqlite":
        return "local SQLite database", sqlite_problem(uri)
    if kind in ("http", "https"):
        return "MLflow server", probe_mlflow_server(uri, timeout) if probe else None
    if kind in DATABASE_PORTS:
        return f"{kind} database", database_problem(uri, kind, timeout) if probe else None
    supported = mlflow_schemes(registry)
    if scheme in supported:
        return f"{scheme} (not probed)", None
    if scheme in REGISTRY_ONLY_SCHEMES:
        return "Unity Catalog", "a Unity Catalog URI serves only as FACTORY_MLFLOW_REGISTRY_URI"
    return "?", f"unknown scheme {scheme!r}; MLflow supports {', '.join(supported)}"


def _mlflow_scheme(uri: str) -> str:
    """The scheme as MLflow's store registries see it (a bare `databricks` is one)."""
    if uri in ("databricks", "databricks-uc", "uc"):
        return uri
    scheme = urlsplit(uri).scheme.lower() if "://" in uri or re.match(r"\w+:", uri) else ""
    return "" if len(scheme) == 1 else scheme  # C:\\... is a path


def sqlite_problem(uri: str) -> str | None:
    """A SQLite URI must name a file whose folder exists (or can be made) and is writable."""
    rest = uri.split("://", 1)[1].split("?", 1)[0] if "://" in uri else ""
    if not rest.startswith("/"):
        return "expected sqlite:////absolute/path/mlflow.db or sqlite:///relative/path/mlflow.db"
    path = Path(rest[1:]).expanduser()
    if rest[1:] in ("", ":memory:"):
        return "an in-memory database keeps nothing between commands; name a file"
    if path.is_dir():
        return f"{path} is a folder, not a database file"
    if path.exists():
        if not os.access(path, os.R_OK | os.W_OK):
            return f"{path} is not readable and writable"
        return None
    return _folder_problem(path.absolute().parent, f"cannot create {path}: ")


def _folder_problem(folder: Path, prefix: str = "") -> str | None:
    """A folder that exists, or can be created, and is writable (None when it is)."""
    folder = folder.expanduser().absolute()
    existing = next(p for p in (folder, *folder.parents) if p.exists() or p == p.parent)
    if not existing.is_dir():
        return f"{prefix}{existing} is a file, not a folder"
    if not os.access(existing, os.W_OK | os.X_OK):
        return f"{prefix}no permission to write in {existing}"
    return None


def probe_mlflow_server(uri: str, timeout: float = PROBE_TIMEOUT_S) -> str | None:
    """Ask an MLflow server whether it is up: /health, else the experiments API (no retries)."""
    base = uri.rstrip("/")
    if not urlsplit(base).hostname:
        return "no host in the URI (expected e.g. http://127.0.0.1:5000)"
    auth, headers = _mlflow_credentials()
    verify: bool | str = os.environ.get("MLFLOW_TRACKING_SERVER_CERT_PATH") or (
        os.environ.get("MLFLOW_TRACKING_INSECURE_TLS", "").lower() != "true"
    )
    search = f"{base}/api/2.0/mlflow/experiments/search"
    try:
        with httpx.Client(timeout=timeout, verify=verify, auth=auth, headers=headers) as client:
            if client.get(f"{base}/health").status_code == 200:
                return None
            answer = client.get(search, params={"max_results": 1})
    except httpx.TimeoutException:
        return f"no MLflow server answered within {timeout:g} s"
    except (httpx.HTTPError, httpx.InvalidURL) as exc:
        return f"no MLflow server answers ({_reason(exc)})"
    if answer.status_code in (401, 403):
        return (
            f"the server refused access (HTTP {answer.status_code}); set MLFLOW_TRACKING_TOKEN"
            " or MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD"
        )
    if answer.status_code != 200:
        return f"a server answers, but not as MLflow (HTTP {answer.status_code} from {search})"
    return None


def _mlflow_credentials() -> tuple[httpx.BasicAuth | None, dict[str, str]]:
    """The credentials MLflow's own client would send, from its environment variables."""
    if token := os.environ.get("MLFLOW_TRACKING_TOKEN"):
        return None, {"Authorization": f"Bearer {token}"}
    user, password = (os.environ.get(f"MLFLOW_TRACKING_{k}") for k in ("USERNAME", "PASSWORD"))
    return (httpx.BasicAuth(user, password) if user and password else None), {}


def database_problem(uri: str, kind: str, timeout: float = PROBE_TIMEOUT_S) -> str | None:
    """Whether a database server accepts TCP connections at the URI's host and port."""
    parts = urlsplit(uri)
    if not parts.hostname:  # a Unix socket or a driver default: nothing to probe here
        return None
    try:
        port = parts.port or DATABASE_PORTS[kind]
    except ValueError:
        return "the port is not a number"
    try:
        socket.create_connection((parts.hostname, port), timeout=timeout).close()
    except TimeoutError:
        return f"no database server answered at {parts.hostname}:{port} within {timeout:g} s"
    except OSError as exc:
        return f"no database server answers at {parts.hostname}:{port} ({_reason(exc)})"
    return None


def _reason(exc: BaseException) -> str:
    """`connection refused` rather than `[Errno 111] Connection refused`."""
    text = str(exc) or type(exc).__name__
    text = re.sub(r"^\[Errno -?\d+\]\s*", "", text)
    return text[:1].lower() + text[1:]


# --- storage URLs and the Ray address ----------------------------------------------------------


def storage_problem(url: str) -> str | None:
    """An fsspec URL whose protocols are known and installed (each part of a chained URL)."""
    import fsspec

    for part in url.split("::"):
        protocol, _ = fsspec.core.split_protocol(part)
        if protocol is None:
            continue
        try:
            fsspec.get_filesystem_class(protocol)
        except ValueError:
            return (
                f"unknown storage protocol {protocol!r}; use a folder or an fsspec URL"
                " (file://, s3://, gcs://, abfs://, ...)"
            )
        except ImportError as exc:
            return f"storage protocol {protocol!r} needs a package that is not installed ({exc})"
    return None


def ray_address_problem(address: str) -> str | None:
    """A Ray address ray.init accepts: auto, local, host:port or <client protocol>://host[:port]."""
    expected = "expected host:port, ray://host:port, auto or local"
    if address in ("auto", "local"):
        return None
    if "://" in address:
        protocol, inner = address.split("://", 1)
        if protocol in ("http", "https"):
            return f"that is a dashboard or jobs URL, not the cluster's address; {expected}"
        if protocol != "ray" and not _importable(protocol):
            return f"unknown Ray client protocol {protocol!r}; {expected}"
        host = inner.split("/", 1)[0]
        return None if host and not re.search(r"\s", host) else f"no host; {expected}"
    match = _HOST_PORT.fullmatch(address)
    if not match:
        return f"not a Ray address; {expected}"
    if not 0 < int(match["port"]) < 65536:
        return f"port {match['port']} is out of range; {expected}"
    return None


def _importable(module: str) -> bool:
    """Ray imports a client protocol other than ray:// as a Python module of that name."""
    try:
        return module.isidentifier() and importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


# --- products asked for on the command line ----------------------------------------------------


def check_train_products(settings: Settings, spec: FleetSpec, products: list[str]) -> str | None:
    """Before a run starts: raise UnknownProducts when none of `products` is in the data and in
    a family (as the run itself would); a warning naming those that are not, if any."""
    from factory.adapters.data import read_panel
    from factory.core.outcomes import check_requested

    in_data = set(read_panel(settings.resolved_data_url)["unique_id"].dropna().astype(str))
    covered = {p for ids in spec.assign(in_data).values() for p in ids}
    return check_requested(products, in_data, covered)


def check_forecast_products(settings: Settings, products: list[str]) -> list[str]:
    """Before a run starts: raise ForecastError when none of `products` has a serving model;
    the ones without one otherwise."""
    from factory.adapters.forecasts import choose_products, served_product_ids
    from factory.adapters.registry.registry import Registry

    return choose_products(served_product_ids(Registry(settings)), products)[1]
