"""plan-promotion, promote-batch: the steps of promote-fleet (retire-products is in lifecycle)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from pydantic import TypeAdapter

from factory.adapters.data import parsed_rows, read_panel
from factory.adapters.prefect_env import retry_unless_user_error
from factory.adapters.registry import lifecycle
from factory.adapters.registry.doctor import snapshot
from factory.adapters.registry.registry import Registry
from factory.adapters.state import shadow_evidence
from factory.core.canary import CanaryError, check_share
from factory.core.contract import fleet_series, validate_panel
from factory.core.fleet import load_fleet
from factory.core.promotion import (
    BlastRadius,
    Change,
    Retirement,
    blast_radius,
    pending_changes,
    recent_volume,
    rescore,
    retirements,
    weigh,
    with_shadow_evidence,
)
from factory.settings import Settings
from tasks.lifecycle import writer_lease


@dataclass
class PromotionPlan:
    """What one promote-fleet run found: the batch it would promote and who retires."""

    batch: str
    radius: BlastRadius
    retire: list[Retirement] = field(default_factory=list)
    limits: str = ""  # fleet.yaml's promotion limits the plan was measured against
    canary_share: float = 0.0  # > 0: products already in production start as a canary


PLAN = TypeAdapter(PromotionPlan)


def new_batch_id() -> str:
    """`<UTC timestamp>-<6 hex>`: sortable and unique."""
    return f"{datetime.now(UTC):%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:6]}"


@task(cache_policy=NO_CACHE, task_run_name="plan-promotion")
def plan_promotion(
    fleet_path: str,
    settings: Settings,
    products: list[str] | None = None,
    canary_share: float | None = None,
) -> PromotionPlan:
    """Staging winners newer than production, re-scored against production on the same
    windows, weighed by recent sales and shown with their shadow evidence (the realized errors
    monitor-drift compared); and the products to retire. `canary_share`
    overrides fleet.yaml's `promotion.canary_share`."""
    log = get_run_logger()
    spec = load_fleet(Path(fleet_path)).spec
    share = spec.promotion.canary_share if canary_share is None else check_share(canary_share)
    if share and spec.auto_promote:
        raise CanaryError("a canary needs promotion mode approve or manual in fleet.yaml, not auto")
    registry = Registry(settings)
    models = snapshot(registry)
    panel = read_panel(settings.resolved_data_url)
    today = pd.Timestamp(settings.as_of) if settings.as_of else pd.Timestamp.now().normalize()
    clean, report = validate_panel(panel, spec, today)
    series = fleet_series(clean, spec, report.assignment)
    family_of = {p: f for f, ids in report.assignment.items() for p in ids}
    changes = pending_changes(models)
    if products:
        changes = [c for c in changes if c.product_id in set(products)]
    changes = weigh(changes, recent_volume(series, spec.promotion.volume_periods))
    changes = with_shadow_evidence(changes, shadow_evidence(settings.state_dir))
    metric = spec.gate.metric
    scored: list[Change] = []
    for c in changes:
        family = family_of.get(c.product_id) or c.family
        try:
            scored.append(rescore(c, series.get(c.product_id), spec.family(family), metric))
        except KeyError:  # its family left fleet.yaml: unscored, so it needs approval
            scored.append(c)
    radius = blast_radius(scored, spec.promotion, metric, len(series))
    rows = parsed_rows(panel)
    ids = rows["unique_id"].astype(str)
    members = {p: f for f, group in spec.assign(ids.unique()).items() for p in group}
    sold = rows.loc[rows["y"] > 0].groupby(ids[rows["y"] > 0])["ds"].max()
    last_sale = {p: (sold[p] if p in sold.index else None) for p in members}
    live = {m.product_id for m in models if not m.retired}
    retire = retirements(live, spec, members, last_sale, today)
    if products:
        retire = [r for r in retire if r.product_id in set(products)]
    log.info(
        "%d staging winner(s) newer than production (%.1f%% of volume replaced), %d to retire",
        len(radius.changes),
        100 * radius.replaced_share,
        len(retire),
    )
    rule = spec.promotion
    limits = f"auto_max_share {rule.auto_max_share:.1%}, max_regression {rule.max_regression:.1%}"
    return PromotionPlan(new_batch_id(), radius, retire, limits, share)


@task(
    cache_policy=NO_CACHE,
    retries=2,
    retry_delay_seconds=[5, 30],
    retry_condition_fn=retry_unless_user_error,
    task_run_name="promote-{batch}",
)
def promote_batch(
    settings: Settings,
    changes: list[Change],
    batch: str,
    actor: str,
    reason: str,
    canary_share: float = 0.0,
) -> list[lifecycle.Move]:
    """Copy these staging winners into production under one batch id (with a canary share,
    those replacing a champion start as its canary)."""
    with writer_lease(settings, f"promote {batch}"):
        return lifecycle.promote(
            Registry(settings), changes, batch, actor, reason, canary_share=canary_share
        )
