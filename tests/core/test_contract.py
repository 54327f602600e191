"""The sales data contract: quarantine of injected defects, and reading/writing panels."""

from pathlib import Path

import pandas as pd
import pytest

from factory.adapters.data import read_file, read_panel, write_panel
from factory.core.contract import DataError, validate_panel
from factory.core.fleet import FleetSpec, load_fleet
from factory.core.synthetic import PanelSpec, generate_panel, product_ids
from tests.support.fleets import REPO

REPO_FLEET = REPO / "fleet.yaml"
AS_OF = pd.Timestamp("2026-11-22")

# each defect kind and a word its quarantine reason must contain
DEFECT_WORDS = {
    "negative": "negative y",
    "duplicate_dates": "duplicated",
    "too_short": "too short",
    "all_zero": "all-zero",
    "gap": "gaps",
    "null_y": "null y",
    "future_date": "future",
}
IDS = product_ids(30)
# one defect per product, spread over both of the repo's families (grocery/household and the rest)
DEFECTS = {IDS[3 * i + 1]: kind for i, kind in enumerate(DEFECT_WORDS)}


@pytest.fixture(scope="module")
def fleet_spec():
    return load_fleet(REPO_FLEET).spec


@pytest.fixture(scope="module")
def defective():
    return generate_panel(PanelSpec(n_products=30, periods=365, seed=11, defects=DEFECTS))


@pytest.fixture(scope="module")
def validated(defective, fleet_spec):
    return validate_panel(defective.frame, fleet_spec, AS_OF)


def test_generator_injected_distinct_products(defective):
    assert defective.defects == DEFECTS
    assert len(set(DEFECTS)) == len(DEFECT_WORDS)
    assert defective.discontinued == ()
    assert set(defective.frame["unique_id"]) == set(IDS)


def test_quarantine_is_exactly_the_injected_products(validated):
    _, report = validated

    assert set(report.quarantined) == set(DEFECTS)


@pytest.mark.parametrize(("pid", "kind"), DEFECTS.items(), ids=list(DEFECTS.values()))
def test_each_quarantine_reason_names_its_defect(validated, pid, kind):
    _, report = validated

    reasons = report.quarantined[pid]
    assert any(DEFECT_WORDS[kind] in r for r in reasons), reasons


def test_good_products_pass_and_keep_their_family(validated):
    _, report = validated
    good = sorted(set(IDS) - set(DEFECTS))

    assert sorted(report.valid_ids) == good
    assert report.unassigned == []
    # the repo's fleet sends grocery-*/household-* to fast-movers, everything else to long-tail
    assert all(p.startswith(("grocery-", "household-")) for p in report.assignment["fast-movers"])
    assert not any(p.startswith(("grocery-", "household-")) for p in report.assignment["long-tail"])
    assert report.quarantine_rate == pytest.approx(len(DEFECTS) / 30)
    assert report.n_products == 30


def test_clean_frame_is_exactly_the_good_rows(defective, validated):
    clean, _ = validated
    good = set(IDS) - set(DEFECTS)
    expected = defective.frame.loc[defective.frame["unique_id"].isin(good)]

    assert not clean["unique_id"].isin(list(DEFECTS)).any()
    assert set(clean["unique_id"]) == good
    pd.testing.assert_frame_equal(
        clean.reset_index(drop=True),
        expected.sort_values(["unique_id", "ds"]).reset_index(drop=True),
        check_dtype=False,
    )


def test_clean_panel_passes_untouched(fleet_spec):
    panel = generate_panel(PanelSpec(n_products=10, periods=365, seed=2))

    clean, report = validate_panel(panel.frame, fleet_spec, AS_OF)

    assert report.quarantined == {}
    assert len(clean) == len(panel.frame)
    assert report.panel_end == pd.Timestamp("2026-10-31")


def test_discontinued_products_are_quarantined_as_stale(fleet_spec):
    panel = generate_panel(PanelSpec(n_products=30, periods=365, seed=4, discontinued_fraction=0.3))
    assert panel.discontinued  # the test needs some

    _, report = validate_panel(panel.frame, fleet_spec, AS_OF)

    assert set(report.quarantined) == set(panel.discontinued)
    for pid in panel.discontinued:
        # they stop at least 60 days before the panel ends; the repo fleet allows 28
        assert any(r.startswith("stale: ") for r in report.quarantined[pid])


def test_missing_exogenous_column_is_a_data_error(defective, fleet_spec):
    frame = defective.frame.drop(columns=["promo"])

    with pytest.raises(DataError, match=r"family 'fast-movers' uses exogenous column\(s\) promo"):
        validate_panel(frame, fleet_spec, AS_OF)


def test_exogenous_column_of_a_later_family_is_checked_too(defective):
    spec = FleetSpec.model_validate(
        {
            "families": [
                {"name": "a", "models": [{"kind": "ridge"}], "products": {"match": ["toys-*"]}},
                {
                    "name": "b",
                    "features": {"exogenous": ["promo", "temperature"]},
                    "models": [{"kind": "ridge"}],
                    "products": {"all": True},
                },
            ]
        }
    )

    with pytest.raises(DataError, match=r"family 'b' uses exogenous column\(s\) temperature"):
        validate_panel(defective.frame, spec, AS_OF)


def test_row_order_and_index_do_not_change_the_verdict(fleet_spec):
    ids = product_ids(5)
    panel = generate_panel(
        PanelSpec(n_products=5, periods=365, seed=3, defects={ids[1]: "negative"})
    )
    reordered = panel.frame.iloc[::-1]  # same rows, index labels no longer positions

    _, report = validate_panel(reordered, fleet_spec, AS_OF)

    assert set(report.quarantined) == {ids[1]}


def small_frame():
    return pd.DataFrame(
        {
            "unique_id": ["a", "a", "b"],
            "ds": pd.to_datetime(["2026-01-01", "2026-01-02", "2026-01-01"]),
            "y": [1.0, 2.5, 0.0],
            "promo": [0.0, 1.0, 0.0],
        }
    )


def test_write_then_read_panel_round_trips(tmp_path):
    frame = small_frame()

    target = write_panel(frame, str(tmp_path / "panel"))

    assert target == f"{tmp_path}/panel/sales.parquet"
    assert Path(target).is_file()
    back = read_panel(str(tmp_path / "panel"))
    assert list(back.columns) == ["unique_id", "ds", "y", "promo"]
    assert back["unique_id"].tolist() == ["a", "a", "b"]
    assert back["ds"].tolist() == frame["ds"].tolist()
    assert back["y"].tolist() == [1.0, 2.5, 0.0]
    assert back["promo"].tolist() == [0.0, 1.0, 0.0]


def test_read_panel_concatenates_files_in_name_order(tmp_path):
    frame = small_frame()
    write_panel(frame.iloc[2:], str(tmp_path), name="2.parquet")
    write_panel(frame.iloc[:2], str(tmp_path), name="1.parquet")

    back = read_panel(str(tmp_path))

    assert back["unique_id"].tolist() == ["a", "a", "b"]
    assert back.index.tolist() == [0, 1, 2]


def test_read_file_missing_y_names_the_file(tmp_path):
    path = tmp_path / "sales.csv"
    path.write_text("unique_id,ds,qty\na,2026-01-01,1\n")

    with pytest.raises(DataError) as info:
        read_file(str(path))

    assert str(info.value).startswith(f"{path}: missing column(s) y")


def test_read_file_non_dates_in_ds_names_the_file(tmp_path):
    path = tmp_path / "sales.csv"
    path.write_text("unique_id,ds,y\na,2026-01-01,1\na,banana,2\n")

    with pytest.raises(DataError) as info:
        read_file(str(path))

    assert str(info.value).startswith(f"{path}: column ds holds values that are not dates")


def test_read_panel_on_a_missing_folder_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="no such data folder"):
        read_panel(str(tmp_path / "nothing-here"))
