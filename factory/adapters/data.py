"""Reading and writing sales panels on a local folder or any fsspec URL."""

from __future__ import annotations

import io

import fsspec
import pandas as pd

from factory.core.contract import DataError

KEY_COLUMNS = ("unique_id", "ds", "y")
DATA_SUFFIXES = (".parquet", ".csv")


class NoDataFiles(DataError):
    """A data folder that does not exist yet or holds no data files."""


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
    """One data file in the `unique_id, ds, y [, exogenous...]` contract."""
    with fsspec.open(url, "rb") as fh:
        raw = fh.read()
    try:
        if url.endswith(".parquet"):
            frame = pd.read_parquet(io.BytesIO(raw))
        else:
            frame = pd.read_csv(io.BytesIO(raw))
    except Exception as exc:
        raise DataError(f"{url}: cannot be read ({exc})") from None
    missing = [c for c in KEY_COLUMNS if c not in frame.columns]
    if missing:
        raise DataError(f"{url}: missing column(s) {', '.join(missing)}; expected unique_id, ds, y")
    try:
        frame["ds"] = pd.to_datetime(frame["ds"])
    except (ValueError, TypeError) as exc:
        raise DataError(f"{url}: column ds holds values that are not dates ({exc})") from None
    frame["unique_id"] = frame["unique_id"].astype("string")
    return frame


def read_panel(url: str) -> pd.DataFrame:
    """All files under a folder URL, concatenated in file order."""
    frames = [read_file(f) for f in list_data_files(url)]
    return pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]


def write_panel(frame: pd.DataFrame, url: str, name: str = "sales.parquet") -> str:
    """Write a panel as one parquet file inside a folder URL; returns the file URL."""
    fs, root = fsspec.core.url_to_fs(url)
    fs.makedirs(root, exist_ok=True)
    target = f"{url.rstrip('/')}/{name}"
    with fsspec.open(target, "wb") as fh:
        frame.to_parquet(fh, index=False)
    return target
