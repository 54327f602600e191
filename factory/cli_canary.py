"""`factory canary status | complete | abort`: the canaries `factory promote --canary` started."""

from __future__ import annotations

import json
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape
from rich.table import Table

from factory.cli_common import console, preflight
from factory.cli_errors import friendly, warn
from factory.cli_lifecycle import ApproverOpt, UsageMistake

if TYPE_CHECKING:
    from factory.adapters.registry.registry import Registry
    from factory.core.canary import RunningCanary

canary_app = typer.Typer(
    help="Canary releases: a share of requests on a product's new production version.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
ProductsArg = Annotated[
    list[str] | None, typer.Argument(help="Product ids (or --all).", show_default=False)
]
AllOpt = Annotated[bool, typer.Option("--all", help="Every running canary.")]


def _wanted(products: list[str] | None, every: bool) -> list[str] | None:
    """The products named, or None for --all; exactly one of the two."""
    named = [p.strip() for p in products or [] if p.strip()]
    if named and every:
        raise UsageMistake("name products or give --all, not both")
    if not named and not every:
        raise UsageMistake("name the products (or give --all)")
    return named or None


@canary_app.command()
@friendly
def status(
    as_json: Annotated[bool, typer.Option("--json", help="Print the canaries as JSON.")] = False,
) -> None:
    """Every running canary: product, champion and canary versions, share, since, by whom."""
    from factory.adapters.identity import ANALYST, settings_as
    from factory.adapters.registry.canary import running
    from factory.adapters.registry.registry import Registry

    registry = Registry(settings_as(ANALYST))
    preflight()
    _, found = running(registry)
    if as_json:
        print(json.dumps([_row(c) for c in found], ensure_ascii=False))
        return
    if not found:
        console.print("no canary running")
        return
    table = Table("product", "champion", "canary", "share", "since (UTC)", "by", "problem")
    for c in found:
        spec = c.spec
        table.add_row(
            escape(c.product_id),
            _v(c.champion),
            _v(c.version),
            "" if spec is None else f"{spec.share:.1%}",
            "" if spec is None else spec.started_at.strftime("%Y-%m-%d %H:%M:%S"),
            "" if spec is None else escape(spec.started_by),
            escape(c.problem or ""),
        )
    console.print(table)
    console.print(f"{len(found):,} canary(ies) running")


def _row(c: RunningCanary) -> dict[str, object]:
    spec = c.spec
    return {
        "product_id": c.product_id,
        "model": c.model,
        "champion_version": c.champion,
        "canary_version": c.version,
        "share": None if spec is None else spec.share,
        "started_at": None if spec is None else spec.started_at.isoformat(),
        "started_by": None if spec is None else spec.started_by,
        "problem": c.problem,
    }


def _v(version: int | None) -> str:
    return "-" if version is None else f"v{version}"


@canary_app.command()
@friendly
def complete(
    products: ProductsArg = None,
    every: AllOpt = False,
    reason: Annotated[
        str, typer.Option("--reason", "-r", help="Why (kept in the audit trail).")
    ] = "canary completed",
    approver: ApproverOpt = None,
) -> None:
    """Make each canary its product's champion (verified first, audited as a promotion); the
    canary alias and record are removed in the same write."""
    wanted = _wanted(products, every)
    from factory.adapters.audit_log import current_actor
    from factory.adapters.registry.lifecycle import complete_canaries

    registry, lease = _promoter("factory canary complete")
    with lease:
        moves = complete_canaries(registry, wanted, current_actor(approver), reason)
    if not moves:
        console.print("no canary running: nothing to complete")
        return
    table = Table("product", "champion was", "champion now", title=f"completed {len(moves)}")
    for m in moves:
        table.add_row(escape(m.product_id), _v(m.old), _v(m.new))
    console.print(table)


@canary_app.command()
@friendly
def abort(
    reason: Annotated[str, typer.Option("--reason", "-r", help="Why (kept in the audit trail).")],
    products: ProductsArg = None,
    every: AllOpt = False,
    approver: ApproverOpt = None,
) -> None:
    """End each canary with its champion unchanged (audited as a rollback); the canary version
    is marked rolled back, so promote-fleet asks before offering it again."""
    wanted = _wanted(products, every)
    from factory.adapters.audit_log import current_actor
    from factory.adapters.registry import canary

    registry, lease = _promoter("factory canary abort")
    with lease:
        _, found = canary.chosen(registry, wanted)
        ended = canary.abort(registry, found, current_actor(approver), reason)
    if not ended:
        console.print("no canary running: nothing to abort")
        return
    table = Table("product", "canary", "champion (serves all)", title=f"aborted {len(ended)}")
    for c in ended:
        table.add_row(escape(c.product_id), _v(c.version), _v(c.champion))
    console.print(table)


def _promoter(what: str) -> tuple[Registry, AbstractContextManager[None]]:
    """The registry as the MLflow promoter (settings checked), and the writer lease."""
    from factory.adapters.identity import PROMOTER, settings_as
    from factory.adapters.lease import holder_label, training_lease
    from factory.adapters.registry.registry import Registry

    settings = settings_as(PROMOTER)
    preflight()
    lease = training_lease(settings, holder_label(what), settings.lease_wait_s, warn)
    return Registry(settings), lease
