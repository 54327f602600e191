"""Registry writes through `MlflowClient`'s calls, for a tracking server (`http://`)."""

from __future__ import annotations

import functools
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from factory.adapters.registry import reading
from factory.adapters.registry.names import TRAIN_KEY_TAG
from factory.adapters.registry.sql_writer import VersionPlan, current_value, reusable

BATCH = 100  # model names per search
PAGE = 10_000


def write_versions(
    client: MlflowClient, plans: list[VersionPlan], threads: int = 4
) -> dict[str, int]:
    """Create the planned versions (copies after their originals), call by call; each gets its
    alias and current-tag. A version already made from a plan's training key is reused, so a
    rerun after an outage completes what the first attempt began instead of duplicating it.
    Products are written `threads` at a time (a product's own plans in order), and a model
    that does not exist yet is created before its first version instead of after a refusal.
    Returns the version number by registered model name."""
    names = [p.name for p in plans]
    reuse = reusable(*keyed_versions(client, names))
    existing = existing_models(client, names)
    created: dict[str, int] = {}
    groups: dict[str, list[VersionPlan]] = {}
    for plan in plans:
        root = plan.copy_of.name if plan.copy_of is not None else plan.name
        groups.setdefault(root, []).append(plan)

    calls = reading.registry_calls(client)

    def write(group: list[VersionPlan]) -> None:
        for plan in group:
            version = reuse.get((plan.name, plan.train_key)) if plan.train_key else None
            if version is None:
                source = plan.source
                if plan.copy_of is not None:
                    source = f"models:/{plan.copy_of.name}/{created[plan.copy_of.name]}"
                if plan.name not in existing:
                    _create_model(calls, plan)
                version = int(_create_version(calls, plan, source).version)
            created[plan.name] = version
            calls.set_registered_model_alias(plan.name, plan.alias, str(version))
            calls.set_registered_model_tag(
                plan.name, plan.current_tag, current_value(plan, version)
            )

    with ThreadPoolExecutor(max(1, threads)) as pool:
        list(pool.map(write, groups.values()))  # re-raises the first failure
    return created


def existing_models(client: MlflowClient, names: list[str]) -> set[str]:
    """Which of these registered models exist: a few paged searches."""
    found: set[str] = set()
    unique = sorted(set(names))
    for start in range(0, len(unique), BATCH):
        quoted = ", ".join(f"'{n}'" for n in unique[start : start + BATCH])
        search = functools.partial(client.search_registered_models, f"name IN ({quoted})", 1000)
        found.update(m.name for m in reading.pages(lambda token: search(page_token=token)))  # noqa: B023
    return found


def keyed_versions(
    client: MlflowClient, names: list[str]
) -> tuple[list[tuple[str, str, int]], set[tuple[str, int]]]:
    """(name, training key, version) of the keyed versions of these models, and the
    (name, version) pairs an alias points to: a few paged searches."""
    found: list[tuple[str, str, int]] = []
    aliased: set[tuple[str, int]] = set()
    for start in range(0, len(names), BATCH):
        quoted = ", ".join(f"'{n}'" for n in names[start : start + BATCH])
        search = functools.partial(client.search_model_versions, f"name IN ({quoted})", PAGE)
        for mv in reading.pages(lambda token: search(page_token=token)):  # noqa: B023
            key = (mv.tags or {}).get(TRAIN_KEY_TAG)
            if key:
                found.append((mv.name, key, int(mv.version)))
            if mv.aliases:
                aliased.add((mv.name, int(mv.version)))
    return found, aliased


def _new_version(client: Any, plan: VersionPlan, source: str) -> Any:
    """One version over the REST API. Its model files are already uploaded, so it is READY
    at once: no polling for its status (MLflow's default waits with a GET per version)."""
    return client.create_model_version(
        plan.name, source, plan.run_id, plan.tags, await_creation_for=0
    )


def _create_model(client: Any, plan: VersionPlan) -> None:
    """A product's registered model (already there when another writer made it meanwhile)."""
    try:
        client.create_registered_model(
            plan.name, tags=plan.model_tags, description=plan.description
        )
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_ALREADY_EXISTS":
            raise


def _create_version(client: Any, plan: VersionPlan, source: str) -> Any:
    """Create a version, creating its registered model if it vanished or never existed."""
    try:
        return _new_version(client, plan, source)
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise
    _create_model(client, plan)
    return _new_version(client, plan, source)
