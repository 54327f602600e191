"""State kept between runs: drift checks by product and the forecast history."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from factory.adapters.forecasts import append_forecast_history, read_forecast_history
from factory.adapters.state import read_drift, write_drift_state
from factory.core.drift import DriftOutcome

FORECAST = pd.DataFrame({"ds": pd.date_range("2026-04-01", periods=28), "yhat": [13.0] * 28})


def test_drift_state_is_upserted_by_product(tmp_path: Path) -> None:
    def outcome(pid: str, status: str) -> DriftOutcome:
        return DriftOutcome(
            product_id=pid, model_name="m", model_version="1", status=status, detail="d"
        )  # type: ignore[arg-type]

    write_drift_state(tmp_path, [outcome("a", "ok"), outcome("b", "performance")])
    state = write_drift_state(tmp_path, [outcome("b", "ok"), outcome("c", "input")])
    assert dict(zip(state["product_id"], state["drift_status"], strict=True)) == {
        "a": "ok",
        "b": "ok",
        "c": "input",
    }
    assert read_drift(tmp_path).equals(state)


def test_forecast_history_keeps_the_latest_row_per_version_and_date(tmp_path: Path) -> None:
    day1, day2 = pd.Timestamp("2026-05-01", tz="UTC"), pd.Timestamp("2026-05-02", tz="UTC")
    frame = FORECAST.assign(unique_id="p", model_name="m", model_version="1")
    append_forecast_history(frame, str(tmp_path), day1)
    append_forecast_history(frame.assign(yhat=14.0), str(tmp_path), day1)  # same day, re-run
    append_forecast_history(frame.assign(model_version="2", yhat=5.0), str(tmp_path), day2)
    kept = read_forecast_history(str(tmp_path))
    assert len(list((tmp_path / "history").iterdir())) == 2
    assert len(kept) == 56
    by_version = kept.groupby("model_version")["yhat"].unique().to_dict()
    assert {k: list(v) for k, v in by_version.items()} == {"1": [14.0], "2": [5.0]}
