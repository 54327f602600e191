"""A registered model as saved: its bytes (`dumps` / `loads`) and its folder (`ProductModel`,
a manifest plus the bytes), forecasting from the end of its training history.

Shipped inside every registered MLflow model with forecaster.py and classical.py, so it
imports only numpy, pandas, lightgbm, scikit-learn, skops and statsforecast.
"""

from __future__ import annotations

import base64
import json
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

try:
    from factory.core import classical, forecaster
except ImportError:  # loaded from the model's own code/ folder
    import classical  # type: ignore[no-redef]
    import forecaster  # type: ignore[no-redef]


MAX_INFLATED = 1 << 30  # a compressed payload larger than this once inflated is refused


def inflate(payload: bytes, limit: int) -> bytes:
    """zlib-decompress at most `limit` bytes (a hostile payload cannot expand without bound)."""
    d = zlib.decompressobj()
    out = d.decompress(payload, limit)
    if d.unconsumed_tail or not d.eof:
        raise ValueError(f"compressed payload is truncated or inflates past {limit} bytes")
    return out


def dumps(model: forecaster.Fitted) -> bytes:
    """A fitted model as bytes, safely: JSON state, LightGBM's text format or skops, never
    pickle."""
    kind = model.config.kind
    if kind == "seasonal_naive":
        return b""
    if kind in classical.CLASSICAL_KINDS:
        return classical.dumps(model.estimator)
    if kind == "ensemble":
        parts = [base64.b64encode(dumps(m)).decode() for m in model.estimator]
        return json.dumps({"members": parts}).encode()
    if kind == "lightgbm":
        return model.estimator.model_to_string().encode()
    if kind == forecaster.POOLED:  # the shared booster is large and its text compresses ~3x
        booster = model.estimator.booster.model_to_string()
        text = json.dumps({"scale": model.estimator.scale, "booster": booster})
        return zlib.compress(text.encode(), 6)
    import skops.io as sio

    return sio.dumps(model.estimator)


def preload() -> None:
    """Import the model libraries now: a process's first model load otherwise pays ~0.7 s."""
    import lightgbm  # noqa: F401
    import sklearn.ensemble
    import sklearn.linear_model
    import sklearn.pipeline  # noqa: F401
    import skops.io  # noqa: F401


SKOPS_TRUSTED = (
    "sklearn.pipeline.Pipeline",
    "sklearn.preprocessing._data.StandardScaler",
    "sklearn.linear_model._ridge.Ridge",
    "sklearn.linear_model._coordinate_descent.ElasticNet",
    "sklearn.ensemble._forest.RandomForestRegressor",
    "sklearn.tree._classes.DecisionTreeRegressor",
    "sklearn.tree._tree.Tree",
)


SKOPS_ESTIMATORS = SKOPS_TRUSTED[:5]


def loads(config: forecaster.ModelConfig, payload: bytes) -> forecaster.Fitted:
    """Inverse of `dumps`; refuses any skops type outside the factory's own list."""
    if config.kind == "seasonal_naive":
        return forecaster.Fitted(config, None)
    if config.kind in classical.CLASSICAL_KINDS:
        kind, params, season = config.kind, config.params, config.season_length
        return forecaster.Fitted(config, classical.loads(kind, params, season, payload))
    if config.kind == "ensemble":
        parts = json.loads(payload)["members"]
        members = config.members
        if len(parts) != len(members):
            raise ValueError(f"ensemble has {len(members)} members but {len(parts)} payloads")
        return forecaster.Fitted(
            config, [loads(m, base64.b64decode(p)) for m, p in zip(members, parts, strict=True)]
        )
    if config.kind == "lightgbm":
        import lightgbm as lgb

        return forecaster.Fitted(config, lgb.Booster(model_str=payload.decode()))
    if config.kind == forecaster.POOLED:
        import lightgbm as lgb

        raw = json.loads(inflate(payload, MAX_INFLATED))
        booster = lgb.Booster(model_str=str(raw["booster"]))
        return forecaster.Fitted(config, forecaster.Pooled(booster, float(raw["scale"])))
    import skops.io as sio

    untrusted = sio.get_untrusted_types(data=payload)
    refused = [t for t in untrusted if t not in SKOPS_TRUSTED]
    if refused:
        raise ValueError(f"refusing to load untrusted types: {', '.join(refused)}")
    estimator = sio.loads(payload, trusted=untrusted)
    unexpected = sorted(_estimator_types(estimator) - set(SKOPS_ESTIMATORS))
    if unexpected:
        raise ValueError(f"refusing to load unexpected estimator(s): {', '.join(unexpected)}")
    return forecaster.Fitted(config, estimator)


def _estimator_types(estimator: Any) -> set[str]:
    """Qualified class names of an estimator and of its pipeline steps."""
    parts = [estimator, *(step for _, step in getattr(estimator, "steps", []))]
    return {f"{type(p).__module__}.{type(p).__qualname__}" for p in parts}


class ProductModel:
    """One registered product model as saved in its folder (`manifest.json` + `model.bin`):
    forecasts from the end of its training history. Used by the pyfunc wrapper, batch
    forecasts and the online endpoint alike."""

    def __init__(self, manifest: dict[str, Any], payload: bytes) -> None:
        self.manifest = manifest
        self.product_id: str = manifest["product_id"]
        self.horizon = int(manifest["horizon"])
        self.config = forecaster.ModelConfig.from_json(manifest["config"])
        self.model = loads(self.config, payload)
        self.intervals: dict[str, list[float]] = manifest.get("intervals") or {}
        tail = manifest["history_tail"]
        self.history = forecaster.Series(
            np.array(tail["ds"], dtype="datetime64[ns]"),
            np.array(tail["y"], dtype="float64"),
            {k: np.array(v, dtype="float64") for k, v in tail.items() if k not in ("ds", "y")},
        )

    @classmethod
    def from_folder(cls, root: Path) -> ProductModel:
        """Load from a model's artifact folder (`<model>/artifacts/model`)."""
        manifest = json.loads((root / "manifest.json").read_text())
        return cls(manifest, (root / "model.bin").read_bytes())

    def forecast(self, horizon: int = 0, inputs: pd.DataFrame | None = None) -> pd.DataFrame:
        """The next `horizon` periods (0: the family's horizon): `unique_id, ds, yhat` and the
        prediction interval bounds (`yhat_lo_80`, `yhat_hi_80`, ...).

        `inputs`: known future values of the family's exogenous columns (`ds` and any of
        them, e.g. a promotion calendar); a date or column not given takes the model's
        assumption (no promotion, the last known value of the others)."""
        ds, yhat = self.forecast_values(horizon, inputs)
        return self._frame(ds, yhat)

    def bounds(self, yhat: np.ndarray) -> dict[str, np.ndarray]:
        """Prediction interval bounds of a forecast path that starts after the history."""
        return interval_bounds(yhat, self.intervals)

    def _frame(self, ds: np.ndarray, yhat: np.ndarray) -> pd.DataFrame:
        return pd.DataFrame(
            {"unique_id": self.product_id, "ds": ds, "yhat": yhat, **self.bounds(yhat)}
        )

    def forecast_values(
        self, horizon: int = 0, inputs: pd.DataFrame | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """`forecast` as its two columns (`ds`, `yhat`), without building a frame."""
        last, steps = self.history.ds[-1], horizon or self.horizon
        ds = forecaster.future_dates(last, steps, self.config.frequency)
        return ds, self.model.forecast(self.history, ds, self._exog(inputs, ds))

    def _exog(self, inputs: pd.DataFrame | None, ds: np.ndarray) -> dict | None:
        names = self.config.features.exogenous
        if inputs is None or not names:
            return None
        defaults = forecaster.default_future_exog(self.history, len(ds), names)
        return future_exog(inputs, ds, defaults)

    def predict(self, frame: pd.DataFrame) -> pd.DataFrame:
        """Forecast what `frame` asks: `h` periods ahead, or the future `ds` rows (with the
        family's exogenous columns when given)."""
        if "ds" not in frame.columns:
            given = int(frame["h"].iloc[0]) if "h" in frame.columns and len(frame) else 0
            return self.forecast(given)
        wanted = pd.to_datetime(frame["ds"]).to_numpy("datetime64[ns]")
        last = self.history.ds[-1]
        freq = forecaster.FREQ_ALIASES[self.config.frequency]
        steps = len(pd.date_range(pd.Timestamp(last), wanted.max(), freq=freq)) - 1
        ds = forecaster.future_dates(last, steps, self.config.frequency)
        out = self._frame(ds, self.model.forecast(self.history, ds, self._exog(frame, ds)))
        return out[out["ds"].isin(wanted)].reset_index(drop=True)


def interval_bounds(yhat: np.ndarray, widths: dict[str, list[float]]) -> dict[str, np.ndarray]:
    """`yhat_lo_<level>` and `yhat_hi_<level>` from per-step half-widths; a step past the
    widths given grows like sqrt(h) from the last one. Lower bounds stop at 0 (demand)."""
    out = {}
    h = np.arange(1, len(yhat) + 1)
    for level in sorted(widths, key=float):
        w = np.asarray(widths[level], dtype="float64")
        if not len(w):
            continue
        known = w[np.minimum(h, len(w)) - 1]
        half = np.where(h <= len(w), known, w[-1] * np.sqrt(h / len(w)))
        out[f"yhat_lo_{level}"] = np.maximum(yhat - half, 0.0)
        out[f"yhat_hi_{level}"] = yhat + half
    return out


def future_exog(
    frame: pd.DataFrame, ds: np.ndarray, defaults: dict[str, np.ndarray]
) -> dict[str, np.ndarray]:
    """Exogenous values for the dates `ds`: those `frame` gives (by `ds`), else the defaults
    (one array per exogenous column, aligned with `ds`)."""
    given = frame.assign(ds=pd.to_datetime(frame["ds"])).set_index("ds")
    given = given[~given.index.duplicated(keep="last")]
    out = {}
    for name, default in defaults.items():
        if name not in given.columns:
            out[name] = default
            continue
        values = given[name].reindex(pd.DatetimeIndex(ds)).to_numpy(dtype="float64")
        out[name] = np.where(np.isnan(values), default, values)
    return out
