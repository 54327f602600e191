"""Batch forecasts from registered models, with the model version on every row."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import mlflow
import pandas as pd

from tasks.registry import NoModelError, Registry

# Loading a models-from-code pyfunc runs its code file, which hands the model over through a
# process-wide slot (`mlflow.models.set_model`): concurrent loads can swap models. Serialise.
_LOAD_LOCK = threading.Lock()


def forecast_product(registry: Registry, product_id: str, horizon: int | None) -> pd.DataFrame:
    """Load a product's serving model through pyfunc and forecast `horizon` periods."""
    uri = registry.model_uri(product_id)
    name, alias = uri.removeprefix("models:/").split("@")
    version = registry.client.get_model_version_by_alias(name, alias).version
    with _LOAD_LOCK:
        model = mlflow.pyfunc.load_model(f"models:/{name}/{version}")
    out = model.predict(pd.DataFrame({"h": [horizon or 0]}))  # 0: the family's horizon
    return out.assign(model_name=name, model_version=str(version))


def forecast_products(
    registry: Registry, product_ids: list[str], horizon: int | None = None, threads: int = 4
) -> tuple[pd.DataFrame, dict[str, str]]:
    """Forecasts for many products; products without a model are returned with the reason."""
    errors: dict[str, str] = {}

    def one(pid: str) -> pd.DataFrame | None:
        try:
            return forecast_product(registry, pid, horizon)
        except NoModelError as exc:
            errors[pid] = str(exc)
        except mlflow.exceptions.MlflowException as exc:
            errors[pid] = f"{exc.error_code}: {str(exc.message)[:200]}"
        return None

    with ThreadPoolExecutor(threads) as pool:
        frames = [f for f in pool.map(one, product_ids) if f is not None]
    cols = ["unique_id", "ds", "yhat", "model_name", "model_version"]
    out = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=cols)
    return out[cols], errors
