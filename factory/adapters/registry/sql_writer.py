"""A fleet-sized registry write: a whole shard's versions in one transaction of MLflow's store.

`MlflowClient` spends 8-10 round trips per product (create version, which first loads the
registered model twice; alias; current-tag; the same for the production copy), ~80 ms each
product on SQLite: on 2 cores that is as much CPU as training. When the registry is a
database (`sqlite://`, `postgresql://`, ...), the same rows are written with MLflow's own
ORM classes and validators in one session per shard (~3 ms per product). A tracking server
(`http://`) takes the client's per-call path in `rest_writer`.
"""

from __future__ import annotations

import json
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy
from mlflow.entities.model_registry.model_version_stages import (
    STAGE_DELETED_INTERNAL,
    STAGE_NONE,
)
from mlflow.entities.model_registry.model_version_status import ModelVersionStatus
from mlflow.exceptions import MlflowException
from mlflow.store.model_registry.dbmodels.models import (
    SqlModelVersion,
    SqlModelVersionTag,
    SqlRegisteredModel,
    SqlRegisteredModelAlias,
    SqlRegisteredModelTag,
)
from mlflow.store.model_registry.sqlalchemy_store import SqlAlchemyStore
from mlflow.utils.time import get_current_time_millis
from mlflow.utils.validation import (
    _validate_model_alias_name,
    _validate_model_alias_name_reserved,
    _validate_model_name,
    _validate_model_version_tag,
    _validate_registered_model_tag,
)
from tenacity import (
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    wait_incrementing,
    wait_random,
)

from factory.adapters.registry.names import TRAIN_KEY_TAG
from factory.adapters.registry.schema import is_unique_violation

READY = ModelVersionStatus.to_string(ModelVersionStatus.READY)
RETRIES = 8  # writers creating the same new model race; the losers retry


@dataclass(frozen=True)
class VersionPlan:
    """One model version to create, the alias to point at it and the tags to record."""

    name: str
    source: str
    run_id: str
    tags: dict[str, str]
    alias: str
    current_tag: str  # registered-model tag key that records the current version
    current: dict[str, Any]  # its JSON body, without the version (filled in when written)
    train_key: str = ""  # a version already made from this key is reused, never duplicated
    model_tags: dict[str, str] = field(default_factory=dict)  # on the model's creation
    description: str = ""
    copy_of: VersionPlan | None = None  # a production copy of this (staging) plan's version
    storage_location: str = ""  # where a `models:/` source's files are (else: the source)


def validate_plan(plan: VersionPlan) -> None:
    """The checks MLflow's own store applies to the same calls."""
    _validate_model_name(plan.name)
    _validate_model_alias_name(plan.alias)
    _validate_model_alias_name_reserved(plan.alias)
    for k, v in plan.tags.items():
        _validate_model_version_tag(k, v)
    for k, v in plan.model_tags.items():
        _validate_registered_model_tag(k, v)
    _validate_registered_model_tag(plan.current_tag, current_value(plan, 2**31 - 1))


def current_value(plan: VersionPlan, version: int) -> str:
    """The registered model's current-tag JSON once `version` is its current version."""
    return json.dumps({"version": str(version), **plan.current})


def reusable(
    found: list[tuple[str, str, int]], aliased: set[tuple[str, int]]
) -> dict[tuple[str, str], int]:
    """(model name, training key) -> the version to reuse: the one an alias points to, else
    the oldest (`found`: name, key, version of every keyed version of these models)."""
    out: dict[tuple[str, str], int] = {}
    for name, key, version in sorted(found, key=lambda r: ((r[0], r[2]) not in aliased, r[2])):
        out.setdefault((name, key), version)
    return out


def write_versions(store: SqlAlchemyStore, plans: list[VersionPlan]) -> dict[str, int]:
    """Create every planned version (copies after their originals) in one transaction.

    A version already made from a plan's training key is reused (its alias and current tag
    are set again), so retries, reruns and concurrent runs never duplicate a version. Returns
    the version number by registered model name. Retried from scratch when a concurrent
    writer took a version number or model name first.
    """
    for plan in plans:
        validate_plan(plan)
    for attempt in Retrying(
        retry=retry_if_exception(_raced),
        stop=stop_after_attempt(RETRIES),
        wait=wait_random(0, 0.05) + wait_incrementing(0, 0.05),  # jitter that grows per attempt
        reraise=True,
    ):
        with attempt, store.ManagedSessionMaker(read_only=False) as session:
            return _write(store, session, plans)
    raise AssertionError("unreachable")


def _raced(exc: BaseException) -> bool:
    """A concurrent writer took a version number or model name first: a unique-key clash
    (wrapped in an MlflowException by the session). Any other integrity error (a column a
    newer MLflow requires, say) is a bug to see at once, never retried."""
    return isinstance(exc, MlflowException) and is_unique_violation(exc)


def _write(store: SqlAlchemyStore, session: Any, plans: list[VersionPlan]) -> dict[str, int]:
    """Core executemany inserts in foreign-key order (ORM objects cost ~15 ms a product)."""
    now = get_current_time_millis()
    ws = store._get_active_workspace()
    names = [p.name for p in plans]
    # Row locks on the models already there serialise writers of the same products on a
    # server database; two writers creating the same new model race and one retries.
    existing = {n for (n,) in _select(session, SqlRegisteredModel, ws, names, "name", lock=True)}
    latest = dict(
        session.query(SqlModelVersion.name, sqlalchemy.func.max(SqlModelVersion.version))
        .filter(SqlModelVersion.workspace == ws, SqlModelVersion.name.in_(names))
        .group_by(SqlModelVersion.name)
    )
    alias_rows = _select(session, SqlRegisteredModelAlias, ws, names, "name", "alias", "version")
    aliases = {(n, a) for n, a, _ in alias_rows}
    reuse = reusable(_keyed(session, ws, names), {(n, int(v)) for n, _, v in alias_rows})
    tagged = set(_select(session, SqlRegisteredModelTag, ws, names, "name", "key"))
    rows: dict[str, list[dict[str, Any]]] = {
        k: [] for k in ("models", "model_tags", "versions", "version_tags", "aliases", "tags")
    }
    updates: dict[str, list[dict[str, Any]]] = {"aliases": [], "tags": []}
    created: dict[str, int] = {}
    for plan in plans:
        key = {"workspace": ws, "name": plan.name}
        if plan.name not in existing:
            rows["models"].append(
                {
                    **key,
                    "creation_time": now,
                    "last_updated_time": now,
                    "description": plan.description,
                }
            )
            rows["model_tags"] += [
                {**key, "key": k, "value": v} for k, v in plan.model_tags.items()
            ]
        version = reuse.get((plan.name, plan.train_key)) if plan.train_key else None
        if version is None:
            version = latest[plan.name] = (latest.get(plan.name) or 0) + 1
            _add_version(rows, plan, key, version, now, created)
        created[plan.name] = version
        vkey = {**key, "version": version}
        alias = {**vkey, "alias": plan.alias}
        target = "aliases" if (plan.name, plan.alias) in aliases else None
        (updates if target else rows)["aliases"].append(alias)
        tag = {**key, "key": plan.current_tag, "value": current_value(plan, version)}
        target = "tags" if (plan.name, plan.current_tag) in tagged else None
        (updates if target else rows)["tags"].append(tag)
    tables: dict[str, Any] = {
        "models": SqlRegisteredModel,
        "model_tags": SqlRegisteredModelTag,
        "versions": SqlModelVersion,
        "version_tags": SqlModelVersionTag,
        "aliases": SqlRegisteredModelAlias,
        "tags": SqlRegisteredModelTag,
    }
    for kind, table in tables.items():
        if rows[kind]:
            session.execute(sqlalchemy.insert(table.__table__), rows[kind])
    _update(session, SqlRegisteredModelAlias, ("name", "alias"), "version", updates["aliases"])
    _update(session, SqlRegisteredModelTag, ("name", "key"), "value", updates["tags"])
    if existing:
        session.execute(
            sqlalchemy.update(SqlRegisteredModel.__table__)
            .where(SqlRegisteredModel.workspace == ws, SqlRegisteredModel.name.in_(existing))
            .values(last_updated_time=now)
        )
    return created


def _keyed(session: Any, ws: str, names: list[str]) -> list[tuple[str, str, int]]:
    """(name, training key, version) of every keyed version of these models (not deleted:
    MLflow keeps a deleted version's row and tags, marked with an internal stage)."""
    t, v = SqlModelVersionTag.__table__, SqlModelVersion.__table__
    query = (
        sqlalchemy.select(t.c.name, t.c.value, t.c.version)
        .join(
            v,
            (v.c.workspace == t.c.workspace)
            & (v.c.name == t.c.name)
            & (v.c.version == t.c.version),
        )
        .where(t.c.workspace == ws, t.c.name.in_(names), t.c.key == TRAIN_KEY_TAG)
        .where(v.c.current_stage != STAGE_DELETED_INTERNAL)
    )
    return [(n, val, int(ver)) for n, val, ver in session.execute(query)]


def _add_version(
    rows: dict[str, list[dict[str, Any]]],
    plan: VersionPlan,
    key: dict[str, str],
    version: int,
    now: int,
    created: dict[str, int],
) -> None:
    """The rows of one new version and its tags (a copy records its original as source)."""
    source, location = plan.source, plan.storage_location or plan.source
    if plan.copy_of is not None:  # what copy_model_version records
        source = f"models:/{plan.copy_of.name}/{created[plan.copy_of.name]}"
        location = plan.copy_of.source
    rows["versions"].append(
        {
            **key,
            "version": version,
            "creation_time": now,
            "last_updated_time": now,
            "source": source,
            "storage_location": location,
            "run_id": plan.run_id,
            "current_stage": STAGE_NONE,
            "status": READY,
        }
    )
    vkey = {**key, "version": version}
    rows["version_tags"] += [{**vkey, "key": k, "value": v} for k, v in plan.tags.items()]


def _update(
    session: Any, table: Any, keys: tuple[str, str], column: str, rows: list[dict[str, Any]]
) -> None:
    """executemany UPDATE of one column, rows matched by workspace and the two key columns."""
    if not rows:
        return
    t = table.__table__
    where = [t.c.workspace == sqlalchemy.bindparam("b_workspace")]
    where += [t.c[k] == sqlalchemy.bindparam(f"b_{k}") for k in keys]
    stmt = sqlalchemy.update(t).where(*where).values({column: sqlalchemy.bindparam("b_value")})
    params = [
        {"b_workspace": r["workspace"], **{f"b_{k}": r[k] for k in keys}, "b_value": r[column]}
        for r in rows
    ]
    session.connection().execute(stmt, params)


def _select(
    session: Any, table: Any, ws: str, names: list[str], *columns: str, lock: bool = False
) -> list[Any]:
    """Some columns of a registry table's rows for these registered models."""
    t = table.__table__
    query = sqlalchemy.select(*(t.c[c] for c in columns))
    query = query.where(t.c.workspace == ws, t.c.name.in_(names)).order_by(t.c.name)
    return list(session.execute(query.with_for_update() if lock else query))


def model_tags(
    store: SqlAlchemyStore,
    name_prefix: str,
    keys: tuple[str, ...],
    names: Collection[str] | None = None,
) -> dict[str, dict[str, str]]:
    """Registered model name -> these tags, for every model whose name starts with the prefix
    (or only the named ones).

    One query: `search_registered_models` also loads every model's aliases and latest
    versions (24 s for 20,000 models on SQLite; this takes well under a second).
    """
    t = SqlRegisteredModelTag.__table__
    query = sqlalchemy.select(t.c.name, t.c.key, t.c.value).where(
        t.c.workspace == store._get_active_workspace(),
        t.c.name.startswith(name_prefix, autoescape=True),
        t.c.key.in_(keys),
    )
    if names is not None:
        query = query.where(t.c.name.in_(list(names)))
    out: dict[str, dict[str, str]] = {}
    with store.ManagedSessionMaker() as session:
        for name, key, value in session.execute(query):
            out.setdefault(name, {})[key] = value
    return out
