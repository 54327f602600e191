"""The landing ledger: which file contents were processed, and one ingest at a time."""

from __future__ import annotations

import contextlib
import fcntl
import json
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

from factory.adapters.files import atomic_write

LEDGER_FILE = "landing-ledger.json"
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
        body = {"files": {s: asdict(e) for s, e in self.files.items()}, "stamps": self.stamps}
        text = json.dumps(body, indent=1, sort_keys=True).encode()
        atomic_write(self.path, lambda fh: fh.write(text))


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
