"""The sales data contract: quarantine of injected defects, and reading/writing panels."""

import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from factory.adapters.data import read_file, read_panel, write_panel
from factory.core.contract import (
    MAX_ABS_VALUE,
    MISSING_ID,
    DataError,
    fleet_series,
    parse_dates,
    product_arrays,
    validate_panel,
    validate_rows,
)
from factory.core.fleet import FleetSpec, load_fleet
from factory.core.synthetic import PanelSpec, generate_panel, product_ids
from tests.support.fleets import REPO

REPO_FLEET = REPO / "fleet.yaml"
AS_OF = pd.Timestamp("2026-11-22")

# each defect kind and a word its quarantine reason must contain (a short history is not a
# defect: such a product is trained on the short-history path)
DEFECT_WORDS = {
    "negative": "negative y",
    "duplicate_dates": "duplicated",
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


def test_read_panel_on_a_missing_folder_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="no such data folder"):
        read_panel(str(tmp_path / "nothing-here"))


# --- bad values, ids and dates: per-product quarantines with their reason ---------------------


def tiny_fleet(frequency: str = "D", exogenous: tuple[str, ...] = (), **validation) -> FleetSpec:
    """One family over every product, needing 10 periods of history."""
    family = {
        "name": "f",
        "frequency": frequency,
        "horizon": 2,
        "season_length": 2,
        "features": {"lags": [1], "rolling_means": [2], "calendar": [], "exogenous": exogenous},
        "models": [{"kind": "ridge"}],
        "backtest": {"windows": 2},
        "validation": {"max_stale_periods": 1000, **validation},
        "products": {"all": True},
    }
    return FleetSpec.model_validate({"families": [family]})


def product(pid: str, dates, **columns) -> pd.DataFrame:
    """One product's rows: y = 1, 2, 3, ... unless given; extra columns as given."""
    dates = pd.DatetimeIndex(dates) if not isinstance(dates, pd.Series) else dates
    y = columns.pop("y", np.arange(1.0, len(dates) + 1))
    return pd.DataFrame({"unique_id": pid, "ds": dates, "y": y, **columns})


def days(n: int = 20, start: str = "2026-01-01"):
    return pd.date_range(start, periods=n, freq="D")


def with_value(column: str, value, at: int = 5, n: int = 20) -> np.ndarray:
    values = np.arange(1.0, n + 1) if column == "y" else np.ones(n)
    values = values.astype(object) if isinstance(value, str) else values
    values[at] = value
    return values


def panel(*products: pd.DataFrame) -> pd.DataFrame:
    return pd.concat(products, ignore_index=True)


@pytest.mark.parametrize(
    ("column", "value", "reason"),
    [
        ("y", np.inf, "non-finite y (e.g. inf on 2026-01-06)"),
        ("y", -np.inf, "non-finite y (e.g. -inf on 2026-01-06)"),
        ("price", np.inf, "non-finite price (e.g. inf on 2026-01-06)"),
        ("y", 1e300, "y too large (e.g. 1e+300 on 2026-01-06)"),
        ("y", MAX_ABS_VALUE * 10, "y too large (e.g. 1e+16 on 2026-01-06)"),
        ("price", 2e15, "price too large (e.g. 2000000000000000.0 on 2026-01-06)"),
        ("temperature", np.inf, "non-finite temperature (e.g. inf on 2026-01-06)"),
        ("temperature", -1e300, "temperature too large (e.g. -1e+300 on 2026-01-06)"),
        ("y", "twelve", "non-numeric y (e.g. 'twelve' on 2026-01-06)"),
        ("price", "cheap", "non-numeric price (e.g. 'cheap' on 2026-01-06)"),
        ("temperature", "warm", "non-numeric temperature (e.g. 'warm' on 2026-01-06)"),
    ],
)
def test_a_bad_value_quarantines_only_its_product(column, value, reason):
    columns = {"price": np.ones(20), "temperature": np.zeros(20)}
    bad = {**columns, column: with_value(column, value)}
    frame = panel(product("good", days(), **columns), product("bad", days(), **bad))
    if column != "y" and isinstance(value, str):  # mixed text and numbers, as a CSV reads it
        frame[column] = frame[column].astype(object)

    clean, report = validate_panel(frame, tiny_fleet(exogenous=("price", "temperature")))

    assert report.quarantined == {"bad": [reason]}
    assert report.valid_ids == ["good"]
    assert clean["unique_id"].unique().tolist() == ["good"]
    assert np.isfinite(clean[["y", "price", "temperature"]].to_numpy(dtype=float)).all()


def test_minus_infinity_is_non_finite_not_negative():
    y = with_value("y", -np.inf, at=3)
    y[7] = -np.inf

    _, report = validate_panel(product("a", days(), y=y), tiny_fleet())

    assert report.quarantined == {"a": ["non-finite y (e.g. -inf on 2026-01-04)"]}


def test_values_up_to_the_bound_pass():
    y = with_value("y", MAX_ABS_VALUE)
    price = with_value("price", -0.0)

    _, report = validate_panel(product("a", days(), y=y, price=price), tiny_fleet())

    assert report.quarantined == {}


def test_text_in_an_unused_column_is_not_a_defect():
    frame = product("a", days(), note=["n/a"] * 20)

    _, report = validate_panel(frame, tiny_fleet())

    assert report.valid_ids == ["a"]


def test_unparseable_ds_quarantines_only_its_product():
    bad = product("bad", days()).astype({"ds": object})
    bad.loc[3, "ds"] = "not-a-date"
    frame = panel(product("good", days()).astype({"ds": object}), bad)
    frame["ds"] = frame["ds"].astype(str).where(frame["ds"] != "not-a-date", "not-a-date")

    clean, report = validate_panel(frame, tiny_fleet())

    assert report.quarantined == {"bad": ["unparseable ds (e.g. 'not-a-date')"]}
    assert report.valid_ids == ["good"]
    assert clean["ds"].tolist() == list(days())


def test_dates_with_utc_offsets_keep_their_wall_clock_date():
    berlin = pd.Series(pd.date_range("2026-03-20", periods=20, freq="D", tz="Europe/Berlin"))
    as_text = berlin.map(lambda t: t.isoformat())  # +01:00 before March 29, +02:00 after
    assert as_text.str[-6:].nunique() == 2

    for ds in (berlin, as_text):
        clean, report = validate_panel(product("a", ds), tiny_fleet())

        assert report.quarantined == {}, ds.dtype
        assert clean["ds"].tolist() == list(days(20, "2026-03-20"))


def test_parse_dates_drops_offsets_and_marks_what_does_not_parse():
    values = pd.Series(["2026-03-28T00:00:00+01:00", "2026-03-30T00:00:00+02:00", "soon", None])

    parsed = parse_dates(values)

    assert parsed[:2].tolist() == [pd.Timestamp("2026-03-28"), pd.Timestamp("2026-03-30")]
    assert parsed[2:].isna().all()
    assert parsed.dt.tz is None


@pytest.mark.parametrize("blank", ["", " ", "\t"])
def test_a_blank_id_is_quarantined_under_its_exact_id(blank):
    frame = panel(product(blank, days()), product("a", days()), product(" a", days()))

    clean, report = validate_panel(frame, tiny_fleet())

    assert report.quarantined == {blank: ["blank unique_id"]}
    assert report.valid_ids == [" a", "a"]  # whitespace around an id is kept: two products
    assert set(clean["unique_id"]) == {"a", " a"}
    assert set(fleet_series(clean, tiny_fleet(), report.assignment)) == {"a", " a"}


def test_a_null_id_stays_under_the_missing_id_key():
    frame = panel(product("a", days()), product("b", days()), product("?", days(1)))
    frame["unique_id"] = frame["unique_id"].astype("string").replace("?", pd.NA)

    _, report = validate_panel(frame, tiny_fleet())

    assert list(report.quarantined) == [MISSING_ID]
    assert report.quarantined[MISSING_ID][0].startswith("null unique_id")


def test_ids_whose_registry_names_collide_are_both_quarantined():
    frame = panel(product("SKU-1", days()), product("sku-1", days()), product("sku-2", days()))

    _, report = validate_panel(frame, tiny_fleet())

    assert report.quarantined == {
        "SKU-1": ["registry name collides with product 'sku-1'"],
        "sku-1": ["registry name collides with product 'SKU-1'"],
    }
    assert report.valid_ids == ["sku-2"]


def test_an_id_written_as_another_ids_hashed_name_quarantines_both():
    from factory.core.naming import product_slug

    lookalike = product_slug("a/b")  # "a_b-<hash>": a safe id, so it is its own name
    frame = panel(product("a/b", days()), product(lookalike, days()), product("c", days()))

    _, report = validate_panel(frame, tiny_fleet())

    assert report.quarantined == {
        "a/b": [f"registry name collides with product {lookalike!r}"],
        lookalike: ["registry name collides with product 'a/b'"],
    }
    assert report.valid_ids == ["c"]


@pytest.mark.parametrize(
    ("frequency", "dates", "reason"),
    [
        ("W", days(20), "frequency: dates are 1 day apart, family 'f' expects W"),
        ("D", pd.date_range("2025-01-05", periods=20, freq="W"), "dates are 7 days apart"),
        ("D", pd.date_range("2025-01-01", periods=20, freq="2D"), "dates are 2 days apart"),
        ("MS", days(20), "frequency: dates are 1 day apart, family 'f' expects MS"),
        ("MS", pd.date_range("2024-01-01", periods=20, freq="MS") + pd.Timedelta(days=14), None),
        ("W", pd.date_range("2024-01-01", periods=20, freq="MS"), "dates are 29 days apart"),
        ("D", pd.date_range("2026-01-01", periods=20, freq="h"), "frequency: sub-daily timestamps"),
        ("W", pd.date_range("2025-01-05 12:00", periods=20, freq="W"), "sub-daily timestamps"),
    ],
)
def test_dates_spaced_unlike_the_family_frequency_are_quarantined(frequency, dates, reason):
    frame = panel(product("bad", dates))

    _, report = validate_panel(frame, tiny_fleet(frequency, allow_gaps=True))

    why = report.quarantined["bad"][0]
    assert why.startswith("frequency: ")
    if reason is None:  # monthly dates on the 15th
        assert (
            why
            == "frequency: dates not on the 1st of a month (e.g. 2024-01-15), family 'f' expects MS"
        )
    else:
        assert reason in why


@pytest.mark.parametrize(
    ("frequency", "dates"),
    [
        ("D", days(20)),
        ("D", days(20).delete([4, 5, 9])),  # gaps, allowed here
        ("W", pd.date_range("2025-01-05", periods=20, freq="W").delete([3, 7])),
        ("MS", pd.date_range("2024-01-01", periods=20, freq="MS").delete([2])),
        ("D", days(1)),  # a single date has no spacing
    ],
)
def test_dates_spaced_like_the_family_frequency_pass_the_frequency_check(frequency, dates):
    _, report = validate_panel(product("a", dates), tiny_fleet(frequency, allow_gaps=True))

    assert not any(r.startswith("frequency") for r in report.quarantined.get("a", []))


def test_every_product_quarantined_leaves_an_empty_clean_panel_and_no_series():
    frame = panel(product("a", days(5)), product("b", days(5)))
    fleet = tiny_fleet(min_history=10)  # an explicit minimum quarantines shorter products

    clean, report = validate_panel(frame, fleet)

    assert set(report.quarantined) == {"a", "b"}
    assert report.quarantined["a"] == ["too short: 5 periods, family 'f' needs 10"]
    assert clean.empty
    assert fleet_series(clean, fleet, report.assignment) == {}
    assert product_arrays(clean, []) == {}


def test_a_short_history_is_not_a_defect_without_an_explicit_minimum():
    frame = panel(product("new", days(3)), product("old", days(20)))

    clean, report = validate_panel(frame, tiny_fleet())

    assert report.quarantined == {}
    assert sorted(report.valid_ids) == ["new", "old"]
    assert set(fleet_series(clean, tiny_fleet(), report.assignment)) == {"new", "old"}


def test_every_row_bad_leaves_an_empty_clean_panel():
    frame = product("a", days(), y=with_value("y", -1.0, at=0) * -1)

    clean, report = validate_panel(frame, tiny_fleet())

    assert clean.empty
    assert report.quarantined["a"][0].startswith("negative y")
    assert report.panel_end is None


def test_row_checks_without_a_fleet_cover_y_price_and_promo():
    frame = panel(
        product("a", days(), y=with_value("y", np.inf)),
        product("b", days(), promo=with_value("promo", "yes")),
        product("c", days()),
    )

    clean, reasons = validate_rows(frame, AS_OF)

    assert reasons == {
        "a": ["non-finite y (e.g. inf on 2026-01-06)"],
        "b": ["non-numeric promo (e.g. 'yes' on 2026-01-06)"],
    }
    assert set(clean["unique_id"]) == {"c"}


@pytest.mark.slow
def test_validation_of_10000_products_stays_fast(fleet_spec):
    frame = generate_panel(PanelSpec(n_products=10_000, periods=500)).frame

    started = time.perf_counter()
    _, report = validate_panel(frame, fleet_spec, AS_OF)

    assert len(report.valid_ids) > 9_000
    assert time.perf_counter() - started < 10


def test_an_all_zero_history_is_quarantined_unless_the_family_allows_it():
    """All-zero demand is wrong data by default (a broken feed looks like that); a family whose
    products can truly sell nothing for a whole history says so, and they are trained."""
    frame = panel(product("zero", days(), y=np.zeros(20)), product("ok", days()))

    _, strict = validate_panel(frame, tiny_fleet())
    clean, allowed = validate_panel(frame, tiny_fleet(allow_all_zero=True))

    assert list(strict.quarantined) == ["zero"]
    assert "allow_all_zero" in strict.quarantined["zero"][0]
    assert not allowed.quarantined
    assert set(clean["unique_id"]) == {"zero", "ok"}
