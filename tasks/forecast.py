"""Batch forecasting tasks: which versions serve, each shard forecast on Ray, the rows written."""

from __future__ import annotations

import pandas as pd
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from factory.adapters.data import read_inputs
from factory.adapters.fanout import ensure_ray
from factory.adapters.forecasts import ForecastReport, save_forecasts, served_product_ids
from factory.adapters.prefect_env import retry_unless_user_error
from factory.adapters.registry.registry import Registry
from factory.adapters.signing import Verifier
from factory.core.outcomes import name_ids
from factory.serving.batch import (
    ForecastShard,
    ServingPlan,
    ShardForecast,
    StoreAccess,
    combine,
    forecast_on_ray,
    forecast_products,
    resolve_models,
)


@task(cache_policy=NO_CACHE)
def served_products(registry: Registry) -> list[str]:
    """Products with a production model, or a staging one when none is in production."""
    return served_product_ids(registry)


@task(cache_policy=NO_CACHE, task_run_name="read-inputs")
def known_inputs(url: str, products: list[str]) -> dict[str, pd.DataFrame]:
    """The known future inputs at `url` (`read_inputs`) of the products being forecast."""
    inputs = read_inputs(url)
    chosen = set(products)
    unused = [p for p in inputs if p not in chosen]
    log = get_run_logger()
    if unused:
        log.warning("future inputs for %s not used: not forecast here", name_ids(unused))
    log.info("known future inputs for %d product(s) from %s", len(inputs) - len(unused), url)
    return {p: rows for p, rows in inputs.items() if p in chosen}


@task(cache_policy=NO_CACHE, task_run_name="plan-forecasts")
def plan_forecasts(registry: Registry, products: list[str]) -> ServingPlan:
    """Each product's serving version and shadow challenger, read in bulk; Ray started (or
    joined) when there is anything to forecast."""
    plan = resolve_models(registry, products)
    if plan.refs:
        get_run_logger().info("Ray cluster: %s", ensure_ray(registry.settings))
    return plan


@task(
    cache_policy=NO_CACHE,
    retries=2,
    retry_delay_seconds=[2, 10],
    retry_condition_fn=retry_unless_user_error,
    task_run_name="{shard.key}",
)
def forecast_shard(
    shard: ForecastShard, horizon: int, verifier: Verifier, access: StoreAccess
) -> ShardForecast:
    """Verify, load and forecast one shard's versions on a Ray worker; a refused or failing
    model is named with its reason, only infrastructure errors raise (and are retried)."""
    return forecast_on_ray(shard, horizon, verifier, access)


@task(cache_policy=NO_CACHE, retries=1, retry_condition_fn=retry_unless_user_error)
def write_batch(
    plan: ServingPlan, shards: list[ShardForecast], out_url: str, forecasts_url: str
) -> ForecastReport:
    """Write every shard's rows as one parquet file and append them to the forecast history;
    when no product could be forecast, write nothing."""
    batch = combine(plan, shards)
    report = save_forecasts(
        batch.frame, batch.missing, out_url, forecasts_url, batch.shadow_missing
    )
    return report.model_copy(update={"worker_s": batch.worker_s, "models": batch.models})


@task(cache_policy=NO_CACHE, retries=1, retry_condition_fn=retry_unless_user_error)
def write_forecasts(
    products: list[str], horizon: int | None, out_url: str, registry: Registry
) -> ForecastReport:
    """Forecast every product on Ray and write one parquet file (and the forecast history), in
    one task; when no product could be forecast, write nothing (an earlier file is not replaced
    by an empty one)."""
    batch = forecast_products(registry, products, horizon)
    forecasts_url = registry.settings.resolved_forecasts_url
    report = save_forecasts(
        batch.frame, batch.missing, out_url, forecasts_url, batch.shadow_missing
    )
    return report.model_copy(update={"worker_s": batch.worker_s, "models": batch.models})
