"""Each winner's pyfunc folder: MLflow models-from-code (no pickle), with lineage tags."""

from __future__ import annotations

import atexit
import functools
import json
import os
import re
import shutil
import tempfile
import threading
import uuid
import warnings
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import mlflow
import psutil
from mlflow import MlflowClient
from mlflow.models import ModelSignature
from mlflow.types import ColSpec, Schema, TensorSpec
from mlflow.types.schema import AnyType
from mlflow.utils.file_utils import local_file_uri_to_path

from factory.adapters.registry.digest import write_folder
from factory.adapters.registry.names import product_slug
from factory.core import classical, forecaster, saved
from factory.core.training import ProductOutcome

MODEL_CODE = Path(__file__).with_name("pyfunc_model.py")
FORECASTER_CODE = Path(forecaster.__file__)
CLASSICAL_CODE = Path(classical.__file__)
SAVED_CODE = Path(saved.__file__)
# What a registered model needs to load: the installed versions of exactly these packages.
MODEL_PACKAGES = ("mlflow", "lightgbm", "scikit-learn", "skops", "statsforecast", "pandas", "numpy")
_TEMPLATE_LOCK = threading.Lock()  # shards register from several threads


def model_signature(exogenous: tuple[str, ...] = ()) -> ModelSignature:
    """What ProductForecaster.predict takes: `h` (periods ahead; 0 is the family's horizon), or
    future `ds` with the family's exogenous columns, all optional (`ds` of any type: MLflow's
    datetime refuses dates given as text); and what it returns: `unique_id, ds, yhat`."""
    inputs: list[ColSpec | TensorSpec] = [
        ColSpec("long", "h", required=False),
        ColSpec(AnyType(), "ds", required=False),
    ]
    inputs += [ColSpec("double", name, required=False) for name in exogenous]
    outputs: list[ColSpec | TensorSpec] = [
        ColSpec("string", "unique_id"),
        ColSpec("datetime", "ds"),
        ColSpec("double", "yhat"),
        *(ColSpec("double", c, required=False) for c in forecaster.INTERVAL_COLUMNS),
    ]
    return ModelSignature(Schema(inputs), Schema(outputs))


def pip_requirements() -> list[str]:
    """The model's requirements, pinned to what is installed here."""
    return [f"{name}=={version(name)}" for name in MODEL_PACKAGES]


def log_models(
    client: MlflowClient, run_id: str, artifact_uri: str, winners: list[ProductOutcome]
) -> dict[str, str]:
    """Each winner's pyfunc folder under the run's `models/`: written in place when the
    artifact store is a local folder (what `log_artifacts` would copy), else uploaded.
    Returns each product's model digest (of the folder as written)."""
    if not winners:
        return {}
    if urlparse(artifact_uri).scheme == "file":
        target = Path(local_file_uri_to_path(artifact_uri)) / "models"
        return {o.product_id: _saved(o, target) for o in winners}
    stage = Path(tempfile.mkdtemp(prefix="factory-shard-"))
    try:
        digests = {o.product_id: _saved(o, stage) for o in winners}
        client.log_artifacts(run_id, str(stage), "models")
        return digests
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def _saved(o: ProductOutcome, parent: Path) -> str:
    """Save one winner's folder under `parent` and return its digest."""
    return save_pyfunc(o, parent / product_slug(o.product_id))


def version_tags(o: ProductOutcome) -> dict[str, str]:
    """Per-version lineage and evidence tags (the backtest windows this product got, its
    history path: full, short or minimal)."""
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
        "factory.backtest_windows": str(o.windows[0]),
        "factory.window_horizon": str(o.windows[1]),
        "factory.history": o.history,
        "factory.gate": json.dumps(o.decision, sort_keys=True),
    }
    if o.dropped:
        tags["factory.dropped"] = json.dumps(o.dropped, sort_keys=True)[:4000]
    scores = o.scores.get(o.challenger, {})
    tags.update({f"factory.metric.{m}": f"{v:.6g}" for m, v in scores.items()})
    baseline = o.scores.get("seasonal_naive", {})
    tags.update({f"factory.baseline.{m}": f"{v:.6g}" for m, v in baseline.items()})
    return tags


def save_pyfunc(o: ProductOutcome, path: Path) -> str:
    """Write one product's pyfunc model folder (models-from-code, LightGBM text / skops bytes)
    and return its digest.

    `mlflow.pyfunc.save_model` re-executes the model code and rewrites identical environment
    files for every model (~40 ms); it runs once per process to make a template, kept in
    memory, and each product's folder is that template with its own artifacts, model UUID and
    creation time (the two MLmodel lines are rewritten as text: a YAML round trip costs 6 ms),
    hashed as it is written.
    """
    assert o.payload is not None and o.config_json is not None
    exogenous = tuple(json.loads(o.config_json)["features"]["exogenous"])
    with _TEMPLATE_LOCK:
        files = dict(_template_files(exogenous))
    files["MLmodel"] = _MLMODEL_IDENTITY.sub(
        lambda m: f"{m[1]}: {_identity(m[1])}", files["MLmodel"].decode()
    ).encode()
    files["artifacts/model/manifest.json"] = json.dumps(manifest_of(o)).encode()
    files["artifacts/model/model.bin"] = o.payload
    return write_folder(path, files)


@functools.cache
def _template_files(exogenous: tuple[str, ...]) -> dict[str, bytes]:
    """The template folder's files: relative posix path -> bytes."""
    template = _pyfunc_template(exogenous)
    return {
        p.relative_to(template).as_posix(): p.read_bytes()
        for p in template.rglob("*")
        if p.is_file()
    }


def manifest_of(o: ProductOutcome) -> dict[str, object]:
    """What a registered model's `manifest.json` holds (`ProductModel` reads it back)."""
    return {
        "product_id": o.product_id,
        "family": o.family,
        "config": o.config_json,
        "horizon": len(o.forecast or []),
        "history_tail": o.history_tail,
        "data_fingerprint": o.data_fingerprint,
        "history": o.history,
        "intervals": o.intervals or {},
    }


_MLMODEL_IDENTITY = re.compile(r"^(model_uuid|utc_time_created): .*$", re.MULTILINE)


def _identity(key: str) -> str:
    """A fresh value for one of the MLmodel keys that make each saved model unique."""
    if key == "model_uuid":
        return uuid.uuid4().hex
    return f"'{datetime.now(UTC).replace(tzinfo=None)}'"


@functools.cache
def _pyfunc_template(exogenous: tuple[str, ...] = ()) -> Path:
    """A pyfunc folder saved by MLflow itself, with empty model artifacts to fill in and the
    signature of a family with these exogenous columns; its temp folder is removed when this
    process exits (and by the next process, if this one is killed: the folder is named after
    its process)."""
    _prune_templates()
    root = Path(tempfile.mkdtemp(prefix=f"factory-pyfunc-{os.getpid()}-"))
    atexit.register(_remove_template, root, os.getpid())
    (root / "model").mkdir()
    with warnings.catch_warnings():
        # An input example costs a validation (and a log line) per process; the signature
        # already says what the model takes.
        warnings.filterwarnings("ignore", ".*An input example was not provided", UserWarning)
        mlflow.pyfunc.save_model(
            path=str(root / "template"),
            python_model=str(MODEL_CODE),
            artifacts={"model": str(root / "model")},
            code_paths=[str(FORECASTER_CODE), str(CLASSICAL_CODE), str(SAVED_CODE)],
            pip_requirements=pip_requirements(),
            signature=model_signature(exogenous),
        )
    return root / "template"


def _prune_templates() -> None:
    """Remove template folders whose process is gone (killed before its exit handler ran)."""
    for folder in Path(tempfile.gettempdir()).glob("factory-pyfunc-*"):
        pid = folder.name.split("-")[2]
        if pid.isdigit() and not psutil.pid_exists(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)


def _remove_template(root: Path, owner: int) -> None:
    """Remove the template's temp folder in the process that made it (a forked child inherits
    the exit handler and must leave its parent's folder alone)."""
    if os.getpid() == owner:
        shutil.rmtree(root, ignore_errors=True)


def outcome_row(o: ProductOutcome) -> dict[str, Any]:
    """One product's row in the shard run's `outcomes.json`."""
    return {
        "product_id": o.product_id,
        "status": o.status,
        "reason": o.reason,
        "challenger": o.challenger,
        "history": o.history,
        "windows": list(o.windows),
        "dropped": o.dropped,
        "scores": o.scores,
        "data_fingerprint": o.data_fingerprint,
        "forecast": dict(zip(o.forecast_ds or [], o.forecast, strict=True)) if o.forecast else None,
    }
