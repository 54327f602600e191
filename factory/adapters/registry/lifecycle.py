"""Production's lifecycle in the registry: promote (or start a canary), complete a canary,
roll back, retire, restore.

Each action reads one snapshot of the products' models, checks the whole request first (so a
refused request changes nothing), writes through the fast paths (one transaction on a database
store), records one audit record (which also emits `factory.model.<action>`) and brings the
status rows in line. Versions are never deleted: a rollback or a retirement only moves or
removes aliases and tags, so every action can be undone. Whatever moves `@champion` or takes
a product out of service also ends its canary (see `factory.adapters.registry.canary`), so no
`@canary` outlives the champion it was measured against.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Collection
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from mlflow.entities.model_registry import ModelVersion

from factory.adapters.audit_log import audit_log, record_action
from factory.adapters.registry import canary, reading
from factory.adapters.registry.bulk import RegistryOps, apply_ops
from factory.adapters.registry.doctor import snapshot
from factory.adapters.registry.names import (
    BATCH_TAG,
    CANDIDATE_ALIAS,
    CHAMPION_ALIAS,
    CURRENT_TAG,
    ENVIRONMENT_TAG,
    FAMILY_TAG,
    PRODUCT_TAG,
    PRODUCTION,
    RETIRED_TAG,
    ROLLED_BACK_TAG,
    STAGING,
)
from factory.adapters.registry.registry import Registry
from factory.adapters.registry.sql_writer import VersionPlan
from factory.adapters.registry.verify import check_versions
from factory.adapters.state import fix_status
from factory.core.audit import AuditEntry
from factory.core.canary import CANARY_ALIAS, CANARY_TAG, CanaryError, check_share, start_spec
from factory.core.promotion import Change, PromotionError, Retirement
from factory.core.repair import ModelState, current_body

log = logging.getLogger(__name__)
ALIAS = {STAGING: CANDIDATE_ALIAS, PRODUCTION: CHAMPION_ALIAS}


@dataclass(frozen=True)
class Move:
    """One product's production alias moving from one version to another (None: no model)."""

    product_id: str
    old: int | None
    new: int | None
    canary: bool = False  # `new` went to `@canary` (started, or aborted back to `old`)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def by_product(models: list[ModelState], env: str) -> dict[str, ModelState]:
    return {m.product_id: m for m in models if m.environment == env}


def promote(
    registry: Registry,
    changes: list[Change],
    batch: str,
    actor: str,
    reason: str,
    detail: dict[str, Any] | None = None,
    canary_share: float = 0.0,
) -> list[Move]:
    """Copy each approved staging winner into its product's production model (reusing the
    production version already made from the same training key) and move `@champion` to it.

    With a `canary_share`, a product that has a champion gets `@canary` and its record
    instead (a new product is promoted as usual). A canary the product was running ends:
    the new version supersedes it (as champion or as the new canary)."""
    share = check_share(canary_share)
    changes, now = _still_current(registry, changes)
    if not changes:
        return []
    settings = registry.settings
    client = registry.client
    plans = []
    found = reading.versions_by_key(client, [(c.staging_model, c.staging.version) for c in changes])
    verify_all(registry, [found[(c.staging_model, c.staging.version)] for c in changes])
    canaries = {c.product_id for c in changes if share and c.production is not None}
    for c in changes:
        staged = found[(c.staging_model, c.staging.version)]
        alias, tag, body = CHAMPION_ALIAS, CURRENT_TAG, _current(c)
        if c.product_id in canaries:
            start = start_spec(0, c.production.version if c.production else None, share, actor)
            # the record without its version: the write adds the version it lands on
            alias, tag, body = CANARY_ALIAS, CANARY_TAG, start.model_dump(mode="json")
            del body["version"]
        tags = {
            **dict(staged.tags or {}),
            BATCH_TAG: batch,
            "factory.promoted_from": f"{c.staging_model}/{c.staging.version}",
        }
        tags.pop(ROLLED_BACK_TAG, None)
        plans.append(
            VersionPlan(
                name=c.production_model,
                source=f"models:/{c.staging_model}/{c.staging.version}",
                storage_location=str(staged.source),
                run_id=str(staged.run_id or ""),
                tags=tags,
                alias=alias,
                current_tag=tag,
                current=body,
                train_key=c.staging.train_key or "",
                model_tags={
                    PRODUCT_TAG: c.product_id,
                    FAMILY_TAG: c.family,
                    ENVIRONMENT_TAG: PRODUCTION,
                },
                description=f"Demand forecaster for {c.product_id} ({PRODUCTION}).",
            )
        )
    versions = registry.write_plans(plans)
    moves = [
        Move(
            c.product_id,
            c.production.version if c.production else None,
            versions[c.production_model],
            c.product_id in canaries,
        )
        for c in changes
    ]
    ops = RegistryOps()
    ended: dict[str, dict[str, Any]] = {}
    for c, m in zip(changes, moves, strict=True):  # a reused version: this batch, not rolled back
        ops.set_version_tags.append((c.production_model, int(m.new or 0), BATCH_TAG, batch))
        if c.rolled_back_before:
            ops.delete_version_tags.append((c.production_model, int(m.new or 0), ROLLED_BACK_TAG))
        model = now.get(c.product_id)
        running = None if model is None else model.aliases.get(CANARY_ALIAS)
        if model is not None and running is not None and running != m.new:
            if not m.canary:  # a new canary's alias and record replaced the old ones
                canary.end(ops, model)
            ended[c.product_id] = {"version": running, "outcome": "superseded", "by": m.new}
    apply_ops(client, ops, settings.registry_concurrency)
    for started in (False, True):
        group = [(c, m) for c, m in zip(changes, moves, strict=True) if m.canary == started]
        if group:
            why = f"canary on {share * 100:g}% of requests: {reason}" if started else reason
            _record_promotion(registry, group, batch, actor, why, share, ended, detail)
    _status(
        registry, {m.product_id: {"production_version": str(m.new)} for m in moves if not m.canary}
    )
    return moves


def _current(c: Change) -> dict[str, Any]:
    """The production current tag's body for a promoted staging winner (without its version)."""
    return {"config": c.staging.config, "data_fingerprint": c.staging.data_fingerprint}


def _record_promotion(
    registry: Registry,
    group: list[tuple[Change, Move]],
    batch: str,
    actor: str,
    reason: str,
    share: float,
    ended: dict[str, dict[str, Any]],
    detail: dict[str, Any] | None,
) -> None:
    """One `promote` audit record for a batch's promotions, another for its canary starts."""
    info: dict[str, Any] = {
        "previous": {m.product_id: m.old for _, m in group},
        "staging": {c.product_id: c.staging.version for c, _ in group},
        **(detail or {}),
    }
    lines: dict[str, dict[str, Any]] = {
        m.product_id: {"version": m.new, "outcome": "started", "share": share, "champion": m.old}
        for _, m in group
        if m.canary
    }
    for _, m in group:
        if m.product_id in ended:
            lines.setdefault(m.product_id, {})["superseded"] = ended[m.product_id]
    if lines:
        info["canary"] = lines
    record_action(
        registry.settings.resolved_audit_url,
        AuditEntry(
            action="promote",
            actor=actor,
            products=[m.product_id for _, m in group],
            versions={m.product_id: str(m.new) for _, m in group},
            reason=reason,
            batch=batch,
            detail=info,
        ),
    )


def verify_all(registry: Registry, versions: list[ModelVersion]) -> None:
    """Check every version's files against its signature before anything is written.

    Raises PromotionError naming each refused product and version (nothing is written)."""
    refused = [c.error for c in check_versions(registry, versions) if c.error]
    if refused:
        raise PromotionError(
            f"refused {len(refused)} unverifiable model(s), production unchanged: "
            + "; ".join(refused[:20])
            + ("; ..." if len(refused) > 20 else "")
        )


def _still_current(
    registry: Registry, changes: list[Change]
) -> tuple[list[Change], dict[str, ModelState]]:
    """The changes whose production is still what the plan saw (another promotion or a
    rollback since then makes the plan stale for that product: it is skipped, not forced),
    and the production models read to check it."""
    now = by_product(snapshot(registry, [c.product_id for c in changes]), PRODUCTION)
    fresh = []
    for c in changes:
        model = now.get(c.product_id)
        serving = None if model is None or model.retired else model.aliases.get(CHAMPION_ALIAS)
        planned = c.production.version if c.production else None
        if serving == planned and not (model is not None and model.retired):
            fresh.append(c)
        else:
            log.warning(
                "%s: production changed since the plan (v%s): skipped", c.product_id, serving
            )
    return fresh, now


def batch_moves(registry: Registry, batch: str) -> dict[str, tuple[int | None, int]]:
    """product -> (version before, version promoted) of every promotion in this batch."""
    found = audit_log(registry.settings.resolved_audit_url).records(action="promote", batch=batch)
    if not found:
        raise PromotionError(f"no promotion batch {batch!r} in the audit trail")
    out: dict[str, tuple[int | None, int]] = {}
    for record in found:
        previous = record.detail.get("previous", {})
        for pid, version in record.versions.items():
            before = previous.get(pid)
            out[pid] = (None if before is None else int(before), int(version))
    return out


def rollback(
    registry: Registry,
    products: Collection[str],
    actor: str,
    reason: str,
    to_version: int | None = None,
    batch: str | None = None,
) -> list[Move]:
    """Move production back: to `to_version`, to what a batch replaced (`batch`), else to the
    newest earlier version not rolled back. The version left is tagged rolled back with the
    reason, so the gate does not promote it again without a new approval.

    A product whose production moved on since the batch is skipped with a warning; any other
    problem refuses the whole request before anything changes.
    """
    from_batch = batch_moves(registry, batch) if batch else {}
    wanted = sorted(set(products) | set(from_batch))
    if not wanted:
        raise PromotionError("nothing to roll back: name products or a batch")
    models = by_product(snapshot(registry, wanted), PRODUCTION)
    moves, problems, aborts = [], [], []
    for pid in wanted:
        model = models.get(pid)
        current = None if model is None else model.aliases.get(CHAMPION_ALIAS)
        if model is None or model.retired or current is None:
            problems.append(f"{pid!r} has no production model in service")
            continue
        if pid in from_batch:
            before, promoted = from_batch[pid]
            if current != promoted and model.aliases.get(CANARY_ALIAS) == promoted:
                aborts.append(pid)  # the batch started it as a canary: it is aborted
                continue
            if current != promoted:
                log.warning(
                    "%s: production is v%s, not batch %s's v%s: left alone",
                    pid,
                    current,
                    batch,
                    promoted,
                )
                continue
            target = before
        elif to_version is not None:
            target = to_version
        else:
            earlier = [
                v.version for v in model.versions if v.version < current and not v.rolled_back
            ]
            target = max(earlier) if earlier else None
            if target is None:
                problems.append(f"{pid!r} has no earlier production version than v{current}")
                continue
        if target is not None and model.by_version(target) is None:
            problems.append(f"{pid!r} has no production v{target}")
            continue
        if target != current:
            moves.append(Move(pid, current, target))
    if problems:
        raise PromotionError("; ".join(problems))
    done = []
    if moves or not aborts:
        done = move_production(registry, models, moves, "rollback", actor, reason, batch)
    if aborts:
        _, running = canary.running(registry, aborts)
        ended = canary.abort(registry, running, actor, reason, batch)
        done += [Move(c.product_id, c.version, c.champion, canary=True) for c in ended]
    return done


def complete_canaries(
    registry: Registry, products: Collection[str] | None, actor: str, reason: str
) -> list[Move]:
    """Make each canary (of these products; None: every running one) its product's champion
    through `move_production`: verified first, one `promote` audit record, and the canary's
    alias and record removed in the same write. A canary whose alias and record disagree is
    refused (`factory canary abort` clears it), and so is the whole request with it."""
    models, found = canary.chosen(registry, products)
    broken = [f"{c.product_id!r}: {c.problem}" for c in found if c.problem]
    if broken:
        raise CanaryError("cannot complete " + "; ".join(broken))
    moves = [Move(c.product_id, c.champion, c.version) for c in found]
    if not moves:
        return []
    return move_production(registry, models, moves, "promote", actor, reason)


def move_production(
    registry: Registry,
    models: dict[str, ModelState],
    moves: list[Move],
    action: Literal["promote", "rollback"],
    actor: str,
    reason: str,
    batch: str | None = None,
) -> list[Move]:
    """Point production aliases at existing versions in one write, with one audit record.
    A rollback tags each version it leaves; a promotion clears the mark of the one it picks.
    Every version production will point at is verified first (its files and signature)."""
    targets = [(models[m.product_id].name, m.new) for m in moves if m.new is not None]
    found = reading.versions_by_key(registry.client, targets)
    verify_all(registry, [found[t] for t in targets if t in found])
    ops = RegistryOps()
    mark = json.dumps({"reason": reason, "batch": batch, "at": _now(), "by": actor})
    ended: dict[str, dict[str, Any]] = {}
    for mv in moves:
        model = models[mv.product_id]
        if action == "rollback" and mv.old is not None:
            ops.set_version_tags.append((model.name, mv.old, ROLLED_BACK_TAG, mark))
        _point(ops, model, mv.new)
        running = canary.end(ops, model)  # the champion it was measured against moves
        if running is not None:
            what = "completed" if running == mv.new else f"ended by {action}"
            ended[mv.product_id] = {"version": running, "outcome": what, "champion": mv.old}
    apply_ops(registry.client, ops, registry.settings.registry_concurrency)
    record_action(
        registry.settings.resolved_audit_url,
        AuditEntry(
            action=action,
            actor=actor,
            products=[m.product_id for m in moves],
            versions={m.product_id: _text(m.new) for m in moves},
            reason=reason,
            batch=batch,
            detail={
                "previous": {m.product_id: m.old for m in moves},
                **({"canary": ended} if ended else {}),
            },
        ),
    )
    _status(registry, {m.product_id: {"production_version": _text(m.new)} for m in moves})
    return moves


def _point(ops: RegistryOps, model: ModelState, version: int | None) -> None:
    """Aim a model's serving alias and current tag at a version (None: at nothing)."""
    alias = ALIAS[model.environment]
    target = model.by_version(version)
    if target is None:
        ops.delete_aliases.append((model.name, alias))
        ops.delete_model_tags.append((model.name, CURRENT_TAG))
        return
    ops.set_aliases.append((model.name, alias, target.version))
    ops.set_model_tags.append((model.name, CURRENT_TAG, current_body(target)))
    if target.rolled_back:
        ops.delete_version_tags.append((model.name, target.version, ROLLED_BACK_TAG))


def retire(registry: Registry, retirements: list[Retirement], actor: str) -> list[str]:
    """Take products out of service: aliases and current tags removed from both models, each
    model tagged retired with the versions it served (kept for `restore`)."""
    reasons = {r.product_id: r.reason for r in retirements}
    models = snapshot(registry, list(reasons))
    ops = RegistryOps()
    done: dict[str, dict[str, int | None]] = {}
    ended: dict[str, dict[str, Any]] = {}
    for m in models:
        if m.retired or m.product_id not in reasons:
            continue
        served = m.aliases.get(ALIAS[m.environment])
        done.setdefault(m.product_id, {})[m.environment] = served
        body = {"reason": reasons[m.product_id], "at": _now(), "by": actor, "version": served}
        ops.set_model_tags.append((m.name, RETIRED_TAG, json.dumps(body)))
        ops.delete_aliases.append((m.name, ALIAS[m.environment]))
        ops.delete_model_tags.append((m.name, CURRENT_TAG))
        if (running := canary.end(ops, m)) is not None:  # not restored with the product
            ended[m.product_id] = {"version": running, "outcome": "ended by retire"}
    if not done:
        return []
    apply_ops(registry.client, ops, registry.settings.registry_concurrency)
    retired = sorted(done)
    record_action(
        registry.settings.resolved_audit_url,
        AuditEntry(
            action="retire",
            actor=actor,
            products=retired,
            versions={p: _text(done[p].get(PRODUCTION)) for p in retired},
            reason="; ".join(sorted({reasons[p] for p in retired})),
            detail={
                "reasons": {p: reasons[p] for p in retired},
                "served": done,
                **({"canary": ended} if ended else {}),
            },
        ),
    )
    _status(registry, {p: {"status": "retired", "reason": reasons[p]} for p in retired})
    return retired


def restore(registry: Registry, products: Collection[str], actor: str, reason: str) -> list[str]:
    """Undo retirements: each model's alias and current tag back on the version it served."""
    models = snapshot(registry, sorted(set(products)))
    retired = {m.product_id for m in models if m.retired}
    missing = sorted(set(products) - retired)
    if missing:
        raise PromotionError(f"not retired: {', '.join(repr(p) for p in missing)}")
    ops = RegistryOps()
    versions: dict[str, dict[str, int | None]] = {}
    marks = reading.model_tags_by_name(
        registry.client, f"{registry.prefix}.", (RETIRED_TAG,), [m.name for m in models]
    )
    for m in models:
        if not m.retired:
            continue
        served = marks.get(m.name, {}).get(RETIRED_TAG, "{}")
        version = json.loads(served).get("version")
        _point(ops, m, version)
        ops.delete_model_tags.append((m.name, RETIRED_TAG))
        versions.setdefault(m.product_id, {})[m.environment] = version
    apply_ops(registry.client, ops, registry.settings.registry_concurrency)
    done = sorted(versions)
    record_action(
        registry.settings.resolved_audit_url,
        AuditEntry(
            action="restore",
            actor=actor,
            products=done,
            versions={p: _text(versions[p].get(PRODUCTION)) for p in done},
            reason=reason,
            detail={"served": versions},
        ),
    )
    _status(
        registry,
        {
            p: {
                "status": "registered",
                "reason": f"restored: {reason}",
                "production_version": _text(versions[p].get(PRODUCTION)),
            }
            for p in done
        },
    )
    return done


def _text(version: int | None) -> str:
    return "" if version is None else str(version)


def _status(registry: Registry, changes: dict[str, dict[str, Any]]) -> None:
    if changes:
        fix_status(registry.settings.state_dir, changes, {})
