"""train-<shard>: fit, backtest and gate a shard's products on Ray, then register its winners."""

from __future__ import annotations

import ray
from prefect import task
from prefect.cache_policies import NO_CACHE

from factory.adapters.audit_log import current_actor, record_action
from factory.adapters.fanout import train_on_ray
from factory.adapters.lineage import RunLineage
from factory.adapters.prefect_env import retry_unless_user_error
from factory.adapters.registry.registry import Registry
from factory.core.audit import AuditEntry
from factory.core.fleet import LoadedFleet, Shard
from factory.core.outcomes import ShardReport


@task(
    cache_policy=NO_CACHE,
    retries=2,
    retry_delay_seconds=[5, 30],
    retry_condition_fn=retry_unless_user_error,
    task_run_name="train-{shard.key}",
)
def train_shard(
    shard: Shard,
    items_ref: ray.ObjectRef,
    fleet: LoadedFleet,
    keys: dict[str, str],
    lineage: RunLineage,
    registry: Registry,
) -> ShardReport:
    """Fit, backtest and gate every product of a shard on Ray, then register its winners
    (`keys`: the training key of each of the shard's products).

    A bad product becomes a failed outcome with its reason; only infrastructure errors raise
    (and are retried). Every attempt reads its champions afresh, and a version already made
    from a product's training key is reused, so a retry never registers anything twice.
    """
    spec = fleet.spec
    family = spec.family(shard.family)
    champions = registry.champions(shard.product_ids)
    outcomes = train_on_ray(items_ref, family, spec.gate, champions)
    done, registry_s = registry.register_shard(
        shard.key,
        outcomes,
        keys,
        lineage,
        spec.auto_promote and not registry.settings.least_privilege,  # else promote-fleet
    )
    if done:
        record_action(
            registry.settings.resolved_audit_url,
            AuditEntry(
                action="register",
                actor=current_actor(),
                products=[r.product_id for r in done],
                versions={r.product_id: r.staging_version for r in done},
                reason=f"gate winners of shard {shard.key}",
                detail={"production": {r.product_id: r.production_version for r in done}},
            ),
        )
    return ShardReport(shard.key, outcomes, {r.product_id: r for r in done}, registry_s, champions)
