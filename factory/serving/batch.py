"""Batch forecasts at training speed: versions resolved in bulk, shards forecast on Ray.

The driver reads, in a few registry queries, which version serves each product (production
`@champion`, else staging `@candidate`) and its shadow challenger (a staging candidate that is
not the version production was copied from), with where each keeps its files and its
signature tags. Shards of those plain records go to Ray tasks; a worker verifies each model
folder (`verified.verified_folder`, the code `Registry.verified_folder` runs), reads its payload
directly (`ProductModel.from_folder`, no pyfunc load) and forecasts. A refused or failing model
is named with its reason; the others are forecast.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
import time
import traceback
from collections.abc import Collection, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

import pandas as pd
import ray
from pydantic import SecretStr

from factory.adapters.fanout import ensure_ray
from factory.adapters.registry import reading
from factory.adapters.registry.names import PRODUCTION, STAGING
from factory.adapters.registry.registry import Registry
from factory.adapters.registry.verified import VersionFiles, verified_folder
from factory.adapters.signing import ModelIntegrityError, Verifier
from factory.core.forecaster import INTERVAL_COLUMNS
from factory.core.saved import ProductModel
from factory.settings import Settings

log = logging.getLogger(__name__)

Role = Literal["serving", "shadow"]
SERVING: Role = "serving"
SHADOW: Role = "shadow"
# the interval bounds are empty for a model registered before intervals existed
ROW_COLUMNS = ["unique_id", "ds", "yhat", *INTERVAL_COLUMNS, "model_name", "model_version", "role"]
SHARD_SIZE = 250  # products per Ray task (with their shadows)
# MLflow's own credential variables: how this process reads a tracking server (`act_as`).
CREDENTIAL_VARS = ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN")


@dataclass(frozen=True)
class StoreAccess:
    """How a worker reaches the model files: the tracking URI and, for a tracking server that
    proxies them, the read identity this process acts as (never shown: SecretStr). A local
    store needs neither; an object store's credentials come from the workers' own environment."""

    tracking_uri: str
    credentials: dict[str, SecretStr] = field(default_factory=dict)

    @classmethod
    def of(cls, settings: Settings) -> StoreAccess:
        """This process's access (after `settings_as`: the identity it acts as)."""
        uri = settings.tracking_uri
        if not uri.startswith(("http://", "https://")):
            return cls(uri)
        return cls(uri, {k: SecretStr(os.environ[k]) for k in CREDENTIAL_VARS if os.environ.get(k)})

    @contextlib.contextmanager
    def applied(self) -> Iterator[None]:
        """MLflow's credential variables set to this access's while a worker task runs (a Ray
        worker runs one task at a time), and put back after."""
        before = {k: os.environ.get(k) for k in self.credentials}
        os.environ.update({k: v.get_secret_value() for k, v in self.credentials.items()})
        try:
            yield
        finally:
            for k, v in before.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v


@dataclass(frozen=True)
class ModelRef:
    """One version to forecast: the product, as what it answers, and its files (plain data)."""

    product_id: str
    role: Role
    files: VersionFiles


@dataclass
class ServingPlan:
    """Which versions answer for the chosen products, and the products without any (why)."""

    refs: list[ModelRef]
    missing: dict[str, str] = field(default_factory=dict)

    @property
    def products(self) -> list[str]:
        """The products with a serving version, in order."""
        return [r.product_id for r in self.refs if r.role == SERVING]

    @property
    def shadows(self) -> dict[str, ModelRef]:
        """product -> its shadow challenger, for products that have one."""
        return {r.product_id: r for r in self.refs if r.role == SHADOW}

    def shards(
        self, size: int = SHARD_SIZE, inputs: dict[str, pd.DataFrame] | None = None
    ) -> list[ForecastShard]:
        """Shards of at most `size` products, each product with its shadow in the same one
        (and the known future inputs of its products, from `inputs`: product -> rows)."""
        by_product: dict[str, list[ModelRef]] = {}
        for ref in self.refs:
            by_product.setdefault(ref.product_id, []).append(ref)
        groups = list(by_product.values())
        inputs = inputs or {}
        out = []
        for i in range(0, len(groups), size):
            part = groups[i : i + size]
            given = {p: inputs[p] for g in part if (p := g[0].product_id) in inputs}
            out.append(
                ForecastShard(f"forecast-{i // size:04d}", [r for g in part for r in g], given)
            )
        return out


@dataclass(frozen=True)
class ForecastShard:
    """The versions one Ray task forecasts."""

    key: str
    refs: list[ModelRef]
    inputs: dict[str, pd.DataFrame] = field(default_factory=dict)  # known future inputs

    @property
    def product_ids(self) -> list[str]:
        """Its products, in order."""
        return list(dict.fromkeys(r.product_id for r in self.refs))


@dataclass
class ShardForecast:
    """What one shard produced: rows (ROW_COLUMNS), refused or failed products with the reason
    (serving versions in `missing`, shadow challengers in `shadow_missing`) and worker time."""

    key: str
    frame: pd.DataFrame
    missing: dict[str, str] = field(default_factory=dict)
    shadow_missing: dict[str, str] = field(default_factory=dict)
    worker_s: float = 0.0
    models: int = 0


@dataclass
class BatchForecast:
    """Every shard's rows together, and what could not be forecast."""

    frame: pd.DataFrame
    missing: dict[str, str]
    shadow_missing: dict[str, str]
    worker_s: float  # summed over the shards: the Ray workers' time
    models: int


# --- the driver: which versions answer ----------------------------------------------------------


def resolve_models(registry: Registry, products: Collection[str] | None = None) -> ServingPlan:
    """Each product's serving version (production `@champion`, else staging `@candidate`) and
    shadow challenger, with its files, in a few registry queries (all products by default).

    Retired and unknown products land in `missing` with the reason."""
    prod = registry.current_models(PRODUCTION, products)
    stag = registry.current_models(STAGING, products)
    wanted = {registry.name(PRODUCTION, p): str(r["version"]) for p, r in prod.items()}
    wanted |= {registry.name(STAGING, p): str(r["version"]) for p, r in stag.items()}
    files = reading.version_files(registry.client, f"{registry.prefix}.", wanted)
    asked = list(dict.fromkeys(products)) if products is not None else sorted({*prod, *stag})
    plan = ServingPlan([])
    for pid in asked:
        serving_name = registry.name(PRODUCTION if pid in prod else STAGING, pid)
        if serving_name not in wanted:
            continue
        found = files.get(serving_name)
        if found is None:
            plan.missing[pid] = (
                f"product {pid!r}: {serving_name} version {wanted[serving_name]} is not in the"
                " registry (`factory doctor` repairs its current tag)"
            )
            continue
        plan.refs.append(ModelRef(pid, SERVING, replace(found, product_id=pid)))
        challenger = files.get(registry.name(STAGING, pid)) if pid in prod else None
        if challenger is not None and not _copied_from(found, challenger):
            plan.refs.append(ModelRef(pid, SHADOW, replace(challenger, product_id=pid)))
    unknown = [p for p in asked if p not in prod and p not in stag]
    retired = registry.retired() if unknown else {}
    for pid in unknown:
        why = retired.get(pid)
        plan.missing[pid] = (
            f"product {pid!r} has no registered model"
            if why is None
            else f"product {pid!r} is retired ({why}); `factory restore`"
        )
    return plan


def shadow_versions(registry: Registry, products: Collection[str]) -> dict[str, tuple[str, str]]:
    """product -> (model name, version) of its shadow challenger, for products that have one."""
    return {
        pid: (ref.files.name, ref.files.version)
        for pid, ref in resolve_models(registry, products).shadows.items()
    }


def _copied_from(production: VersionFiles, staging: VersionFiles) -> bool:
    """Whether a production version is a copy of this staging version."""
    return reading.copied_from(production.source) == (staging.name, staging.version)


# --- the worker: verify, load, forecast ---------------------------------------------------------


def forecast_version(
    ref: ModelRef,
    horizon: int,
    verifier: Verifier,
    tracking_uri: str,
    scratch: Path,
    inputs: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """One version's forecast rows (ROW_COLUMNS): its folder verified, its payload read
    directly, its product's known future inputs used. A remote store's download goes under
    `scratch` and is removed once read."""
    dst = scratch / f"{ref.files.name}-{ref.files.version}"
    try:
        folder = verified_folder(ref.files, verifier, tracking_uri, str(dst))
        model = ProductModel.from_folder(folder / "artifacts" / "model")
    finally:
        shutil.rmtree(dst, ignore_errors=True)  # only a download: never a local store's folder
    out = model.forecast(horizon, inputs)
    return out.assign(
        model_name=ref.files.name,
        model_version=ref.files.version,
        role=ref.role,
    ).reindex(columns=ROW_COLUMNS)


def forecast_refs(
    shard: ForecastShard, horizon: int, verifier: Verifier, tracking_uri: str
) -> ShardForecast:
    """Forecast every version of a shard; a refused or failing one is named with its reason."""
    t0 = time.perf_counter()
    out = ShardForecast(shard.key, empty_rows())
    frames = []
    with tempfile.TemporaryDirectory(prefix="factory-forecast-") as scratch:
        for ref in shard.refs:
            out.models += 1
            given = shard.inputs.get(ref.product_id)
            try:
                frames.append(
                    forecast_version(ref, horizon, verifier, tracking_uri, Path(scratch), given)
                )
            except Exception as exc:  # this product's model only: named, the shard goes on
                failed = out.missing if ref.role == SERVING else out.shadow_missing
                failed[ref.product_id] = failure(ref, exc)
    if frames:
        out.frame = pd.concat(frames, ignore_index=True)
    out.worker_s = time.perf_counter() - t0
    return out


def failure(ref: ModelRef, exc: Exception) -> str:
    """Why a version could not be forecast: a refusal names itself; else where it failed."""
    if isinstance(exc, ModelIntegrityError):
        return str(exc)
    last = traceback.extract_tb(exc.__traceback__)[-1] if exc.__traceback__ else None
    where = f" ({last.filename.rsplit('/', 1)[-1]}:{last.lineno})" if last else ""
    return f"{ref.files.label}: {type(exc).__name__}: {str(exc)[:200]}{where}"


def empty_rows() -> pd.DataFrame:
    """No forecast rows, with the row columns and types."""
    return pd.DataFrame(
        {
            "unique_id": pd.Series(dtype=str),
            "ds": pd.Series(dtype="datetime64[ns]"),
            "yhat": pd.Series(dtype=float),
            **{c: pd.Series(dtype=float) for c in INTERVAL_COLUMNS},
            "model_name": pd.Series(dtype=str),
            "model_version": pd.Series(dtype=str),
            "role": pd.Series(dtype=str),
        }
    )


@ray.remote(num_cpus=1, max_retries=2)
def _forecast_remote(
    shard: ForecastShard, horizon: int, verifier: Verifier, access: StoreAccess
) -> ShardForecast:
    with access.applied():
        return forecast_refs(shard, horizon, verifier, access.tracking_uri)


def submit_shard(
    shard: ForecastShard, horizon: int, verifier: Verifier, access: StoreAccess
) -> ray.ObjectRef:
    """Start one shard on a Ray worker (Ray must be up: `ensure_ray`)."""
    return _forecast_remote.remote(shard, horizon, verifier, access)


def forecast_on_ray(
    shard: ForecastShard, horizon: int, verifier: Verifier, access: StoreAccess
) -> ShardForecast:
    """Forecast one shard on a Ray worker and wait for it."""
    return ray.get(submit_shard(shard, horizon, verifier, access))


def failed_shard(shard: ForecastShard, error: BaseException) -> ShardForecast:
    """A shard whose retries ran out: each of its versions failed, with why."""
    reason = f"shard {shard.key} failed after its retries: {type(error).__name__}: {error}"
    reason = reason.splitlines()[0][:500]
    out = ShardForecast(shard.key, empty_rows())
    for ref in shard.refs:
        (out.missing if ref.role == SERVING else out.shadow_missing)[ref.product_id] = reason
    return out


# --- together -----------------------------------------------------------------------------------


def combine(plan: ServingPlan, shards: list[ShardForecast]) -> BatchForecast:
    """The shards' rows in one frame (by product, serving before shadow), and every product
    that could not be forecast: no serving model (the plan's), or refused or failed."""
    frames = [s.frame for s in shards if len(s.frame)]
    frame = pd.concat(frames, ignore_index=True) if frames else empty_rows()
    missing = dict(plan.missing)
    shadow_missing: dict[str, str] = {}
    for s in shards:
        missing |= s.missing
        shadow_missing |= s.shadow_missing
    return BatchForecast(
        frame,
        missing,
        shadow_missing,
        sum(s.worker_s for s in shards),
        sum(s.models for s in shards),
    )


def forecast_products(
    registry: Registry,
    products: Collection[str] | None = None,
    horizon: int | None = None,
    shard_size: int = SHARD_SIZE,
) -> BatchForecast:
    """Forecasts of the chosen products' serving versions and shadow challengers, every shard
    on Ray at once (without Prefect: the flow runs the same steps as tasks)."""
    plan = resolve_models(registry, products)
    shards = plan.shards(shard_size)
    if not shards:
        return combine(plan, [])
    ensure_ray(registry.settings)
    verifier, access = registry.verifier, StoreAccess.of(registry.settings)
    running = [submit_shard(s, horizon or 0, verifier, access) for s in shards]
    return combine(plan, list(ray.get(running)))
