"""Alias and tag changes for many products at once: one transaction on a database store (a
thousand products' rollback in well under a second), MLflow's client calls on a tracking
server (in parallel, `registry_threads` at a time)."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import sqlalchemy
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from mlflow.store.model_registry.dbmodels.models import (
    SqlModelVersionTag,
    SqlRegisteredModel,
    SqlRegisteredModelAlias,
    SqlRegisteredModelTag,
)
from mlflow.store.model_registry.sqlalchemy_store import SqlAlchemyStore
from mlflow.utils.time import get_current_time_millis

from factory.adapters.registry import reading


@dataclass
class RegistryOps:
    """One lifecycle action's registry changes."""

    set_aliases: list[tuple[str, str, int]] = field(default_factory=list)  # name, alias, version
    delete_aliases: list[tuple[str, str]] = field(default_factory=list)  # name, alias
    set_model_tags: list[tuple[str, str, str]] = field(default_factory=list)  # name, key, value
    delete_model_tags: list[tuple[str, str]] = field(default_factory=list)  # name, key
    set_version_tags: list[tuple[str, int, str, str]] = field(default_factory=list)
    delete_version_tags: list[tuple[str, int, str]] = field(default_factory=list)

    def __bool__(self) -> bool:
        return any(getattr(self, f) for f in self.__dataclass_fields__)


def apply_ops(client: MlflowClient, ops: RegistryOps, threads: int = 4) -> None:
    """Make every change: all or nothing on a database store, call by call on a server."""
    if not ops:
        return
    store = reading.sql_store(client)
    if store is not None:
        _in_one_transaction(store, ops)
    else:
        _by_calls(client, ops, threads)


def _in_one_transaction(store: SqlAlchemyStore, ops: RegistryOps) -> None:
    ws = store._get_active_workspace()
    alias, mtag, vtag = (
        SqlRegisteredModelAlias.__table__,
        SqlRegisteredModelTag.__table__,
        SqlModelVersionTag.__table__,
    )
    drop_alias = [(n, a) for n, a in ops.delete_aliases] + [(n, a) for n, a, _ in ops.set_aliases]
    drop_mtag = [(n, k) for n, k in ops.delete_model_tags] + [
        (n, k) for n, k, _ in ops.set_model_tags
    ]
    drop_vtag = [(n, v, k) for n, v, k in ops.delete_version_tags]
    drop_vtag += [(n, v, k) for n, v, k, _ in ops.set_version_tags]
    with store.ManagedSessionMaker(read_only=False) as session:
        conn = session.connection()
        _delete(conn, alias, ("name", "alias"), ws, drop_alias)
        _delete(conn, mtag, ("name", "key"), ws, drop_mtag)
        _delete(conn, vtag, ("name", "version", "key"), ws, drop_vtag)
        rows = [
            {"workspace": ws, "name": n, "alias": a, "version": v} for n, a, v in ops.set_aliases
        ]
        if rows:
            conn.execute(sqlalchemy.insert(alias), rows)
        rows = [
            {"workspace": ws, "name": n, "key": k, "value": v} for n, k, v in ops.set_model_tags
        ]
        if rows:
            conn.execute(sqlalchemy.insert(mtag), rows)
        rows = [
            {"workspace": ws, "name": n, "version": v, "key": k, "value": val}
            for n, v, k, val in ops.set_version_tags
        ]
        if rows:
            conn.execute(sqlalchemy.insert(vtag), rows)
        touched = {n for n, *_ in drop_alias + drop_mtag + drop_vtag}
        model = SqlRegisteredModel.__table__
        for start in range(0, len(touched), 1000):
            part = sorted(touched)[start : start + 1000]
            conn.execute(
                sqlalchemy.update(model)
                .where(model.c.workspace == ws, model.c.name.in_(part))
                .values(last_updated_time=get_current_time_millis())
            )


def _delete(conn: Any, table: Any, keys: tuple[str, ...], ws: str, rows: list[tuple]) -> None:
    """executemany DELETE of rows matched by workspace and these key columns."""
    if not rows:
        return
    where = [table.c.workspace == ws] + [table.c[k] == sqlalchemy.bindparam(f"b_{k}") for k in keys]
    conn.execute(
        sqlalchemy.delete(table).where(*where),
        [{f"b_{k}": value for k, value in zip(keys, row, strict=True)} for row in rows],
    )


def _by_calls(client: MlflowClient, ops: RegistryOps, threads: int) -> None:
    c = reading.registry_calls(client)
    calls: list[Callable[[], Any]] = []
    calls += [partial(c.set_registered_model_tag, n, k, v) for n, k, v in ops.set_model_tags]
    calls += [
        partial(c.set_model_version_tag, n, str(v), k, val) for n, v, k, val in ops.set_version_tags
    ]
    calls += [partial(c.set_registered_model_alias, n, a, str(v)) for n, a, v in ops.set_aliases]
    calls += [partial(_gone, c.delete_registered_model_alias, n, a) for n, a in ops.delete_aliases]
    calls += [partial(_gone, c.delete_registered_model_tag, n, k) for n, k in ops.delete_model_tags]
    calls += [
        partial(_gone, c.delete_model_version_tag, n, str(v), k)
        for n, v, k in ops.delete_version_tags
    ]
    with ThreadPoolExecutor(max(1, threads)) as pool:
        for future in [pool.submit(call) for call in calls]:
            future.result()


def _gone(delete: Callable[..., Any], *args: str) -> None:
    """A delete of something already absent is done."""
    try:
        delete(*args)
    except MlflowException as exc:
        if exc.error_code not in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            raise
