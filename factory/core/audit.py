"""The audit trail of lifecycle actions as a hash chain: who did what to which models, and why.

Each record's hash covers its contents, its place (`seq`, `at`) and the previous record's hash,
so editing, deleting, replacing or reordering a stored record breaks the chain where it happened.
Removing the newest records leaves a shorter but intact chain: compare the head with a copy.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, field_validator

Action = Literal["register", "promote", "approve", "reject", "rollback", "retire", "restore"]
ACTIONS: tuple[str, ...] = get_args(Action)
GENESIS = "0" * 64  # the previous hash of record 1


class AuditEntry(BaseModel):
    """One lifecycle action as its caller describes it (the record adds place and hashes)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    action: Action
    actor: str
    products: list[str] = []
    versions: dict[str, str] = {}
    reason: str = ""
    batch: str | None = None
    flow_run_id: str | None = None
    flow_run_url: str | None = None
    detail: dict[str, Any] = {}


_ENTRY_FIELDS = set(AuditEntry.model_fields)


class AuditRecord(AuditEntry):
    """A stored entry: its place in the chain, when it was sealed, and the chain's hashes."""

    seq: int
    at: datetime
    prev_hash: str
    hash: str

    @field_validator("at")
    @classmethod
    def _at_is_utc(cls, at: datetime) -> datetime:
        return _utc(at)


def _utc(at: datetime) -> datetime:
    """`at` in UTC; a naive time is refused (it could be any zone)."""
    if at.tzinfo is None or at.utcoffset() is None:
        raise ValueError("must be timezone-aware")
    return at.astimezone(UTC)


def chain_hash(prev_hash: str, seq: int, at: datetime, entry: AuditEntry) -> str:
    """SHA-256 (hex) of the canonical JSON of the entry's fields plus prev_hash, seq and at."""
    body = {
        **entry.model_dump(mode="json", include=_ENTRY_FIELDS),
        "prev_hash": prev_hash,
        "seq": seq,
        "at": _utc(at).isoformat(timespec="microseconds"),
    }
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(text.encode("ascii")).hexdigest()


def seal(entry: AuditEntry, seq: int, at: datetime, prev_hash: str) -> AuditRecord:
    """The record that follows `prev_hash` at position `seq` (contents as they are stored: JSON)."""
    fields = entry.model_dump(mode="json", include=_ENTRY_FIELDS)
    at = _utc(at)
    return AuditRecord.model_validate(
        {
            **fields,
            "seq": seq,
            "at": at,
            "prev_hash": prev_hash,
            "hash": chain_hash(prev_hash, seq, at, entry),
        }
    )


def verify_chain(records: list[AuditRecord]) -> list[str]:
    """Every break in the chain, one line each (empty when intact); records in seq order."""
    problems: list[str] = []
    prev: AuditRecord | None = None  # the record with the highest seq so far
    for record in records:
        if chain_hash(record.prev_hash, record.seq, record.at, record) != record.hash:
            problems.append(f"record {record.seq}: contents changed (hash mismatch)")
        if prev and record.seq <= prev.seq:
            problems.append(
                f"record {record.seq}: out of order or duplicated (after record {prev.seq})"
            )
            continue
        expected = prev.seq + 1 if prev else 1
        if record.seq > expected:
            problems.append(_gap(expected, record.seq))
        if record.prev_hash != (prev.hash if prev else GENESIS):
            before = f"record {prev.seq}" if prev else "the start of the chain"
            problems.append(f"record {record.seq}: previous hash does not match {before}")
        prev = record
    return problems


def _gap(expected: int, seq: int) -> str:
    """`records 7-8 missing (seq jumps 6 -> 9)`; from the start: `(seq starts at 3)`."""
    missing = f"record {expected}" if seq - expected == 1 else f"records {expected}-{seq - 1}"
    how = f"seq jumps {expected - 1} -> {seq}" if expected > 1 else f"seq starts at {seq}"
    return f"{missing} missing ({how})"
