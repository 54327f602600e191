"""Which registered models can be used: each current version checked against its signature."""

from __future__ import annotations

from collections.abc import Collection
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from mlflow.entities.model_registry import ModelVersion

from factory.adapters.registry import reading
from factory.adapters.registry.names import PRODUCT_TAG, PRODUCTION, SIGNING_KEY_TAG, STAGING
from factory.adapters.registry.registry import Registry
from factory.adapters.signing import ModelIntegrityError


@dataclass(frozen=True)
class Check:
    """One version's verification: the key that signed it, or why it is refused."""

    product_id: str
    model: str
    version: int
    key_id: str | None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


def current_versions(
    registry: Registry, products: Collection[str] | None = None
) -> list[ModelVersion]:
    """Every product's production champion and staging candidate (the versions in use)."""
    wanted = [
        (registry.name(env, pid), int(rec["version"]))
        for env in (PRODUCTION, STAGING)
        for pid, rec in registry.current_models(env, products).items()
    ]
    found = reading.versions_by_key(registry.client, wanted)
    return [found[key] for key in wanted if key in found]


def check_versions(
    registry: Registry, versions: list[ModelVersion], threads: int | None = None
) -> list[Check]:
    """Download and verify each version (`threads` at a time), in the order given.

    By default 8 at a time through a server (its latency overlaps) and one at a time on a
    database store in this process (threads only contend there: ~2 ms a model alone, ~5 in 8)."""
    if threads is None:
        threads = 1 if reading.sql_store(registry.client) is not None else 8

    def check(mv: ModelVersion) -> Check:
        tags = dict(mv.tags or {})
        product, version = tags.get(PRODUCT_TAG, mv.name), int(mv.version)
        try:
            registry.verified_folder(mv)
            return Check(product, mv.name, version, tags.get(SIGNING_KEY_TAG))
        except ModelIntegrityError as exc:
            return Check(product, mv.name, version, tags.get(SIGNING_KEY_TAG), str(exc))

    with ThreadPoolExecutor(max(1, threads)) as pool:
        return list(pool.map(check, versions))
