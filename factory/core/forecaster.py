"""Features, candidate models and recursive forecasting for one product's series.

This module is shipped inside every registered MLflow model (with classical.py), so it imports
only numpy, pandas, lightgbm, scikit-learn, skops and statsforecast: never the rest of the
factory.
"""

from __future__ import annotations

import base64
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

try:
    from factory.core import classical
except ImportError:  # loaded from the model's own code/ folder
    import classical  # type: ignore[no-redef]

FREQ_ALIASES = {"D": "D", "W": "7D", "MS": "MS", "QS": "QS"}
LEVELS = (80, 95)  # prediction intervals on every forecast row, in percent
INTERVAL_COLUMNS = tuple(f"yhat_{side}_{level}" for level in LEVELS for side in ("lo", "hi"))


@dataclass(frozen=True)
class FeatureConfig:
    """Which features a model sees (mirrors the fleet's FeatureSpec)."""

    lags: tuple[int, ...] = (1, 7, 14, 28)
    rolling_means: tuple[int, ...] = (7, 28)
    calendar: tuple[str, ...] = ("dayofweek", "month")
    exogenous: tuple[str, ...] = ()

    @property
    def lookback(self) -> int:
        """Periods of history one feature row needs."""
        return max((*self.lags, *self.rolling_means, 1))


@dataclass(frozen=True)
class ModelConfig:
    """A candidate: its kind, parameters and features, plus the series' frequency facts."""

    kind: str
    params: dict[str, Any]
    features: FeatureConfig
    season_length: int
    frequency: str = "D"

    @property
    def key(self) -> str:
        """Canonical text identifying this configuration (equal configs, equal keys)."""
        return json.dumps(asdict(self), sort_keys=True, default=list)

    @classmethod
    def from_json(cls, text: str) -> ModelConfig:
        """Inverse of `key`."""
        raw = json.loads(text)
        feats = {k: tuple(v) for k, v in raw.pop("features").items()}
        return cls(features=FeatureConfig(**feats), **raw)

    @property
    def members(self) -> tuple[ModelConfig, ...]:
        """An ensemble's member candidates (empty for any other kind)."""
        return tuple(ModelConfig.from_json(k) for k in self.params.get("members", ()))

    @property
    def uses_features(self) -> bool:
        """Regression on lags and calendar (needs `lookback` periods before each row)."""
        return self.kind not in (*classical.CLASSICAL_KINDS, "seasonal_naive", "ensemble")


@dataclass
class Series:
    """One product's history: dates, target and exogenous values, oldest first."""

    ds: np.ndarray
    y: np.ndarray
    exog: dict[str, np.ndarray] = field(default_factory=dict)

    def head(self, n: int) -> Series:
        """The first n periods."""
        return Series(self.ds[:n], self.y[:n], {k: v[:n] for k, v in self.exog.items()})

    def window(self, start: int, stop: int) -> Series:
        """Periods [start, stop)."""
        return Series(
            self.ds[start:stop],
            self.y[start:stop],
            {k: v[start:stop] for k, v in self.exog.items()},
        )


def calendar_matrix(ds: np.ndarray, names: tuple[str, ...]) -> np.ndarray:
    """Calendar features for dates, one column per name."""
    idx = pd.DatetimeIndex(ds)
    cols = []
    for name in names:
        if name == "weekofyear":
            cols.append(idx.isocalendar().week.to_numpy(dtype="float64"))
        else:
            cols.append(getattr(idx, name).to_numpy(dtype="float64"))
    return np.column_stack(cols) if cols else np.empty((len(idx), 0))


def design_matrix(series: Series, cfg: FeatureConfig, start: int) -> np.ndarray:
    """Feature rows for periods start..n-1 using only values strictly before each period."""
    y, n = series.y, len(series.y)
    cum = np.concatenate([[0.0], np.cumsum(y)])
    t = np.arange(start, n)
    cols = [y[t - lag] for lag in cfg.lags]
    cols += [(cum[t] - cum[t - w]) / w for w in cfg.rolling_means]
    parts = [np.column_stack(cols) if cols else np.empty((len(t), 0))]
    parts.append(calendar_matrix(series.ds[start:], cfg.calendar))
    parts += [series.exog[c][start:, None] for c in cfg.exogenous]
    return np.hstack(parts)


def future_dates(last: np.datetime64, horizon: int, frequency: str) -> np.ndarray:
    """The `horizon` period dates after `last`."""
    rng = pd.date_range(pd.Timestamp(last), periods=horizon + 1, freq=FREQ_ALIASES[frequency])
    return rng[1:].to_numpy("datetime64[ns]")


def default_future_exog(history: Series, horizon: int, names: tuple[str, ...]) -> dict:
    """Assumed future inputs when none are given: no promotion, last known value otherwise."""
    out = {}
    for name in names:
        fill = 0.0 if name == "promo" else float(history.exog[name][-1])
        out[name] = np.full(horizon, fill)
    return out


POOLED = "pooled_lightgbm"


@dataclass(frozen=True)
class Pooled:
    """A product's share of a pooled model: the booster trained across products, and the
    product's level that its series is divided by before features are made."""

    booster: Any
    scale: float


def level(y: np.ndarray, config: ModelConfig) -> float:
    """A series' recent level (mean absolute value of its last two seasons or lookback),
    else of the whole series, else 1: what a pooled model scales the product by."""
    recent = max(2 * config.season_length, config.features.lookback)
    for part in (y[-recent:], y):
        value = float(np.abs(part).mean()) if len(part) else 0.0
        if np.isfinite(value) and value > 0:
            return value
    return 1.0


def scaled(series: Series, scale: float) -> Series:
    """The series divided by a scale (exogenous inputs unchanged)."""
    return Series(series.ds, series.y / scale, series.exog)


class Fitted:
    """A fitted candidate that forecasts recursively from a history."""

    def __init__(self, config: ModelConfig, estimator: Any) -> None:
        self.config = config
        self.estimator = estimator
        self._linear = scaled_linear(estimator)

    def forecast(
        self, history: Series, ds: np.ndarray, exog: dict[str, np.ndarray] | None = None
    ) -> np.ndarray:
        """Forecast the periods `ds` that follow `history` directly, one step at a time."""
        h, cfg = len(ds), self.config
        if cfg.kind == "seasonal_naive":
            return seasonal_naive(history.y, h, cfg.season_length)
        if cfg.kind in classical.CLASSICAL_KINDS:  # from the fitted state at the history's end
            path = classical.forecast(self.estimator, h)
            if not np.isfinite(path).all():
                raise ValueError(f"{cfg.kind} forecast is not finite")
            return np.maximum(path, 0.0)
        if cfg.kind == "ensemble":
            paths = np.vstack([m.forecast(history, ds, exog) for m in self.estimator])
            return combine(paths, cfg.params["combine"])
        if cfg.kind == POOLED:
            scale = self.estimator.scale
            return self._recursive(scaled(history, scale), ds, exog) * scale
        return self._recursive(history, ds, exog)

    def _recursive(
        self, history: Series, ds: np.ndarray, exog: dict[str, np.ndarray] | None
    ) -> np.ndarray:
        """One step at a time, each forecast feeding the next step's lags."""
        h, feats = len(ds), self.config.features
        exog = exog or default_future_exog(history, h, feats.exogenous)
        static = np.hstack(
            [
                calendar_matrix(ds, feats.calendar),
                *(np.asarray(exog[c])[:, None] for c in feats.exogenous),
            ]
        )
        y = np.concatenate([history.y, np.zeros(h)])
        n = len(history.y)
        out = np.empty(h)
        for i in range(h):
            t = n + i
            lags = [y[t - lag] for lag in feats.lags]
            rolls = [y[t - w : t].mean() for w in feats.rolling_means]
            row = np.concatenate([lags, rolls, static[i]])[None, :]
            y[t] = out[i] = max(float(self._predict(row)[0]), 0.0)
        return out

    def _predict(self, x: np.ndarray) -> np.ndarray:
        if self._linear is not None:  # what the pipeline computes, without its input checks
            mean, scale, coef, intercept = self._linear
            if mean is not None:
                x = x - mean
            if scale is not None:
                x = x / scale
            return x @ coef + intercept
        if self.config.kind == "lightgbm":
            return self.estimator.predict(x, num_threads=1)
        if self.config.kind == POOLED:
            return self.estimator.booster.predict(x, num_threads=1)
        return self.estimator.predict(x)

    def dumps(self) -> bytes:
        """Safe serialisation: LightGBM's text format or skops, never pickle."""
        kind = self.config.kind
        if kind == "seasonal_naive":
            return b""
        if kind in classical.CLASSICAL_KINDS:
            return classical.dumps(self.estimator)
        if kind == "ensemble":
            parts = [base64.b64encode(m.dumps()).decode() for m in self.estimator]
            return json.dumps({"members": parts}).encode()
        if kind == "lightgbm":
            return self.estimator.model_to_string().encode()
        if kind == POOLED:
            booster = self.estimator.booster.model_to_string()
            return json.dumps({"scale": self.estimator.scale, "booster": booster}).encode()
        import skops.io as sio

        return sio.dumps(self.estimator)


def scaled_linear(estimator: Any) -> tuple[Any, Any, np.ndarray, Any] | None:
    """(mean, scale, coef, intercept) of a fitted StandardScaler + linear model pipeline, else
    None. A recursive forecast predicts one row per step, and sklearn's checks of each call's
    input cost ~0.3 ms, ten times the arithmetic; the same arithmetic done directly (in the
    same order, so the same numbers) makes forecasts several times cheaper."""
    if not hasattr(estimator, "steps"):
        return None
    from sklearn.linear_model import ElasticNet, Ridge
    from sklearn.preprocessing import StandardScaler

    steps = [step for _, step in estimator.steps]
    if len(steps) != 2 or type(steps[0]) is not StandardScaler:
        return None
    scaler, model = steps
    if type(model) not in (Ridge, ElasticNet) or np.ndim(model.coef_) != 1:
        return None
    return scaler.mean_, scaler.scale_, model.coef_, model.intercept_


def preload() -> None:
    """Import the model libraries now: a process's first model load otherwise pays ~0.7 s."""
    import lightgbm  # noqa: F401
    import sklearn.ensemble
    import sklearn.linear_model
    import sklearn.pipeline  # noqa: F401
    import skops.io  # noqa: F401


def combine(paths: np.ndarray, how: str) -> np.ndarray:
    """Members' forecasts (one row each) combined step by step."""
    return np.median(paths, axis=0) if how == "median" else paths.mean(axis=0)


def seasonal_naive(y: np.ndarray, horizon: int, season: int) -> np.ndarray:
    """Repeat the last full season."""
    season = min(season, len(y))
    last = y[-season:]
    return np.resize(last, horizon).astype("float64")


def fit(
    config: ModelConfig, series: Series, seed: int = 0, shared: dict[str, Any] | None = None
) -> Fitted:
    """Fit a candidate on a history (deterministic: fixed seeds, one thread). A pooled
    candidate takes its booster, trained across products, from `shared` (by config key)."""
    if config.kind == "seasonal_naive":
        return Fitted(config, None)
    if config.kind in classical.CLASSICAL_KINDS:
        return Fitted(
            config, classical.fit(config.kind, config.params, config.season_length, series.y)
        )
    if config.kind == "ensemble":
        return Fitted(config, [fit(m, series, seed, shared) for m in config.members])
    if config.kind == POOLED:
        if shared is None or config.key not in shared:
            raise ValueError("a pooled model is trained across products, not on one series")
        return Fitted(config, Pooled(shared[config.key], level(series.y, config)))
    lookback = config.features.lookback
    x = design_matrix(series, config.features, lookback)
    y = series.y[lookback:]
    if config.kind == "lightgbm":
        return Fitted(config, train_booster(config.params, x, y, seed))
    return Fitted(config, _sklearn(config.kind, dict(config.params), seed).fit(x, y))


def train_booster(params: dict[str, Any], x: np.ndarray, y: np.ndarray, seed: int = 0) -> Any:
    """A LightGBM booster from a candidate's parameters (deterministic, one thread)."""
    import lightgbm as lgb

    p = dict(params)
    settings = {
        "objective": p.pop("objective", "regression"),
        "learning_rate": p.pop("learning_rate", 0.05),
        "num_leaves": p.pop("num_leaves", 31),
        "min_data_in_leaf": p.pop("min_data_in_leaf", 20),
        "feature_fraction": p.pop("feature_fraction", 1.0),
        "deterministic": True,
        "force_row_wise": True,
        "num_threads": 1,
        "seed": seed,
        "verbose": -1,
    }
    rounds = p.pop("n_estimators", 100)
    return lgb.train(settings, lgb.Dataset(x, y, free_raw_data=True), num_boost_round=rounds)


def _sklearn(kind: str, params: dict[str, Any], seed: int) -> Any:
    from sklearn.ensemble import RandomForestRegressor
    from sklearn.linear_model import ElasticNet, Ridge
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if kind == "ridge":
        return make_pipeline(StandardScaler(), Ridge(**params))
    if kind == "elastic_net":
        return make_pipeline(StandardScaler(), ElasticNet(random_state=seed, **params))
    if kind == "random_forest":
        return RandomForestRegressor(random_state=seed, n_jobs=1, **params)
    raise ValueError(f"unknown model kind {kind!r}")


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


def loads(config: ModelConfig, payload: bytes) -> Fitted:
    """Inverse of `Fitted.dumps`; refuses any skops type outside the factory's own list."""
    if config.kind == "seasonal_naive":
        return Fitted(config, None)
    if config.kind in classical.CLASSICAL_KINDS:
        kind, params, season = config.kind, config.params, config.season_length
        return Fitted(config, classical.loads(kind, params, season, payload))
    if config.kind == "ensemble":
        parts = json.loads(payload)["members"]
        members = config.members
        if len(parts) != len(members):
            raise ValueError(f"ensemble has {len(members)} members but {len(parts)} payloads")
        return Fitted(
            config, [loads(m, base64.b64decode(p)) for m, p in zip(members, parts, strict=True)]
        )
    if config.kind == "lightgbm":
        import lightgbm as lgb

        return Fitted(config, lgb.Booster(model_str=payload.decode()))
    if config.kind == POOLED:
        import lightgbm as lgb

        raw = json.loads(payload)
        booster = lgb.Booster(model_str=str(raw["booster"]))
        return Fitted(config, Pooled(booster, float(raw["scale"])))
    import skops.io as sio

    untrusted = sio.get_untrusted_types(data=payload)
    refused = [t for t in untrusted if t not in SKOPS_TRUSTED]
    if refused:
        raise ValueError(f"refusing to load untrusted types: {', '.join(refused)}")
    estimator = sio.loads(payload, trusted=untrusted)
    unexpected = sorted(_estimator_types(estimator) - set(SKOPS_ESTIMATORS))
    if unexpected:
        raise ValueError(f"refusing to load unexpected estimator(s): {', '.join(unexpected)}")
    return Fitted(config, estimator)


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
        self.config = ModelConfig.from_json(manifest["config"])
        self.model = loads(self.config, payload)
        self.intervals: dict[str, list[float]] = manifest.get("intervals") or {}
        tail = manifest["history_tail"]
        self.history = Series(
            np.array(tail["ds"], dtype="datetime64[ns]"),
            np.array(tail["y"], dtype="float64"),
            {k: np.array(v, dtype="float64") for k, v in tail.items() if k not in ("ds", "y")},
        )

    @classmethod
    def from_folder(cls, root: Path) -> ProductModel:
        """Load from a model's artifact folder (`<model>/artifacts/model`)."""
        manifest = json.loads((root / "manifest.json").read_text())
        return cls(manifest, (root / "model.bin").read_bytes())

    def forecast(self, horizon: int = 0) -> pd.DataFrame:
        """The next `horizon` periods (0: the family's horizon): `unique_id, ds, yhat` and the
        prediction interval bounds (`yhat_lo_80`, `yhat_hi_80`, ...)."""
        ds, yhat = self.forecast_values(horizon)
        return self._frame(ds, yhat)

    def bounds(self, yhat: np.ndarray) -> dict[str, np.ndarray]:
        """Prediction interval bounds of a forecast path that starts after the history."""
        return interval_bounds(yhat, self.intervals)

    def _frame(self, ds: np.ndarray, yhat: np.ndarray) -> pd.DataFrame:
        return pd.DataFrame(
            {"unique_id": self.product_id, "ds": ds, "yhat": yhat, **self.bounds(yhat)}
        )

    def forecast_values(self, horizon: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """`forecast` as its two columns (`ds`, `yhat`), without building a frame."""
        ds = future_dates(self.history.ds[-1], horizon or self.horizon, self.config.frequency)
        return ds, self.model.forecast(self.history, ds, None)

    def predict(self, frame: pd.DataFrame) -> pd.DataFrame:
        """Forecast what `frame` asks: `h` periods ahead, or the future `ds` rows (with the
        family's exogenous columns when given)."""
        if "ds" not in frame.columns:
            given = int(frame["h"].iloc[0]) if "h" in frame.columns and len(frame) else 0
            return self.forecast(given)
        wanted = pd.to_datetime(frame["ds"]).to_numpy("datetime64[ns]")
        last = self.history.ds[-1]
        freq = FREQ_ALIASES[self.config.frequency]
        steps = len(pd.date_range(pd.Timestamp(last), wanted.max(), freq=freq)) - 1
        ds = future_dates(last, steps, self.config.frequency)
        exog = future_exog(frame, ds, self.config.features.exogenous)
        out = self._frame(ds, self.model.forecast(self.history, ds, exog))
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


def future_exog(frame: pd.DataFrame, ds: np.ndarray, names: tuple[str, ...]) -> dict | None:
    """Exogenous values for the requested dates; unrequested steps use the model's defaults."""
    if not names or not all(n in frame.columns for n in names):
        return None
    given = frame.assign(ds=pd.to_datetime(frame["ds"])).set_index("ds")
    out = {}
    for n in names:
        default = 0.0 if n == "promo" else float(given[n].iloc[0])
        out[n] = given[n].reindex(pd.DatetimeIndex(ds)).fillna(default).to_numpy(dtype="float64")
    return out
