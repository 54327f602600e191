"""Who the factory is in MLflow: three identities with least privilege on an auth server.

- the trainer (training flows): creates experiments, runs and staging models; reads production;
- the promoter (promote, rollback, retire, restore, sync): writes every registered model,
  and is the only identity that may create production models (`factory.adapters.mlflow_auth`);
- the analyst (status, lineage, forecasts, verify): reads only.

Passwords come from settings (`FACTORY_<ROLE>_PASSWORD`, SecretStr) and reach MLflow's client
through its own environment variables, for the process: one flow run acts as one identity.
With no password set and no auth server, nothing is changed (the embedded default).
"""

from __future__ import annotations

import os
import threading
import warnings
from dataclasses import dataclass
from typing import Any, Literal

import httpx
from pydantic import SecretStr

from factory.settings import Settings, SettingsError, setting_name

Role = Literal["trainer", "promoter", "analyst"]
TRAINER: Role = "trainer"
PROMOTER: Role = "promoter"
ANALYST: Role = "analyst"
ROLES: tuple[Role, ...] = (TRAINER, PROMOTER, ANALYST)
USER_VAR, PASSWORD_VAR = "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"
WORKSPACE = "default"

# MLflow role permissions: (resource type, pattern, permission). The trainer manages the
# staging models it creates (MLflow grants a creator MANAGE); the analyst has none: the server's
# default permission (READ) lets it read, and without the workspace grant it creates nothing.
GRANTS: dict[Role, list[tuple[str, str, str]]] = {
    TRAINER: [("workspace", "*", "USE"), ("experiment", "*", "EDIT")],
    PROMOTER: [("workspace", "*", "USE"), ("registered_model", "*", "MANAGE")],
    ANALYST: [],
}
_lock = threading.Lock()


@dataclass(frozen=True)
class Identity:
    """An MLflow user and its password (never printed: SecretStr)."""

    role: Role
    username: str
    password: SecretStr


def identity(settings: Settings, role: Role) -> Identity | None:
    """The configured identity for a role, or None when its password is not set."""
    password: SecretStr | None = getattr(settings, f"{role}_password")
    if password is None or not password.get_secret_value():
        return None
    return Identity(role, f"{settings.model_prefix}-{role}", password)


def act_as(settings: Settings, role: Role) -> Identity | None:
    """Make this process's MLflow calls as the role's identity.

    Reading (`analyst`) takes the first identity configured of analyst, trainer, promoter.
    Raises SettingsError when the factory uses an auth server and the role has no password."""
    order = (ANALYST, TRAINER, PROMOTER) if role == ANALYST else (role,)
    found = next((i for r in order if (i := identity(settings, r)) is not None), None)
    if found is None:
        if settings.mlflow_auth:
            var = setting_name(f"{role}_password")
            raise SettingsError(f"{var} is not set: this step acts as the MLflow {role}")
        return None
    with _lock:
        os.environ[USER_VAR] = found.username
        os.environ[PASSWORD_VAR] = found.password.get_secret_value()
    return found


class ProvisionError(RuntimeError):
    """The auth server refused the admin's provisioning call."""


def provision(url: str, admin_password: SecretStr, identities: list[Identity]) -> None:
    """Create (or update the password of) each identity's user, and give it its role's
    permissions through an MLflow role `factory-<role>` (idempotent)."""
    with warnings.catch_warnings():  # the server's modules (only when provisioning)
        warnings.simplefilter("ignore", DeprecationWarning)  # starlette's wsgi, inside MLflow
        from mlflow.server.auth import routes

    auth = ("admin", admin_password.get_secret_value())
    with httpx.Client(base_url=url, auth=auth, timeout=30) as http:
        roles = {r["name"]: r for r in _call(http, "GET", routes.LIST_ROLES, workspace=WORKSPACE)}
        for ident in identities:
            _user(http, ident)
            name = f"factory-{ident.role}"
            role = roles.get(name) or _call(
                http, "POST", routes.CREATE_ROLE, json={"workspace": WORKSPACE, "name": name}
            )
            _grants(http, role["id"], GRANTS[ident.role])
            mine = _call(http, "GET", routes.LIST_USER_ROLES, username=ident.username)
            if all(r["id"] != role["id"] for r in mine):
                body = {"username": ident.username, "role_id": role["id"]}
                _call(http, "POST", routes.ASSIGN_ROLE, json=body)


def _user(http: httpx.Client, ident: Identity) -> None:
    from mlflow.server.auth import routes

    body = {"username": ident.username, "password": ident.password.get_secret_value()}
    exists = http.get(routes.GET_USER, params={"username": ident.username}).status_code == 200
    if exists:
        _call(http, "PATCH", routes.UPDATE_USER_PASSWORD, json=body)
    else:
        _call(http, "POST", routes.CREATE_USER, json=body)


def _grants(http: httpx.Client, role_id: int, wanted: list[tuple[str, str, str]]) -> None:
    from mlflow.server.auth import routes

    have = _call(http, "GET", routes.LIST_ROLE_PERMISSIONS, role_id=str(role_id))
    present = {(p["resource_type"], p["resource_pattern"], p["permission"]) for p in have}
    for resource_type, pattern, permission in wanted:
        if (resource_type, pattern, permission) not in present:
            body = {
                "role_id": role_id,
                "resource_type": resource_type,
                "resource_pattern": pattern,
                "permission": permission,
            }
            _call(http, "POST", routes.ADD_ROLE_PERMISSION, json=body)


def _call(http: httpx.Client, method: str, path: str, json: Any = None, **params: str) -> Any:
    """One admin call; the unwrapped payload (`role`, `roles`, ...) of its JSON answer."""
    resp = http.request(method, path, json=json, params=params or None)
    if resp.status_code >= 400:
        raise ProvisionError(f"{method} {path}: HTTP {resp.status_code} {resp.text[:200]}")
    payload = resp.json() if resp.content else {}
    values = list(payload.values()) if isinstance(payload, dict) else [payload]
    return values[0] if len(values) == 1 else payload


def settings_as(role: Role) -> Settings:
    """The process settings, with MLflow calls from now on made as `role` (a flow's first step)."""
    from factory.settings import get_settings

    settings = get_settings()
    act_as(settings, role)
    return settings
