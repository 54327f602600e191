"""The MLflow registry: one registered model per product and environment, with lineage."""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import re
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Collection
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import mlflow
from mlflow import MlflowClient
from mlflow.entities import Metric
from mlflow.exceptions import MlflowException
from mlflow.store.model_registry.sqlalchemy_store import SqlAlchemyStore
from mlflow.utils.file_utils import local_file_uri_to_path

from tasks.lineage import RunLineage
from tasks.registry_sql import VersionPlan, model_tags, write_versions
from tasks.settings import Settings
from tasks.training import ChampionRef, ProductOutcome

STAGING, PRODUCTION = "staging", "production"
CHAMPION_ALIAS, CANDIDATE_ALIAS = "champion", "candidate"
CURRENT_TAG = "factory.current"  # JSON {version, config, data_fingerprint} on the registered model
MODEL_CODE = Path(__file__).with_name("mlflow_model.py")
FORECASTER_CODE = Path(__file__).with_name("forecaster.py")
PIP_REQUIREMENTS = [
    f"mlflow=={mlflow.__version__}",
    "lightgbm==4.7.0",
    "scikit-learn==1.9.1",
    "skops==0.16.0",
    "pandas==3.1.1",
    "numpy==2.4.6",
]
FEW = 200  # up to this many products, a tracking server is asked model by model, not searched
_SAFE = re.compile(r"[^A-Za-z0-9_-]")


def product_slug(product_id: str) -> str:
    """A name-safe form of any product id; a hash suffix keeps distinct ids distinct."""
    slug = _SAFE.sub("_", product_id)[:80]
    if slug != product_id:
        slug += "-" + hashlib.sha256(product_id.encode()).hexdigest()[:8]
    return slug


def model_name(prefix: str, environment: str, product_id: str) -> str:
    """`<prefix>.<environment>.<product slug>`, e.g. `factory.production.grocery-00001`."""
    return f"{prefix}.{environment}.{product_slug(product_id)}"


class NoModelError(LookupError):
    """A product has no model in the registry (never trained, quarantined or rejected)."""

    hint = "`factory status -p <product>` shows why; `factory train` registers winners"


@dataclass(frozen=True)
class Registered:
    """Where one product's new model landed."""

    product_id: str
    staging_version: str
    production_version: str | None


class Registry:
    """MLflow tracking + registry access for the factory (thread-safe for concurrent shards)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        for noisy in ("mlflow.tracking._model_registry", "mlflow.store.db.utils", "alembic"):
            logging.getLogger(noisy).setLevel(logging.WARNING)  # one INFO line per model otherwise
        self.prefix = settings.model_prefix
        registry_uri = settings.mlflow_registry_uri or settings.tracking_uri
        self.client = MlflowClient(settings.tracking_uri, registry_uri)  # never MLflow's globals
        # `models:/` URIs (pyfunc.load_model, copies) resolve through MLflow's process-wide URIs.
        mlflow.set_tracking_uri(settings.tracking_uri)
        mlflow.set_registry_uri(registry_uri)
        self._writers = threading.BoundedSemaphore(settings.registry_concurrency)
        self._experiment_id: str | None = None

    @property
    def experiment_id(self) -> str:
        """The factory's experiment, created with the configured artifact root if missing."""
        if self._experiment_id is None:
            exp = self.client.get_experiment_by_name(self.settings.experiment)
            if exp is None:
                try:
                    self._experiment_id = self.client.create_experiment(
                        self.settings.experiment, artifact_location=self.settings.artifact_root
                    )
                except MlflowException:  # created concurrently
                    exp = self.client.get_experiment_by_name(self.settings.experiment)
            if exp is not None:
                self._experiment_id = exp.experiment_id
        assert self._experiment_id is not None
        return self._experiment_id

    def name(self, environment: str, product_id: str) -> str:
        """Registered model name of a product in an environment."""
        return model_name(self.prefix, environment, product_id)

    def current_models(
        self, environment: str, products: Collection[str] | None = None
    ) -> dict[str, dict[str, Any]]:
        """product id -> the `factory.current` record of its registered model (all products,
        or only these): one query on a database store, else a few paged searches."""
        keys = (CURRENT_TAG, "factory.product_id")
        store = self._sql_store()
        if store is not None:
            found = list(model_tags(store, f"{self.prefix}.{environment}.", keys).values())
        elif products is not None and len(products) <= FEW:
            found = [self._model_tags(self.name(environment, p)) for p in products]
        else:
            found = self._search_tags(environment)
        out = {
            t["factory.product_id"]: json.loads(t[CURRENT_TAG])
            for t in found
            if all(k in t for k in keys)
        }
        return out if products is None else {p: out[p] for p in products if p in out}

    def _model_tags(self, name: str) -> dict[str, str]:
        try:
            return dict(self.client.get_registered_model(name).tags or {})
        except MlflowException as exc:
            if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
                raise
            return {}

    def _search_tags(self, environment: str) -> list[dict[str, str]]:
        found, token = [], None
        while True:
            page = self.client.search_registered_models(
                filter_string=f"name LIKE '{self.prefix}.{environment}.%'",
                max_results=1000,
                page_token=token,
            )
            found += [dict(rm.tags or {}) for rm in page]
            token = page.token
            if not token:
                return found

    def _sql_store(self) -> SqlAlchemyStore | None:
        """MLflow's registry store when it is a database the factory reaches directly."""
        store = self.client._get_registry_client().store
        return store if isinstance(store, SqlAlchemyStore) else None

    def champions(self, products: Collection[str] | None = None) -> dict[str, ChampionRef]:
        """Each product's champion: its production model, else its latest staging version."""
        out = {}
        for env in (STAGING, PRODUCTION):  # production overrides staging
            for pid, rec in self.current_models(env, products).items():
                out[pid] = ChampionRef(
                    self.name(env, pid), rec["version"], rec["config"], rec["data_fingerprint"]
                )
        return out

    def register_shard(
        self,
        shard_key: str,
        outcomes: list[ProductOutcome],
        lineage: RunLineage,
        promote: bool,
        backtest_windows: int,
    ) -> tuple[list[Registered], float]:
        """One MLflow run per shard holds its models; each winner becomes a version with lineage.

        Returns what was registered and the seconds spent (for the per-product cost split).
        """
        winners = [o for o in outcomes if o.status == "registered"]
        t0 = time.perf_counter()
        with self._writers:
            run = self.client.create_run(
                self.experiment_id,
                run_name=f"shard-{shard_key}",
                tags={**lineage.tags(), "factory.shard": shard_key},
            )
            run_id = run.info.run_id
            self._log_shard_metrics(run_id, outcomes)
            self.client.log_dict(
                run_id, {"products": [_outcome_row(o) for o in outcomes]}, "outcomes.json"
            )
            self._log_models(run_id, run.info.artifact_uri, winners)
            plans = [
                self._plan(o, run.info.artifact_uri, run_id, lineage, promote, backtest_windows)
                for o in winners
            ]
            versions = self._write(plans)
            done = [
                Registered(
                    o.product_id,
                    str(versions[self.name(STAGING, o.product_id)]),
                    str(versions[self.name(PRODUCTION, o.product_id)]) if promote else None,
                )
                for o in winners
            ]
            self.client.set_terminated(run_id)
        return done, time.perf_counter() - t0

    def _log_models(self, run_id: str, artifact_uri: str, winners: list[ProductOutcome]) -> None:
        """Each winner's pyfunc folder under the run's `models/`: written in place when the
        artifact store is a local folder (what `log_artifacts` would copy), else uploaded."""
        if not winners:
            return
        if urlparse(artifact_uri).scheme == "file":
            target = Path(local_file_uri_to_path(artifact_uri)) / "models"
            for o in winners:
                save_pyfunc(o, target / product_slug(o.product_id))
            return
        stage = Path(tempfile.mkdtemp(prefix="factory-shard-"))
        try:
            for o in winners:
                save_pyfunc(o, stage / product_slug(o.product_id))
            self.client.log_artifacts(run_id, str(stage), "models")
        finally:
            shutil.rmtree(stage, ignore_errors=True)

    def _log_shard_metrics(self, run_id: str, outcomes: list[ProductOutcome]) -> None:
        now = int(time.time() * 1000)
        metrics = [
            Metric(f"{product_slug(o.product_id)}/{o.challenger}/{m}", v, now, 0)
            for o in outcomes
            if o.challenger
            for m, v in o.scores[o.challenger].items()
            if v == v and abs(v) != float("inf")
        ]
        for start in range(0, len(metrics), 1000):
            self.client.log_batch(run_id, metrics=metrics[start : start + 1000], synchronous=True)

    def _plan(
        self,
        o: ProductOutcome,
        artifact_uri: str,
        run_id: str,
        lineage: RunLineage,
        promote: bool,
        windows: int,
    ) -> list[VersionPlan]:
        """A staging version from the shard run's artifacts; with `promote`, a production copy
        (what `MlflowClient.copy_model_version` makes: source `models:/<staging>/<v>`)."""
        tags = {**lineage.tags(), **version_tags(o, windows)}
        current = {"config": o.config_json, "data_fingerprint": o.data_fingerprint}
        plans: list[VersionPlan] = []
        for env, alias in ((STAGING, CANDIDATE_ALIAS), (PRODUCTION, CHAMPION_ALIAS)):
            if env == PRODUCTION and not promote:
                break
            plans.append(
                VersionPlan(
                    name=self.name(env, o.product_id),
                    source=f"{artifact_uri}/models/{product_slug(o.product_id)}",
                    run_id=run_id,
                    tags=tags,
                    alias=alias,
                    current_tag=CURRENT_TAG,
                    current=current,
                    model_tags={
                        "factory.product_id": o.product_id,
                        "factory.family": o.family,
                        "factory.environment": env,
                    },
                    description=f"Demand forecaster for {o.product_id} ({env}).",
                    copy_of=plans[0] if plans else None,
                )
            )
        return plans

    def _write(self, plans: list[list[VersionPlan]]) -> dict[str, int]:
        """Create the planned versions: one transaction on a database store, else call by call."""
        flat = [p for product in plans for p in product]
        store = self._sql_store()
        if store is not None:
            return write_versions(store, flat)
        created: dict[str, int] = {}
        for plan in flat:
            source = plan.source
            if plan.copy_of is not None:
                source = f"models:/{plan.copy_of.name}/{created[plan.copy_of.name]}"
            mv = self._create_version(plan, source)
            created[plan.name] = int(mv.version)
            current = json.dumps({"version": str(mv.version), **plan.current})
            self.client.set_registered_model_alias(plan.name, plan.alias, str(mv.version))
            self.client.set_registered_model_tag(plan.name, plan.current_tag, current)
        return created

    def _new_version(self, plan: VersionPlan, source: str) -> Any:
        """One version over the REST API. Its model files are already uploaded, so it is READY
        at once: no polling for its status (MLflow's default waits with a GET per version)."""
        return self.client.create_model_version(
            plan.name, source, plan.run_id, plan.tags, await_creation_for=0
        )

    def _create_version(self, plan: VersionPlan, source: str) -> Any:
        """Create a version, creating its registered model on the product's first one."""
        try:
            return self._new_version(plan, source)
        except MlflowException as exc:
            if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
                raise
        try:
            self.client.create_registered_model(
                plan.name, tags=plan.model_tags, description=plan.description
            )
        except MlflowException as exc:
            if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
        return self._new_version(plan, source)

    def model_uri(self, product_id: str) -> str:
        """`models:/` URI of the model serving a product: production champion, else staging."""
        prod = self.name(PRODUCTION, product_id)
        try:
            self.client.get_model_version_by_alias(prod, CHAMPION_ALIAS)
            return f"models:/{prod}@{CHAMPION_ALIAS}"
        except MlflowException:
            staging = self.name(STAGING, product_id)
        try:
            self.client.get_model_version_by_alias(staging, CANDIDATE_ALIAS)
        except MlflowException as exc:
            if exc.error_code not in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
                raise
            raise NoModelError(f"product {product_id!r} has no registered model") from None
        return f"models:/{staging}@{CANDIDATE_ALIAS}"

    def lineage(self, product_id: str) -> dict[str, Any]:
        """The whole chain behind a product's current model: version, source run and tags."""
        uri = self.model_uri(product_id)
        name, alias = uri.removeprefix("models:/").split("@")
        mv = self.client.get_model_version_by_alias(name, alias)
        tags = dict(mv.tags)
        source = str(mv.source or "")
        if "factory.data_fingerprint" not in tags and source.startswith("models:/"):
            src_name, src_version = source.removeprefix("models:/").rsplit("/", 1)
            tags = {**dict(self.client.get_model_version(src_name, src_version).tags), **tags}
            tags["factory.copied_from"] = source
        return {
            "model": name,
            "alias": alias,
            "version": mv.version,
            "source": mv.source,
            "run_id": mv.run_id,
            "created": mv.creation_timestamp,
            "tags": tags,
        }


def version_tags(o: ProductOutcome, windows: int) -> dict[str, str]:
    """Per-version lineage and evidence tags."""
    assert o.challenger is not None and o.config_json is not None
    cfg = json.loads(o.config_json)
    tags = {
        "factory.product_id": o.product_id,
        "factory.family": o.family,
        "factory.model_kind": cfg["kind"],
        "factory.params": json.dumps(cfg["params"], sort_keys=True),
        "factory.config": o.config_json,
        "factory.data_fingerprint": o.data_fingerprint,
        "factory.n_obs": str(o.n_obs),
        "factory.trained_until": (o.history_tail or {}).get("ds", ["?"])[-1],
        "factory.backtest_windows": str(windows),
        "factory.gate": json.dumps(o.decision, sort_keys=True),
    }
    tags.update({f"factory.metric.{m}": f"{v:.6g}" for m, v in o.scores[o.challenger].items()})
    tags.update(
        {f"factory.baseline.{m}": f"{v:.6g}" for m, v in o.scores["seasonal_naive"].items()}
    )
    return tags


def save_pyfunc(o: ProductOutcome, path: Path) -> None:
    """Write one product's pyfunc model folder (models-from-code, LightGBM text / skops bytes).

    `mlflow.pyfunc.save_model` re-executes the model code and rewrites identical environment
    files for every model (~40 ms); it runs once per process to make a template, and each
    product gets a copy with its own artifacts, model UUID and creation time (~2 ms; the two
    MLmodel lines are rewritten as text, since a YAML round trip costs 6 ms).
    """
    assert o.payload is not None and o.config_json is not None
    shutil.copytree(_pyfunc_template(), path)
    art = path / "artifacts" / "model"
    manifest = {
        "product_id": o.product_id,
        "family": o.family,
        "config": o.config_json,
        "horizon": len(o.forecast or []),
        "history_tail": o.history_tail,
        "data_fingerprint": o.data_fingerprint,
    }
    (art / "manifest.json").write_text(json.dumps(manifest))
    (art / "model.bin").write_bytes(o.payload)
    mlmodel = _MLMODEL_IDENTITY.sub(
        lambda m: f"{m[1]}: {_identity(m[1])}", (path / "MLmodel").read_text()
    )
    (path / "MLmodel").write_text(mlmodel)


_MLMODEL_IDENTITY = re.compile(r"^(model_uuid|utc_time_created): .*$", re.MULTILINE)


def _identity(key: str) -> str:
    """A fresh value for one of the MLmodel keys that make each saved model unique."""
    if key == "model_uuid":
        return uuid.uuid4().hex
    return f"'{datetime.now(UTC).replace(tzinfo=None)}'"


@functools.cache
def _pyfunc_template() -> Path:
    """A pyfunc folder saved by MLflow itself, with empty model artifacts to fill in."""
    root = Path(tempfile.mkdtemp(prefix="factory-pyfunc-"))
    (root / "model").mkdir()
    mlflow.pyfunc.save_model(
        path=str(root / "template"),
        python_model=str(MODEL_CODE),
        artifacts={"model": str(root / "model")},
        code_paths=[str(FORECASTER_CODE)],
        pip_requirements=PIP_REQUIREMENTS,
    )
    return root / "template"


def _outcome_row(o: ProductOutcome) -> dict[str, Any]:
    return {
        "product_id": o.product_id,
        "status": o.status,
        "reason": o.reason,
        "challenger": o.challenger,
        "scores": o.scores,
        "data_fingerprint": o.data_fingerprint,
        "forecast": dict(zip(o.forecast_ds or [], o.forecast, strict=True)) if o.forecast else None,
    }
