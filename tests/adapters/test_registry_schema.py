"""The direct registry writer's guards: schema revision, table shapes, unique-key clashes."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mlflow
import pytest
import sqlalchemy
from alembic.script import ScriptDirectory
from mlflow import MlflowClient
from mlflow.store.db.utils import _get_alembic_config
from mlflow.store.model_registry.dbmodels.models import SqlModelVersion, SqlRegisteredModel
from mlflow.store.model_registry.sqlalchemy_store import SqlAlchemyStore

from factory.adapters.registry import reading
from factory.adapters.registry.registry import Registry
from factory.adapters.registry.schema import (
    WRITTEN_TABLES,
    head_revision,
    is_unique_violation,
    schema_mismatch,
    table_shape,
)
from factory.settings import Settings
from tests.support.postgres import temporary_database

PG = "root@127.0.0.1:5432"

# What sql_writer's inserts rely on. An MLflow upgrade that changes this (a new NOT NULL
# column, a different key) must be reviewed against sql_writer before the pin is updated.
EXPECTED_SHAPES: dict[str, Any] = {
    "registered_models": {
        "columns": {
            "workspace": "primary key",
            "name": "primary key",
            "creation_time": "null",
            "last_updated_time": "null",
            "description": "null",
        },
        "primary_key": ("workspace", "name"),
        "unique": [],
        "foreign_keys": [],
    },
    "registered_model_tags": {
        "columns": {
            "workspace": "primary key",
            "name": "primary key",
            "key": "primary key",
            "value": "null",
        },
        "primary_key": ("workspace", "key", "name"),
        "unique": [],
        "foreign_keys": ["workspace, name -> registered_models"],
    },
    "model_versions": {
        "columns": {
            "workspace": "primary key",
            "name": "primary key",
            "version": "primary key",
            "creation_time": "null",
            "last_updated_time": "null",
            "description": "null",
            "user_id": "null",
            "current_stage": "null",
            "source": "null",
            "storage_location": "null",
            "run_id": "null",
            "run_link": "null",
            "status": "null",
            "status_message": "null",
        },
        "primary_key": ("workspace", "name", "version"),
        "unique": [],
        "foreign_keys": ["workspace, name -> registered_models"],
    },
    "model_version_tags": {
        "columns": {
            "workspace": "primary key",
            "name": "primary key",
            "version": "primary key",
            "key": "primary key",
            "value": "null",
        },
        "primary_key": ("workspace", "key", "name", "version"),
        "unique": [],
        "foreign_keys": ["workspace, name, version -> model_versions"],
    },
    "registered_model_aliases": {
        "columns": {
            "workspace": "primary key",
            "name": "primary key",
            "alias": "primary key",
            "version": "not null",
        },
        "primary_key": ("workspace", "name", "alias"),
        "unique": [],
        "foreign_keys": ["workspace, name -> registered_models"],
    },
}


def sqlite_store(path: Path) -> SqlAlchemyStore:
    """MLflow's registry store on a new SQLite file, migrated to head by MLflow itself."""
    uri = f"sqlite:///{path}"
    return MlflowClient(uri, uri)._get_registry_client().store


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def store(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[SqlAlchemyStore]:
    """One registry database per backend for the module (tests leave it at head)."""
    if request.param == "sqlite":
        yield sqlite_store(tmp_path_factory.mktemp("registry") / "m.db")
        return
    with temporary_database("factory_schema") as name:
        uri = f"postgresql+psycopg2://{PG}/{name}"
        pg = MlflowClient(uri, uri)._get_registry_client().store
        yield pg
        pg.engine.dispose()


def stamp(store: SqlAlchemyStore, revision: str) -> None:
    """Record another revision in the database's alembic_version row."""
    with store.engine.begin() as conn:
        conn.execute(
            sqlalchemy.text("UPDATE alembic_version SET version_num = :r"), {"r": revision}
        )


def previous_revision() -> str:
    """The revision before the installed MLflow's head."""
    scripts = ScriptDirectory.from_config(_get_alembic_config(db_url=""))
    down = scripts.get_revision(head_revision()).down_revision
    assert isinstance(down, str), down  # a merge revision would need a choice here
    return down


def insert_version(store: SqlAlchemyStore, row: dict[str, Any]) -> None:
    """One model_versions row inserted the way sql_writer does, in its own transaction."""
    with store.ManagedSessionMaker(read_only=False) as session:
        session.execute(sqlalchemy.insert(SqlModelVersion.__table__), [row])


def test_a_database_at_head_matches(store: SqlAlchemyStore) -> None:
    assert schema_mismatch(store) is None


def test_an_older_revision_is_named_with_the_expected_one(store: SqlAlchemyStore) -> None:
    old, head = previous_revision(), head_revision()
    stamp(store, old)
    try:
        message = schema_mismatch(store)
    finally:
        stamp(store, head)
    assert message == (
        f"registry database at alembic revision {old}, "
        f"installed MLflow {mlflow.__version__} expects {head}"
    )
    assert schema_mismatch(store) is None  # read afresh, not cached


def test_an_unreadable_database_is_a_mismatch_not_an_error(tmp_path: Path) -> None:
    path = tmp_path / "m.db"
    store = sqlite_store(path)
    store.engine.dispose()
    path.write_bytes(b"not a database" * 512)
    message = schema_mismatch(store)
    store.engine.dispose()
    assert message is not None
    assert message.startswith("cannot read the registry database's alembic revision")
    assert "file is not a database" in message


def test_written_tables_keep_the_shape_the_writer_relies_on() -> None:
    assert {t.name: table_shape(t) for t in WRITTEN_TABLES} == EXPECTED_SHAPES


def test_a_duplicate_version_is_a_unique_violation(store: SqlAlchemyStore) -> None:
    with store.ManagedSessionMaker(read_only=False) as session:
        session.execute(sqlalchemy.insert(SqlRegisteredModel.__table__), [{"name": "dup"}])
    insert_version(store, {"name": "dup", "version": 1})
    with pytest.raises(mlflow.MlflowException) as raised:
        insert_version(store, {"name": "dup", "version": 1})
    assert is_unique_violation(raised.value)


@pytest.mark.parametrize(
    "row",
    [{"name": None, "version": 1}, {"name": "no-such-model", "version": 1}],
    ids=["not-null", "foreign-key"],
)
def test_other_integrity_errors_are_not_unique_violations(
    store: SqlAlchemyStore, row: dict[str, Any]
) -> None:
    with pytest.raises(mlflow.MlflowException) as raised:
        insert_version(store, row)
    assert isinstance(raised.value.__cause__, sqlalchemy.exc.IntegrityError)
    assert not is_unique_violation(raised.value)


def test_a_plain_error_is_not_a_unique_violation() -> None:
    assert not is_unique_violation(ValueError("UNIQUE constraint failed"))


def test_a_registry_at_another_revision_registers_through_the_client(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = Settings(home=tmp_path)
    registry = Registry(settings)
    store = reading.sql_store(registry.client)
    assert store is not None and registry._fast_store is store  # at head: the fast path
    stamp(store, previous_revision())
    with caplog.at_level(logging.WARNING):
        assert Registry(settings)._fast_store is None
    assert "registering through MLflow's client calls instead" in caplog.text
