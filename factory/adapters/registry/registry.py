"""The MLflow registry as the factory sees it: one registered model per product and environment.

Every call goes through this object's own `MlflowClient` (tracking and registry URIs from
settings); MLflow's process-wide URIs are never set or read.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import math
import threading
import time
from collections import Counter
from collections.abc import Collection
from pathlib import Path
from typing import Any

import mlflow
from mlflow import MlflowClient
from mlflow.entities import Metric, Run
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.pyfunc import PyFuncModel
from mlflow.store.model_registry.sqlalchemy_store import SqlAlchemyStore

from factory.adapters.lineage import RunLineage
from factory.adapters.registry import reading, rest_writer, sql_writer, verified
from factory.adapters.registry.names import (
    CANDIDATE_ALIAS,
    CHAMPION_ALIAS,
    CURRENT_TAG,
    DIGEST_TAG,
    ENVIRONMENT_TAG,
    FAMILY_TAG,
    PRODUCT_TAG,
    PRODUCTION,
    RETIRED_TAG,
    SIGNATURE_TAG,
    SIGNING_KEY_TAG,
    STAGING,
    TRAIN_KEY_TAG,
    NoModelError,
    model_name,
    product_slug,
)
from factory.adapters.registry.pyfunc import log_models, outcome_row, version_tags
from factory.adapters.registry.schema import schema_mismatch
from factory.adapters.registry.sql_writer import VersionPlan
from factory.adapters.signing import Signer, Verifier, signer
from factory.core.drift import ProductionModel
from factory.core.outcomes import Registered
from factory.core.saved import ProductModel
from factory.core.training import ChampionRef, ProductOutcome
from factory.settings import Settings

log = logging.getLogger(__name__)
# Loading a models-from-code pyfunc runs its code file, which hands the model over through a
# process-wide slot (`mlflow.models.set_model`): concurrent loads can swap models. Serialise.
_LOAD_LOCK = threading.Lock()


class Registry:
    """MLflow tracking + registry access for the factory (thread-safe for concurrent shards)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        for noisy in ("mlflow.tracking._model_registry", "mlflow.store.db.utils", "alembic"):
            logging.getLogger(noisy).setLevel(logging.WARNING)  # one INFO line per model otherwise
        self.prefix = settings.model_prefix
        registry_uri = settings.mlflow_registry_uri or settings.tracking_uri
        self.client = MlflowClient(settings.tracking_uri, registry_uri)
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
        or only these)."""
        names = None if products is None else {p: self.name(environment, p) for p in products}
        return reading.current_records(self.client, f"{self.prefix}.{environment}.", names)

    def retired(self) -> dict[str, str]:
        """product id -> why it was retired, for every retired product."""
        keys = (RETIRED_TAG, PRODUCT_TAG)
        out = {}
        for tags in reading.model_tags_by_name(self.client, f"{self.prefix}.", keys).values():
            if RETIRED_TAG in tags and PRODUCT_TAG in tags:
                out[tags[PRODUCT_TAG]] = json.loads(tags[RETIRED_TAG]).get("reason", "")
        return out

    def champions(self, products: Collection[str] | None = None) -> dict[str, ChampionRef]:
        """Each product's champion: its production model, else its latest staging version."""
        out = {}
        for env in (STAGING, PRODUCTION):  # production overrides staging
            for pid, rec in self.current_models(env, products).items():
                out[pid] = ChampionRef(
                    self.name(env, pid),
                    rec["version"],
                    rec["config"],
                    rec["data_fingerprint"],
                    in_production=env == PRODUCTION,
                )
        return out

    def production_models(self, products: list[str] | None = None) -> dict[str, ProductionModel]:
        """Each product's serving production version with its backtest WAPE and cutoff."""
        current = self.current_models(PRODUCTION, products)
        wanted = {self.name(PRODUCTION, p): str(rec["version"]) for p, rec in current.items()}
        found = reading.version_tags(self.client, f"{self.prefix}.{PRODUCTION}.", wanted)
        out = {}
        for pid, rec in current.items():
            name = self.name(PRODUCTION, pid)
            if name in found:
                out[pid] = reading.production_model(pid, name, str(rec["version"]), found[name])
        return dict(sorted(out.items()))

    def register_shard(
        self,
        shard_key: str,
        outcomes: list[ProductOutcome],
        keys: dict[str, str],
        lineage: RunLineage,
        promote: bool,
    ) -> tuple[list[Registered], float]:
        """One MLflow run per shard holds its models; each winner becomes a version with lineage,
        or reuses the version already made from its training key (`keys`: product -> key).

        Returns what was registered and the seconds spent (for the per-product cost split).
        A failure marks the shard's MLflow run FAILED before it propagates.
        """
        t0 = time.perf_counter()
        with self._writers:
            run = self.client.create_run(
                self.experiment_id,
                run_name=f"shard-{shard_key}",
                tags={**lineage.tags(), "factory.shard": shard_key},
            )
            run_id = run.info.run_id
            try:
                done = self._register(run, outcomes, keys, lineage, promote)
            except BaseException:
                with contextlib.suppress(Exception):
                    self.client.set_terminated(run_id, "FAILED")
                raise
            self.client.set_terminated(run_id)
        return done, time.perf_counter() - t0

    def _register(
        self,
        run: Run,
        outcomes: list[ProductOutcome],
        keys: dict[str, str],
        lineage: RunLineage,
        promote: bool,
    ) -> list[Registered]:
        run_id, artifact_uri = run.info.run_id, run.info.artifact_uri
        winners = [o for o in outcomes if o.status == "registered"]
        self._log_shard_metrics(run_id, outcomes)
        self.client.log_dict(
            run_id, {"products": [outcome_row(o) for o in outcomes]}, "outcomes.json"
        )
        digests = log_models(self.client, run_id, artifact_uri, winners)
        plans = [
            self._plan(o, keys[o.product_id], artifact_uri, run_id, lineage, promote)
            for o in winners
        ]
        signatures = {p: self.signer.sign(p, d) for p, d in digests.items()}
        for plan in (p for product in plans for p in product):
            signed = signatures[plan.model_tags[PRODUCT_TAG]]
            plan.tags.update(
                {
                    DIGEST_TAG: signed.digest,
                    SIGNATURE_TAG: signed.signature,
                    SIGNING_KEY_TAG: signed.key_id,
                }
            )
        versions = self.write_plans([p for product in plans for p in product])
        return [
            Registered(
                o.product_id,
                str(versions[self.name(STAGING, o.product_id)]),
                str(versions[self.name(PRODUCTION, o.product_id)]) if promote else None,
            )
            for o in winners
        ]

    def _log_shard_metrics(self, run_id: str, outcomes: list[ProductOutcome]) -> None:
        """The shard's summary on its run: how many products ended how, and each metric's
        mean over the products' chosen models (every product's own scores are in
        `outcomes.json` and on its version's tags: one metric row per product and metric
        cost ~5 ms of MLflow's store per product)."""
        now = int(time.time() * 1000)
        counts = Counter(o.status for o in outcomes)
        metrics = [Metric(f"products_{status}", n, now, 0) for status, n in sorted(counts.items())]
        scores = [o.scores[o.challenger] for o in outcomes if o.challenger in o.scores]
        for name in sorted({m for s in scores for m in s}):
            values = [s[name] for s in scores if name in s and math.isfinite(s[name])]
            if values:
                metrics.append(Metric(f"mean_{name}", sum(values) / len(values), now, 0))
        self.client.log_batch(run_id, metrics=metrics, synchronous=True)

    def _plan(
        self,
        o: ProductOutcome,
        train_key: str,
        artifact_uri: str,
        run_id: str,
        lineage: RunLineage,
        promote: bool,
    ) -> list[VersionPlan]:
        """A staging version from the shard run's artifacts; with `promote`, a production copy
        (what `MlflowClient.copy_model_version` makes: source `models:/<staging>/<v>`)."""
        tags = {**lineage.tags(), **version_tags(o), TRAIN_KEY_TAG: train_key}
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
                        PRODUCT_TAG: o.product_id,
                        FAMILY_TAG: o.family,
                        ENVIRONMENT_TAG: env,
                    },
                    description=f"Demand forecaster for {o.product_id} ({env}).",
                    copy_of=plans[0] if plans else None,
                    train_key=train_key,
                )
            )
        return plans

    def write_plans(self, plans: list[VersionPlan]) -> dict[str, int]:
        """Create the planned versions: one transaction on a database store, else call by call."""
        store = self._fast_store
        if store is not None:
            return sql_writer.write_versions(store, plans)
        return rest_writer.write_versions(self.client, plans, self.settings.registry_concurrency)

    @functools.cached_property
    def _fast_store(self) -> SqlAlchemyStore | None:
        """The database store the fast path may write: only at the alembic revision of the
        installed MLflow (checked once); any other revision takes the client's calls."""
        store = reading.sql_store(self.client)
        problem = None if store is None else schema_mismatch(store)
        if problem:
            log.warning("%s: registering through MLflow's client calls instead", problem)
        return None if problem else store

    def serving_version(self, product_id: str) -> tuple[ModelVersion, str]:
        """The version serving a product and its alias: the production champion, else the
        staging candidate."""
        try:
            return self._by_alias(PRODUCTION, CHAMPION_ALIAS, product_id), CHAMPION_ALIAS
        except MlflowException:
            pass
        try:
            return self._by_alias(STAGING, CANDIDATE_ALIAS, product_id), CANDIDATE_ALIAS
        except MlflowException as exc:
            if exc.error_code not in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
                raise
        why = self.retired().get(product_id)
        if why is not None:
            raise NoModelError(f"product {product_id!r} is retired ({why}); `factory restore`")
        raise NoModelError(f"product {product_id!r} has no registered model")

    def _by_alias(self, environment: str, alias: str, product_id: str) -> ModelVersion:
        name = self.name(environment, product_id)
        try:
            return self.client.get_model_version_by_alias(name, alias)
        except MlflowException as exc:
            if exc.error_code != "PERMISSION_DENIED":
                raise
            # MLflow's auth server denies an alias lookup on a model that does not exist
            # (it has no permissions to check); its GET of the model says which it is.
            self.client.get_registered_model(name)  # RESOURCE_DOES_NOT_EXIST when missing
            raise

    @property
    def signer(self) -> Signer:
        """The factory's signing key and trusted public keys (read once per process)."""
        return signer(self.settings)

    def verified_folder(self, mv: ModelVersion) -> Path:
        """A version's model folder (downloaded from a remote store), checked against its tags.

        Raises ModelIntegrityError (naming product, version and model) when it is unsigned,
        signed by an untrusted key, or its files changed since signing."""
        files = self.version_files(mv)
        return verified.verified_folder(files, self.verifier, self.settings.tracking_uri)

    def version_files(self, mv: ModelVersion) -> verified.VersionFiles:
        """Where a version's files are and its tags: what `verified.verified_folder` checks
        (one registry call for the download URI)."""
        tags = dict(mv.tags or {})
        uri = reading.registry_calls(self.client).get_model_version_download_uri(
            mv.name, mv.version
        )
        product = tags.get(PRODUCT_TAG, mv.name)
        return verified.VersionFiles(
            product, mv.name, str(mv.version), uri, tags, str(mv.source or "")
        )

    @property
    def verifier(self) -> Verifier:
        """The trusted public keys alone (what a Ray worker gets to verify models with)."""
        return self.signer.verifier

    def load_model(self, mv: ModelVersion) -> PyFuncModel:
        """A registered version as a pyfunc model, verified (concurrently) before it is loaded
        (one at a time)."""
        folder = self.verified_folder(mv)
        with _LOAD_LOCK:
            return mlflow.pyfunc.load_model(str(folder))

    def model_from(self, files: verified.VersionFiles) -> ProductModel:
        """The forecaster in these version files: verified, then read from its payload directly
        (no `mlflow.pyfunc` load: ~ms instead of a second; safe from many threads)."""
        folder = verified.verified_folder(files, self.verifier, self.settings.tracking_uri)
        return ProductModel.from_folder(folder / "artifacts" / "model")

    def lineage(self, product_id: str) -> dict[str, Any]:
        """The whole chain behind a product's current model: version, source run and tags."""
        return reading.model_lineage(self.client, *self.serving_version(product_id))
