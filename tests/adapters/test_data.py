"""Reading sales files: ids as written, dates as local wall-clock, bad values left to validation."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from factory.adapters.data import read_file, read_inputs, read_panel
from factory.core.contract import MISSING_ID, DataError, validate_panel
from factory.core.fleet import FleetSpec

AS_OF = pd.Timestamp("2026-11-22")


def fleet(**validation: object) -> FleetSpec:
    """One daily family over every product, needing 10 periods of history."""
    family = {
        "name": "f",
        "horizon": 2,
        "season_length": 2,
        "features": {"lags": [1], "rolling_means": [2], "calendar": []},
        "models": [{"kind": "ridge"}],
        "backtest": {"windows": 2},
        "validation": {"max_stale_periods": 1000, **validation},
        "products": {"all": True},
    }
    return FleetSpec.model_validate({"families": [family]})


def csv(path: Path, rows: list[tuple[str, str, str]], header: str = "unique_id,ds,y") -> str:
    path.write_text("\n".join([header, *(",".join(r) for r in rows)]) + "\n")
    return str(path)


def daily_rows(pid: str, n: int = 12, start: str = "2026-01-01") -> list[tuple[str, str, str]]:
    dates = pd.date_range(start, periods=n, freq="D")
    return [(pid, str(d.date()), str(i + 1)) for i, d in enumerate(dates)]


# --- ids ------------------------------------------------------------------------------------------

NA_LOOKING_IDS = ["null", "NA", "NaN", "None", "n/a", "nan", "NULL", "#N/A"]


def test_csv_ids_are_read_exactly_as_written(tmp_path):
    ids = [*NA_LOOKING_IDS, "", " a ", "a", "00123"]
    path = csv(tmp_path / "s.csv", [(pid, "2026-01-01", "NA") for pid in ids])

    frame = read_file(path)

    assert frame["unique_id"].tolist() == ids
    assert frame["y"].isna().all()  # other columns keep the usual missing-value markers


def test_csv_products_with_na_looking_ids_are_trained_not_lost(tmp_path):
    ids = ["null", "NA", "NaN", "None", "n/a", "#N/A"]  # no two equal but for case
    rows = [r for pid in [*ids, "", "  "] for r in daily_rows(pid)]
    path = csv(tmp_path / "s.csv", rows)

    _, report = validate_panel(read_file(path), fleet(), AS_OF)

    assert sorted(report.valid_ids) == sorted(ids)
    assert report.quarantined == {"": ["blank unique_id"], "  ": ["blank unique_id"]}


def test_parquet_ids_become_strings_and_a_null_id_stays_missing(tmp_path):
    frame = pd.DataFrame(
        {
            "unique_id": pd.array([7, 7, None, 8], dtype="Int64"),
            "ds": pd.to_datetime(["2026-01-01", "2026-01-02", "2026-01-01", "2026-01-01"]),
            "y": [1.0, 2.0, 3.0, 4.0],
        }
    )
    frame.to_parquet(tmp_path / "s.parquet")

    back = read_file(str(tmp_path / "s.parquet"))

    assert back["unique_id"].tolist()[:2] == ["7", "7"]
    assert back["unique_id"].isna().tolist() == [False, False, True, False]
    _, report = validate_panel(back, fleet(allow_gaps=True), AS_OF)
    assert MISSING_ID in report.quarantined


def test_an_empty_parquet_id_is_quarantined_as_blank(tmp_path):
    rows = [(pid, d, y) for pid in ("", "a") for pid, d, y in daily_rows(pid)]
    frame = pd.DataFrame(rows, columns=["unique_id", "ds", "y"]).astype({"y": float})
    frame["ds"] = pd.to_datetime(frame["ds"])
    frame.to_parquet(tmp_path / "s.parquet")

    clean, report = validate_panel(read_file(str(tmp_path / "s.parquet")), fleet(), AS_OF)

    assert report.quarantined == {"": ["blank unique_id"]}
    assert report.valid_ids == ["a"]
    assert (clean["unique_id"] != "").all()


# --- dates ----------------------------------------------------------------------------------------


def test_csv_dates_with_dst_offsets_read_as_their_calendar_dates(tmp_path):
    berlin = pd.date_range("2026-03-22", periods=14, freq="D", tz="Europe/Berlin")
    rows = [("a", t.isoformat(), "1") for t in berlin]  # +01:00, then +02:00 from March 29
    path = csv(tmp_path / "s.csv", rows)

    frame = read_file(path)

    assert frame["ds"].dt.tz is None
    assert frame["ds"].tolist() == list(pd.date_range("2026-03-22", periods=14, freq="D"))
    _, report = validate_panel(frame, fleet(), AS_OF)
    assert report.valid_ids == ["a"]  # no gap, no sub-daily time across the DST change


def test_tz_aware_parquet_dates_read_as_wall_clock(tmp_path):
    ds = pd.date_range("2026-10-20", periods=12, freq="D", tz="Europe/Berlin")
    pd.DataFrame({"unique_id": "a", "ds": ds, "y": 1.0}).to_parquet(tmp_path / "s.parquet")

    frame = read_file(str(tmp_path / "s.parquet"))

    assert frame["ds"].tolist() == list(pd.date_range("2026-10-20", periods=12, freq="D"))


def test_one_unparseable_date_quarantines_its_product_only(tmp_path):
    bad = daily_rows("bad")
    bad[4] = ("bad", "not-a-date", "5")
    path = csv(tmp_path / "s.csv", [*daily_rows("good"), *bad])

    clean, report = validate_panel(read_file(path), fleet(allow_gaps=True), AS_OF)

    assert report.quarantined == {"bad": ["unparseable ds (e.g. 'not-a-date')"]}
    assert report.valid_ids == ["good"]
    assert pd.api.types.is_datetime64_dtype(clean["ds"])


def test_a_ds_column_without_any_date_names_the_file_and_column(tmp_path):
    path = csv(tmp_path / "s.csv", [("a", "banana", "1"), ("a", "apple", "2")])

    with pytest.raises(DataError) as info:
        read_file(path)

    assert str(info.value) == f"{path}: column ds holds no dates (e.g. 'banana')"


# --- numbers --------------------------------------------------------------------------------------


def test_text_in_y_quarantines_its_product_with_the_value_and_date(tmp_path):
    bad = daily_rows("bad")
    bad[2] = ("bad", "2026-01-03", "twelve")
    path = csv(tmp_path / "s.csv", [*daily_rows("good"), *bad])

    _, report = validate_panel(read_file(path), fleet(), AS_OF)

    assert report.quarantined == {"bad": ["non-numeric y (e.g. 'twelve' on 2026-01-03)"]}
    assert report.valid_ids == ["good"]


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("inf", "non-finite y (e.g. inf on 2026-01-03)"),
        ("-inf", "non-finite y (e.g. -inf on 2026-01-03)"),
        ("1e300", "y too large (e.g. 1e+300 on 2026-01-03)"),
    ],
)
def test_infinite_or_huge_y_in_a_csv_is_quarantined(tmp_path, text, reason):
    bad = daily_rows("bad")
    bad[2] = ("bad", "2026-01-03", text)
    path = csv(tmp_path / "s.csv", [*daily_rows("good"), *bad])

    _, report = validate_panel(read_file(path), fleet(), AS_OF)

    assert report.quarantined == {"bad": [reason]}


def test_a_y_column_without_any_number_names_the_file_and_column(tmp_path):
    path = csv(tmp_path / "s.csv", [("a", "2026-01-01", "twelve"), ("a", "2026-01-02", "ten")])

    with pytest.raises(DataError) as info:
        read_file(path)

    assert str(info.value) == f"{path}: column y holds no numbers (e.g. 'twelve')"


# --- empty files ----------------------------------------------------------------------------------


def test_a_header_only_csv_names_the_file(tmp_path):
    path = csv(tmp_path / "s.csv", [], header="unique_id,ds,y,price,promo")

    with pytest.raises(DataError) as info:
        read_panel(str(tmp_path))

    assert str(info.value).startswith(f"{path}: no rows")


def test_an_empty_parquet_names_the_file(tmp_path):
    empty = pd.DataFrame({"unique_id": pd.Series([], dtype=str), "ds": [], "y": np.array([])})
    empty.to_parquet(tmp_path / "s.parquet")

    with pytest.raises(DataError, match=r"s\.parquet: no rows"):
        read_file(str(tmp_path / "s.parquet"))


def test_known_future_inputs_are_read_per_product_by_date(tmp_path):
    path = tmp_path / "inputs.csv"
    path.write_text(
        "unique_id,ds,promo,price\n"
        "b,2026-12-02,1,9.5\n"
        "a,2026-12-01,0,\n"  # an empty cell: not given, the model's assumption is used
        "b,2026-12-01,0,10\n"
    )
    inputs = read_inputs(str(path))
    assert sorted(inputs) == ["a", "b"]
    b = inputs["b"]
    assert list(b.columns) == ["ds", "promo", "price"]
    assert list(b["ds"]) == [pd.Timestamp("2026-12-01"), pd.Timestamp("2026-12-02")]
    assert b["promo"].tolist() == [0.0, 1.0] and b["price"].tolist() == [10.0, 9.5]
    assert np.isnan(inputs["a"]["price"].iloc[0])


@pytest.mark.parametrize(
    ("text", "needles"),
    [
        ("unique_id,promo\na,1\n", ["missing column(s) ds"]),
        ("unique_id,ds\na,2026-12-01\n", ["no input columns"]),
        ("unique_id,ds,promo\na,2026-12-01,1\nb,tomorrow,1\n", ["column ds", "'b'", "tomorrow"]),
        ("unique_id,ds,promo\na,2026-12-01,yes\n", ["column promo", "'a'", "'yes'", "a finite"]),
        ("unique_id,ds,price\na,2026-12-01,inf\n", ["column price", "'a'", "a finite number"]),
        ("unique_id,ds,promo\na,2026-12-01,1\na,2026-12-01,0\n", ["'a'", "twice", "2026-12-01"]),
    ],
)
def test_a_bad_inputs_file_names_the_file_column_and_product(tmp_path, text, needles):
    path = tmp_path / "inputs.csv"
    path.write_text(text)
    with pytest.raises(DataError) as caught:
        read_inputs(str(path))
    message = str(caught.value)
    assert message.startswith(str(path))
    for needle in needles:
        assert needle in message, message


def test_a_missing_inputs_file_is_named(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        read_inputs(str(tmp_path / "nope.parquet"))
