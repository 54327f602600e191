"""`factory doctor`: read the registry, find what a crash or an outage left half-done, fix it.

The registry is the source of truth; the status store is brought in line with it (and can be
rebuilt from it). Every train run calls `repair` on the products it touched; the CLI calls it
on the whole fleet. Both hold the training lease, so no registration is in flight meanwhile.
"""

from __future__ import annotations

import json
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy
from mlflow.entities.model_registry.model_version_stages import STAGE_DELETED_INTERNAL
from mlflow.exceptions import MlflowException
from mlflow.store.model_registry.dbmodels.models import (
    SqlModelVersion,
    SqlModelVersionTag,
    SqlRegisteredModelAlias,
)
from mlflow.store.model_registry.sqlalchemy_store import SqlAlchemyStore

from factory.adapters.registry import reading
from factory.adapters.registry.names import (
    CANDIDATE_ALIAS,
    CHAMPION_ALIAS,
    CURRENT_TAG,
    ENVIRONMENT_TAG,
    FAMILY_TAG,
    PRODUCT_TAG,
    PRODUCTION,
    RETIRED_TAG,
    ROLLED_BACK_TAG,
    STAGING,
    TRAIN_KEY_TAG,
)
from factory.adapters.registry.registry import Registry
from factory.adapters.registry.sql_writer import model_tags
from factory.adapters.state import fix_status, read_state
from factory.core.repair import Fix, ModelState, VersionInfo, plan_fixes, status_fixes

ALIASES = {STAGING: CANDIDATE_ALIAS, PRODUCTION: CHAMPION_ALIAS}
VERSION_KEYS = (TRAIN_KEY_TAG, "factory.config", "factory.data_fingerprint", ROLLED_BACK_TAG)
MODEL_KEYS = (PRODUCT_TAG, CURRENT_TAG, FAMILY_TAG, ENVIRONMENT_TAG, RETIRED_TAG)
PAGE = 1000
IN_LIMIT = 2000  # names per query; beyond, the whole prefix is read and filtered here


@dataclass
class DoctorReport:
    """What the doctor found and (unless a dry run) fixed."""

    fixes: list[Fix] = field(default_factory=list)
    runs_closed: list[str] = field(default_factory=list)
    applied: bool = False

    @property
    def healthy(self) -> bool:
        """Nothing needed fixing."""
        return not self.fixes and not self.runs_closed

    def lines(self) -> list[str]:
        """One line per problem."""
        out = [f"{f.product_id}: {f.problem} -> {f.action}" for f in self.fixes]
        return out + [f"MLflow run {r} left RUNNING -> marked KILLED" for r in self.runs_closed]


def repair(
    registry: Registry,
    state_dir: Path,
    promote: bool,
    products: Collection[str] | None = None,
    apply: bool = True,
    environments: Collection[str] | None = None,
) -> DoctorReport:
    """Find and (with `apply`) fix registry and status problems of these products (or all);
    registry fixes only in these `environments` (all by default).

    `promote`: automatic promotion (production follows every staging winner); otherwise a
    production alias is only fixed when missing or dangling, never moved off a version a
    rollback or a manifest sync chose. Retired products get no alias, tag or status fixes.
    Registry fixes come first; the status rows are then compared with the repaired registry.
    """
    report = DoctorReport(applied=apply)
    models = snapshot(registry, products)
    fixable = [m for m in models if environments is None or m.environment in environments]
    fixes = plan_fixes(fixable, ALIASES, PRODUCTION if promote else None, PRODUCTION)
    report.fixes += fixes
    report.runs_closed = running_runs(registry)
    if apply:
        for fix in fixes:
            _apply(registry, fix)
        for run_id in report.runs_closed:
            registry.client.set_terminated(run_id, "KILLED")
        if fixes:
            models = snapshot(registry, products)
    rows = {r["product_id"]: r for r in read_state(state_dir).to_dict("records")}
    if products is not None:
        wanted = set(products)
        rows = {p: r for p, r in rows.items() if p in wanted}
    found = status_fixes(models, rows, ALIASES)
    report.fixes += found
    if apply and found:
        families = {m.product_id: m.family for m in models}
        fix_status(state_dir, {f.product_id: json.loads(f.value or "{}") for f in found}, families)
    return report


def running_runs(registry: Registry) -> list[str]:
    """The factory's MLflow runs still marked RUNNING (none is in flight under the lease)."""
    runs = registry.client.search_runs(
        [registry.experiment_id], "attributes.status = 'RUNNING'", max_results=PAGE
    )
    return [r.info.run_id for r in runs]


def snapshot(registry: Registry, products: Collection[str] | None = None) -> list[ModelState]:
    """Every factory model (or these products' models) with its versions, aliases and tags."""
    prefix = f"{registry.prefix}."
    names = None
    if products is not None:
        names = [registry.name(env, p) for p in products for env in (STAGING, PRODUCTION)]
    store = reading.sql_store(registry.client)
    if store is None:
        return _from_server(registry, prefix, names)
    if names is not None and len(names) > IN_LIMIT:  # read all, keep these (no huge IN list)
        wanted = set(names)
        return [m for m in _from_database(store, prefix, None) if m.name in wanted]
    return _from_database(store, prefix, names)


def _state(name: str, prefix: str, tags: dict[str, str]) -> ModelState | None:
    if PRODUCT_TAG not in tags:
        return None
    env = tags.get(ENVIRONMENT_TAG) or name[len(prefix) :].split(".", 1)[0]
    current = json.loads(tags[CURRENT_TAG]) if CURRENT_TAG in tags else None
    family = tags.get(FAMILY_TAG, "")
    return ModelState(name, tags[PRODUCT_TAG], env, [], {}, current, family, RETIRED_TAG in tags)


def _version(version: int, tags: dict[str, str]) -> VersionInfo:
    return VersionInfo(
        version,
        tags.get(TRAIN_KEY_TAG),
        tags.get("factory.config"),
        tags.get("factory.data_fingerprint"),
        ROLLED_BACK_TAG in tags,
    )


def _from_database(
    store: SqlAlchemyStore, prefix: str, names: list[str] | None
) -> list[ModelState]:
    """A few queries on the registry database (seconds for tens of thousands of models)."""
    models = {
        n: m
        for n, tags in model_tags(store, prefix, MODEL_KEYS, names).items()
        if (m := _state(n, prefix, tags)) is not None
    }
    ws = store._get_active_workspace()

    def rows(table: Any, *columns: str, where: Any = None) -> list[Any]:
        t = table.__table__
        query = sqlalchemy.select(*(t.c[c] for c in columns)).where(
            t.c.workspace == ws, t.c.name.startswith(prefix, autoescape=True)
        )
        if names is not None:
            query = query.where(t.c.name.in_(names))
        if where is not None:
            query = query.where(where(t))
        with store.ManagedSessionMaker() as session:
            return list(session.execute(query))

    tags: dict[tuple[str, int], dict[str, str]] = {}
    for n, v, k, value in rows(
        SqlModelVersionTag,
        "name",
        "version",
        "key",
        "value",
        where=lambda t: t.c.key.in_(VERSION_KEYS),
    ):
        tags.setdefault((n, int(v)), {})[k] = value
    live = lambda t: t.c.current_stage != STAGE_DELETED_INTERNAL  # noqa: E731
    for n, v in rows(SqlModelVersion, "name", "version", where=live):
        if n in models:
            models[n].versions.append(_version(int(v), tags.get((n, int(v)), {})))
    for n, alias, v in rows(SqlRegisteredModelAlias, "name", "alias", "version"):
        if n in models:
            models[n].aliases[alias] = int(v)
    return sorted(models.values(), key=lambda m: m.name)


def _from_server(registry: Registry, prefix: str, names: list[str] | None) -> list[ModelState]:
    """Paged searches over a tracking server (or model by model for a few products)."""
    client = registry.client
    found: list[Any] = []
    if names is not None and len(names) <= reading.FEW:
        for name in names:
            try:
                found.append(client.get_registered_model(name))
            except MlflowException as exc:
                if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
                    raise
    else:
        found = reading.pages(
            lambda token: client.search_registered_models(
                f"name LIKE '{prefix}%'", max_results=PAGE, page_token=token
            )
        )
        if names is not None:
            found = [rm for rm in found if rm.name in set(names)]
    models = {}
    for rm in found:
        state = _state(rm.name, prefix, dict(rm.tags or {}))
        if state is not None:
            state.aliases = {a: int(v) for a, v in (rm.aliases or {}).items()}
            models[rm.name] = state
    for mv in reading.pages(
        lambda token: client.search_model_versions(
            f"name LIKE '{prefix}%'", max_results=10_000, page_token=token
        )
    ):
        if mv.name in models:
            models[mv.name].versions.append(_version(int(mv.version), dict(mv.tags or {})))
    return sorted(models.values(), key=lambda m: m.name)


def _apply(registry: Registry, fix: Fix) -> None:
    client = registry.client
    env = STAGING if fix.model == registry.name(STAGING, fix.product_id) else PRODUCTION
    if fix.action == "delete-version":
        client.delete_model_version(fix.model, str(fix.version))
    elif fix.action == "set-alias":
        client.set_registered_model_alias(fix.model, ALIASES[env], str(fix.version))
    elif fix.action == "set-current":
        client.set_registered_model_tag(fix.model, CURRENT_TAG, fix.value or "{}")
    elif fix.action == "copy-to-production":
        _copy(registry, fix)


def _copy(registry: Registry, fix: Fix) -> None:
    """MLflow's copy of a staging version into the product's production model, then its alias
    and current tag (the model is created first with the factory's model tags)."""
    client = registry.client
    name = registry.name(PRODUCTION, fix.product_id)
    staged = client.get_model_version(fix.model, str(fix.version))
    try:
        client.create_registered_model(
            name,
            tags={
                PRODUCT_TAG: fix.product_id,
                FAMILY_TAG: staged.tags.get(FAMILY_TAG, ""),
                ENVIRONMENT_TAG: PRODUCTION,
            },
        )
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    mv = client.copy_model_version(f"models:/{fix.model}/{fix.version}", name)
    client.set_registered_model_alias(name, CHAMPION_ALIAS, str(mv.version))
    body = {
        "version": str(mv.version),
        "config": staged.tags.get("factory.config"),
        "data_fingerprint": staged.tags.get("factory.data_fingerprint"),
    }
    client.set_registered_model_tag(name, CURRENT_TAG, json.dumps(body))
