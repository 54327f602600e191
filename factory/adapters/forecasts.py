"""Batch forecasts from registered models, with the model version on every row."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import cast

import fsspec
import mlflow
import pandas as pd
from pydantic import BaseModel

from factory.adapters.files import atomic_write
from factory.adapters.registry.names import PRODUCTION, STAGING, NoModelError
from factory.adapters.registry.registry import Registry
from factory.adapters.signing import ModelIntegrityError
from factory.core.errors import UserError
from factory.core.outcomes import name_ids

FORECAST_KEYS = ["unique_id", "model_name", "model_version", "ds"]


class ForecastError(UserError, RuntimeError):
    """No forecast could be made."""

    hint = "`factory status` shows which products have models; `factory train` registers them"


class ForecastReport(BaseModel):
    """Where the forecasts went (None: nothing written), which products failed and why, and
    which asked-for products have no serving model."""

    url: str | None
    rows: int
    products: int
    missing: dict[str, str]
    history_url: str | None = None
    unknown: list[str] = []


def served_product_ids(registry: Registry) -> list[str]:
    """Products with a production model, or a staging one when none is in production."""
    return sorted(set(registry.current_models(PRODUCTION)) | set(registry.current_models(STAGING)))


def choose_products(served: list[str], asked: list[str] | None) -> tuple[list[str], list[str]]:
    """(products to forecast, asked-for products without a serving model): all served ones
    by default. Raises ForecastError when there is nothing to forecast."""
    if not asked:
        if not served:
            raise ForecastError("no product has a registered model yet; run `factory train` first")
        return served, []
    serving = set(served)
    asked = list(dict.fromkeys(asked))
    unknown = [p for p in asked if p not in serving]
    if len(unknown) == len(asked):
        raise ForecastError(f"unknown product(s): {name_ids(unknown)} (no registered model)")
    return [p for p in asked if p in serving], unknown


def forecast_product(registry: Registry, product_id: str, horizon: int | None) -> pd.DataFrame:
    """Load a product's serving model through pyfunc and forecast `horizon` periods."""
    mv, _ = registry.serving_version(product_id)
    name, version = mv.name, str(mv.version)
    model = registry.load_model(mv)  # verified first, then loaded one at a time
    asked = pd.DataFrame({"h": [horizon or 0]})  # 0: the family's horizon
    out = cast(pd.DataFrame, model.predict(asked))
    return out.assign(model_name=name, model_version=version)


def forecast_products(
    registry: Registry, product_ids: list[str], horizon: int | None = None, threads: int = 4
) -> tuple[pd.DataFrame, dict[str, str]]:
    """Forecasts for many products; products without a model are returned with the reason."""
    errors: dict[str, str] = {}

    def one(pid: str) -> pd.DataFrame | None:
        try:
            return forecast_product(registry, pid, horizon)
        except (NoModelError, ModelIntegrityError) as exc:
            errors[pid] = str(exc)
        except mlflow.exceptions.MlflowException as exc:
            errors[pid] = f"{exc.error_code}: {str(exc.message)[:200]}"
        return None

    with ThreadPoolExecutor(threads) as pool:
        frames = [f for f in pool.map(one, product_ids) if f is not None]
    cols = ["unique_id", "ds", "yhat", "model_name", "model_version"]
    out = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=cols)
    return out[cols], errors


def append_forecast_history(
    frame: pd.DataFrame, forecasts_url: str, made_at: pd.Timestamp | None = None
) -> str:
    """Keep what each model version forecast, one file per day under <forecasts_url>/history.

    A model forecasts from its own training cutoff, so repeated runs repeat rows: they are
    de-duplicated by (unique_id, model_name, model_version, ds), keeping the latest.
    """
    made_at = made_at or pd.Timestamp.now(tz="UTC")
    fs, root = fsspec.core.url_to_fs(f"{forecasts_url.rstrip('/')}/history")
    fs.makedirs(root, exist_ok=True)
    target = f"{root}/forecasts-{made_at:%Y-%m-%d}.parquet"
    rows = frame.assign(made_at=made_at)
    if fs.exists(target):
        with fs.open(target, "rb") as fh:
            rows = pd.concat([pd.read_parquet(fh), rows], ignore_index=True)
    rows = rows.drop_duplicates(FORECAST_KEYS, keep="last").reset_index(drop=True)
    atomic_write(fs.unstrip_protocol(target), lambda fh: rows.to_parquet(fh, index=False))
    return fs.unstrip_protocol(target) if "://" in forecasts_url else target


def read_forecast_history(forecasts_url: str) -> pd.DataFrame:
    """Every forecast kept so far (latest per model version, product and date)."""
    fs, root = fsspec.core.url_to_fs(f"{forecasts_url.rstrip('/')}/history")
    files = sorted(fs.glob(f"{root}/forecasts-*.parquet")) if fs.exists(root) else []
    if not files:
        return pd.DataFrame(columns=[*FORECAST_KEYS, "yhat", "made_at"])
    frames = []
    for path in files:
        with fs.open(path, "rb") as fh:
            frames.append(pd.read_parquet(fh))
    rows = pd.concat(frames, ignore_index=True).sort_values("made_at", kind="stable")
    return rows.drop_duplicates(FORECAST_KEYS, keep="last").reset_index(drop=True)
