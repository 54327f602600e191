"""`factory promote | rollback | retire | restore | manifest`: production's governed path."""

from __future__ import annotations

from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markdown import Markdown
from rich.markup import escape
from rich.table import Table

from factory.cli_common import FleetOpt, ProductsOpt, console, prefect_database, preflight, split
from factory.cli_errors import friendly, warn
from factory.core.errors import UserError
from factory.settings import get_settings

if TYPE_CHECKING:
    from factory.adapters.registry.registry import Registry

lifecycle_app = typer.Typer(pretty_exceptions_enable=False)
manifest_app = typer.Typer(
    help="Production as a YAML file: export it, edit it in git, apply it.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
ReasonOpt = Annotated[str, typer.Option("--reason", "-r", help="Why (kept in the audit trail).")]
ApproverOpt = Annotated[
    str | None, typer.Option("--approver", help="Who decides (default: your OS user).")
]


class UsageMistake(UserError, ValueError):
    """Options that do not go together."""

    hint = "`factory <command> --help` shows the options"


def _approver(name: str | None) -> str:
    import getpass

    return name or getpass.getuser()


@lifecycle_app.command()
@friendly
def promote(
    ctx: typer.Context,
    fleet: FleetOpt = Path("fleet.yaml"),
    products: ProductsOpt = None,
    plan: Annotated[bool, typer.Option("--plan", help="Only show what would change.")] = False,
    approve: Annotated[
        bool, typer.Option("--approve", help="Approve the batch (or only --only ids).")
    ] = False,
    only: Annotated[
        str | None, typer.Option("--only", help="With --approve: approve only these ids.")
    ] = None,
    reject: Annotated[
        str | None, typer.Option("--reject", help="Reject the batch, with this reason.")
    ] = None,
    approver: ApproverOpt = None,
    reason: Annotated[str, typer.Option("--reason", "-r", help="Why (audit trail).")] = "",
    canary: Annotated[
        float | None,
        typer.Option(
            "--canary",
            help="Start products already in production as a canary on this share of requests"
            " (0 < x < 1; 0: none; default: fleet.yaml's promotion.canary_share).",
        ),
    ] = None,
) -> None:
    """Run promote-fleet: retire what left the fleet, promote staging winners newer than
    production within fleet.yaml's limits; beyond them, show the batch and wait for
    --approve or --reject (a deployment's run waits in the Prefect UI instead)."""
    if canary is not None:
        from factory.core.canary import check_share

        check_share(canary)
    if approve and reject is not None:
        raise UsageMistake("--approve and --reject exclude each other")
    if only and not approve:
        raise UsageMistake("--only needs --approve")
    if reject is not None and not reject.strip():
        raise UsageMistake("--reject needs a reason")
    preflight()
    from factory.core.fleet import load_fleet

    load_fleet(fleet)
    prefect_database(ctx)
    from flows.promote_fleet import PromotionApproval, promote_fleet

    decision = None
    if approve or reject is not None:
        decision = PromotionApproval(
            approver=_approver(approver),
            decision="reject" if reject is not None else "approve",
            products=split(only) or [],
            reason=reject if reject is not None else reason,
        )
    with console.status("planning the promotion"):
        report = promote_fleet(
            str(fleet), split(products), decision, dry_run=plan, canary_share=canary
        )
    if report.retired:
        warn(f"retired {len(report.retired)} product(s): {', '.join(report.retired[:20])}")
    if report.status == "nothing to do":
        console.print("production is up to date: no staging winner is newer")
        return
    text = report.description
    if report.status == "promoted" and decision is None:  # within limits: the summary only
        text = text.split("\n| product |", 1)[0]
    console.print(Markdown(text))
    if report.ignored:
        warn(f"not in the batch, ignored: {', '.join(report.ignored)}")
    if report.status == "awaiting approval":
        warn(
            f"batch {report.batch} needs approval; rerun with --approve [--only ids] or"
            " --reject REASON"
        )
    elif report.status == "promoted":
        console.print(f"[green]promoted {len(report.promoted)} product(s)[/], batch {report.batch}")
        if report.canaries:
            console.print(
                f"started {len(report.canaries)} canary(ies): `factory canary status` shows"
                " them, `factory canary complete|abort` ends them"
            )
    elif report.status == "rejected":
        console.print(f"rejected batch {report.batch}: nothing promoted")


@lifecycle_app.command()
@friendly
def rollback(
    ctx: typer.Context,
    reason: ReasonOpt,
    products: ProductsOpt = None,
    batch: Annotated[
        str | None, typer.Option("--batch", "-b", help="Roll back a whole promotion batch.")
    ] = None,
    to: Annotated[
        int | None, typer.Option("--to", min=1, help="Production version to go back to.")
    ] = None,
    approver: ApproverOpt = None,
) -> None:
    """Move production back to the previous version (or --to) of these products or of a
    batch; the version left is marked so the gate does not promote it again unasked."""
    chosen = split(products)
    if not chosen and not batch:
        raise UsageMistake("name --products or a --batch to roll back")
    if to is not None and (batch or not chosen):
        raise UsageMistake("--to goes with --products, not with --batch")
    preflight()
    prefect_database(ctx)
    from flows.rollback import rollback as rollback_flow

    with console.status("rolling back"):
        moves = rollback_flow(reason, chosen, batch, to, _approver(approver))
    table = Table("product", "from", "to", title=f"rolled back {len(moves)} product(s)")
    for m in moves:
        table.add_row(escape(m.product_id), f"v{m.old}", f"v{m.new}" if m.new else "-")
    console.print(table)


def _direct(what: str) -> tuple[Registry, AbstractContextManager[None]]:
    """The registry and its writer lease, for an action run outside a flow."""
    from factory.adapters.lease import holder_label, training_lease
    from factory.adapters.registry.registry import Registry

    settings = get_settings()
    lease = training_lease(settings, holder_label(what), settings.lease_wait_s, warn)
    return Registry(settings), lease


@lifecycle_app.command()
@friendly
def retire(products: ProductsOpt, reason: ReasonOpt, approver: ApproverOpt = None) -> None:
    """Take products out of service now: aliases removed, models kept and tagged retired;
    forecasts, drift checks and training skip them until `factory restore`."""
    chosen = split(products)
    if not chosen:
        raise UsageMistake("name the --products to retire")
    preflight()
    from factory.adapters.audit_log import current_actor
    from factory.adapters.registry.lifecycle import retire as retire_models
    from factory.core.promotion import Retirement

    registry, lease = _direct("factory retire")
    with lease:
        done = retire_models(
            registry, [Retirement(p, reason) for p in chosen], current_actor(approver)
        )
    missing = sorted(set(chosen) - set(done))
    if missing:
        warn(f"no model in service, nothing to retire: {', '.join(missing)}")
    console.print(f"retired {len(done)} product(s)")


@lifecycle_app.command()
@friendly
def restore(products: ProductsOpt, reason: ReasonOpt, approver: ApproverOpt = None) -> None:
    """Put retired products back in service on the versions they served."""
    chosen = split(products)
    if not chosen:
        raise UsageMistake("name the --products to restore")
    preflight()
    from factory.adapters.audit_log import current_actor
    from factory.adapters.registry.lifecycle import restore as restore_models

    registry, lease = _direct("factory restore")
    with lease:
        done = restore_models(registry, chosen, current_actor(approver), reason)
    console.print(f"restored {len(done)} product(s): {', '.join(done)}")


@manifest_app.command("export")
@friendly
def export(
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Write here (default: print).")
    ] = None,
) -> None:
    """Write production as YAML (product -> version and model digest), sorted for git."""
    preflight()
    from factory.adapters.files import atomic_write
    from factory.adapters.registry.manifest import production_manifest
    from factory.adapters.registry.registry import Registry
    from factory.core.manifest import dump_manifest

    text = dump_manifest(production_manifest(Registry(get_settings())))
    if out is None:
        typer.echo(text, nl=False)
        return
    atomic_write(out, lambda fh: fh.write(text.encode()))
    console.print(f"wrote {out}")


@manifest_app.command("apply")
@friendly
def apply(
    ctx: typer.Context,
    file: Annotated[Path, typer.Argument(help="A manifest from `factory manifest export`.")],
    execute: Annotated[
        bool, typer.Option("--execute", help="Make the changes (default: dry run).")
    ] = False,
    prune: Annotated[
        bool, typer.Option("--prune", help="Retire products missing from the file.")
    ] = False,
    reason: Annotated[str, typer.Option("--reason", "-r")] = "sync to the production manifest",
    approver: ApproverOpt = None,
) -> None:
    """Show how production differs from the file; with --execute, reconcile it through the
    audited promote, rollback, restore and retire paths (the sync-production flow)."""
    from factory.core.manifest import ManifestError, load_manifest

    if not file.is_file():
        raise ManifestError(f"{file}: no such file")
    load_manifest(file.read_text(encoding="utf-8", errors="replace"), str(file))
    preflight()
    prefect_database(ctx)
    from flows.sync_production import sync_production

    changes = sync_production(str(file), execute, prune, reason, _approver(approver))
    state = "changed" if execute else "would change (dry run; --execute applies)"
    table = Table(
        "product", "action", "now", "manifest", title=f"{len(changes)} product(s) {state}"
    )
    for c in changes:
        table.add_row(escape(c.product_id), c.action, f"v{c.current or '-'}", f"v{c.target or '-'}")
    console.print(table if changes else "production matches the manifest")
