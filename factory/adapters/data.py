"""Reading and writing sales panels on a local folder or any fsspec URL."""

from __future__ import annotations

import io

import fsspec
import numpy as np
import pandas as pd

from factory.core.contract import MAX_ABS_VALUE, DataError, parse_dates

KEY_COLUMNS = ("unique_id", "ds", "y")
DATA_SUFFIXES = (".parquet", ".csv")
# pandas' default missing-value markers (read_csv docs): used for every column but unique_id
CSV_NA_VALUES = (
    *("", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND", "1.#QNAN"),
    *("<NA>", "N/A", "NA", "NULL", "NaN", "None", "n/a", "nan", "null"),
)


class NoDataFiles(DataError):
    """A data folder that does not exist yet or holds no data files."""


class InputsError(DataError):
    """A mistake in a file of known future inputs, naming the file, the column and the product."""

    hint = "check the inputs file named above (columns unique_id, ds and exogenous inputs)"


def list_data_files(url: str) -> list[str]:
    """Parquet and CSV files at a folder URL (or the URL itself when it names one file)."""
    fs, root = fsspec.core.url_to_fs(url)
    if fs.isfile(root):
        return [url]
    if not fs.exists(root):
        raise NoDataFiles(
            f"{url}: no such data folder (run `factory demo-data` or set FACTORY_DATA_URL)"
        )
    files = sorted(p for p in fs.find(root) if p.endswith(DATA_SUFFIXES))
    if not files:
        raise NoDataFiles(f"{url}: no .parquet or .csv files found")
    return [fs.unstrip_protocol(p) if "://" in url else p for p in files]


def read_file(url: str) -> pd.DataFrame:
    """One data file in the `unique_id, ds, y [, exogenous...]` contract.

    Ids are strings exactly as written: in a CSV, `null`, `NA` or an empty field is an id too
    (other columns keep pandas' usual missing-value markers); numeric parquet ids become their
    string form. Timestamps with a UTC offset or time zone are read as the local wall-clock time
    they state (the offset is dropped), so daily, weekly and monthly data keep their calendar
    dates across DST changes; every date returned is tz-naive. A `ds` or number that does not
    parse is left as written, for validation to quarantine its product with the value; a file
    with no rows, or whose ds or y column holds nothing that parses, is a DataError.
    """
    frame = _read_table(url)
    missing = [c for c in KEY_COLUMNS if c not in frame.columns]
    if missing:
        raise DataError(f"{url}: missing column(s) {', '.join(missing)}; expected unique_id, ds, y")
    if not len(frame):
        raise DataError(f"{url}: no rows (only the column names)")
    frame["unique_id"] = frame["unique_id"].astype("string")
    dates = parse_dates(frame["ds"])
    _refuse_unparseable(url, frame, dates)
    if dates.notna().sum() == frame["ds"].notna().sum():  # else validation names the bad ones
        frame["ds"] = dates
    return frame


def _read_table(url: str) -> pd.DataFrame:
    """A parquet or CSV file as written (a DataError naming it when it cannot be read)."""
    try:
        with fsspec.open(url, "rb") as fh:
            raw = fh.read()
        return pd.read_parquet(io.BytesIO(raw)) if url.endswith(".parquet") else _read_csv(raw)
    except FileNotFoundError:
        raise DataError(f"{url}: no such file") from None
    except Exception as exc:
        raise DataError(f"{url}: cannot be read ({exc})") from None


def read_inputs(url: str) -> dict[str, pd.DataFrame]:
    """Known future inputs (a promotion calendar, planned prices): a parquet or CSV file with
    `unique_id`, `ds` and one column per exogenous input; product -> its rows (`ds` and the
    inputs), by date. An empty cell is not given (the model's assumption is used there); a
    cell that is not a date or a finite number, or a product given twice for a date, is an
    InputsError naming the file, the column and the product."""
    try:
        frame = _read_table(url)
    except DataError as exc:
        raise InputsError(str(exc)) from None
    missing = [c for c in ("unique_id", "ds") if c not in frame.columns]
    if missing:
        raise InputsError(f"{url}: missing column(s) {', '.join(missing)}; expected unique_id, ds")
    inputs = [c for c in frame.columns if c not in ("unique_id", "ds")]
    if not inputs:
        raise InputsError(f"{url}: no input columns (e.g. promo, price) besides unique_id and ds")
    frame["unique_id"] = frame["unique_id"].astype("string")
    dates = parse_dates(frame["ds"])
    _refuse_bad_cells(url, frame, "ds", dates, "a date")
    frame["ds"] = dates
    for column in inputs:
        numbers = pd.to_numeric(frame[column], errors="coerce").astype("float64")
        finite = numbers.where(np.isfinite(numbers) & (numbers.abs() <= MAX_ABS_VALUE))
        _refuse_bad_cells(url, frame, column, finite, "a finite number")
        frame[column] = numbers
    twice = frame.duplicated(["unique_id", "ds"])
    if twice.any():
        row = frame.loc[twice].iloc[0]
        raise InputsError(
            f"{url}: product {row['unique_id']!r} is given twice for {row['ds'].date()}"
            f" ({int(twice.sum())} duplicated row(s))"
        )
    frame = frame.sort_values(["unique_id", "ds"], kind="stable")
    return {
        str(pid): rows.drop(columns="unique_id").reset_index(drop=True)
        for pid, rows in frame.groupby("unique_id", sort=True)
    }


def _refuse_bad_cells(
    url: str, frame: pd.DataFrame, column: str, parsed: pd.Series, what: str
) -> None:
    """An InputsError naming the first cell of `column` that holds something other than
    `what` (a missing date counts)."""
    bad = parsed.isna() & frame[column].notna()
    if column == "ds":
        bad |= frame[column].isna()
    if bad.any():
        row = frame.loc[bad].iloc[0]
        raise InputsError(
            f"{url}: column {column} of product {row['unique_id']!r} holds {row[column]!r},"
            f" not {what} ({int(bad.sum())} such row(s))"
        )


def _read_csv(raw: bytes) -> pd.DataFrame:
    """A CSV with unique_id read as written (no missing-value markers), other columns as usual."""
    columns = pd.read_csv(io.BytesIO(raw), nrows=0).columns
    na_values = {c: list(CSV_NA_VALUES) for c in columns if c != "unique_id"}
    return pd.read_csv(
        io.BytesIO(raw), dtype={"unique_id": str}, keep_default_na=False, na_values=na_values
    )


def _refuse_unparseable(url: str, frame: pd.DataFrame, dates: pd.Series) -> None:
    """A DataError when no ds value is a date or no y value is a number."""
    ds = frame["ds"].dropna()
    if len(ds) and dates.isna().all():
        raise DataError(f"{url}: column ds holds no dates (e.g. {ds.iloc[0]!r})")
    y = frame["y"].dropna()
    if len(y) and pd.to_numeric(y, errors="coerce").isna().all():
        raise DataError(f"{url}: column y holds no numbers (e.g. {y.iloc[0]!r})")


def read_panel(url: str) -> pd.DataFrame:
    """All files under a folder URL, concatenated in file order."""
    frames = [read_file(f) for f in list_data_files(url)]
    return pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]


def parsed_rows(frame: pd.DataFrame) -> pd.DataFrame:
    """The rows whose ds is a date and y a number, typed (for readers that do not validate:
    validation quarantines the products of the other rows)."""
    ds = parse_dates(frame["ds"])
    y = pd.to_numeric(frame["y"], errors="coerce")
    ok = ds.notna() & y.notna()
    return frame.assign(ds=ds, y=y).loc[ok]


def write_panel(frame: pd.DataFrame, url: str, name: str = "sales.parquet") -> str:
    """Write a panel as one parquet file inside a folder URL; returns the file URL."""
    fs, root = fsspec.core.url_to_fs(url)
    fs.makedirs(root, exist_ok=True)
    target = f"{url.rstrip('/')}/{name}"
    with fsspec.open(target, "wb") as fh:
        frame.to_parquet(fh, index=False)
    return target
