"""`factory status`: fleet health per product, from the state the flows record."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.table import Table

from factory.cli_common import UnknownChoice, cell, console, id_cell
from factory.cli_errors import friendly
from factory.core.errors import UserError
from factory.settings import get_settings


class NoStatus(UserError, LookupError):
    """`factory status` was asked about a product it has no record of."""

    hint = "`factory validate` lists the products in the data; `factory train` records outcomes"


STATUSES = ("registered", "kept", "rejected", "failed", "quarantined", "skipped", "retired")


@friendly
def status(
    product: Annotated[
        str | None, typer.Option("--product", "-p", help="Only this product.")
    ] = None,
    only: Annotated[str | None, typer.Option("--status", help="Only this outcome.")] = None,
    drift: Annotated[
        str | None, typer.Option("--drift", help="Only this drift status (e.g. performance).")
    ] = None,
    limit: Annotated[int, typer.Option(min=1, help="Rows to show.")] = 40,
) -> None:
    """Fleet health per product: version, metric, gate decision, quarantine reason, drift and
    shadow evidence."""
    from factory.adapters.state import read_drift, read_state

    if only and only not in STATUSES:
        raise UnknownChoice(f"--status {only!r}: unknown outcome; choose {', '.join(STATUSES)}")
    settings = get_settings()
    state = read_state(settings.state_dir)
    checks = read_drift(settings.state_dir)
    show_drift = not checks.empty  # the drift column appears once monitor-drift has run
    if show_drift:
        state = state.merge(checks, on="product_id", how="left")
    if product:
        state = state[state["product_id"] == product]
        if state.empty:
            raise NoStatus(f"no status for product {product!r}")
    if only:
        state = state[state["status"] == only]
    if drift and show_drift:
        state = state[state["drift_status"].astype("string").str.startswith(drift).fillna(False)]
    counts = state["status"].value_counts().to_dict()
    # the shadow column appears once a check compared a staging challenger with production
    shadows = state.get("shadow_model_version")
    show_shadow = shadows is not None and bool(shadows.notna().any())
    columns = ["product", "family", "status", "history", "production", "staging", "kind", "score"]
    columns += ["baseline", *(["drift"] if show_drift else [])]
    columns += [*(["shadow WAPE vs production"] if show_shadow else []), "reason"]
    table = Table(*columns)
    for r in state.head(limit).itertuples():
        table.add_row(
            id_cell(str(r.product_id)),
            *(cell(getattr(r, c)) for c in ("family", "status", "history")),
            *(cell(getattr(r, c)) for c in ("production_version", "staging_version", "model_kind")),
            cell(r.score, "{:.3f}"),
            cell(r.baseline, "{:.3f}"),
            *([_drift_cell(r)] if show_drift else []),
            *([_shadow_cell(r)] if show_shadow else []),
            cell(r.reason),
        )
    console.print(table)
    console.print(
        f"{len(state):,} products: " + ", ".join(f"{v} {k}" for k, v in sorted(counts.items()))
    )


def _drift_cell(r: Any) -> str:
    """Drift status, naming the checked version when production has moved on since."""
    text = cell(r.drift_status)
    checked, serving = cell(r.drift_model_version), cell(r.production_version)
    if text and checked and checked != serving:
        text += f" (v{checked})"
    return text


def _shadow_cell(r: Any) -> str:
    """A shadow challenger's realized WAPE against production's, on the same actuals."""
    version = cell(r.shadow_model_version)
    if not version:
        return ""
    shadow, serving = cell(r.shadow_wape, "{:.3f}"), cell(r.serving_wape, "{:.3f}")
    return f"v{version}: {shadow} vs {serving} ({cell(r.shadow_periods, '{:.0f}')} periods)"
