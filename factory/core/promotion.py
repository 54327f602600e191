"""Promotion planning: which staging winners would change production, how much of the fleet
that touches, and whether the batch may go at once or needs an engineer's approval.

Pure: the registry snapshot (`ModelState`), the re-scored metrics and the recent sales come
in; the plan, the blast radius and the markdown an approver reads go out.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd

from factory.core.backtest import backtest, rolling_windows
from factory.core.canary import CANARY_ALIAS
from factory.core.drift import ShadowEvidence
from factory.core.errors import UserError
from factory.core.fitness import periods_between
from factory.core.fleet import FamilySpec, FleetSpec, PromotionSpec
from factory.core.forecaster import ModelConfig, Series
from factory.core.repair import ModelState, VersionInfo

STAGING_ALIAS, PRODUCTION_ALIAS = "candidate", "champion"


class PromotionError(UserError, ValueError):
    """An approval or a rollback that cannot be carried out as asked."""

    hint = "`factory audit` shows what production went through; `factory status` what it serves"


@dataclass(frozen=True)
class Change:
    """One product whose staging winner differs from what production serves."""

    product_id: str
    family: str
    staging_model: str
    staging: VersionInfo
    production_model: str
    production: VersionInfo | None  # what production serves now; None: its first model
    rolled_back_before: bool = False  # production once rolled this very model back
    volume: float = 0.0  # recent sales
    share: float = 0.0  # of the fleet's recent sales
    metric: str = ""
    new_score: float | None = None  # the staging winner, re-scored on today's windows
    old_score: float | None = None  # the production version, on the same windows
    shadow: ShadowEvidence | None = None  # both versions' realized errors (monitor-drift)

    @property
    def is_new(self) -> bool:
        """The product has no production model yet."""
        return self.production is None

    @property
    def refresh(self) -> bool:
        """Production's own configuration retrained on newer data."""
        p = self.production
        return p is not None and p.config is not None and p.config == self.staging.config

    @property
    def regression(self) -> float | None:
        """Relative metric change against production (lower is better, so > 0 is worse); a
        refresh's is 0 (the same configuration scores the same on the same windows)."""
        if self.refresh:
            return 0.0
        if self.new_score is None or self.old_score is None:
            return None
        if self.old_score == 0:
            return 0.0 if self.new_score == 0 else math.inf
        return (self.new_score - self.old_score) / abs(self.old_score)


def pending_changes(models: Iterable[ModelState], exclude: Iterable[str] = ()) -> list[Change]:
    """Staging winners newer than production (a different training key), by product."""
    skip = set(exclude)
    by_product: dict[str, dict[str, ModelState]] = {}
    for m in models:
        by_product.setdefault(m.product_id, {})[m.environment] = m
    out = []
    for pid, envs in sorted(by_product.items()):
        staging, production = envs.get("staging"), envs.get("production")
        if pid in skip or staging is None or staging.retired:
            continue
        if production is not None and production.retired:
            continue
        candidate = staging.by_version(staging.aliases.get(STAGING_ALIAS))
        if candidate is None or candidate.train_key is None:
            continue
        serving = None
        if production is not None:
            serving = production.by_version(production.aliases.get(PRODUCTION_ALIAS))
        if serving is not None and serving.train_key == candidate.train_key:
            continue
        if _in_canary(production, candidate):  # `factory canary complete|abort` decides
            continue
        blocked = production is not None and any(
            v.rolled_back and v.train_key == candidate.train_key for v in production.versions
        )
        out.append(
            Change(
                pid,
                staging.family,
                staging.name,
                candidate,
                production.name
                if production
                else staging.name.replace(".staging.", ".production.", 1),
                serving,
                rolled_back_before=blocked,
            )
        )
    return out


def _in_canary(production: ModelState | None, candidate: VersionInfo) -> bool:
    """Production runs this staging winner as its canary already."""
    if production is None:
        return False
    canary = production.by_version(production.aliases.get(CANARY_ALIAS))
    return canary is not None and canary.train_key == candidate.train_key


def weigh(changes: list[Change], volume: dict[str, float]) -> list[Change]:
    """Each change with its recent sales and its share of the whole fleet's."""
    total = sum(v for v in volume.values() if v > 0)
    return [
        replace(
            c,
            volume=volume.get(c.product_id, 0.0),
            share=max(volume.get(c.product_id, 0.0), 0.0) / total if total else 0.0,
        )
        for c in changes
    ]


def with_shadow_evidence(
    changes: list[Change], evidence: dict[str, ShadowEvidence]
) -> list[Change]:
    """Each change with the shadow evidence monitor-drift recorded for its product, when that
    compared exactly this staging winner with exactly the production version it would replace."""
    out = []
    for c in changes:
        e = evidence.get(c.product_id)
        fits = (
            e is not None
            and c.production is not None
            and e.shadow_version == str(c.staging.version)
            and e.serving_version == str(c.production.version)
        )
        out.append(replace(c, shadow=e) if fits else c)
    return out


def rescore(change: Change, series: Series | None, family: FamilySpec, metric: str) -> Change:
    """The staging winner and the production version backtested on the same, current windows.

    Only a change of configuration is backtested: a refresh (the production configuration
    retrained on new data) scores the same on the same windows by construction, and a new
    product has nothing to compare with. No score when the product has no usable history now,
    nor when either model is pooled (trained across products, it cannot be refitted on this
    product alone): an unscored change asks for an approval.
    """
    change = replace(change, metric=metric)
    if change.is_new or change.refresh or series is None:
        return change
    assert change.production is not None and change.staging.config is not None
    try:
        windows = rolling_windows(
            len(series.y), family.horizon, family.backtest.windows, family.backtest_step
        )
    except ValueError:
        return change
    staging = ModelConfig.from_json(change.staging.config)
    prod = ModelConfig.from_json(change.production.config or "")
    if staging.pooled or prod.pooled:
        return change
    new = backtest(staging, series, windows).mean[metric]
    old = backtest(prod, series, windows).mean[metric]
    return replace(change, new_score=new, old_score=old)


def recent_volume(series: dict[str, Series], periods: int) -> dict[str, float]:
    """Each product's sales over its last `periods` observations."""
    return {pid: float(np.nansum(s.y[-periods:])) for pid, s in series.items()}


@dataclass(frozen=True)
class Retirement:
    """A product whose models leave production, and why."""

    product_id: str
    reason: str


def retirements(
    registered: Iterable[str],
    fleet: FleetSpec,
    assignment: dict[str, str],
    last_sale: dict[str, pd.Timestamp | None],
    today: pd.Timestamp,
) -> list[Retirement]:
    """Registered products no family covers any more, or (when fleet.yaml sets
    `retirement.no_sales_periods`) without a sale for that many periods of their family.

    `assignment`: product -> family for every product the fleet covers in today's data;
    `last_sale`: product -> its last date with sales (None: never sold), for products in it.
    """
    rule = fleet.retirement
    out = []
    for pid in sorted(set(registered)):
        family = assignment.get(pid)
        if family is None:
            if rule.removed_from_fleet:
                out.append(Retirement(pid, "no longer in the fleet (fleet.yaml or the data)"))
            continue
        if rule.no_sales_periods is None or pid not in last_sale:
            continue
        last = last_sale[pid]
        freq = fleet.family(family).frequency
        idle = None if last is None else int(periods_between(last, today, freq)) - 1
        if idle is None or idle >= rule.no_sales_periods:
            since = "never sold" if last is None else f"last sale {last.date()}"
            out.append(Retirement(pid, f"no sales for {rule.no_sales_periods}+ periods ({since})"))
    return out


@dataclass(frozen=True)
class BlastRadius:
    """What a batch would change in production."""

    changes: list[Change]  # worst regression first
    fleet_products: int
    metric: str
    replaced_share: float  # fleet volume whose production model would be replaced
    new_share: float  # fleet volume of products getting their first production model
    reasons: list[str] = field(default_factory=list)  # why it needs approval ([]: it may go)

    @property
    def needs_approval(self) -> bool:
        """Beyond the limits fleet.yaml sets (or a mode that always asks)."""
        return bool(self.reasons)

    @property
    def replaced(self) -> list[Change]:
        """Changes that replace a production version."""
        return [c for c in self.changes if not c.is_new]

    @property
    def worst(self) -> Change | None:
        """The change with the largest metric regression."""
        scored = [c for c in self.replaced if c.regression is not None]
        return max(scored, key=lambda c: c.regression or 0.0) if scored else None

    def aggregate(self) -> tuple[float | None, float | None]:
        """Volume-weighted mean metric of the replaced products before and after."""
        scored = [c for c in self.replaced if c.old_score is not None and c.new_score is not None]
        weights = [max(c.volume, 0.0) for c in scored]
        if not scored:
            return None, None
        if not sum(weights):
            weights = [1.0] * len(scored)
        total = sum(weights)
        before = sum(w * (c.old_score or 0.0) for w, c in zip(weights, scored, strict=True))
        after = sum(w * (c.new_score or 0.0) for w, c in zip(weights, scored, strict=True))
        return before / total, after / total


def blast_radius(
    changes: list[Change], spec: PromotionSpec, metric: str, fleet_products: int
) -> BlastRadius:
    """Size a batch and list why it needs approval under the fleet's promotion limits."""
    ordered = sorted(changes, key=_worst_first)
    replaced = sum(c.share for c in ordered if not c.is_new)
    new = sum(c.share for c in ordered if c.is_new)
    reasons: list[str] = []
    if ordered and spec.mode == "manual":
        reasons.append("promotion mode is manual: every batch is approved by an engineer")
    if replaced > spec.auto_max_share:
        reasons.append(
            f"replaces models behind {replaced:.1%} of fleet volume"
            f" (auto_max_share {spec.auto_max_share:.1%})"
        )
    worse = [c for c in ordered if c.regression is not None and c.regression > spec.max_regression]
    if worse:
        w = worse[0]
        reasons.append(
            f"{len(worse)} product(s) score worse than production, worst {w.product_id!r}"
            f" {metric} {_pct(w.regression)} (max_regression {spec.max_regression:.1%})"
        )
    unscored = [c for c in ordered if not c.is_new and c.regression is None]
    if unscored:
        reasons.append(f"{len(unscored)} product(s) could not be re-scored against production")
    blocked = [c.product_id for c in ordered if c.rolled_back_before]
    if blocked:
        reasons.append(f"{len(blocked)} model(s) were rolled back before: {_few(blocked)}")
    if spec.approve_new and any(c.is_new for c in ordered):
        reasons.append(f"{sum(c.is_new for c in ordered)} new product(s) and approve_new is set")
    return BlastRadius(ordered, fleet_products, metric, replaced, new, reasons)


def _worst_first(c: Change) -> tuple[bool, float, float, str]:
    r = c.regression
    return (r is None and c.is_new, -(r if r is not None else -math.inf), -c.share, c.product_id)


def _pct(value: float | None) -> str:
    if value is None:
        return "n/a"
    return "+inf" if value == math.inf else f"{value:+.1%}"


def _few(ids: list[str], n: int = 5) -> str:
    shown = ", ".join(repr(i) for i in ids[:n])
    return shown + (f" (+{len(ids) - n} more)" if len(ids) > n else "")


def select(radius: BlastRadius, products: list[str] | None) -> tuple[list[Change], list[str]]:
    """The approved changes (`products` None or empty: all) and the ids that are not in it."""
    if not products:
        return list(radius.changes), []
    wanted = set(products)
    chosen = [c for c in radius.changes if c.product_id in wanted]
    unknown = sorted(wanted - {c.product_id for c in chosen})
    return chosen, unknown


def describe(radius: BlastRadius, batch: str, limit: int = 50) -> str:
    """The markdown an approver reads in the Prefect UI: the limits hit, then the table of
    what would change, worst first."""
    before, after = radius.aggregate()
    lines = [
        f"## Promotion batch `{batch}`: {len(radius.changes)} product(s) would change",
        "",
        f"- Replaces production models behind **{radius.replaced_share:.1%}** of fleet volume"
        f" ({len(radius.replaced)} products); first production model for"
        f" {len(radius.changes) - len(radius.replaced)} new product(s)"
        f" ({radius.new_share:.1%} of volume).",
    ]
    if before is not None and after is not None:
        lines.append(
            f"- Volume-weighted {radius.metric} of the replaced products:"
            f" {before:.4g} now -> {after:.4g} after ({_pct(_rel(after, before))})."
        )
    if radius.reasons:
        lines += ["", "**Needs approval because:**", ""] + [f"- {r}" for r in radius.reasons]
    else:
        lines += ["", "**Within fleet.yaml's promotion limits:** no approval needed."]
    shown = radius.changes[:limit]
    shadowed = any(c.shadow is not None for c in shown)  # evidence columns only when any
    lines += [
        "",
        f"| product | family | production | staging | {radius.metric} now | "
        f"{radius.metric} new | change | volume share | "
        + ("shadow WAPE | production WAPE | shadow periods | " if shadowed else "")
        + "note |",
        "|---|---|---|---|---|---|---|---|" + ("---|---|---|" if shadowed else "") + "---|",
    ]
    for c in shown:
        lines.append(
            f"| `{_md(c.product_id)}` | {c.family} | "
            f"{'-' if c.production is None else f'v{c.production.version}'} | "
            f"v{c.staging.version} | {_num(c.old_score)} | {_num(c.new_score)} | "
            f"{_pct(c.regression)} | {c.share:.2%} | "
            + (_shadow_cells(c.shadow) if shadowed else "")
            + f"{_note(c)} |"
        )
    if len(radius.changes) > limit:
        lines.append(f"\n... and {len(radius.changes) - limit} more (`factory promote --plan`).")
    if radius.reasons:
        lines += [
            "",
            "Resume with **decision** `approve` (all, or only the ids in **products**) or"
            " `reject` with a **reason**; **approver** is recorded in the audit trail.",
        ]
    return "\n".join(lines)


def _shadow_cells(e: ShadowEvidence | None) -> str:
    """The shadow challenger's and production's realized WAPE on the same actuals."""
    if e is None:
        return "- | - | - | "
    return f"{_num(e.shadow_wape)} | {_num(e.serving_wape)} | {e.periods} | "


def _rel(after: float, before: float) -> float | None:
    return None if before == 0 else (after - before) / abs(before)


def _num(v: float | None) -> str:
    return "-" if v is None else f"{v:.4g}"


def _note(c: Change) -> str:
    if c.rolled_back_before:
        return "rolled back before"
    if c.refresh:
        return "refresh (same config, new data)"
    return "new product" if c.is_new else ""


def _md(text: str) -> str:
    return text.replace("|", "\\|").replace("`", "'").replace("\n", " ")
