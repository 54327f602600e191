"""forecast-products: batch forecasts from each product's serving model (and its shadow
challenger), in shards on Ray."""

from __future__ import annotations

from prefect import flow, get_run_logger
from prefect.futures import as_completed
from prefect.task_runners import ThreadPoolTaskRunner

from factory.adapters.artifacts import publish_forecasts
from factory.adapters.forecasts import ForecastError, ForecastReport, choose_products
from factory.adapters.identity import ANALYST, settings_as
from factory.adapters.registry.registry import Registry
from factory.core.outcomes import name_ids
from factory.serving.batch import SHARD_SIZE, ShardForecast, StoreAccess, failed_shard
from tasks.forecast import (
    forecast_shard,
    known_inputs,
    plan_forecasts,
    served_products,
    write_batch,
)


@flow(name="forecast-products", task_runner=ThreadPoolTaskRunner(max_workers=8))  # type: ignore[arg-type]
def forecast_products_flow(
    products: list[str] | None = None,
    horizon: int | None = None,
    out_url: str | None = None,
    shard_size: int = SHARD_SIZE,
    inputs_url: str | None = None,
) -> ForecastReport:
    """Write forecasts for the chosen products (all served products by default), with the
    model version and role ("serving", or "shadow" for a staging challenger) on every row.

    Asked-for products without a serving model are named: an error when none has one, a
    warning otherwise. Nothing is written when no product could be forecast. `inputs_url`: a
    file of known future inputs (`unique_id, ds` and exogenous columns such as promo)."""
    log = get_run_logger()
    settings = settings_as(ANALYST)
    registry = Registry(settings)
    chosen, unknown = choose_products(served_products(registry), products)
    if unknown:
        log.warning(
            "unknown product(s): %s (no registered model); forecasting the other %d",
            name_ids(unknown),
            len(chosen),
        )
    inputs = known_inputs(inputs_url, chosen) if inputs_url else None
    plan = plan_forecasts(registry, chosen)
    shards = plan.shards(shard_size, inputs)
    verifier, access = registry.verifier, StoreAccess.of(settings)
    futures = [forecast_shard.submit(s, horizon or 0, verifier, access) for s in shards]
    shard_of = {f.task_run_id: s for f, s in zip(futures, shards, strict=True)}
    done: list[ShardForecast] = []
    for future in as_completed(futures):
        try:
            done.append(future.result())
        except Exception as exc:  # out of retries: its products are named, the others go on
            done.append(failed_shard(shard_of[future.task_run_id], exc))
            log.error(
                "shard %s failed after its retries: %s", shard_of[future.task_run_id].key, exc
            )
    out = out_url or settings.resolved_forecasts_url
    report = write_batch(plan, done, out, settings.resolved_forecasts_url)
    report.unknown = unknown
    if report.url is None:
        first = next(iter(report.missing.items()), ("?", "?"))
        raise ForecastError(
            f"no forecasts: all {len(report.missing)} products failed, e.g. {first[0]}: {first[1]};"
            " nothing written"
        )
    if report.shadow_missing:
        log.warning("shadow challenger(s) not forecast: %s", name_ids(list(report.shadow_missing)))
    publish_forecasts(report)
    log.info("wrote %d rows (%d shadow) to %s", report.rows, report.shadow_rows, report.url)
    return report
