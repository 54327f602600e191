"""`factory audit`: who registered, promoted, approved, rejected, rolled back, retired or restored
which models, when and why; `factory audit verify` checks the trail's hash chain."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from factory.cli_errors import err, friendly
from factory.core.audit import ACTIONS, AuditRecord
from factory.settings import get_settings

audit_app = typer.Typer(
    help="The audit trail of lifecycle actions (list with filters; `verify` checks the chain).",
    pretty_exceptions_enable=False,
)
console = Console()
SHOWN = 3  # products and versions shown per row before "(+N more)"


def _since(value: str) -> datetime:
    """`--since 2026-11-22`: midnight UTC of that day."""
    try:
        day = date.fromisoformat(value.strip())
    except ValueError:
        raise typer.BadParameter(f"{value!r} is not a date (expected YYYY-MM-DD)") from None
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


def _action(value: str) -> str:
    if value not in ACTIONS:
        raise typer.BadParameter(f"{value!r}: choose one of {', '.join(ACTIONS)}")
    return value


@audit_app.callback(invoke_without_command=True)
@friendly
def list_records(
    ctx: typer.Context,
    product: Annotated[
        str | None, typer.Option("--product", "-p", help="Only records naming this product.")
    ] = None,
    since: Annotated[
        datetime | None,
        typer.Option(parser=_since, metavar="YYYY-MM-DD", help="Only records from this day on."),
    ] = None,
    action: Annotated[
        str | None,
        typer.Option(parser=_action, help=f"Only this action: {', '.join(ACTIONS)}."),
    ] = None,
    batch: Annotated[str | None, typer.Option(help="Only this promotion batch.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the records as JSON.")] = False,
) -> None:
    """List the audit records (newest last) that match every filter given."""
    if ctx.invoked_subcommand is not None:
        return
    from factory.adapters.audit_log import audit_log

    records = audit_log(get_settings().resolved_audit_url).records(
        product=product, since=since, action=action, batch=batch
    )
    if as_json:
        print(json.dumps([r.model_dump(mode="json") for r in records], ensure_ascii=False))
        return
    table = Table("seq", "at (UTC)", "action", "actor", "products", "versions", "reason")
    table.add_column("batch")
    table.add_column("flow run", overflow="fold")  # a URL is no use cut short
    for r in records:
        table.add_row(*(escape(cell) for cell in _cells(r)))
    console.print(table)
    console.print(f"{len(records):,} record(s)")


def _cells(r: AuditRecord) -> list[str]:
    """One record as table cells."""
    return [
        str(r.seq),
        r.at.strftime("%Y-%m-%d %H:%M:%S"),
        r.action,
        r.actor,
        _first(r.products),
        _first([f"{p}: v{v}" for p, v in r.versions.items()]),
        r.reason,
        r.batch or "",
        r.flow_run_url or r.flow_run_id or "",
    ]


def _first(items: list[str]) -> str:
    """The first few items, then `(+N more)`."""
    shown = ", ".join(items[:SHOWN])
    return f"{shown} (+{len(items) - SHOWN:,} more)" if len(items) > SHOWN else shown


@audit_app.command()
@friendly
def verify() -> None:
    """Check the hash chain: exit 1 naming every edited, missing or replaced record."""
    from factory.adapters.audit_log import audit_log

    log = audit_log(get_settings().resolved_audit_url)
    records = log.all_records()
    problems = log.verify()
    if problems:
        for line in problems:
            err.print(f"[bold red]{escape(line)}[/]", highlight=False, soft_wrap=True)
        raise typer.Exit(1)
    head = records[-1].hash[:12] if records else "(empty)"
    console.print(f"audit trail intact: {len(records):,} records, head {head}")
