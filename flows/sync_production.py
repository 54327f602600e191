"""sync-production: reconcile production with a manifest file (GitOps), dry run by default."""

from __future__ import annotations

from pathlib import Path

from prefect import flow
from prefect.artifacts import create_markdown_artifact

from factory.adapters.audit_log import current_actor
from factory.adapters.identity import PROMOTER, settings_as
from factory.core.manifest import ManifestChange, load_manifest
from tasks.lifecycle import sync_to_manifest


@flow(name="sync-production")
def sync_production(
    manifest_path: str = "production.yaml",
    execute: bool = False,
    prune: bool = False,
    reason: str = "sync to the production manifest",
    approver: str | None = None,
) -> list[ManifestChange]:
    """Show what differs between production and the manifest; with `execute`, change exactly
    those products through the audited promote, rollback, restore and retire paths (`prune`:
    products missing from the file are retired)."""
    path = Path(manifest_path)
    desired = load_manifest(path.read_text(encoding="utf-8"), str(path))
    changes = sync_to_manifest(
        settings_as(PROMOTER), desired, current_actor(approver), reason, prune, execute
    )
    rows = "\n".join(
        f"| `{c.product_id}` | {c.action} | v{c.current or '-'} | v{c.target or '-'} |"
        for c in changes[:500]
    )
    state = "applied" if execute else "dry run"
    create_markdown_artifact(
        markdown=f"**{state}: {len(changes)} change(s)** to match `{manifest_path}`\n\n"
        f"| product | action | now | manifest |\n|---|---|---|---|\n{rows}",
        key="production-sync",
        description=f"sync-production {state}",
    )
    return changes
