"""The landing zone: new sales files are validated and upserted into the history, once each.

A ledger keyed by content hash makes re-delivery harmless: identical bytes are skipped under any
name, while a changed file under an old name is new content and is processed. Products with bad
rows in a file are quarantined with their reasons (rows kept aside for inspection); the rest of
the file is merged (`factory.core.landing.upsert`). The history is rewritten atomically.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from pathlib import Path

import fsspec
import pandas as pd

from factory.adapters.data import DATA_SUFFIXES, NoDataFiles, list_data_files, read_file, read_panel
from factory.adapters.files import atomic_write
from factory.adapters.ledger import (
    LEDGER_FILE,
    LandedFile,
    Ledger,
    LedgerEntry,
    Status,
    ingest_lock,
)
from factory.core.contract import MISSING_ID, DataError, validate_rows
from factory.core.fingerprints import combined_fingerprint
from factory.core.fleet import FleetSpec
from factory.core.landing import (
    FileOutcome,
    LandingReport,
    MergeDiff,
    check_columns,
    product_fingerprints,
    upsert,
)

QUARANTINE_DIR = "landing-quarantine"


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
    except NoDataFiles:
        return pd.DataFrame()


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
    url = fs.unstrip_protocol(target)
    if target.endswith(".csv"):
        atomic_write(url, lambda fh: fh.write(frame.to_csv(index=False).encode()))
    else:
        atomic_write(url, lambda fh: frame.to_parquet(fh, index=False))
    for path in others:
        fs.rm(path)
    return fs.unstrip_protocol(target) if "://" in data_url else target


def _existing_files(data_url: str) -> list[str]:
    try:
        return list_data_files(data_url)
    except NoDataFiles:
        return []


def quarantine_rows(
    frame: pd.DataFrame, reasons: dict[str, list[str]], folder: Path, sha: str
) -> Path:
    """Keep a file's held-back rows (with their reasons) for inspection; returns the file."""
    folder.mkdir(parents=True, exist_ok=True)
    ids = frame["unique_id"].astype("object").where(frame["unique_id"].notna(), MISSING_ID)
    rows = frame.loc[ids.isin(list(reasons))].copy()
    rows["reason"] = ids[rows.index].map(lambda p: "; ".join(reasons.get(p, [])))
    rows = rows.astype({c: "string" for c in rows.columns if rows[c].dtype == object})  # as written
    path = folder / f"{sha[:16]}.parquet"
    rows.to_parquet(path, index=False)
    return path


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
        clean, reasons = validate_rows(frame, as_of)
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


def has_news(landing_url: str, state_dir: Path) -> bool:
    """Cheap check (listing + ledger) for new or changed files or unannounced merges."""
    ledger = Ledger(state_dir / LEDGER_FILE)
    return bool(ledger.pending()) or any(not ledger.unchanged(f) for f in list_landing(landing_url))
