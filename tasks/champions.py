"""fetch_champions: the current champion of each product about to train."""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from factory.adapters.registry.registry import Registry
from factory.core.training import ChampionRef
from factory.settings import Settings


@task(cache_policy=NO_CACHE, retries=2, retry_delay_seconds=[2, 10])
def fetch_champions(settings: Settings, products: list[str]) -> dict[str, ChampionRef]:
    """The current champion of each of these products (the ones about to train)."""
    return Registry(settings).champions(products)
