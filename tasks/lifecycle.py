"""rollback-products, restore-products, sync-production: production moves made by hand."""

from __future__ import annotations

from contextlib import AbstractContextManager

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from factory.adapters.lease import holder_label, training_lease
from factory.adapters.prefect_env import retry_unless_user_error
from factory.adapters.registry import lifecycle, manifest
from factory.adapters.registry.registry import Registry
from factory.core.manifest import Manifest, ManifestChange
from factory.core.promotion import Retirement
from factory.settings import Settings


def writer_lease(settings: Settings, what: str) -> AbstractContextManager[None]:
    """The registry's writer lease (training holds it too), for one lifecycle action."""
    log = get_run_logger()
    return training_lease(settings, holder_label(what), settings.lease_wait_s, log.warning)


@task(
    cache_policy=NO_CACHE,
    retries=2,
    retry_delay_seconds=[5, 30],
    retry_condition_fn=retry_unless_user_error,
    task_run_name="rollback-products",
)
def rollback_products(
    settings: Settings,
    products: list[str],
    actor: str,
    reason: str,
    to_version: int | None = None,
    batch: str | None = None,
) -> list[lifecycle.Move]:
    """Move these products' (or a batch's) production back; the versions left are marked."""
    with writer_lease(settings, "rollback"):
        moves = lifecycle.rollback(Registry(settings), products, actor, reason, to_version, batch)
    for m in moves:
        get_run_logger().info("%s: production v%s -> v%s", m.product_id, m.old, m.new)
    return moves


@task(
    cache_policy=NO_CACHE,
    retries=2,
    retry_delay_seconds=[5, 30],
    retry_condition_fn=retry_unless_user_error,
    task_run_name="retire-products",
)
def retire_products(settings: Settings, retire: list[Retirement], actor: str) -> list[str]:
    """Take these products out of service (models kept, tagged retired)."""
    with writer_lease(settings, "retire-products"):
        done = lifecycle.retire(Registry(settings), retire, actor)
    if done:
        get_run_logger().warning("retired %d product(s): %s", len(done), ", ".join(done[:20]))
    return done


@task(
    cache_policy=NO_CACHE,
    retries=2,
    retry_delay_seconds=[5, 30],
    retry_condition_fn=retry_unless_user_error,
    task_run_name="restore-products",
)
def restore_products(settings: Settings, products: list[str], actor: str, reason: str) -> list[str]:
    """Put retired products back in service on the versions they served."""
    with writer_lease(settings, "restore-products"):
        return lifecycle.restore(Registry(settings), products, actor, reason)


@task(
    cache_policy=NO_CACHE,
    retries=2,
    retry_delay_seconds=[5, 30],
    retry_condition_fn=retry_unless_user_error,
    task_run_name="sync-production",
)
def sync_to_manifest(
    settings: Settings, desired: Manifest, actor: str, reason: str, prune: bool, execute: bool
) -> list[ManifestChange]:
    """The diff between production and the manifest; with `execute`, reconciled."""
    with writer_lease(settings, "sync-production"):
        return manifest.sync_production(Registry(settings), desired, actor, reason, prune, execute)
