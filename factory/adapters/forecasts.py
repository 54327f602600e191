"""Batch forecast files: the served products, the parquet output and the forecast history."""

from __future__ import annotations

import fsspec
import pandas as pd
from pydantic import BaseModel

from factory.adapters.files import atomic_write
from factory.adapters.registry.names import PRODUCTION, STAGING
from factory.adapters.registry.registry import Registry
from factory.core.errors import UserError
from factory.core.outcomes import name_ids

FORECAST_KEYS = ["unique_id", "model_name", "model_version", "ds"]


class ForecastError(UserError, RuntimeError):
    """No forecast could be made."""

    hint = "`factory status` shows which products have models; `factory train` registers them"


class ForecastReport(BaseModel):
    """Where the forecasts went (None: nothing written), which products failed and why, and
    which asked-for products have no serving model. `products` counts served products."""

    url: str | None
    rows: int
    products: int
    missing: dict[str, str]
    history_url: str | None = None
    unknown: list[str] = []
    shadow_rows: int = 0  # rows of shadow challengers (role "shadow"), included in `rows`
    shadow_missing: dict[str, str] = {}  # products whose challenger was refused or failed
    models: int = 0  # versions the Ray workers were given (serving and shadow)
    worker_s: float = 0.0  # time they spent verifying, loading and forecasting them


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


def save_forecasts(
    frame: pd.DataFrame,
    missing: dict[str, str],
    out_url: str,
    forecasts_url: str,
    shadow_missing: dict[str, str] | None = None,
) -> ForecastReport:
    """Write the rows to `<out_url>/forecasts.parquet` and append them to the forecast history;
    with no rows, write nothing (an earlier file is not replaced by an empty one)."""
    shadow_missing = shadow_missing or {}
    if not len(frame):
        return ForecastReport(
            url=None, rows=0, products=0, missing=missing, shadow_missing=shadow_missing
        )
    target = f"{out_url.rstrip('/')}/forecasts.parquet"
    atomic_write(target, lambda fh: frame.to_parquet(fh, index=False))  # never half a file
    kept = append_forecast_history(frame, forecasts_url)
    served = frame["role"] != "shadow" if "role" in frame else pd.Series(True, index=frame.index)
    return ForecastReport(
        url=target,
        rows=len(frame),
        products=frame.loc[served, "unique_id"].nunique(),
        missing=missing,
        history_url=kept,
        shadow_rows=int((~served).sum()),
        shadow_missing=shadow_missing,
    )


def append_forecast_history(
    frame: pd.DataFrame,
    forecasts_url: str,
    made_at: pd.Timestamp | None = None,
    writer: str | None = None,
) -> str:
    """Keep what each model version forecast, one file per day under <forecasts_url>/history.

    Rows: unique_id, ds, yhat, model_name, model_version and role ("serving" for the version
    that answers, "shadow" for a staging challenger, "canary"; "serving" when absent), plus
    made_at. A model forecasts from its own training cutoff, so repeated runs repeat rows:
    they are de-duplicated by (unique_id, model_name, model_version, ds), keeping the latest;
    a serving and a shadow version never share a model name, so neither replaces the other.
    """
    made_at = made_at or pd.Timestamp.now(tz="UTC")
    fs, root = fsspec.core.url_to_fs(f"{forecasts_url.rstrip('/')}/history")
    fs.makedirs(root, exist_ok=True)
    # a writer that appends concurrently with others (an endpoint replica) keeps its own file
    suffix = f"-{writer}" if writer else ""
    target = f"{root}/forecasts-{made_at:%Y-%m-%d}{suffix}.parquet"
    rows = frame.assign(made_at=made_at)
    if "role" not in rows:
        rows["role"] = "serving"
    if fs.exists(target):
        with fs.open(target, "rb") as fh:
            rows = pd.concat([pd.read_parquet(fh), rows], ignore_index=True)
    rows = rows.drop_duplicates(FORECAST_KEYS, keep="last").reset_index(drop=True)
    atomic_write(fs.unstrip_protocol(target), lambda fh: rows.to_parquet(fh, index=False))
    return fs.unstrip_protocol(target) if "://" in forecasts_url else target


def read_forecast_history(forecasts_url: str) -> pd.DataFrame:
    """Every forecast kept so far (latest per model version, product and date); rows kept
    before roles were recorded count as "serving"."""
    fs, root = fsspec.core.url_to_fs(f"{forecasts_url.rstrip('/')}/history")
    files = sorted(fs.glob(f"{root}/forecasts-*.parquet")) if fs.exists(root) else []
    if not files:
        return pd.DataFrame(columns=[*FORECAST_KEYS, "yhat", "role", "made_at"])
    frames = []
    for path in files:
        with fs.open(path, "rb") as fh:
            frames.append(pd.read_parquet(fh))
    rows = pd.concat(frames, ignore_index=True).sort_values("made_at", kind="stable")
    rows["role"] = rows["role"].fillna("serving") if "role" in rows else "serving"
    return rows.drop_duplicates(FORECAST_KEYS, keep="last").reset_index(drop=True)
