"""What every `factory` command shares: the console, common options and the checks that run
before Prefect starts."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

from factory.core.errors import UserError
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


class UnknownChoice(UserError, ValueError):
    """An option value outside the ones the command knows."""

    hint = "`factory <command> --help` lists the choices"


def id_cell(pid: str) -> str:
    """A product id as a cell: quoted when blank or padded, so it can be told apart."""
    return escape(repr(pid)) if pid != pid.strip() or not pid else escape(pid)


def cell(value: Any, fmt: str = "{}") -> str:
    """A table cell: blank for missing values (None or NaN)."""
    import pandas as pd

    return "" if value is None or pd.isna(value) else escape(fmt.format(value))
