"""`factory audit`: the trail as a table or JSON, filtered; `verify` names a changed record."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from factory.adapters.audit_log import AuditLog
from factory.cli_audit import audit_app
from factory.core.audit import AuditEntry, AuditRecord
from factory.settings import get_settings

runner = CliRunner()
TODAY = datetime.now(UTC).date()


def invoke(*args: str):
    """Run `factory audit <args>` in-process on a wide terminal."""
    result = runner.invoke(audit_app, list(args), env={"COLUMNS": "250"})
    assert "Traceback" not in result.output, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(
        result.exception
    )
    return result


@pytest.fixture
def trail(factory_home: Path) -> list[AuditRecord]:
    """Three actions in FACTORY_HOME's audit trail, one of them on 12 products."""
    log = AuditLog(get_settings().resolved_audit_url)
    many = [f"sku-{i:02d}" for i in range(12)]
    return [
        log.append(
            AuditEntry(
                action="register",
                actor="os: ci@runner",
                products=many,
                versions=dict.fromkeys(many, "1"),
                reason="nightly training",
                flow_run_url="http://127.0.0.1:4200/flow-runs/flow-run/abc",
            )
        ),
        log.append(
            AuditEntry(
                action="promote",
                actor="approver: alice (via Prefect UI) / os: root@box",
                products=["sku-03"],
                versions={"sku-03": "1"},
                reason="beats production",
                batch="B-7",
            )
        ),
        log.append(AuditEntry(action="rollback", actor="os: bob@box", products=["sku-05"])),
    ]


def listed(*args: str) -> list[int]:
    result = invoke(*args, "--json")
    assert result.exit_code == 0, result.output
    return [r["seq"] for r in json.loads(result.stdout)]


def test_the_table_shows_who_did_what_to_which_products(trail: list[AuditRecord]) -> None:
    result = invoke()
    assert result.exit_code == 0, result.output
    out = result.stdout
    for text in (
        "register",
        "os: ci@runner",
        "sku-00, sku-01, sku-02 (+9 more)",
        "sku-00: v1",
        "nightly training",
        "http://127.0.0.1:4200/flow-runs/flow-run/abc",
        "approver: alice (via Prefect UI)",
        "B-7",
        "rollback",
        "3 record(s)",
    ):
        assert text in out, text


def test_filters_select_records(trail: list[AuditRecord]) -> None:
    assert listed() == [1, 2, 3]
    assert listed("--product", "sku-03") == [1, 2]
    assert listed("-p", "sku-05", "--action", "rollback") == [3]
    assert listed("--batch", "B-7") == [2]
    assert listed("--since", TODAY.isoformat()) == [1, 2, 3]
    assert listed("--since", (TODAY + timedelta(days=2)).isoformat()) == []
    result = invoke("--product", "nope")
    assert result.exit_code == 0 and "0 record(s)" in result.stdout


def test_json_lists_every_field(trail: list[AuditRecord]) -> None:
    result = invoke("--json", "--action", "promote")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == [trail[1].model_dump(mode="json")]


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (("--since", "22/11/2026"), "--since"),
        (("--since", "2026-13-01"), "YYYY-MM-DD"),
        (("--action", "delete"), "choose one of register, promote"),
    ],
)
def test_bad_filters_are_usage_errors(
    trail: list[AuditRecord], args: tuple[str, ...], needle: str
) -> None:
    result = invoke(*args)
    assert result.exit_code == 2
    assert needle in result.output


def test_verify_names_the_head_of_an_intact_trail(trail: list[AuditRecord]) -> None:
    result = invoke("verify")
    assert result.exit_code == 0, result.output
    assert f"audit trail intact: 3 records, head {trail[-1].hash[:12]}" in result.stdout


def test_verify_exits_1_naming_a_changed_record(trail: list[AuditRecord]) -> None:
    engine = sa.create_engine(get_settings().resolved_audit_url)
    with engine.begin() as conn:
        conn.exec_driver_sql("UPDATE factory_audit SET actor = 'os: nobody@box' WHERE seq = 2")
    engine.dispose()
    result = invoke("verify")
    assert result.exit_code == 1
    assert result.stderr.strip() == "record 2: contents changed (hash mismatch)"
    assert "intact" not in result.stdout


def test_an_empty_trail_lists_nothing_and_verifies(factory_home: Path) -> None:
    assert listed() == []
    result = invoke("verify")
    assert result.exit_code == 0 and "audit trail intact: 0 records" in result.stdout
