"""The landing zone: new sales files are validated and upserted into the history, once each.

A ledger keyed by content hash makes re-delivery harmless: identical bytes are skipped under any
name, while a changed file under an old name is new content and is processed. Rows are merged
by (unique_id, ds): new keys are added, changed values replace old ones, nothing is dropped.
Products with bad rows in a file are quarantined with their reasons (rows kept aside for
inspection); the rest of the file is merged. The history is rewritten atomically.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import time
import uuid
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import fsspec
import pandas as pd
import pandera.pandas as pa
from pydantic import BaseModel

from tasks.data import DATA_SUFFIXES, DataError, list_data_files, read_file, read_panel
from tasks.fleet import FleetSpec
from tasks.forecaster import Series
from tasks.schemas import MISSING_ID, _collect_schema_failures, product_arrays, sales_schema
from tasks.training import series_fingerprint

KEYS = ["unique_id", "ds"]
LEDGER_FILE = "landing-ledger.json"
QUARANTINE_DIR = "landing-quarantine"
LOCK_FILE = "landing.lock"
Status = Literal["merging", "done", "rejected"]


class LandingBusy(RuntimeError):
    """Another watcher is ingesting into the same history right now."""


@dataclass(frozen=True)
class LandedFile:
    """A data file in the landing zone and a cheap change stamp (size + mtime or ETag)."""

    url: str
    stamp: str
    modified: float | None = None


@dataclass
class LedgerEntry:
    """What became of one file content (by sha256)."""

    sha256: str
    url: str
    status: Status
    processed_at: str
    rows: int = 0
    product_ids: list[str] = field(default_factory=list)
    quarantined: dict[str, list[str]] = field(default_factory=dict)
    reason: str = ""


class Ledger:
    """Processed landing files, keyed by content hash, kept as one JSON file written atomically."""

    def __init__(self, path: Path) -> None:
        self.path = path
        raw = json.loads(path.read_text()) if path.exists() else {}
        self.files: dict[str, LedgerEntry] = {
            sha: LedgerEntry(**e) for sha, e in raw.get("files", {}).items()
        }
        self.stamps: dict[str, list[str]] = raw.get("stamps", {})  # url -> [stamp, sha256]

    def unchanged(self, f: LandedFile) -> bool:
        """True when this url was seen with this exact stamp (no need to read it again)."""
        seen = self.stamps.get(f.url)
        return bool(f.stamp) and seen is not None and seen[0] == f.stamp and seen[1] in self.files

    def see(self, f: LandedFile, sha: str) -> None:
        """Remember which content a url had at a stamp."""
        self.stamps[f.url] = [f.stamp, sha]

    def pending(self) -> list[LedgerEntry]:
        """Entries merged into the history whose event was not confirmed sent."""
        return [e for e in self.files.values() if e.status == "merging"]

    def confirm(self, shas: list[str]) -> None:
        """Mark merged entries done once their event is out."""
        for sha in shas:
            if sha in self.files and self.files[sha].status == "merging":
                self.files[sha].status = "done"
        self.save()

    def save(self) -> None:
        """Write the ledger atomically."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.{uuid.uuid4().hex[:8]}.tmp")
        body = {"files": {s: asdict(e) for s, e in self.files.items()}, "stamps": self.stamps}
        tmp.write_text(json.dumps(body, indent=1, sort_keys=True))
        tmp.replace(self.path)


class FileOutcome(BaseModel):
    """What one landed file did to the history."""

    url: str
    sha256: str
    status: Literal["merged", "unchanged", "quarantined", "duplicate", "rejected"]
    rows: int = 0
    product_ids: list[str] = []
    quarantined: dict[str, list[str]] = {}
    reason: str = ""


class LandingReport(BaseModel):
    """One scan: per-file outcomes and the products whose history changed."""

    files: list[FileOutcome] = []
    product_ids: list[str] = []
    fingerprints: dict[str, str] = {}
    fingerprint: str = ""
    unassigned: list[str] = []
    quarantined: dict[str, list[str]] = {}
    rows_added: int = 0
    rows_changed: int = 0
    history_url: str | None = None
    pending: list[str] = []

    def line(self) -> str:
        """One-line summary for logs."""
        counts: dict[str, int] = {}
        for f in self.files:
            counts[f.status] = counts.get(f.status, 0) + 1
        files = ", ".join(f"{v} {k}" for k, v in sorted(counts.items())) or "no new files"
        return (
            f"{files}; {self.rows_added} rows added, {self.rows_changed} changed; "
            f"{len(self.product_ids)} products to retrain, {len(self.quarantined)} quarantined"
        )


@dataclass(frozen=True)
class MergeDiff:
    """Rows a batch adds or changes in the history, and the products they belong to."""

    added: int
    changed: int
    unchanged: int
    product_ids: list[str]


# --- pure steps ---------------------------------------------------------------------------------


def upsert(history: pd.DataFrame, batch: pd.DataFrame) -> tuple[pd.DataFrame, MergeDiff]:
    """Merge a batch into the history by (unique_id, ds); the batch wins where values differ.

    Every history row is kept unless the batch has the same key; the result has unique keys
    (within the batch, the last row of a key wins) and is sorted by product and date.
    """
    batch = _align(batch.drop_duplicates(KEYS, keep="last"), history)
    if history.empty:
        merged = batch.sort_values(KEYS, kind="stable").reset_index(drop=True)
        ids = sorted(merged["unique_id"].astype(str).unique())
        return merged, MergeDiff(len(batch), 0, 0, ids)
    joined = batch.merge(history, on=KEYS, how="left", suffixes=("", "__old"), indicator=True)
    new = (joined["_merge"] == "left_only").to_numpy()
    values = [c for c in batch.columns if c not in KEYS and f"{c}__old" in joined]
    differs = pd.Series(False, index=joined.index)
    for c in values:
        a, b = joined[c], joined[f"{c}__old"]
        differs |= (a != b) & ~(a.isna() & b.isna())
    changed = differs.to_numpy() & ~new
    affected = sorted(joined.loc[new | changed, "unique_id"].astype(str).unique())
    replaced = pd.MultiIndex.from_frame(history[KEYS]).isin(pd.MultiIndex.from_frame(batch[KEYS]))
    merged = pd.concat([history.loc[~replaced], batch], ignore_index=True)
    merged = merged.sort_values(KEYS, kind="stable").reset_index(drop=True)
    diff = MergeDiff(int(new.sum()), int(changed.sum()), int((~new & ~changed).sum()), affected)
    return merged, diff


def _align(batch: pd.DataFrame, history: pd.DataFrame) -> pd.DataFrame:
    """The batch with the history's dtypes (ids as strings, dates, float values)."""
    batch = batch.copy()
    batch["unique_id"] = batch["unique_id"].astype("string")
    batch["ds"] = pd.to_datetime(batch["ds"])
    for c in batch.columns:
        if c in KEYS:
            continue
        dtype = history[c].dtype if c in history else "float64"
        batch[c] = batch[c].astype(dtype)
    if not history.empty:
        batch = batch[list(history.columns)]
        batch["ds"] = batch["ds"].astype(history["ds"].dtype)
    return batch


def validate_batch(
    frame: pd.DataFrame, as_of: pd.Timestamp
) -> tuple[pd.DataFrame, dict[str, list[str]]]:
    """Row-level contract (types, y >= 0, no nulls, unique keys, no future dates) on new rows.

    Products with any failing row are held back whole, with their reasons; column-wide
    problems raise DataError (the file is rejected).
    """
    frame = frame.reset_index(drop=True)
    reasons: dict[str, list[str]] = defaultdict(list)
    try:
        clean = sales_schema(as_of.normalize()).validate(frame, lazy=True)
    except pa.errors.SchemaErrors as exc:
        _collect_schema_failures(frame, exc.failure_cases, reasons)
        ok = frame["unique_id"].notna() & ~frame["unique_id"].isin(list(reasons))
        clean = sales_schema(as_of.normalize()).validate(frame.loc[ok], lazy=False)
    return clean.reset_index(drop=True), dict(sorted(reasons.items()))


def check_columns(batch: pd.DataFrame, history: pd.DataFrame) -> str | None:
    """Why a file's columns cannot be merged into the history, or None when they can."""
    if history.empty:
        return None
    missing = [c for c in history.columns if c not in batch.columns]
    extra = [c for c in batch.columns if c not in history.columns]
    if missing:
        return f"lacks column(s) the history has: {', '.join(missing)}"
    if extra:
        return f"has column(s) the history does not: {', '.join(extra)}"
    return None


def product_fingerprints(
    frame: pd.DataFrame, product_ids: list[str], fleet: FleetSpec
) -> dict[str, str]:
    """Each product's data fingerprint exactly as training computes it (dates, y, its exogenous)."""
    out: dict[str, str] = {}
    for family_name, ids in fleet.assign(product_ids).items():
        if not ids:
            continue
        exog = [c for c in fleet.family(family_name).features.exogenous if c in frame.columns]
        sub = frame.loc[frame["unique_id"].isin(ids)].sort_values(KEYS, kind="stable")
        for pid, a in product_arrays(sub, exog).items():
            out[pid] = series_fingerprint(Series(a["ds"], a["y"], {c: a[c] for c in exog}))
    return dict(sorted(out.items()))


def combined_fingerprint(fingerprints: dict[str, str]) -> str:
    """One hash over (product, fingerprint) pairs: the new data behind an event."""
    digest = hashlib.sha256()
    for pid, fp in sorted(fingerprints.items()):
        digest.update(f"{pid}={fp}\n".encode())
    return digest.hexdigest()[:32]


# --- the landing zone and the history -----------------------------------------------------------


def list_landing(url: str) -> list[LandedFile]:
    """Data files in the landing zone (hidden and `_`-prefixed names and folders are skipped)."""
    fs, root = fsspec.core.url_to_fs(url)
    if not fs.exists(root):
        return []
    root = root.rstrip("/")
    out = []
    for path, info in sorted(fs.find(root, detail=True).items()):
        rel = path[len(root) :].lstrip("/")
        if any(part.startswith((".", "_")) for part in rel.split("/")):
            continue
        if not path.endswith(DATA_SUFFIXES):
            continue
        modified = _timestamp(info.get("mtime") or info.get("LastModified") or info.get("created"))
        tag = info.get("ETag") or info.get("etag") or modified
        stamp = f"{info.get('size')}:{tag}" if tag is not None else ""  # "": always re-hash
        full = fs.unstrip_protocol(path) if "://" in url else path
        out.append(LandedFile(full, stamp, modified))
    return out


def _timestamp(value: object) -> float | None:
    """Epoch seconds from a float, a datetime or an ISO string (None when unknown)."""
    if value is None:
        return None
    if isinstance(value, int | float):
        return float(value)
    try:
        return float(pd.Timestamp(value).timestamp())  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None


def content_hash(url: str) -> str:
    """sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with fsspec.open(url, "rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def read_history(data_url: str) -> pd.DataFrame:
    """The current history (an empty frame when there is none yet)."""
    try:
        return read_panel(data_url)
    except DataError as exc:
        if "no such data folder" in str(exc) or "no .parquet or .csv files" in str(exc):
            return pd.DataFrame()
        raise


def write_history(frame: pd.DataFrame, data_url: str) -> str:
    """Replace the history with `frame`: write a new file, then move it over the old one.

    Readers see the old or the new file, never a partial one. A history spread over several
    files is consolidated into one (the extra files are removed after the new one is in place).
    """
    fs, root = fsspec.core.url_to_fs(data_url)
    if fs.isfile(root):
        target, others = root, []
    else:
        fs.makedirs(root, exist_ok=True)
        existing = [fs._strip_protocol(f) for f in _existing_files(data_url)]
        single = len(existing) == 1 and existing[0].endswith(".parquet")
        target = existing[0] if single else f"{root.rstrip('/')}/sales.parquet"
        others = [p for p in existing if p != target]
    folder, name = target.rsplit("/", 1)
    tmp = f"{folder}/.{name}.{uuid.uuid4().hex[:8]}.tmp"
    with fs.open(tmp, "wb") as fh:
        if target.endswith(".csv"):
            fh.write(frame.to_csv(index=False).encode())
        else:
            frame.to_parquet(fh, index=False)
    fs.mv(tmp, target)
    for path in others:
        fs.rm(path)
    return fs.unstrip_protocol(target) if "://" in data_url else target


def _existing_files(data_url: str) -> list[str]:
    try:
        return list_data_files(data_url)
    except DataError:
        return []


def quarantine_rows(
    frame: pd.DataFrame, reasons: dict[str, list[str]], folder: Path, sha: str
) -> Path:
    """Keep a file's held-back rows (with their reasons) for inspection; returns the file."""
    folder.mkdir(parents=True, exist_ok=True)
    ids = frame["unique_id"].astype("object").where(frame["unique_id"].notna(), MISSING_ID)
    rows = frame.loc[ids.isin(list(reasons))].copy()
    rows["reason"] = ids[rows.index].map(lambda p: "; ".join(reasons.get(p, [])))
    path = folder / f"{sha[:16]}.parquet"
    rows.to_parquet(path, index=False)
    return path


@contextlib.contextmanager
def ingest_lock(state_dir: Path) -> Iterator[None]:
    """One ingest at a time per factory home (raises LandingBusy instead of waiting)."""
    state_dir.mkdir(parents=True, exist_ok=True)
    with (state_dir / LOCK_FILE).open("w") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise LandingBusy(f"another watcher holds {state_dir / LOCK_FILE}") from None
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


@dataclass
class _Accepted:
    """A landed file's rows that passed the contract."""

    file: LandedFile
    sha: str
    rows: pd.DataFrame
    outcome: FileOutcome


def ingest(
    landing_url: str,
    data_url: str,
    state_dir: Path,
    fleet: FleetSpec,
    as_of: pd.Timestamp,
    settle_seconds: float = 1.0,
) -> LandingReport:
    """Validate every new landed file, upsert the good rows into the history, report changes.

    Files are merged in name order (a later file wins on the same key). The ledger marks the
    merged files `merging` before the history is replaced and `done` only when the caller
    confirms the event went out, so a crash in between re-reports those products next scan.
    """
    with ingest_lock(state_dir):
        ledger = Ledger(state_dir / LEDGER_FILE)
        now = time.time()
        listed = list_landing(landing_url)
        fresh = [f for f in listed if not ledger.unchanged(f) and _settled(f, now, settle_seconds)]
        outcomes: list[FileOutcome] = []
        new: list[tuple[LandedFile, str]] = []
        for f in fresh:
            sha = content_hash(f.url)
            ledger.see(f, sha)
            if sha in ledger.files or any(sha == seen for _, seen in new):
                outcomes.append(FileOutcome(url=f.url, sha256=sha, status="duplicate"))
            else:
                new.append((f, sha))
        if not new and not ledger.pending():
            ledger.save()
            return LandingReport(files=outcomes)
        history = read_history(data_url)
        accepted: list[_Accepted] = []
        for f, sha in new:
            reference = accepted[0].rows if history.empty and accepted else history
            item = _accept(f, sha, reference, as_of, state_dir / QUARANTINE_DIR)
            outcomes.append(item.outcome)
            if item.outcome.status != "rejected":
                accepted.append(item)
            else:
                ledger.files[sha] = _entry(item.outcome, "rejected")
        return _merge(ledger, history, accepted, outcomes, data_url, fleet)


def _settled(f: LandedFile, now: float, settle_seconds: float) -> bool:
    """A file still being written (modified within the last moments) waits for the next scan."""
    return f.modified is None or now - f.modified >= settle_seconds


def _accept(
    f: LandedFile, sha: str, history: pd.DataFrame, as_of: pd.Timestamp, quarantine: Path
) -> _Accepted:
    """Read and validate one file; bad products are quarantined, a broken file rejected."""
    try:
        frame = read_file(f.url)
        problem = check_columns(frame, history)
        if problem:
            raise DataError(f"{f.url}: {problem}")
        clean, reasons = validate_batch(frame, as_of)
    except DataError as exc:
        out = FileOutcome(url=f.url, sha256=sha, status="rejected", reason=str(exc))
        return _Accepted(f, sha, pd.DataFrame(), out)
    if reasons:
        quarantine_rows(frame, reasons, quarantine, sha)
    out = FileOutcome(url=f.url, sha256=sha, status="merged", rows=len(clean), quarantined=reasons)
    return _Accepted(f, sha, clean, out)


def _merge(
    ledger: Ledger,
    history: pd.DataFrame,
    accepted: list[_Accepted],
    outcomes: list[FileOutcome],
    data_url: str,
    fleet: FleetSpec,
) -> LandingReport:
    """Upsert the accepted rows, write the history, and record everything in the ledger."""
    frames = [a.rows for a in accepted if len(a.rows)]
    batch = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    merged, diff = (history, MergeDiff(0, 0, 0, [])) if batch.empty else upsert(history, batch)
    changed = set(diff.product_ids)
    for a in accepted:
        ids = set(a.rows["unique_id"].astype(str)) if len(a.rows) else set()
        a.outcome.product_ids = sorted(ids & changed)
        if not a.outcome.product_ids:
            a.outcome.status = "quarantined" if a.outcome.quarantined and not ids else "unchanged"
        ledger.files[a.sha] = _entry(a.outcome, "merging" if a.outcome.product_ids else "done")
    pending = ledger.pending()
    ledger.save()  # `merging` is on disk before the history changes
    history_url = write_history(merged, data_url) if changed else None
    retrain = sorted(changed | {p for e in pending for p in e.product_ids})
    assignment = fleet.assign(retrain)
    covered = sorted(p for ids in assignment.values() for p in ids)
    fingerprints = product_fingerprints(merged, covered, fleet) if covered else {}
    quarantined = {p: why for o in outcomes for p, why in o.quarantined.items()}
    return LandingReport(
        files=outcomes,
        product_ids=covered,
        fingerprints=fingerprints,
        fingerprint=combined_fingerprint(fingerprints) if fingerprints else "",
        unassigned=sorted(set(retrain) - set(covered)),
        quarantined=dict(sorted(quarantined.items())),
        rows_added=diff.added,
        rows_changed=diff.changed,
        history_url=history_url,
        pending=sorted(e.sha256 for e in pending),
    )


def _entry(o: FileOutcome, status: Status) -> LedgerEntry:
    return LedgerEntry(
        sha256=o.sha256,
        url=o.url,
        status=status,
        processed_at=pd.Timestamp.now(tz="UTC").isoformat(),
        rows=o.rows,
        product_ids=o.product_ids,
        quarantined=o.quarantined,
        reason=o.reason,
    )


def confirm(state_dir: Path, shas: list[str]) -> None:
    """Mark merged files done once their event is out."""
    with ingest_lock(state_dir):
        Ledger(state_dir / LEDGER_FILE).confirm(shas)
