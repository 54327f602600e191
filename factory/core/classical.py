"""Classical forecasting candidates (statsforecast's models) and their safe JSON persistence.

Shipped inside every registered MLflow model next to forecaster.py, so it imports only numpy
and statsforecast: never the rest of the factory. A fitted model is saved as its fitted state
(statsforecast's `model_` dictionary of numbers, arrays and text) in JSON, never pickled, and
forecasts again from that state without refitting.
"""

from __future__ import annotations

import functools
import json
import os
import warnings
from typing import Any

import numpy as np

CLASSICAL_KINDS = (
    "auto_ets",
    "theta",
    "auto_arima",
    "croston",
    "adida",
    "imapa",
    "tsb",
    "naive",
    "mean",
)
THETA_VARIANTS = {
    "auto": "AutoTheta",
    "standard": "Theta",
    "optimized": "OptimizedTheta",
    "dynamic": "DynamicTheta",
    "dynamic_optimized": "DynamicOptimizedTheta",
}
CROSTON_VARIANTS = {
    "classic": "CrostonClassic",
    "sba": "CrostonSBA",
    "optimized": "CrostonOptimized",
}
# Attributes besides `model_` that a fitted model's `predict` reads.
EXTRA_STATE = ("_y",)
ARRAY_DTYPES = ("float64", "float32", "int64", "int32", "bool")


def _models() -> Any:
    """statsforecast's models module. Its numba functions are cached on disk unless the user
    says otherwise (`NIXTLA_NUMBA_CACHE`), so each new process loads them instead of compiling
    them again (2.6 s -> 0.9 s)."""
    os.environ.setdefault("NIXTLA_NUMBA_CACHE", "1")
    import statsforecast.models

    return statsforecast.models


def make(kind: str, params: dict[str, Any], season_length: int) -> Any:
    """An unfitted statsforecast model for a classical kind and its fleet.yaml parameters."""
    sm = _models()

    p = dict(params)
    if kind == "auto_ets":
        return sm.AutoETS(
            season_length=season_length, model=p.get("model", "ZZZ"), damped=p.get("damped")
        )
    if kind == "theta":
        cls = getattr(sm, THETA_VARIANTS[p.get("variant", "auto")])
        return cls(
            season_length=season_length, decomposition_type=p.get("decomposition", "multiplicative")
        )
    if kind == "auto_arima":
        return sm.AutoARIMA(
            season_length=season_length,
            max_p=p.get("max_p", 5),
            max_q=p.get("max_q", 5),
            max_P=p.get("max_P", 2),
            max_Q=p.get("max_Q", 2),
            stepwise=p.get("stepwise", True),
            approximation=p.get("approximation", True),
            nmodels=p.get("nmodels", 94),
        )
    if kind == "croston":
        return getattr(sm, CROSTON_VARIANTS[p.get("variant", "sba")])()
    if kind == "adida":
        return sm.ADIDA()
    if kind == "imapa":
        return sm.IMAPA()
    if kind == "tsb":
        return sm.TSB(alpha_d=p.get("alpha_d", 0.1), alpha_p=p.get("alpha_p", 0.1))
    if kind == "naive":
        return sm.Naive()
    if kind == "mean":
        return sm.HistoricAverage()
    raise ValueError(f"unknown classical model kind {kind!r}")


def fit(kind: str, params: dict[str, Any], season_length: int, y: np.ndarray) -> Any:
    """Fit a classical kind on a series (oldest first)."""
    model = make(kind, params, season_length)
    with warnings.catch_warnings():  # ARIMA's "possible convergence problem", once per fit
        warnings.simplefilter("ignore", UserWarning)
        return model.fit(np.asarray(y, dtype="float64"))


def forecast(model: Any, horizon: int) -> np.ndarray:
    """The fitted model's mean forecast of the next `horizon` periods."""
    return np.asarray(model.predict(h=horizon)["mean"], dtype="float64")


def dumps(model: Any) -> bytes:
    """The fitted state as JSON (arrays tagged with their dtype and shape)."""
    state = {"model_": model.model_}
    state |= {name: getattr(model, name) for name in EXTRA_STATE if hasattr(model, name)}
    return json.dumps(_encode(state), separators=(",", ":")).encode()


def loads(kind: str, params: dict[str, Any], season_length: int, payload: bytes) -> Any:
    """Inverse of `dumps`: a model of the configured kind carrying the saved fitted state.
    Only JSON numbers, text, lists, mappings and numeric arrays are accepted."""
    model = make(kind, params, season_length)
    state = _decode(json.loads(payload))
    if not isinstance(state, dict) or not isinstance(state.get("model_"), dict):
        raise ValueError("classical model state must be a mapping with 'model_'")
    model.model_ = state["model_"]
    for name in EXTRA_STATE:
        if name in state:
            setattr(model, name, state[name])
    return model


def _encode(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        if value.dtype.name not in ARRAY_DTYPES:
            raise TypeError(f"cannot save an array of {value.dtype}")
        return {"__array__": value.tolist(), "dtype": value.dtype.name, "shape": value.shape}
    if isinstance(value, dict):
        return {str(k): _encode(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_encode(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if value is None or isinstance(value, bool | int | float | str):
        return value
    raise TypeError(f"cannot save a {type(value).__name__} in a classical model's state")


def _decode(value: Any) -> Any:
    if isinstance(value, dict):
        if "__array__" in value:
            dtype = value["dtype"]
            if dtype not in ARRAY_DTYPES:
                raise ValueError(f"refusing an array of dtype {dtype!r}")
            return np.array(value["__array__"], dtype=dtype).reshape(value["shape"])
        return {k: _decode(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_decode(v) for v in value]
    return value


@functools.cache
def warm_up(kinds: tuple[str, ...] = CLASSICAL_KINDS) -> None:
    """Compile these kinds' numba code once per process (a process's first fit otherwise pays
    0.1-10 s): a Ray worker calls it before its first shard."""
    rng = np.random.default_rng(0)
    y = 10 + np.sin(np.arange(30) * np.pi / 3) + rng.random(30)
    sparse = np.where(rng.random(30) < 0.4, y, 0.0)
    for kind in kinds:
        for series in (y, sparse):
            forecast(fit(kind, {}, 6, series), 3)
