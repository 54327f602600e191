"""The stored audit trail: appends from threads and processes make one chain, filters find
records, and raw SQL edits or deletions are named by `verify()` (SQLite and PostgreSQL)."""

from __future__ import annotations

import contextlib
import logging
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from factory.adapters import audit_log as audit_module
from factory.adapters.audit_log import (
    AuditLog,
    audit_log,
    current_actor,
    event_payload,
    flow_run_context,
    record_action,
)
from factory.core.audit import GENESIS, AuditEntry
from tests.support.fleets import REPO
from tests.support.postgres import temporary_database

APPENDER = textwrap.dedent(
    """
    import sys
    from factory.adapters.audit_log import AuditLog
    from factory.core.audit import AuditEntry
    log = AuditLog(sys.argv[1])
    log.records()  # tables exist; wait for the others
    print("ready", flush=True)
    sys.stdin.readline()
    for i in range(int(sys.argv[2])):
        log.append(AuditEntry(action="register", actor=sys.argv[3], reason=str(i)))
    """
)


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty audit trail: a SQLite file, or a fresh PostgreSQL database (skipped if none)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'home' / 'audit.db'}"
        return
    import psycopg2

    with contextlib.ExitStack() as stack:
        try:
            name = stack.enter_context(temporary_database("factory_audit"))
        except psycopg2.OperationalError as exc:
            pytest.skip(f"no PostgreSQL on 127.0.0.1:5432: {exc}")
        yield f"postgresql://root@127.0.0.1:5432/{name}"


def entry(action: str = "register", **fields: Any) -> AuditEntry:
    return AuditEntry.model_validate({"action": action, "actor": "os: tester@host", **fields})


def raw_sql(url: str, sql: str) -> None:
    """Change the stored trail behind the factory's back."""
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    with engine.begin() as conn:
        conn.execute(sa.text(sql))
    engine.dispose()


def test_appends_chain_and_filters_find_the_records(url: str) -> None:
    log = AuditLog(url)
    assert log.records() == [] and log.verify() == []
    before = datetime.now(UTC) - timedelta(seconds=1)
    appended = [
        log.append(entry(products=["a", "b"], versions={"a": "1", "b": "1"}, reason="first")),
        log.append(entry("promote", products=["a"], versions={"a": "1"}, batch="B1")),
        log.append(entry("approve", actor="approver: alice", products=["a", "c"], batch="B1")),
        log.append(entry("rollback", products=["b"], detail={"to": {"b": "1"}, "why": [1, 2.5]})),
    ]
    assert [r.seq for r in appended] == [1, 2, 3, 4]
    assert appended[0].prev_hash == GENESIS
    assert [r.prev_hash for r in appended[1:]] == [r.hash for r in appended[:-1]]
    assert log.records() == log.all_records() == appended  # every field survives the round trip
    assert appended[3].detail == {"to": {"b": "1"}, "why": [1, 2.5]}
    assert all(r.at.tzinfo == UTC and r.at >= before for r in appended)

    def seqs(**filters: Any) -> list[int]:
        return [r.seq for r in log.records(**filters)]

    assert seqs(product="a") == [1, 2, 3]
    assert seqs(product="c") == [3]
    assert seqs(product="zzz") == []
    assert seqs(action="promote") == [2]
    assert seqs(batch="B1") == [2, 3]
    assert seqs(product="b", action="rollback") == [4]
    assert seqs(since=before) == [1, 2, 3, 4]
    assert seqs(since=datetime.now(UTC) + timedelta(minutes=1)) == []
    assert log.verify() == []


def test_a_record_of_ten_thousand_products_is_found_through_the_index(url: str) -> None:
    log = AuditLog(url)
    products = [f"p-{i:05d}" for i in range(10_000)]
    log.append(entry("retire", products=["p-00001"]))
    big = log.append(entry("promote", products=products, versions=dict.fromkeys(products, "2")))
    found = log.records(product="p-09999")
    assert [r.seq for r in found] == [big.seq] and found[0].products == products
    assert [r.seq for r in log.records(product="p-00001")] == [1, 2]
    assert log.verify() == []
    if url.startswith("sqlite"):
        engine = sa.create_engine(url)
        with engine.connect() as conn:
            plan = conn.exec_driver_sql(
                "EXPLAIN QUERY PLAN SELECT seq FROM factory_audit_products WHERE product_id = 'x'"
            ).all()
        engine.dispose()
        assert "ix_factory_audit_products_product_id" in " ".join(str(row) for row in plan)


def test_threads_and_processes_appending_at_once_make_one_chain(url: str) -> None:
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", APPENDER, url, "25", f"process {n}"],
            cwd=REPO,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for n in range(2)
    ]
    log = AuditLog(url)
    try:
        for proc in procs:
            assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        start = threading.Barrier(4)
        errors: list[BaseException] = []

        def append_25(n: int) -> None:
            start.wait()
            try:
                for i in range(25):
                    log.append(entry(actor=f"thread {n}", reason=str(i)))
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=append_25, args=(n,)) for n in range(4)]
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert [proc.wait(timeout=60) for proc in procs] == [0, 0]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    assert errors == []
    records = log.all_records()
    assert [r.seq for r in records] == list(range(1, 151))
    by_actor = {a: sum(r.actor == a for r in records) for a in {r.actor for r in records}}
    assert by_actor == {**{f"thread {n}": 25 for n in range(4)}, "process 0": 25, "process 1": 25}
    assert log.verify() == []


def test_an_edited_record_is_named(url: str) -> None:
    log = AuditLog(url)
    for i in range(5):
        log.append(entry(reason=f"reason {i}", products=["a"]))
    raw_sql(url, "UPDATE factory_audit SET reason = 'nothing to see' WHERE seq = 3")
    assert AuditLog(url).verify() == ["record 3: contents changed (hash mismatch)"]


def test_a_deleted_record_is_named(url: str) -> None:
    log = AuditLog(url)
    for i in range(5):
        log.append(entry(reason=f"reason {i}", products=["a"]))
    raw_sql(url, "DELETE FROM factory_audit WHERE seq = 3")
    raw_sql(url, "DELETE FROM factory_audit_products WHERE seq = 3")
    assert log.verify() == [
        "record 3 missing (seq jumps 2 -> 4)",
        "record 4: previous hash does not match record 2",
    ]
    log.append(entry(reason="after the gap"))  # the trail goes on from its head
    assert [r.seq for r in log.records()] == [1, 2, 4, 5, 6]


def test_a_product_hidden_from_the_index_is_named(url: str) -> None:
    log = AuditLog(url)
    log.append(entry(products=["a", "b"]))
    log.append(entry(products=["b"]))
    raw_sql(url, "DELETE FROM factory_audit_products WHERE seq = 2")
    assert log.verify() == ["record 2: product index differs from the record"]


def test_the_sqlite_folder_and_tables_appear_on_first_use(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'new' / 'home' / 'audit.db'}"
    assert AuditLog(url).verify() == []
    assert (tmp_path / "new" / "home" / "audit.db").is_file()
    assert audit_log(url) is audit_log(url)
    assert audit_log(url) is not audit_log(f"sqlite:///{tmp_path / 'other.db'}")


def test_postgres_urls_use_the_installed_driver() -> None:
    engine = audit_module._engine("postgresql+psycopg://root@127.0.0.1:5432/x")
    assert engine.dialect.driver in ("psycopg", "psycopg2")
    assert audit_module._engine("postgres://root@127.0.0.1/x").dialect.driver == "psycopg2"


def test_the_actor_names_approver_os_user_and_mlflow_user_but_no_secret(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(audit_module.getpass, "getuser", lambda: "root")
    monkeypatch.setattr(audit_module.socket, "gethostname", lambda: "box")
    monkeypatch.delenv("MLFLOW_TRACKING_USERNAME", raising=False)
    assert current_actor() == "os: root@box"
    assert (
        current_actor("alice (via Prefect UI)") == "approver: alice (via Prefect UI) / os: root@box"
    )
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "svc")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "hunter2")
    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", "tok-123")
    actor = current_actor("bob")
    assert actor == "approver: bob / os: root@box / mlflow: svc"

    def no_login() -> str:
        raise OSError("No username set in the environment")

    monkeypatch.setattr(audit_module.getpass, "getuser", no_login)
    assert "os: " in current_actor() and "@box" in current_actor()


def test_the_flow_run_is_none_outside_a_run_and_named_inside(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from prefect.settings import PREFECT_UI_URL, temporary_settings

    monkeypatch.delenv("PREFECT__FLOW_RUN_ID", raising=False)
    assert flow_run_context() == (None, None)
    monkeypatch.setenv("PREFECT__FLOW_RUN_ID", "0b6f4c1e")
    with temporary_settings(updates={PREFECT_UI_URL: "http://127.0.0.1:4200"}):
        assert flow_run_context() == (
            "0b6f4c1e",
            "http://127.0.0.1:4200/flow-runs/flow-run/0b6f4c1e",
        )


class FakeEmit:
    """Stands in for prefect.events.emit_event: records calls, returns `result` or raises."""

    def __init__(self, result: object = "sent", error: Exception | None = None) -> None:
        self.calls: list[dict[str, Any]] = []
        self.result, self.error = result, error

    def __call__(self, **kwargs: Any) -> object:
        self.calls.append(kwargs)
        if self.error:
            raise self.error
        return self.result


def test_record_action_stores_the_run_and_emits_a_bounded_event(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import prefect.events

    fake = FakeEmit()
    monkeypatch.setattr(prefect.events, "emit_event", fake)
    monkeypatch.setattr(
        audit_module, "flow_run_context", lambda: ("run-9", "http://ui/flow-run/run-9")
    )
    url = f"sqlite:///{tmp_path / 'audit.db'}"
    products = [f"p{i}" for i in range(2500)]
    record = record_action(
        url, entry("promote", products=products, versions=dict.fromkeys(products, "4"), batch="B7")
    )
    assert (record.flow_run_id, record.flow_run_url) == ("run-9", "http://ui/flow-run/run-9")
    assert audit_log(url).records() == [record]
    [call] = fake.calls
    assert call["event"] == "factory.model.promote"
    assert call["resource"] == {
        "prefect.resource.id": "factory.audit.1",
        "prefect.resource.name": "promote of 2500 products",
        "factory.batch": "B7",
    }
    payload = call["payload"]
    assert payload == event_payload(record)
    assert payload["products"] == products[:2000] and len(payload["versions"]) == 2000
    assert payload["product_count"] == 2500 and payload["hash"] == record.hash

    own = record_action(url, entry("approve", flow_run_id="mine", flow_run_url="http://mine"))
    assert (own.flow_run_id, own.flow_run_url) == ("mine", "http://mine")


@pytest.mark.parametrize(
    ("fake", "why"),
    [
        (FakeEmit(result=None), "Prefect emits no events here"),
        (FakeEmit(error=OSError("down")), "down"),
    ],
)
def test_an_event_that_cannot_be_sent_is_a_warning_not_a_failure(
    fake: FakeEmit,
    why: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    import prefect.events

    monkeypatch.setattr(prefect.events, "emit_event", fake)
    monkeypatch.setattr(audit_module, "flow_run_context", lambda: (None, None))
    url = f"sqlite:///{tmp_path / 'audit.db'}"
    with caplog.at_level(logging.WARNING, logger=audit_module.__name__):
        record = record_action(url, entry("retire", products=["a"]))
    assert audit_log(url).records() == [record]
    [warning] = [r for r in caplog.records if r.name == audit_module.__name__]
    assert warning.levelno == logging.WARNING
    assert "factory.model.retire" in warning.getMessage() and why in warning.getMessage()


def test_settings_default_to_a_sqlite_file_in_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from factory.settings import Settings

    monkeypatch.delenv("FACTORY_AUDIT_URL", raising=False)
    assert Settings(home=tmp_path).resolved_audit_url == f"sqlite:///{tmp_path / 'audit.db'}"
    monkeypatch.setenv("FACTORY_AUDIT_URL", "postgresql://root@db/audit")
    assert Settings(home=tmp_path).resolved_audit_url == "postgresql://root@db/audit"
