"""Fleets and the fixed 'today' the tests use beside the repository's fleet.yaml."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parents[2]
AS_OF = "2026-11-22"


REAL_FLEET_YAML = """\
# Monthly fleet for the real datasets (factory.adapters.tsdata.load_real): aus_retail and pbs.
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


def write_fleet(path: Path, **overrides: object) -> Path:
    """The repo's fleet.yaml with top-level overrides (e.g. failure_budget). Promotion is
    `auto` unless overridden: most tests look at the production copies training makes."""
    import yaml

    data = yaml.safe_load((REPO / "fleet.yaml").read_text())
    data["promotion"] = "auto"
    data.update(overrides)
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def as_of() -> pd.Timestamp:
    """The fixed 'today' of the tests."""
    return pd.Timestamp(AS_OF)
