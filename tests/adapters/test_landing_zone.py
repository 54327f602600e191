"""Landing zone: the ledger and re-delivery, quarantine, atomic history, fingerprints."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pandas as pd
import pytest

from factory.adapters.data import read_panel, write_panel
from factory.adapters.landing_zone import QUARANTINE_DIR, confirm, ingest, list_landing
from factory.adapters.ledger import LEDGER_FILE, Ledger
from factory.core.contract import product_arrays, validate_panel
from factory.core.fingerprints import series_fingerprint
from factory.core.fleet import load_fleet
from factory.core.forecaster import Series
from factory.core.landing import LandingReport
from factory.core.synthetic import PanelSpec, generate_panel
from tests.support.fleets import REPO, as_of

FLEET = load_fleet(REPO / "fleet.yaml").spec


def rows(*items: tuple[str, str, float]) -> pd.DataFrame:
    """A small panel from (product, date, y) triples."""
    return pd.DataFrame(
        {
            "unique_id": pd.array([i[0] for i in items], dtype="string"),
            "ds": pd.to_datetime([i[1] for i in items]),
            "y": [float(i[2]) for i in items],
        }
    )


# --- ingest: the ledger, re-delivery, quarantine, atomic history ----------------------------------


@pytest.fixture
def zone(tmp_path: Path):
    """A history of 6 products up to 2026-11-01, an empty landing folder, the rest held back."""
    full = generate_panel(PanelSpec(n_products=6, seed=3, end="2026-11-10")).frame
    write_panel(full[full["ds"] <= "2026-11-01"], str(tmp_path / "data"))
    (tmp_path / "landing").mkdir()
    return tmp_path, full


def drop(folder: Path, name: str, frame: pd.DataFrame) -> Path:
    """Deliver a file the way producers should: write elsewhere, then rename into place."""
    tmp = folder / f".{name}.part"
    frame.to_csv(tmp, index=False) if name.endswith(".csv") else frame.to_parquet(tmp)
    tmp.rename(folder / name)
    past = time.time() - 5  # older than the settle time
    os.utime(folder / name, (past, past))
    return folder / name


def run(root: Path) -> LandingReport:
    return ingest(
        str(root / "landing"), str(root / "data"), root / "state", FLEET, as_of(), settle_seconds=1
    )


def new_days(full: pd.DataFrame, ids: list[str], end: str = "2026-11-04") -> pd.DataFrame:
    keep = full["unique_id"].isin(ids) & (full["ds"] > "2026-11-01") & (full["ds"] <= end)
    return full.loc[keep]


def test_new_file_is_merged_once_and_redelivery_is_a_no_op(zone) -> None:
    root, full = zone
    ids = sorted(full["unique_id"].unique())[:3]
    before = read_panel(str(root / "data"))
    drop(root / "landing", "drop1.csv", new_days(full, ids))

    first = run(root)
    assert first.product_ids == ids
    assert first.rows_added == 9 and first.rows_changed == 0
    assert set(first.fingerprints) == set(ids)
    history = read_panel(str(root / "data"))
    assert len(history) == len(before) + 9
    assert not history.duplicated(["unique_id", "ds"]).any()
    assert list((root / "data").iterdir()) == [root / "data" / "sales.parquet"]
    confirm(root / "state", first.pending)

    assert run(root).files == []  # nothing new: the file is not even read again
    shutil.copy(root / "landing" / "drop1.csv", root / "landing" / "again.csv")
    drop(root / "landing", "drop1.csv", new_days(full, ids))  # same bytes, rewritten
    again = run(root)
    assert {f.status for f in again.files} == {"duplicate"}
    assert again.product_ids == [] and again.rows_added == 0
    assert len(read_panel(str(root / "data"))) == len(before) + 9


def test_changed_file_with_the_same_name_is_processed(zone) -> None:
    root, full = zone
    ids = sorted(full["unique_id"].unique())[:3]
    drop(root / "landing", "drop.parquet", new_days(full, ids))
    confirm(root / "state", run(root).pending)
    corrected = new_days(full, ids).copy()
    corrected.loc[corrected["unique_id"] == ids[1], "y"] += 1  # a correction for one product
    drop(root / "landing", "drop.parquet", corrected)

    report = run(root)
    assert report.product_ids == [ids[1]]
    assert report.rows_changed == 3 and report.rows_added == 0
    history = read_panel(str(root / "data")).set_index(["unique_id", "ds"])["y"]
    fixed = corrected.set_index(["unique_id", "ds"])["y"]
    assert (history.loc[fixed.index] == fixed).all()


def test_bad_products_are_quarantined_not_dropped(zone) -> None:
    root, full = zone
    ids = sorted(full["unique_id"].unique())[:3]
    batch = new_days(full, ids).copy()
    batch.loc[batch.index[batch["unique_id"] == ids[0]][0], "y"] = -2.0
    drop(root / "landing", "bad.parquet", batch)

    report = run(root)
    assert report.product_ids == ids[1:]
    assert list(report.quarantined) == [ids[0]]
    assert "negative y" in report.quarantined[ids[0]][0]
    kept = pd.read_parquet(next((root / "state" / QUARANTINE_DIR).iterdir()))
    assert set(kept["unique_id"]) == {ids[0]} and len(kept) == 3
    assert kept["reason"].str.contains("negative y").all()
    history = read_panel(str(root / "data"))
    assert history.loc[history["unique_id"] == ids[0], "ds"].max() == pd.Timestamp("2026-11-01")


def test_unmergeable_file_is_rejected_and_the_history_untouched(zone) -> None:
    root, full = zone
    before = (root / "data" / "sales.parquet").read_bytes()
    drop(root / "landing", "nopromo.csv", new_days(full, ["grocery-00000"]).drop(columns="promo"))
    report = run(root)
    assert [f.status for f in report.files] == ["rejected"]
    assert "lacks column(s) the history has: promo" in report.files[0].reason
    assert report.product_ids == []
    assert (root / "data" / "sales.parquet").read_bytes() == before


def test_merged_but_unannounced_products_are_reported_again(zone) -> None:
    root, full = zone
    ids = sorted(full["unique_id"].unique())[:2]
    drop(root / "landing", "d.parquet", new_days(full, ids))
    first = run(root)  # the event "never went out": no confirm
    second = run(root)
    assert second.files == [] and second.rows_added == 0
    assert second.product_ids == first.product_ids == ids
    assert second.fingerprints == first.fingerprints
    confirm(root / "state", second.pending)
    assert run(root).product_ids == []
    assert not Ledger(root / "state" / LEDGER_FILE).pending()


def test_a_history_in_several_files_is_consolidated_without_losing_rows(zone) -> None:
    root, full = zone
    history = read_panel(str(root / "data"))
    (root / "data" / "sales.parquet").unlink()
    first = history["unique_id"] == history["unique_id"].iloc[0]
    history.loc[first].to_parquet(root / "data" / "one.parquet")
    history.loc[~first].to_csv(root / "data" / "two.csv", index=False)
    drop(root / "landing", "d.parquet", new_days(full, ["toys-00003"]))

    run(root)
    merged = read_panel(str(root / "data"))
    assert len(merged) == len(history) + 3
    assert not merged.duplicated(["unique_id", "ds"]).any()
    assert [p.name for p in (root / "data").iterdir()] == ["sales.parquet"]


def test_listing_skips_hidden_partial_and_underscore_files(tmp_path: Path) -> None:
    for name in ("a.csv", ".b.csv", "_c.parquet", "notes.txt", "sub/d.parquet", "_q/e.csv"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("x")
    assert [Path(f.url).name for f in list_landing(str(tmp_path))] == ["a.csv", "d.parquet"]
    assert list_landing(str(tmp_path / "missing")) == []


def test_landing_fingerprints_are_the_ones_training_records(zone) -> None:
    root, full = zone
    ids = sorted(full["unique_id"].unique())
    drop(root / "landing", "d.parquet", new_days(full, ids))
    report = run(root)

    clean, validation = validate_panel(read_panel(str(root / "data")), FLEET, as_of())
    exog = sorted({c for f in FLEET.families for c in f.features.exogenous})
    arrays = product_arrays(clean, exog)
    for family, members in validation.assignment.items():
        columns = FLEET.family(family).features.exogenous
        for pid in members:
            a = arrays[pid]
            series = Series(a["ds"], a["y"], {c: a[c] for c in columns})
            assert report.fingerprints[pid] == series_fingerprint(series), pid


def test_landing_zone_and_history_on_an_fsspec_url(tmp_path: Path) -> None:
    import fsspec

    base = f"memory://{tmp_path.name}"  # any fsspec filesystem; in-memory needs no server
    full = generate_panel(PanelSpec(n_products=4, seed=3, end="2026-11-10")).frame
    write_panel(full[full["ds"] <= "2026-11-01"], f"{base}/data")
    with fsspec.open(f"{base}/landing/d.parquet", "wb") as fh:
        new_days(full, ["toys-00003"]).to_parquet(fh)

    def scan() -> LandingReport:
        landing, data = f"{base}/landing", f"{base}/data"
        return ingest(landing, data, tmp_path / "state", FLEET, as_of(), settle_seconds=0)

    report = scan()
    assert report.product_ids == ["toys-00003"] and report.rows_added == 3
    assert report.history_url is not None and report.history_url.startswith("memory://")
    assert len(read_panel(f"{base}/data")) == len(full[full["ds"] <= "2026-11-01"]) + 3
    confirm(tmp_path / "state", report.pending)
    assert scan().files == []
