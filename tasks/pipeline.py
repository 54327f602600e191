"""The train-fleet steps as Prefect tasks over plain functions (the flow only wires them)."""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import ray
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run, task_run
from prefect.utilities.urls import url_for

from tasks.data import read_panel
from tasks.fanout import ensure_ray, put_shard, train_on_ray
from tasks.fleet import FleetSpec, LoadedFleet, Shard, load_fleet, make_shards
from tasks.forecaster import Series
from tasks.lineage import RunLineage, code_fingerprint, git_commit, package_version
from tasks.registry import PRODUCTION, Registered, Registry
from tasks.schemas import ValidationReport, fleet_series, validate_panel
from tasks.settings import Settings
from tasks.state import ProductRecord, unchanged_products
from tasks.training import ChampionRef, ProductOutcome, series_fingerprint, training_key


class BudgetExceeded(RuntimeError):
    """More of the fleet was quarantined or failed than fleet.yaml's failure_budget allows."""


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


@dataclass
class ShardReport:
    """What one shard produced: outcomes, registrations and time spent registering."""

    key: str
    outcomes: list[ProductOutcome]
    registered: dict[str, Registered]
    registry_s: float


def restrict(report: ValidationReport, products: Iterable[str] | None) -> ValidationReport:
    """Keep only the named products in the report (all when None)."""
    if products is None:
        return report
    keep = set(products)
    report.assignment = {f: [p for p in ids if p in keep] for f, ids in report.assignment.items()}
    report.quarantined = {p: r for p, r in report.quarantined.items() if p in keep}
    return report


def training_keys(
    series: dict[str, Series], fleet: FleetSpec, assignment: dict[str, list[str]]
) -> dict[str, str]:
    """Each product's training key (data fingerprint, family config, gate, code)."""
    code = code_fingerprint()
    return {
        pid: training_key(series_fingerprint(series[pid]), fleet.family(f), fleet.gate, code)
        for f, ids in assignment.items()
        for pid in ids
    }


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
    report = restrict(report, products)
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
    keys = training_keys(series, fleet.spec, report.assignment)
    skipped = unchanged_products(settings.state_dir, keys)
    todo = {f: [p for p in ids if p not in skipped] for f, ids in report.assignment.items()}
    shards = make_shards(todo, fleet.spec.shard_size)
    log.info("%d products unchanged since their last run: skipped", len(skipped))
    refs = {}
    if shards:
        log.info("Ray cluster: %s", ensure_ray(settings))
        refs = {s.key: put_shard([(p, series[p]) for p in s.product_ids]) for s in shards}
    return PreparedFleet(fleet, report, shards, refs, validation_s, keys, skipped)


@task(cache_policy=NO_CACHE, retries=2, retry_delay_seconds=[2, 10])
def fetch_champions(settings: Settings, products: list[str]) -> dict[str, ChampionRef]:
    """The current champion of each of these products (the ones about to train)."""
    return Registry(settings).champions(products)


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


def run_lineage(fleet: LoadedFleet) -> RunLineage:
    """Lineage shared by all of this flow run's models."""
    return RunLineage(
        fleet_sha256=fleet.sha256,
        package_version=package_version(),
        git_commit=git_commit(),
        code_fingerprint=code_fingerprint(),
        flow_run_id=str(flow_run.id or ""),
        flow_run_url=(url_for("flow-run", obj_id=flow_run.id) or "") if flow_run.id else "",
    )


def current_versions(
    pid: str, reg: Registered | None, champion: ChampionRef | None
) -> tuple[str | None, str | None]:
    """(staging, production) versions a product is served by after this run."""
    if reg is not None:
        return reg.staging_version, reg.production_version
    if champion is not None and f".{PRODUCTION}." in champion.model_name:
        return None, champion.version
    return (champion.version if champion else None), None
