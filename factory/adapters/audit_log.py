"""The audit trail in a database table (SQLite by default, PostgreSQL when configured).

Appending reads the chain's head and inserts the next record in one transaction that holds the
database's write lock (SQLite `BEGIN IMMEDIATE`, a PostgreSQL transaction advisory lock), so
threads and processes appending at once never fork the chain; the primary key on `seq` is the
last line of defence. Each action is also announced as the Prefect event
`factory.model.<action>`; the record, not the event, is the source of truth.
"""

from __future__ import annotations

import contextlib
import getpass
import json
import logging
import os
import socket
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from factory.adapters.events import MAX_PRODUCTS_PER_EVENT
from factory.core.audit import GENESIS, AuditEntry, AuditRecord, seal, verify_chain

logger = logging.getLogger(__name__)

EVENT_PREFIX = "factory.model."
SQLITE_BUSY_TIMEOUT_S = 60.0
# pg_advisory_xact_lock key of the audit trail: the bytes "factaudt" as a signed 64-bit number
PG_LOCK_KEY = int.from_bytes(b"factaudt", "big", signed=True)
_WRITE = "factory_audit_write"  # execution option: this SQLite transaction takes the write lock

metadata = sa.MetaData()
audit_table = sa.Table(
    "factory_audit",
    metadata,
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("at", sa.DateTime(timezone=True), nullable=False, index=True),
    sa.Column("action", sa.String(16), nullable=False),
    sa.Column("actor", sa.Text, nullable=False),
    sa.Column("products", sa.Text, nullable=False),
    sa.Column("versions", sa.Text, nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("batch", sa.Text, nullable=True, index=True),
    sa.Column("flow_run_id", sa.Text, nullable=True),
    sa.Column("flow_run_url", sa.Text, nullable=True),
    sa.Column("detail", sa.Text, nullable=False),
    sa.Column("prev_hash", sa.String(64), nullable=False),
    sa.Column("hash", sa.String(64), nullable=False),
)
products_table = sa.Table(
    "factory_audit_products",
    metadata,
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("product_id", sa.Text, primary_key=True),
    sa.Index("ix_factory_audit_products_product_id", "product_id"),
)
_JSON_COLUMNS = ("products", "versions", "detail")


class AuditLog:
    """The hash-chained audit trail stored behind one SQLAlchemy URL."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._engine = _engine(url)
        self._ready = False
        self._lock = threading.Lock()

    def append(self, entry: AuditEntry) -> AuditRecord:
        """Seal `entry` as the record after the current head and store it (atomically)."""
        self._ensure_tables()
        with self._write() as conn:
            head = conn.execute(
                sa.select(audit_table.c.seq, audit_table.c.hash)
                .order_by(audit_table.c.seq.desc())
                .limit(1)
            ).first()
            seq, prev_hash = (head.seq + 1, head.hash) if head else (1, GENESIS)
            record = seal(entry, seq, datetime.now(UTC), prev_hash)
            conn.execute(audit_table.insert().values(_row(record)))
            products = sorted(set(record.products))
            if products:
                conn.execute(
                    products_table.insert(), [{"seq": seq, "product_id": p} for p in products]
                )
        return record

    def records(
        self,
        product: str | None = None,
        since: datetime | None = None,
        action: str | None = None,
        batch: str | None = None,
    ) -> list[AuditRecord]:
        """The records that match every filter given, in seq order."""
        query = sa.select(audit_table).order_by(audit_table.c.seq)
        if product is not None:
            listed = sa.select(products_table.c.seq).where(products_table.c.product_id == product)
            query = query.where(audit_table.c.seq.in_(listed))
        if since is not None:
            at = since if since.tzinfo else since.replace(tzinfo=UTC)
            query = query.where(audit_table.c.at >= at.astimezone(UTC))
        if action is not None:
            query = query.where(audit_table.c.action == action)
        if batch is not None:
            query = query.where(audit_table.c.batch == batch)
        return self._read(query)

    def changed_since(self, seq: int | None) -> tuple[int, set[str]]:
        """(the latest seq, the products named by records after `seq`): a change feed for
        readers that cache what the registry says (None: only the latest seq)."""
        self._ensure_tables()
        with self._engine.connect() as conn:
            latest = conn.execute(sa.select(sa.func.max(audit_table.c.seq))).scalar() or 0
            if seq is None or latest <= seq:
                return latest, set()
            named = sa.select(products_table.c.product_id).where(
                products_table.c.seq > seq, products_table.c.seq <= latest
            )
            return latest, {row.product_id for row in conn.execute(named)}

    def all_records(self) -> list[AuditRecord]:
        """Every stored record in seq order."""
        return self.records()

    def verify(self) -> list[str]:
        """Every break in the stored chain (and in its product index), one line each."""
        records = self.all_records()
        return verify_chain(records) + self._index_problems(records)

    def _index_problems(self, records: list[AuditRecord]) -> list[str]:
        """Records whose product index (what `records(product=...)` searches) differs."""
        indexed: dict[int, set[str]] = {}
        with self._engine.connect() as conn:
            for seq, product in conn.execute(sa.select(products_table)):
                indexed.setdefault(seq, set()).add(product)
        problems = [
            f"record {r.seq}: product index differs from the record"
            for r in records
            if indexed.pop(r.seq, set()) != set(r.products)
        ]
        return problems + [f"product index names record {seq}, which is missing" for seq in indexed]

    def _read(self, query: sa.Select[Any]) -> list[AuditRecord]:
        self._ensure_tables()
        with self._engine.connect() as conn:
            return [_record(row._mapping) for row in conn.execute(query)]

    def _ensure_tables(self) -> None:
        """Create the tables on first use (under the write lock: other processes may race)."""
        with self._lock:
            if self._ready:
                return
            if self._engine.dialect.name == "sqlite":
                _sqlite_folder(self._engine)
            with self._write() as conn:
                metadata.create_all(conn)
            self._ready = True

    @contextlib.contextmanager
    def _write(self) -> Iterator[Connection]:
        """A transaction holding the trail's write lock until it commits."""
        with self._engine.connect() as conn:
            conn.execution_options(**{_WRITE: True})
            with conn.begin():
                if conn.dialect.name == "postgresql":
                    conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": PG_LOCK_KEY})
                yield conn


def _engine(url: str) -> Engine:
    """An engine without a pool (safe across forks); SQLite transactions begin explicitly."""
    parsed = sa.make_url(url)
    if parsed.drivername in ("postgres", "postgresql+psycopg") and not _installed("psycopg"):
        parsed = parsed.set(drivername="postgresql+psycopg2")  # the driver the project installs
    if not parsed.drivername.startswith("sqlite"):
        return sa.create_engine(parsed, poolclass=sa.pool.NullPool)
    memory = parsed.database in (None, "", ":memory:")
    engine = sa.create_engine(
        parsed,
        poolclass=sa.pool.StaticPool if memory else sa.pool.NullPool,
        connect_args={"timeout": SQLITE_BUSY_TIMEOUT_S, "check_same_thread": False},
    )

    # SQLAlchemy's documented pattern: pysqlite leaves transactions to us, and a writer's
    # transaction starts with BEGIN IMMEDIATE so it holds the write lock before reading the head.
    @sa.event.listens_for(engine, "connect")
    def _no_implicit_transactions(dbapi_connection: Any, _: Any) -> None:
        dbapi_connection.isolation_level = None

    @sa.event.listens_for(engine, "begin")
    def _begin(conn: Connection) -> None:
        write = conn.get_execution_options().get(_WRITE, False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")

    return engine


def _installed(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def _sqlite_folder(engine: Engine) -> None:
    """SQLite creates the file but not its folder."""
    database = engine.url.database
    if database and database != ":memory:" and not database.startswith("file:"):
        Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)


def _row(record: AuditRecord) -> dict[str, Any]:
    """A record as a table row: lists and dicts as JSON text."""
    row = record.model_dump(mode="json")
    row["at"] = record.at
    for column in _JSON_COLUMNS:
        row[column] = json.dumps(row[column], sort_keys=True, separators=(",", ":"))
    return row


def _record(row: Any) -> AuditRecord:
    """A table row as a record (SQLite returns naive UTC times)."""
    data = dict(row)
    for column in _JSON_COLUMNS:
        data[column] = json.loads(data[column])
    at: datetime = data["at"]
    data["at"] = at if at.tzinfo else at.replace(tzinfo=UTC)
    return AuditRecord.model_validate(data)


_logs: dict[str, AuditLog] = {}
_logs_lock = threading.Lock()


def audit_log(url: str) -> AuditLog:
    """The process's AuditLog for `url` (one per URL)."""
    with _logs_lock:
        if url not in _logs:
            _logs[url] = AuditLog(url)
        return _logs[url]


def current_actor(approver: str | None = None) -> str:
    """Who acts: `approver: <name> / os: <user>@<host>[ / mlflow: <user>]` (never a secret)."""
    parts = [f"approver: {approver}"] if approver else []
    parts.append(f"os: {_os_user()}@{socket.gethostname()}")
    if mlflow_user := os.environ.get("MLFLOW_TRACKING_USERNAME"):
        parts.append(f"mlflow: {mlflow_user}")
    return " / ".join(parts)


def _os_user() -> str:
    try:
        return getpass.getuser()
    except (OSError, KeyError, ImportError):  # no login name (e.g. a uid without passwd entry)
        return f"uid {os.getuid()}" if hasattr(os, "getuid") else "unknown"


def flow_run_context() -> tuple[str | None, str | None]:
    """The current Prefect flow run's id and UI URL, or (None, None) outside a flow run."""
    from prefect.runtime import flow_run

    run_id = flow_run.id
    if not run_id:
        return None, None
    url = flow_run.ui_url
    # without a UI URL setting Prefect still formats one ("None/flow-runs/...")
    return str(run_id), url if url and url.startswith(("http://", "https://")) else None


def record_action(url: str, entry: AuditEntry) -> AuditRecord:
    """Append `entry` to the trail at `url` (with the current flow run) and announce it."""
    if entry.flow_run_id is None or entry.flow_run_url is None:
        run_id, run_url = flow_run_context()
        entry = entry.model_copy(
            update={
                "flow_run_id": entry.flow_run_id or run_id,
                "flow_run_url": entry.flow_run_url or run_url,
            }
        )
    record = audit_log(url).append(entry)
    _announce(record)
    return record


def event_payload(record: AuditRecord) -> dict[str, Any]:
    """The record as an event payload: at most MAX_PRODUCTS_PER_EVENT products and versions."""
    payload = record.model_dump(mode="json")
    payload["products"] = payload["products"][:MAX_PRODUCTS_PER_EVENT]
    payload["versions"] = dict(list(payload["versions"].items())[:MAX_PRODUCTS_PER_EVENT])
    payload["product_count"] = len(record.products)
    return payload


def _announce(record: AuditRecord) -> None:
    """Emit `factory.model.<action>`; a failure is logged, never raised (the record stands)."""
    event = f"{EVENT_PREFIX}{record.action}"
    try:
        from prefect.events import emit_event

        sent = emit_event(
            event=event,
            resource={
                "prefect.resource.id": f"factory.audit.{record.seq}",
                "prefect.resource.name": f"{record.action} of {len(record.products)} products",
                "factory.batch": record.batch or "",
            },
            payload=event_payload(record),
        )
    except Exception as exc:
        logger.warning("audit record %d: event %s not sent: %s", record.seq, event, exc)
        return
    if sent is None:
        logger.warning(
            "audit record %d: event %s not sent (Prefect emits no events here)", record.seq, event
        )
