"""What the registry should look like, and the fixes that bring it back there.

The registry is the source of truth. A crash or an outage between the separate writes of one
registration (version, alias, current tag, production copy) leaves a product half-done; a
status row written from a stale view disagrees with it. `plan_fixes` compares one snapshot
of the registry (and the status rows) with the invariants below and lists what to change:

- no two versions of a model share a training key (keep the aliased one, else the oldest);
- each model's alias points to its newest version that was not rolled back, whose config and
  data the model's current tag records; under governed promotion a production alias on an
  older live version is correct (a rollback or a manifest sync put it there) and only a
  missing or dangling one is fixed;
- with automatic promotion, the staging candidate has a production copy, unless production
  already has (or rolled back) a version of its training key;
- each product's status row names the versions the registry serves.

A retired product's models keep their versions but have no alias and no current tag: the
doctor only removes duplicated versions there and leaves its status row alone.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Literal

Action = Literal["delete-version", "set-alias", "set-current", "copy-to-production", "set-status"]


@dataclass(frozen=True)
class VersionInfo:
    """One registered version as the doctor needs it."""

    version: int
    train_key: str | None = None
    config: str | None = None
    data_fingerprint: str | None = None
    rolled_back: bool = False  # production rolled this version back; never served again by a fix


@dataclass
class ModelState:
    """One registered model: a product in one environment."""

    name: str
    product_id: str
    environment: str
    versions: list[VersionInfo]
    aliases: dict[str, int] = field(default_factory=dict)
    current: dict[str, Any] | None = None
    family: str = ""
    retired: bool = False  # the product left production; aliases and current tag removed

    def by_version(self, version: int | None) -> VersionInfo | None:
        """The version with this number, if the model has it."""
        return next((v for v in self.versions if v.version == version), None)


@dataclass(frozen=True)
class Fix:
    """One change that restores an invariant, and the problem it fixes."""

    action: Action
    product_id: str
    model: str
    version: int | None
    problem: str
    value: str | None = None  # the current tag's JSON, or the status columns' JSON


def current_body(v: VersionInfo) -> str:
    """The current-tag JSON for a version."""
    return json.dumps(
        {"version": str(v.version), "config": v.config, "data_fingerprint": v.data_fingerprint}
    )


def model_fixes(model: ModelState, alias: str, governed: bool = False) -> list[Fix]:
    """Duplicate versions, a missing or stale alias, a missing or stale current tag.

    The alias belongs on the newest version not rolled back; when `governed` (a production
    model without automatic promotion) any live version is a correct target and only a
    missing or dangling alias moves. A retired model only loses its duplicates."""
    fixes = _duplicates(model)
    if model.retired:
        return fixes
    dropped = {f.version for f in fixes}
    live = {v.version: v for v in model.versions if v.version not in dropped}
    newest = max((n for n, v in live.items() if not v.rolled_back), default=None)
    target = model.aliases.get(alias)
    if newest is not None and (target not in live or (not governed and target != newest)):
        seen = "missing" if target is None else f"at v{target}"
        if target is not None and target not in live:
            seen += " (no such version)"
        problem = f"@{alias} {seen}, newest winner is v{newest}"
        fixes.append(Fix("set-alias", model.product_id, model.name, newest, problem))
        target = newest
    served = live.get(target) if target is not None else None
    if served is None:
        return fixes
    if model.current is None or model.current.get("version") != str(served.version):
        seen = "missing" if model.current is None else f"says v{model.current.get('version')}"
        fixes.append(
            Fix(
                "set-current",
                model.product_id,
                model.name,
                served.version,
                f"current tag {seen}, @{alias} is v{served.version}",
                current_body(served),
            )
        )
    return fixes


def _duplicates(model: ModelState) -> list[Fix]:
    """Versions whose training key an earlier-ranked version has: the aliased one is kept,
    else the one the current tag names, else the oldest."""
    aliased = set(model.aliases.values())
    current = str(model.current.get("version")) if model.current else None
    keep: dict[str, VersionInfo] = {}
    fixes = []
    ranked = sorted(
        model.versions,
        key=lambda v: (v.version not in aliased, str(v.version) != current, v.version),
    )
    for v in ranked:
        if v.train_key is None:
            continue
        first = keep.setdefault(v.train_key, v)
        if first is not v:
            problem = f"v{v.version} duplicates v{first.version} (same training key)"
            fixes.append(Fix("delete-version", model.product_id, model.name, v.version, problem))
    return fixes


def plan_fixes(
    models: list[ModelState],
    aliases: dict[str, str],
    copy_to: str | None,
    production: str = "production",
) -> list[Fix]:
    """Every registry fix for these models (`aliases`: environment -> its serving alias).

    `copy_to` is given only under automatic promotion (it is then the production
    environment): a staging winner without a production copy gets one. Without it promotion
    is governed, and the `production` environment's alias is left where it is unless it is
    missing or names a version that no longer exists."""
    governed = None if copy_to is not None else production
    fixes = [
        f for m in models for f in model_fixes(m, aliases[m.environment], m.environment == governed)
    ]
    if copy_to is None:
        return fixes
    by_key = {(m.product_id, m.environment): m for m in models}
    for m in models:
        if m.environment == copy_to:
            continue
        moved = [f.version for f in fixes if f.model == m.name and f.action == "set-alias"]
        version = moved[-1] if moved else m.aliases.get(aliases[m.environment])
        fix = None if version is None else copy_fix(m, by_key.get((m.product_id, copy_to)), version)
        if fix is not None:
            fixes.append(fix)
    return fixes


def copy_fix(staging: ModelState, production: ModelState | None, version: int) -> Fix | None:
    """A production copy of the staging candidate, when production has none of its key.

    A rolled-back production version keeps its key, so a model production rolled back is
    never copied again; nothing is copied for a retired product."""
    candidate = staging.by_version(version)
    if candidate is None or candidate.train_key is None or staging.retired:
        return None
    if production is not None and (
        production.retired or any(v.train_key == candidate.train_key for v in production.versions)
    ):
        return None
    return Fix(
        "copy-to-production",
        staging.product_id,
        staging.name,
        version,
        f"winner v{version} has no production copy",
    )


def status_fixes(
    models: list[ModelState], rows: dict[str, dict[str, Any]], aliases: dict[str, str]
) -> list[Fix]:
    """Status rows that disagree with a consistent registry, or are missing for a product
    it serves (rebuilt with the served version's training key, so reruns can skip it).
    Retired products are left alone."""
    retired = {m.product_id for m in models if m.retired}
    served: dict[str, dict[str, VersionInfo]] = {}
    for m in models:
        if m.product_id in retired:
            continue
        v = m.by_version(m.aliases.get(aliases[m.environment]))
        if v is not None:
            served.setdefault(m.product_id, {})[m.environment] = v
    fixes = []
    for pid, envs in sorted(served.items()):
        fix = status_fix(pid, rows.get(pid), envs)
        if fix is not None:
            fixes.append(fix)
    return fixes


def status_fix(
    product_id: str, row: dict[str, Any] | None, served: dict[str, VersionInfo]
) -> Fix | None:
    """One product's status fix (`served`: environment -> version), if it needs one."""
    want: dict[str, str | None] = {f"{env}_version": str(v.version) for env, v in served.items()}
    if row is not None and all(_same(row.get(k), v) for k, v in want.items()):
        return None
    if row is None:
        problem = "no status row, the registry serves " + _versions(want)
        newest = max(served.values(), key=lambda v: v.version)
        want["train_key"] = newest.train_key
    else:
        problem = f"status says {_versions({k: row.get(k) for k in want})},"
        problem += f" the registry serves {_versions(want)}"
    return Fix("set-status", product_id, "", None, problem, json.dumps(want))


def _versions(columns: dict[str, Any]) -> str:
    return ", ".join(f"{k.removesuffix('_version')} v{v or '-'}" for k, v in columns.items())


def _same(a: Any, b: str | None) -> bool:
    blank = a is None or (isinstance(a, float) and a != a) or a == ""
    return (b is None and blank) or (not blank and str(a) == b)
