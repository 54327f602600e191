"""validate-data: read and validate the sales data, skip unchanged products, stage shards in Ray."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import ray
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from factory.adapters.data import read_panel
from factory.adapters.fanout import ensure_ray, put_shard
from factory.adapters.lineage import code_fingerprint
from factory.adapters.registry.registry import Registry
from factory.adapters.state import unchanged_products
from factory.core.contract import ValidationReport, fleet_series, validate_panel
from factory.core.fingerprints import training_keys
from factory.core.fleet import LoadedFleet, Shard, load_fleet, make_shards
from factory.core.outcomes import ProductRecord, restrict
from factory.settings import Settings


@dataclass
class PreparedFleet:
    """A validated fleet, its shards and where each shard's series sit in Ray's object store."""

    fleet: LoadedFleet
    report: ValidationReport
    shards: list[Shard]
    refs: dict[str, ray.ObjectRef] = field(repr=False)
    validation_s: float
    keys: dict[str, str]
    skipped: dict[str, ProductRecord]


@task(cache_policy=NO_CACHE, task_run_name="validate-data")
def prepare_fleet(
    fleet_path: str, settings: Settings, products: list[str] | None = None
) -> PreparedFleet:
    """Load fleet.yaml and the sales data, validate, quarantine, shard, and stage shards in Ray."""
    log = get_run_logger()
    t0 = time.perf_counter()
    fleet = load_fleet(Path(fleet_path))
    panel = read_panel(settings.resolved_data_url)
    as_of = pd.Timestamp(settings.as_of) if settings.as_of else None
    clean, report = validate_panel(panel, fleet.spec, as_of)
    report = restrict(report, products, log.warning)
    retired = Registry(settings).retired()
    if retired:
        report.assignment = {
            f: [p for p in ids if p not in retired] for f, ids in report.assignment.items()
        }
        log.info(
            "%d retired product(s) not trained (`factory restore` brings one back)", len(retired)
        )
    validation_s = time.perf_counter() - t0
    log.info(
        "validated %d rows / %d products: %d ok, %d quarantined, %d not in the fleet",
        report.n_rows,
        report.n_products,
        len(report.valid_ids),
        len(report.quarantined),
        len(report.unassigned),
    )
    series = fleet_series(clean, fleet.spec, report.assignment)
    keys = training_keys(series, fleet.spec, report.assignment, code_fingerprint())
    skipped = unchanged_products(settings.state_dir, keys)
    todo = {f: [p for p in ids if p not in skipped] for f, ids in report.assignment.items()}
    shards = make_shards(todo, fleet.spec.shard_size)
    log.info("%d products unchanged since their last run: skipped", len(skipped))
    refs = {}
    if shards:
        log.info("Ray cluster: %s", ensure_ray(settings))
        refs = {s.key: put_shard([(p, series[p]) for p in s.product_ids]) for s in shards}
    return PreparedFleet(fleet, report, shards, refs, validation_s, keys, skipped)
