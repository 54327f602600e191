"""MLflow models-from-code entry point: one product's forecaster as a pyfunc (no pickles).

Logged with `code_paths=[forecaster.py]`, so it loads wherever numpy, pandas, lightgbm,
scikit-learn and skops are installed, with or without the factory itself.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
from mlflow.pyfunc import PythonModel

try:
    from factory.core.forecaster import FREQ_ALIASES, ModelConfig, Series, future_dates, loads
except ImportError:  # loaded from the model's own code/ folder
    from forecaster import FREQ_ALIASES, ModelConfig, Series, future_dates, loads  # type: ignore[no-redef]


class ProductForecaster(PythonModel):
    """Forecast one product. Input: a frame with `h` (periods ahead) or future `ds` rows."""

    def load_context(self, context: Any) -> None:
        """Read the manifest, the model bytes and the history tail from the artifacts."""
        root = Path(context.artifacts["model"])
        manifest = json.loads((root / "manifest.json").read_text())
        self.manifest = manifest
        self.config = ModelConfig.from_json(manifest["config"])
        self.model = loads(self.config, (root / "model.bin").read_bytes())
        tail = manifest["history_tail"]
        self.history = Series(
            np.array(tail["ds"], dtype="datetime64[ns]"),
            np.array(tail["y"], dtype="float64"),
            {k: np.array(v, dtype="float64") for k, v in tail.items() if k not in ("ds", "y")},
        )

    def predict(
        self, context: Any, model_input: pd.DataFrame, params: dict | None = None
    ) -> pd.DataFrame:
        """Forecast from the end of the training history; returns `unique_id, ds, yhat`."""
        frame = pd.DataFrame(model_input)
        last = self.history.ds[-1]
        if "ds" in frame.columns:
            wanted = pd.to_datetime(frame["ds"]).to_numpy("datetime64[ns]")
            freq = FREQ_ALIASES[self.config.frequency]
            steps = len(pd.date_range(pd.Timestamp(last), wanted.max(), freq=freq)) - 1
        else:
            given = int(frame["h"].iloc[0]) if "h" in frame.columns and len(frame) else 0
            steps = given or int(self.manifest["horizon"])  # h = 0: the family's horizon
            wanted = None
        ds = future_dates(last, steps, self.config.frequency)
        exog = (
            _future_exog(frame, ds, self.config.features.exogenous) if wanted is not None else None
        )
        yhat = self.model.forecast(self.history, ds, exog)
        out = pd.DataFrame({"unique_id": self.manifest["product_id"], "ds": ds, "yhat": yhat})
        return out[out["ds"].isin(wanted)].reset_index(drop=True) if wanted is not None else out


def _future_exog(frame: pd.DataFrame, ds: np.ndarray, names: tuple[str, ...]) -> dict | None:
    """Exogenous values for the requested dates; unrequested steps use the model's defaults."""
    if not names or not all(n in frame.columns for n in names):
        return None
    given = frame.assign(ds=pd.to_datetime(frame["ds"])).set_index("ds")
    out = {}
    for n in names:
        default = 0.0 if n == "promo" else float(given[n].iloc[0])
        out[n] = given[n].reindex(pd.DatetimeIndex(ds)).fillna(default).to_numpy(dtype="float64")
    return out


mlflow.models.set_model(ProductForecaster())
