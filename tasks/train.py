"""train-<shard>: fit, backtest and gate a shard's products on Ray, then register its winners."""

from __future__ import annotations

import ray
from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.runtime import task_run

from factory.adapters.fanout import train_on_ray
from factory.adapters.lineage import RunLineage
from factory.adapters.registry.registry import Registry
from factory.core.fleet import LoadedFleet, Shard
from factory.core.outcomes import ShardReport
from factory.core.training import ChampionRef


@task(
    cache_policy=NO_CACHE,
    retries=2,
    retry_delay_seconds=[5, 30],
    task_run_name="train-{shard.key}",
)
def train_shard(
    shard: Shard,
    items_ref: ray.ObjectRef,
    fleet: LoadedFleet,
    champions: dict[str, ChampionRef],
    lineage: RunLineage,
    registry: Registry,
) -> ShardReport:
    """Fit, backtest and gate every product of a shard on Ray, then register its winners.

    A bad product becomes a failed outcome with its reason; only infrastructure errors raise
    (and are retried). On a retry, champions are re-read so nothing is registered twice.
    """
    spec = fleet.spec
    family = spec.family(shard.family)
    mine = {p: champions[p] for p in shard.product_ids if p in champions}
    if task_run.run_count > 1:
        mine = registry.champions(shard.product_ids)
    outcomes = train_on_ray(items_ref, family, spec.gate, mine)
    done, registry_s = registry.register_shard(
        shard.key, outcomes, lineage, spec.promotion == "auto", family.backtest.windows
    )
    return ShardReport(shard.key, outcomes, {r.product_id: r for r in done}, registry_s)
