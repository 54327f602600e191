"""MLflow models-from-code entry point: one product's forecaster as a pyfunc (no pickles).

Logged with `code_paths=[forecaster.py, classical.py, saved.py]`, so it loads wherever numpy,
pandas, lightgbm, scikit-learn, skops and statsforecast are installed, with or without the
factory itself.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
from mlflow.pyfunc import PythonModel

try:
    from factory.core.saved import ProductModel
except ImportError:  # loaded from the model's own code/ folder
    from saved import ProductModel  # type: ignore[no-redef]


class ProductForecaster(PythonModel):
    """Forecast one product. Input: a frame with `h` (periods ahead) or future `ds` rows."""

    def load_context(self, context: Any) -> None:
        """Read the manifest, the model bytes and the history tail from the artifacts."""
        self.model = ProductModel.from_folder(Path(context.artifacts["model"]))
        self.manifest = self.model.manifest

    def predict(
        self, context: Any, model_input: pd.DataFrame, params: dict | None = None
    ) -> pd.DataFrame:
        """Forecast from the end of the training history; returns `unique_id, ds, yhat`."""
        return self.model.predict(pd.DataFrame(model_input))


mlflow.models.set_model(ProductForecaster())
