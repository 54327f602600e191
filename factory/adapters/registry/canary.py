"""Canaries in the registry: which production models run one, and ending them.

A canary is `@canary` on the product's production model plus the `factory.canary` record
(`factory.core.canary.CanarySpec`); `@champion` keeps serving the other requests. It starts
in `lifecycle.promote` (with a canary share) and is completed there too
(`lifecycle.complete_canaries`: the champion moves to it on the audited, verified path);
aborting it here only removes alias and record, marks the version rolled back and audits it.
"""

from __future__ import annotations

import json
from collections.abc import Collection
from datetime import UTC, datetime

from factory.adapters.audit_log import record_action
from factory.adapters.registry import reading
from factory.adapters.registry.bulk import RegistryOps, apply_ops
from factory.adapters.registry.doctor import snapshot
from factory.adapters.registry.names import CHAMPION_ALIAS, PRODUCTION, ROLLED_BACK_TAG
from factory.adapters.registry.registry import Registry
from factory.core.audit import AuditEntry
from factory.core.canary import CANARY_ALIAS, CANARY_TAG, CanaryError, RunningCanary, read_spec
from factory.core.repair import ModelState


def running(
    registry: Registry, products: Collection[str] | None = None
) -> tuple[dict[str, ModelState], list[RunningCanary]]:
    """Production models (of these products, or all) by product, and every canary among them
    (an alias or a record: a half-written one is listed too, with its problem)."""
    models = {
        m.product_id: m
        for m in snapshot(registry, None if products is None else sorted(set(products)))
        if m.environment == PRODUCTION and not m.retired
    }
    names = [m.name for m in models.values()] if products is not None else None
    prefix = f"{registry.prefix}.{PRODUCTION}."
    tags = reading.model_tags_by_name(registry.client, prefix, (CANARY_TAG,), names)
    found = []
    for pid, m in sorted(models.items()):
        text = tags.get(m.name, {}).get(CANARY_TAG)
        if CANARY_ALIAS in m.aliases or text is not None:
            found.append(
                RunningCanary(
                    pid,
                    m.name,
                    m.aliases.get(CANARY_ALIAS),
                    m.aliases.get(CHAMPION_ALIAS),
                    read_spec(text),
                )
            )
    return models, found


def chosen(
    registry: Registry, products: Collection[str] | None
) -> tuple[dict[str, ModelState], list[RunningCanary]]:
    """The canaries of these products (None: every running one). A product without a
    production model, or without a canary, refuses the whole request (CanaryError)."""
    models, found = running(registry, products)
    if products is None:
        return models, found
    unknown = sorted(p for p in set(products) if p not in models)
    idle = sorted(set(products) - set(unknown) - {c.product_id for c in found})
    problems = []
    if unknown:
        problems.append(f"no production model for {_ids(unknown)}")
    if idle:
        problems.append(f"no canary running for {_ids(idle)}")
    if problems:
        raise CanaryError("; ".join(problems))
    return models, found


def end(ops: RegistryOps, model: ModelState) -> int | None:
    """Add the removal of a model's canary (alias and record) to `ops`; its version, if any."""
    version = model.aliases.get(CANARY_ALIAS)
    if version is not None:
        ops.delete_aliases.append((model.name, CANARY_ALIAS))
        ops.delete_model_tags.append((model.name, CANARY_TAG))
    return version


def abort(
    registry: Registry,
    canaries: list[RunningCanary],
    actor: str,
    reason: str,
    batch: str | None = None,
) -> list[RunningCanary]:
    """End these canaries with `@champion` unchanged: alias and record removed in one write,
    the canary version tagged rolled back (promote-fleet asks before offering it again),
    one `rollback` audit record."""
    if not canaries:
        return []
    ops = RegistryOps()
    mark = json.dumps(
        {
            "reason": reason,
            "batch": batch,
            "at": datetime.now(UTC).isoformat(timespec="seconds"),
            "by": actor,
        }
    )
    for c in canaries:
        ops.delete_aliases.append((c.model, CANARY_ALIAS))
        ops.delete_model_tags.append((c.model, CANARY_TAG))
        if c.version is not None and c.version != c.champion:
            ops.set_version_tags.append((c.model, c.version, ROLLED_BACK_TAG, mark))
    apply_ops(registry.client, ops, registry.settings.registry_concurrency)
    record_action(
        registry.settings.resolved_audit_url,
        AuditEntry(
            action="rollback",
            actor=actor,
            products=[c.product_id for c in canaries],
            versions={c.product_id: _text(c.champion) for c in canaries},
            reason=reason,
            batch=batch,
            detail={"canary": {c.product_id: outcome(c, "aborted") for c in canaries}},
        ),
    )
    return canaries


def outcome(c: RunningCanary, what: str) -> dict[str, object]:
    """A canary's line in an audit record's `canary` detail."""
    return {
        "version": c.version,
        "outcome": what,
        "share": c.spec.share if c.spec else None,
        "champion": c.champion,
    }


def _ids(ids: list[str]) -> str:
    return ", ".join(repr(p) for p in ids)


def _text(version: int | None) -> str:
    return "" if version is None else str(version)
