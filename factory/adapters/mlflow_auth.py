"""`mlflow server --app-name factory-auth`: MLflow's basic-auth app plus the factory's two rules.

MLflow's basic-auth already refuses a write to a registered model the user holds no EDIT grant
on. Two holes remain when workspaces are off, both closed here with MLflow's own grants:

1. Any authenticated user may create experiments and registered models (MLflow only asks for
   the workspace grant `("workspace", "*", USE)` when workspaces are on). Here creating needs
   that grant always, in the default workspace: a read-only identity gets 403 on every write.
2. Whoever creates a registered model manages it, so a trainer allowed to create staging models
   could create `<prefix>.production.<product>` for a product not yet in production. Here
   creating (or renaming to) a production name needs an EDIT grant on every registered model,
   `("registered_model", "*", EDIT or MANAGE)`: the promoter's role.

The server reads FACTORY_MODEL_PREFIX for the production names (`factory` by default).
"""

from __future__ import annotations

import os
from typing import Any

from flask import Flask, Response, request
from mlflow.server import app as mlflow_app
from mlflow.server import auth
from mlflow.utils.workspace_utils import DEFAULT_WORKSPACE_NAME

from factory.adapters.registry.names import PRODUCTION

_CREATE_OR_RENAME = ("/mlflow/registered-models/create", "/mlflow/registered-models/rename")
_original_can_create = auth._can_create_in_workspace


def create_app(app: Flask = mlflow_app) -> Any:
    """The basic-auth app with creation gated by the workspace grant and production names
    reserved to holders of a wildcard registered-model EDIT grant."""
    app.before_request(_production_names)  # runs before basic-auth's own checks
    auth._can_create_in_workspace = _can_create  # every create path MLflow gates
    return auth.create_app(app)  # under uvicorn, a FastAPI app mounting this Flask app


def _grant(username: str, resource_type: str) -> Any:
    """The user's folded wildcard grant on a resource type in the default workspace."""
    user = auth.store.get_user(username)
    return auth._role_grant_for_resource(user.id, resource_type, "*", DEFAULT_WORKSPACE_NAME)


def _can_create(username: str) -> bool:
    """MLflow's rule with workspaces on; without them, the same grant in the default one."""
    if auth.MLFLOW_ENABLE_WORKSPACES.get():
        return bool(_original_can_create(username))
    grant = _grant(username, "workspace")
    return grant is not None and grant.can_use


def production_prefix() -> str:
    """Registered model names that only the promoter may create."""
    return f"{os.environ.get('FACTORY_MODEL_PREFIX') or 'factory'}.{PRODUCTION}."


def _production_names() -> Response | None:
    """Refuse creating or renaming to a production model name without the promoter's grant."""
    if request.method != "POST" or not request.path.endswith(_CREATE_OR_RENAME):
        return None
    body = request.get_json(silent=True) or {}
    name = str(body.get("new_name") or body.get("name") or "")
    who = auth.authenticate_request()
    if not name.startswith(production_prefix()) or not isinstance(who, auth.Authorization):
        return None  # not a production name, or basic-auth answers 401 next
    username = str(who.username)
    if auth.store.get_user(username).is_admin:
        return None
    grant = _grant(username, "registered_model")
    if grant is not None and grant.can_update:
        return None
    return auth.make_forbidden_response()
