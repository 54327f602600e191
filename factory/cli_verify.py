"""`factory verify PRODUCT | --all`: are the models in use the ones the factory signed?"""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from factory.cli_common import console
from factory.cli_errors import err, friendly
from factory.settings import get_settings


@friendly
def verify(
    product: Annotated[
        str | None, typer.Argument(help="A product id (its serving version is checked).")
    ] = None,
    all_: Annotated[
        bool,
        typer.Option("--all", help="Every product's production champion and staging candidate."),
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the checks as JSON.")] = False,
) -> None:
    """Download each model and check its files and signature against its version tags; exit 1
    naming every model that is tampered, unsigned or signed by an unknown key."""
    from factory.adapters.registry.registry import Registry
    from factory.adapters.registry.verify import check_versions, current_versions

    if (product is None) == (not all_):
        raise typer.BadParameter("give a PRODUCT or --all (not both)")
    registry = Registry(get_settings())
    if product is not None:
        versions = [registry.serving_version(product)[0]]
    else:
        versions = current_versions(registry)
    checks = check_versions(registry, versions)
    if as_json:
        print(json.dumps([c.__dict__ for c in checks], indent=2))
    else:
        table = Table(title=f"{len(checks)} model(s) checked", title_justify="left")
        for column in ("product", "model", "version", "key", "result"):
            table.add_column(column)
        for c in checks:
            result = "[green]verified[/]" if c.ok else "[red]REFUSED[/]"
            row = (c.product_id, c.model, str(c.version), c.key_id or "-", result)
            table.add_row(*(escape(v) if i < 4 else v for i, v in enumerate(row)))
        console.print(table)
    refused = [c for c in checks if not c.ok]
    for c in refused:
        err.print(f"[bold red]error:[/] {escape(str(c.error))}", highlight=False, soft_wrap=True)
    if refused:
        raise typer.Exit(1)
