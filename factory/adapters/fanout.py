"""Ray: start or join a cluster and train shards of products on it."""

from __future__ import annotations

import logging
import os
import tempfile
from typing import Any

import ray

from factory.core.fleet import FamilySpec, GateSpec
from factory.core.forecaster import Series
from factory.core.training import ChampionRef, ProductOutcome, train_many
from factory.settings import Settings


def ensure_ray(settings: Settings) -> dict[str, Any]:
    """Join the cluster at settings/RAY_ADDRESS, else start a local Ray on this machine's cores."""
    if not ray.is_initialized():
        address = settings.ray_address or os.environ.get("RAY_ADDRESS")
        if address:
            ray.init(address=address, logging_level=logging.WARNING, log_to_driver=False)
        else:
            temp = os.path.join(tempfile.gettempdir(), f"factory-ray-{os.getuid()}")
            ray.init(
                num_cpus=settings.ray_num_cpus or os.cpu_count(),
                include_dashboard=False,
                logging_level=logging.WARNING,
                log_to_driver=False,
                _temp_dir=temp,
            )
    info: dict[str, Any] = {"gcs": ray.get_runtime_context().gcs_address, "nodes": len(ray.nodes())}
    info |= {k: float(v) for k, v in ray.cluster_resources().items() if k in ("CPU", "memory")}
    return info


@ray.remote(num_cpus=1, max_retries=2)
def _train_remote(
    items: list[tuple[str, Series]],
    family: FamilySpec,
    gate: GateSpec,
    champions: dict[str, ChampionRef],
) -> list[ProductOutcome]:
    return train_many(items, family, gate, champions)


def put_shard(items: list[tuple[str, Series]]) -> ray.ObjectRef:
    """Place a shard's series in the object store once; tasks pass the reference around."""
    return ray.put(items)


def train_on_ray(
    items_ref: ray.ObjectRef,
    family: FamilySpec,
    gate: GateSpec,
    champions: dict[str, ChampionRef],
) -> list[ProductOutcome]:
    """Train one shard on a Ray worker and wait for its outcomes."""
    return ray.get(_train_remote.remote(items_ref, family, gate, champions))
