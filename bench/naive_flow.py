"""The naive pattern: one Prefect task per product, each logging and registering with MLflow.

This is what a user writes without the factory: `@task` on the per-product work, `.map` over
products on the flow's default task runner, one MLflow run per product, the flavor's default
`log_model` (no pip_requirements, so MLflow infers requirements for every model by loading it
in a subprocess), `register_model` and an alias.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from dataclasses import dataclass

import mlflow
import pandas as pd
from mlflow import MlflowClient
from prefect import flow, task, unmapped
from prefect.runtime import flow_run
from workload import Job, WorkerResult, outcome_digest, stage_split_ms

from factory.adapters.data import read_panel
from factory.adapters.lineage import code_fingerprint
from factory.core.contract import fleet_series, validate_panel
from factory.core.fleet import FamilySpec, GateSpec, load_fleet
from factory.core.forecaster import Fitted, ModelConfig, Series
from factory.core.saved import loads
from factory.core.training import ProductOutcome, train_product

THREADS_SETTING = "PREFECT_TASKS_RUNNER_THREAD_POOL_MAX_WORKERS"
SKLEARN_KINDS = ("ridge", "elastic_net", "random_forest")


class Wrapped(mlflow.pyfunc.PythonModel):
    """A fitted model MLflow has no flavor for, as a user would wrap it (cloudpickled)."""

    def __init__(self, model: Fitted) -> None:
        self.model = model

    def predict(
        self, context: object, model_input: pd.DataFrame, params: dict | None = None
    ) -> list:
        """Not called by the benchmark: it only logs and registers."""
        return []


@dataclass
class NaiveOutcome:
    """One product's result as its task returns it."""

    product_id: str
    status: str
    data_fingerprint: str
    timings: dict[str, float]


@dataclass
class NaiveRun:
    """What the naive flow returns."""

    flow_run_id: str
    products: int
    validation_s: float
    outcomes: list[NaiveOutcome]


def log_and_register(outcome: ProductOutcome) -> None:
    """One MLflow run with params, metrics and a default-logged model; register it; alias it."""
    assert outcome.config_json and outcome.payload is not None and outcome.challenger
    config = ModelConfig.from_json(outcome.config_json)
    model = loads(config, outcome.payload)
    with mlflow.start_run(run_name=outcome.product_id):
        mlflow.log_params({k: str(v)[:250] for k, v in config.params.items()})
        mlflow.log_metrics(outcome.scores[outcome.challenger])
        if config.kind == "lightgbm":
            info = mlflow.lightgbm.log_model(model.estimator, name="model")
        elif config.kind in SKLEARN_KINDS:
            info = mlflow.sklearn.log_model(model.estimator, name="model")
        else:  # no MLflow flavor (ensembles, statsforecast, seasonal naive): a pickled pyfunc
            info = mlflow.pyfunc.log_model(name="model", python_model=Wrapped(model))
    version = mlflow.register_model(info.model_uri, f"naive.{outcome.product_id}")
    MlflowClient().set_registered_model_alias(version.name, "champion", version.version)


@task
def train_and_register(
    product_id: str, series: Series, family: FamilySpec, gate: GateSpec
) -> NaiveOutcome:
    """Train one product; when its challenger passes the gate, log and register the model."""
    outcome = train_product(product_id, series, family, gate)
    t0 = time.perf_counter()
    if outcome.status == "registered":
        log_and_register(outcome)
    timings = {**outcome.timings, "registry_s": time.perf_counter() - t0}
    return NaiveOutcome(product_id, outcome.status, outcome.data_fingerprint, timings)


@flow(name="naive-fleet")
def naive_fleet(
    fleet_path: str, data_url: str, as_of: str, products: list[str], tracking_uri: str
) -> NaiveRun:
    """Validate the products' rows, then one mapped task per product."""
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_experiment("naive-fleet")
    t0 = time.perf_counter()
    fleet = load_fleet(fleet_path).spec
    panel = read_panel(data_url)
    panel = panel[panel["unique_id"].isin(products)]
    clean, report = validate_panel(panel, fleet, pd.Timestamp(as_of))
    validation_s = time.perf_counter() - t0
    series = fleet_series(clean, fleet, report.assignment)
    family = {p: fleet.family(f) for f, ids in report.assignment.items() for p in ids}
    ids = report.valid_ids
    futures = train_and_register.map(
        ids, [series[p] for p in ids], [family[p] for p in ids], unmapped(fleet.gate)
    )
    outcomes = [f.result() for f in futures]
    total = len(ids) + len(report.quarantined)
    return NaiveRun(str(flow_run.id), total, validation_s, outcomes)


def run_naive_fleet(job: Job) -> WorkerResult:
    """Run the naive flow on the job's products and report it like the other modes."""
    assert job.products is not None and job.tracking_uri is not None
    t0 = time.perf_counter()
    run = naive_fleet(job.fleet_path, job.data_url, job.as_of, job.products, job.tracking_uri)
    wall_s = time.perf_counter() - t0
    counts = Counter(o.status for o in run.outcomes)
    rows = ((o.product_id, o.status, o.data_fingerprint) for o in run.outcomes)
    return WorkerResult(
        wall_s=wall_s,
        products=run.products,
        models=counts["registered"],
        counts=dict(counts),
        per_product_ms=stage_split_ms(
            run.validation_s, [o.timings for o in run.outcomes], run.products
        ),
        flow_run_id=run.flow_run_id,
        outcome_digest=outcome_digest(rows),
        code_fingerprint=code_fingerprint(),
        notes=[
            "one @task per product, .map on the flow's default ThreadPoolTaskRunner"
            f" ({THREADS_SETTING}={os.environ.get(THREADS_SETTING, 'unset: one thread per task')})",
            "default mlflow <flavor>.log_model (no pip_requirements): includes MLflow's"
            " requirement inference, one subprocess per model",
        ],
    )
