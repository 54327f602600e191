"""Guards for writing MLflow's registry tables directly: schema revision and unique-key clashes.

`sql_writer` inserts rows with MLflow's ORM tables, so it is only safe on a database whose
alembic revision is the one the installed MLflow's ORM describes; and only a unique or
primary-key clash means a concurrent writer won a race (NOT NULL, foreign-key and check
violations are bugs, not races).
"""

from __future__ import annotations

import functools
import sqlite3
from collections.abc import Iterator
from typing import TypedDict

import mlflow
import sqlalchemy
from alembic.migration import MigrationContext
from alembic.util import CommandError
from mlflow.store.db.utils import _get_latest_schema_revision
from mlflow.store.model_registry.dbmodels.models import (
    SqlModelVersion,
    SqlModelVersionTag,
    SqlRegisteredModel,
    SqlRegisteredModelAlias,
    SqlRegisteredModelTag,
)
from mlflow.store.model_registry.sqlalchemy_store import SqlAlchemyStore

PG_UNIQUE_VIOLATION = "23505"  # SQLSTATE unique_violation, primary keys included
SQLITE_UNIQUE = "UNIQUE constraint failed"  # SQLite's message for unique and primary keys

# The tables `sql_writer` inserts into, in foreign-key order.
WRITTEN_TABLES: tuple[sqlalchemy.Table, ...] = tuple(
    orm.__table__
    for orm in (
        SqlRegisteredModel,
        SqlRegisteredModelTag,
        SqlModelVersion,
        SqlModelVersionTag,
        SqlRegisteredModelAlias,
    )
)


class TableShape(TypedDict):
    """What an insert relies on: columns, primary key, unique and foreign keys of one table."""

    columns: dict[str, str]  # name -> "primary key" | "not null" | "null"
    primary_key: tuple[str, ...]
    unique: list[tuple[str, ...]]
    foreign_keys: list[str]  # "col, col -> table"


@functools.cache
def head_revision() -> str:
    """The alembic revision the installed MLflow's tables are at (its migrations' one head)."""
    return str(_get_latest_schema_revision())


def database_revision(engine: sqlalchemy.Engine) -> str | None:
    """The alembic revision recorded in the database (None when it records none)."""
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def schema_mismatch(store: SqlAlchemyStore) -> str | None:
    """None when the registry database is at the installed MLflow's head revision, else why not."""
    expected = head_revision()
    try:
        found = database_revision(store.engine)
    except (sqlalchemy.exc.SQLAlchemyError, CommandError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        return f"cannot read the registry database's alembic revision: {reason}"
    if found == expected:
        return None
    return (
        f"registry database at alembic revision {found}, "
        f"installed MLflow {mlflow.__version__} expects {expected}"
    )


def is_unique_violation(exc: BaseException) -> bool:
    """Whether the error, or one it was raised from, is a unique or primary-key clash."""
    return any(_is_unique(e) for e in _causes(exc))


def _causes(exc: BaseException) -> Iterator[BaseException]:
    """The error, the errors it was raised from and, for SQLAlchemy's, the driver's error."""
    seen: set[int] = set()
    todo: list[object] = [exc]
    while todo:
        e = todo.pop()
        if isinstance(e, BaseException) and id(e) not in seen:
            seen.add(id(e))
            yield e
            todo += [e.__cause__, getattr(e, "orig", None)]


def _is_unique(exc: BaseException) -> bool:
    """A driver's own unique-violation error: SQLite's message, PostgreSQL's SQLSTATE."""
    if isinstance(exc, sqlite3.IntegrityError):
        return str(exc).startswith(SQLITE_UNIQUE)
    code = getattr(exc, "pgcode", None) or getattr(exc, "sqlstate", None)  # psycopg2, psycopg 3
    return code == PG_UNIQUE_VIOLATION


def table_shape(table: sqlalchemy.Table) -> TableShape:
    """The columns and keys of a table as its SQLAlchemy metadata declares them."""
    return TableShape(
        columns={c.name: _column_kind(c) for c in table.columns},
        primary_key=tuple(c.name for c in table.primary_key.columns),
        unique=sorted(_unique_keys(table)),
        foreign_keys=sorted(
            f"{', '.join(c.name for c in fk.columns)} -> {fk.referred_table.name}"
            for fk in table.foreign_key_constraints
        ),
    )


def _column_kind(column: sqlalchemy.Column[object]) -> str:
    """Primary key, not null or null."""
    if column.primary_key:
        return "primary key"
    return "null" if column.nullable else "not null"


def _unique_keys(table: sqlalchemy.Table) -> set[tuple[str, ...]]:
    """Column names of every unique constraint and unique index."""
    keys = {
        tuple(c.name for c in k.columns)
        for k in table.constraints
        if isinstance(k, sqlalchemy.UniqueConstraint)
    }
    return keys | {tuple(c.name for c in i.columns) for i in table.indexes if i.unique}
