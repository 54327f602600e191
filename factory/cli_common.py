"""What every `factory` command shares: the console, common options and the checks that run
before Prefect starts."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console

from factory.settings import get_settings

if TYPE_CHECKING:
    from factory.adapters.preflight import SettingCheck

console = Console()
FleetOpt = Annotated[Path, typer.Option("--fleet", "-f", help="Path to fleet.yaml.")]
ProductsOpt = Annotated[
    str | None, typer.Option("--products", "-p", help="Comma-separated product ids (default: all).")
]


def split(products: str | None) -> list[str] | None:
    """`a, b,c` -> ["a", "b", "c"] (None when not given)."""
    return [p.strip() for p in products.split(",") if p.strip()] if products else None


def prefect_database(ctx: typer.Context) -> None:
    """Create the embedded Prefect database (once) when this process set it up (a flow command,
    after its checks: creating it on a fresh FACTORY_HOME takes a while)."""
    from factory.adapters.prefect_env import create_database

    if home := (ctx.obj or {}).get("prefect", {}).get("PREFECT_HOME"):
        create_database(Path(home))


def preflight(probe: bool = True) -> list[SettingCheck]:
    """Check the settings (and, with `probe`, that the MLflow servers answer) in seconds."""
    from factory.adapters.preflight import preflight as check

    return check(get_settings(), probe)
