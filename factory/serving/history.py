"""Online forecasts kept in the forecast history, buffered per replica and written in batches."""

from __future__ import annotations

import threading

import pandas as pd

from factory.adapters.forecasts import append_forecast_history
from factory.serving.resolver import VersionRef


class HistoryRecorder:
    """Collects what each version forecast online and appends it to the forecast history
    every flush (to its own file, `writer`: replicas never write the same file)."""

    def __init__(self, forecasts_url: str, writer: str) -> None:
        self.forecasts_url = forecasts_url
        self.writer = writer
        self._rows: dict[tuple[str, int, str], pd.DataFrame] = {}
        self._lock = threading.Lock()

    def record(self, frame: pd.DataFrame, ref: VersionRef, role: str) -> None:
        """Keep a version's forecast (the same forecast again replaces, not repeats, it)."""
        key = (ref.key, len(frame), str(frame["ds"].iloc[-1]) if len(frame) else "")
        with self._lock:
            if key not in self._rows:
                self._rows[key] = frame.assign(
                    model_name=ref.name, model_version=ref.version, role=role
                )

    def flush(self) -> str | None:
        """Append what was recorded since the last flush; the file written (None: nothing)."""
        with self._lock:
            frames, self._rows = list(self._rows.values()), {}
        if not frames:
            return None
        frame = pd.concat(frames, ignore_index=True)
        return append_forecast_history(frame, self.forecasts_url, writer=self.writer)
