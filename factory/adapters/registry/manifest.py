"""Production as a manifest (GitOps): export what `@champion` serves with each version's
model digest, and reconcile production to an edited file through the audited lifecycle."""

from __future__ import annotations

import sqlalchemy
from mlflow.store.model_registry.dbmodels.models import SqlModelVersionTag

from factory.adapters.registry import reading
from factory.adapters.registry.doctor import snapshot
from factory.adapters.registry.lifecycle import (
    Move,
    by_product,
    move_production,
    restore,
    retire,
)
from factory.adapters.registry.names import CHAMPION_ALIAS, DIGEST_TAG, PRODUCTION
from factory.adapters.registry.registry import Registry
from factory.core.manifest import (
    Manifest,
    ManifestChange,
    ManifestEntry,
    diff_manifest,
    digest_mismatches,
)
from factory.core.promotion import PromotionError, Retirement
from factory.core.repair import ModelState


def production_manifest(registry: Registry, models: list[ModelState] | None = None) -> Manifest:
    """What production serves: product -> version and the version's model digest (`models`:
    a snapshot already read)."""
    if models is None:
        models = snapshot(registry)
    models = [m for m in models if m.environment == PRODUCTION and not m.retired]
    serving = {m.product_id: (m.name, m.aliases.get(CHAMPION_ALIAS)) for m in models}
    serving = {p: (n, v) for p, (n, v) in serving.items() if v is not None}
    digests = version_digests(registry, {(n, int(v)) for n, v in serving.values() if v is not None})
    return Manifest(
        production={
            p: ManifestEntry(version=int(v), digest=digests.get((n, int(v))))
            for p, (n, v) in serving.items()
            if v is not None
        }
    )


def version_digests(registry: Registry, wanted: set[tuple[str, int]]) -> dict[tuple[str, int], str]:
    """(model name, version) -> the model digest tag of these versions (one query on a
    database store, else one call per version)."""
    out: dict[tuple[str, int], str] = {}
    store = reading.sql_store(registry.client)
    if store is not None:
        t = SqlModelVersionTag.__table__
        query = sqlalchemy.select(t.c.name, t.c.version, t.c.value).where(
            t.c.workspace == store._get_active_workspace(),
            t.c.name.startswith(f"{registry.prefix}.{PRODUCTION}.", autoescape=True),
            t.c.key == DIGEST_TAG,
        )
        with store.ManagedSessionMaker() as session:
            for name, version, value in session.execute(query):
                if (name, int(version)) in wanted:
                    out[(name, int(version))] = value
        return out
    for name, version in sorted(wanted):
        tags = registry.client.get_model_version(name, str(version)).tags or {}
        if DIGEST_TAG in tags:
            out[(name, version)] = tags[DIGEST_TAG]
    return out


def sync_production(
    registry: Registry,
    desired: Manifest,
    actor: str,
    reason: str,
    prune: bool = False,
    execute: bool = False,
) -> list[ManifestChange]:
    """The changes that bring production to the manifest (checked against the registry:
    every version must exist and match its digest); with `execute`, made through the same
    audited restore, promote, rollback and retire paths."""
    models = snapshot(registry)
    production = by_product(models, PRODUCTION)
    changes = diff_manifest(production_manifest(registry, models), desired, prune)
    wanted = [c.product_id for c in changes]
    every = {(m.name, v.version) for m in production.values() for v in m.versions}
    digests = version_digests(registry, every)
    known = {
        pid: {v.version: digests.get((m.name, v.version)) for v in m.versions}
        for pid, m in production.items()
    }
    targets = desired  # every entry, changed or not, must match the registry
    problems = digest_mismatches(targets, known)
    if problems:
        raise PromotionError("; ".join(problems))
    if not execute or not changes:
        return changes
    restore_ids = [
        c.product_id
        for c in changes
        if c.action == "restore"
        and production.get(c.product_id)
        and production[c.product_id].retired
    ]
    if restore_ids:
        restore(registry, restore_ids, actor, reason)
        production = by_product(snapshot(registry, wanted), PRODUCTION)
    for action in ("promote", "rollback"):
        moves = [
            Move(c.product_id, production[c.product_id].aliases.get(CHAMPION_ALIAS), c.target)
            for c in changes
            if c.target is not None
            and (c.action == action or (action == "promote" and c.action == "restore"))
        ]
        moves = [m for m in moves if m.old != m.new]
        if moves:
            move_production(registry, production, moves, action, actor, reason)  # type: ignore[arg-type]
    gone = [
        Retirement(c.product_id, f"not in the production manifest ({reason})")
        for c in changes
        if c.action == "retire"
    ]
    if gone:
        retire(registry, gone, actor)
    return changes
