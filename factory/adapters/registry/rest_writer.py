"""Registry writes through `MlflowClient`'s calls, for a tracking server (`http://`)."""

from __future__ import annotations

import json
from typing import Any

from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from factory.adapters.registry.sql_writer import VersionPlan


def write_versions(client: MlflowClient, plans: list[VersionPlan]) -> dict[str, int]:
    """Create the planned versions (copies after their originals), call by call; each gets its
    alias and current-tag. Returns the new version number by registered model name."""
    created: dict[str, int] = {}
    for plan in plans:
        source = plan.source
        if plan.copy_of is not None:
            source = f"models:/{plan.copy_of.name}/{created[plan.copy_of.name]}"
        mv = _create_version(client, plan, source)
        created[plan.name] = int(mv.version)
        current = json.dumps({"version": str(mv.version), **plan.current})
        client.set_registered_model_alias(plan.name, plan.alias, str(mv.version))
        client.set_registered_model_tag(plan.name, plan.current_tag, current)
    return created


def _new_version(client: MlflowClient, plan: VersionPlan, source: str) -> Any:
    """One version over the REST API. Its model files are already uploaded, so it is READY
    at once: no polling for its status (MLflow's default waits with a GET per version)."""
    return client.create_model_version(
        plan.name, source, plan.run_id, plan.tags, await_creation_for=0
    )


def _create_version(client: MlflowClient, plan: VersionPlan, source: str) -> Any:
    """Create a version, creating its registered model on the product's first one."""
    try:
        return _new_version(client, plan, source)
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise
    try:
        client.create_registered_model(
            plan.name, tags=plan.model_tags, description=plan.description
        )
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    return _new_version(client, plan, source)
