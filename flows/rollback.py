"""rollback: move production back for some products or a whole promotion batch."""

from __future__ import annotations

from prefect import flow
from prefect.artifacts import create_markdown_artifact

from factory.adapters.audit_log import current_actor
from factory.adapters.identity import PROMOTER, settings_as
from factory.adapters.registry.lifecycle import Move
from tasks.lifecycle import rollback_products


@flow(name="rollback")
def rollback(
    reason: str,
    products: list[str] | None = None,
    batch: str | None = None,
    to_version: int | None = None,
    approver: str | None = None,
) -> list[Move]:
    """Move production back to the previous version (or `to_version`) of these products, or
    of every product a promotion batch changed; each version left is marked rolled back."""
    settings = settings_as(PROMOTER)
    moves = rollback_products(
        settings, products or [], current_actor(approver), reason, to_version, batch
    )
    rows = "\n".join(f"| `{m.product_id}` | v{m.old} | v{m.new or '-'} |" for m in moves[:200])
    create_markdown_artifact(
        markdown=f"**rolled back {len(moves)} product(s)**: {reason}\n\n"
        f"| product | from | to |\n|---|---|---|\n{rows}",
        key="rollback",
        description="rollback",
    )
    return moves
