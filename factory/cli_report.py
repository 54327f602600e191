"""`factory report`: the demand planner's HTML page."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from factory.cli_common import FleetOpt, console, preflight, split
from factory.cli_errors import friendly
from factory.settings import get_settings


@friendly
def report(
    products: Annotated[
        str | None,
        typer.Option(
            "--products",
            "-p",
            help="Comma-separated product ids (default: the --top products by recent sales, "
            "plus up to two short-history ones).",
        ),
    ] = None,
    top: Annotated[
        int, typer.Option(min=1, help="Products shown by default (most recent sales).")
    ] = 6,
    out: Annotated[
        Path | None,
        typer.Option(help="HTML file or folder (default: <FACTORY_HOME>/reports/)."),
    ] = None,
    fleet: FleetOpt = Path("fleet.yaml"),
) -> None:
    """One self-contained HTML page: fleet error vs the baseline, families, chosen products'
    history, forecast with intervals and backtest."""
    preflight()
    from factory.reporting import write_report

    with console.status("writing the report"):
        path = write_report(get_settings(), split(products), out, top=top, fleet_path=fleet)
    console.print(f"wrote the report to {escape(str(path))}", highlight=False, soft_wrap=True)
