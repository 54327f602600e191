"""Online forecasts kept in the forecast history, buffered per replica and written in batches."""

from __future__ import annotations

import threading

import numpy as np
import pandas as pd

from factory.adapters.forecasts import append_forecast_history
from factory.serving.resolver import VersionRef

Recorded = tuple[str, np.ndarray, np.ndarray, VersionRef, str]  # product, ds, yhat, version, role


class HistoryRecorder:
    """Collects what each version forecast online and appends it to the forecast history
    every flush (to its own file, `writer`: replicas never write the same file)."""

    def __init__(self, forecasts_url: str, writer: str) -> None:
        self.forecasts_url = forecasts_url
        self.writer = writer
        self._rows: dict[tuple[str, int, str], Recorded] = {}
        self._lock = threading.Lock()

    def record(
        self, product_id: str, ds: np.ndarray, yhat: np.ndarray, ref: VersionRef, role: str
    ) -> None:
        """Keep a version's forecast (the same forecast again replaces, not repeats, it):
        cheap, on the request's path; the frame is built when flushed."""
        key = (ref.key, len(ds), str(ds[-1]) if len(ds) else "")
        with self._lock:
            self._rows.setdefault(key, (product_id, ds, yhat, ref, role))

    def flush(self) -> str | None:
        """Append what was recorded since the last flush; the file written (None: nothing)."""
        with self._lock:
            frames, self._rows = list(self._rows.values()), {}
        if not frames:
            return None
        frame = pd.concat(
            [
                pd.DataFrame(
                    {
                        "unique_id": pid,
                        "ds": ds,
                        "yhat": yhat,
                        "model_name": ref.name,
                        "model_version": ref.version,
                        "role": role,
                    }
                )
                for pid, ds, yhat, ref, role in frames
            ],
            ignore_index=True,
        )
        return append_forecast_history(frame, self.forecasts_url, writer=self.writer)
