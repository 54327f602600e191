"""Features, candidate models and recursive forecasting for one product's series.

This module is shipped inside every registered MLflow model (with classical.py and saved.py),
so it imports only numpy, pandas, lightgbm, scikit-learn and statsforecast: never the rest of
the factory.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd

try:
    from factory.core import classical
except ImportError:  # loaded from the model's own code/ folder
    import classical  # type: ignore[no-redef]

FREQ_ALIASES = {"D": "D", "W": "7D", "MS": "MS", "QS": "QS"}
POOLED = "pooled_lightgbm"  # the candidate kind trained across products
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
    def pooled(self) -> bool:
        """A pooled model, or an ensemble with one: trained across products, so it cannot be
        refitted on one product's series alone."""
        return self.kind == POOLED or any(m.pooled for m in self.members)

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
