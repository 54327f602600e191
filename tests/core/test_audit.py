"""The audit trail's hash chain: every edit, deletion, replacement or reordering is named."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta, timezone

import pytest
from pydantic import ValidationError

from factory.core.audit import (
    ACTIONS,
    GENESIS,
    AuditEntry,
    AuditRecord,
    chain_hash,
    seal,
    verify_chain,
)
from tests.support.fleets import REPO

T0 = datetime(2026, 11, 22, 9, 30, 15, 123456, tzinfo=UTC)
ENTRY = AuditEntry(
    action="promote",
    actor="approver: alice (via Prefect UI) / os: root@host",
    products=["p-001", "p-002"],
    versions={"p-001": "7", "p-002": "3"},
    reason="beats production by 12% MASE",
    batch="batch-42",
    flow_run_id="run-1",
    flow_run_url="http://127.0.0.1:4200/runs/flow-run/run-1",
    detail={"gate": {"mase": 0.81}, "approved": True},
)
# sha256 of the canonical JSON of ENTRY at seq 1, T0, after GENESIS (one flat object, sorted keys,
# "," and ":" separators, "at" as 2026-11-22T09:30:15.123456+00:00), computed by hand: a change
# here means every stored trail stops verifying, so it must be deliberate.
ENTRY_HASH = "48c70d82628e26fa4c97625f2d9b79dac5a738443d313dd7f2854138c7398ac9"


def chain(n: int) -> list[AuditRecord]:
    """n records sealed one after another, one minute apart."""
    records: list[AuditRecord] = []
    for i in range(n):
        entry = ENTRY.model_copy(update={"action": ACTIONS[i % len(ACTIONS)], "reason": f"r{i}"})
        prev = records[-1].hash if records else GENESIS
        records.append(seal(entry, i + 1, T0 + timedelta(minutes=i), prev))
    return records


def edited(record: AuditRecord, **changes: object) -> AuditRecord:
    """The record with some fields changed and its stored hashes left as they were."""
    return AuditRecord.model_validate({**record.model_dump(), **changes})


def test_an_untouched_chain_verifies() -> None:
    records = chain(8)
    assert [r.seq for r in records] == list(range(1, 9))
    assert records[0].prev_hash == GENESIS
    assert all(b.prev_hash == a.hash for a, b in itertools.pairwise(records))
    assert verify_chain(records) == []
    assert verify_chain([]) == []


def test_the_hash_covers_every_field_and_the_place_in_the_chain() -> None:
    base = chain_hash(GENESIS, 1, T0, ENTRY)
    variants = [
        chain_hash("1" * 64, 1, T0, ENTRY),
        chain_hash(GENESIS, 2, T0, ENTRY),
        chain_hash(GENESIS, 1, T0 + timedelta(microseconds=1), ENTRY),
    ]
    changes: dict[str, object] = {
        "action": "approve",
        "actor": "mallory",
        "products": ["p-001"],
        "versions": {"p-001": "7", "p-002": "4"},
        "reason": "",
        "batch": None,
        "flow_run_id": "run-2",
        "flow_run_url": None,
        "detail": {"gate": {"mase": 0.82}, "approved": True},
    }
    assert set(changes) == set(AuditEntry.model_fields)
    for field, value in changes.items():
        variants.append(chain_hash(GENESIS, 1, T0, ENTRY.model_copy(update={field: value})))
    assert len({base, *variants}) == len(variants) + 1


def test_the_hash_ignores_key_order_and_the_time_zone_it_is_written_in() -> None:
    reordered = ENTRY.model_copy(
        update={
            "versions": {"p-002": "3", "p-001": "7"},
            "detail": {"approved": True, "gate": {"mase": 0.81}},
        }
    )
    paris = T0.astimezone(timezone(timedelta(hours=1)))
    assert chain_hash(GENESIS, 1, paris, reordered) == chain_hash(GENESIS, 1, T0, ENTRY)


def test_the_hash_is_the_same_in_another_process() -> None:
    code = (
        "from tests.core.test_audit import ENTRY, T0\n"
        "from factory.core.audit import GENESIS, chain_hash\n"
        "print(chain_hash(GENESIS, 1, T0, ENTRY))"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env, cwd=REPO
    )
    assert out.stdout.strip() == chain_hash(GENESIS, 1, T0, ENTRY) == ENTRY_HASH


def test_an_edited_field_is_named() -> None:
    records = chain(6)
    records[3] = edited(records[3], reason="nobody asked")
    assert verify_chain(records) == ["record 4: contents changed (hash mismatch)"]


def test_an_edit_with_a_recomputed_hash_breaks_the_next_link() -> None:
    records = chain(6)
    forged = records[3].model_copy(update={"actor": "mallory"})
    records[3] = seal(forged, forged.seq, forged.at, forged.prev_hash)
    assert verify_chain(records) == ["record 5: previous hash does not match record 4"]


@pytest.mark.parametrize(
    ("deleted", "problems"),
    [
        (
            [4],
            [
                "record 4 missing (seq jumps 3 -> 5)",
                "record 5: previous hash does not match record 3",
            ],
        ),
        (
            [6, 7],
            [
                "records 6-7 missing (seq jumps 5 -> 8)",
                "record 8: previous hash does not match record 5",
            ],
        ),
        (
            [1, 2],
            [
                "records 1-2 missing (seq starts at 3)",
                "record 3: previous hash does not match the start of the chain",
            ],
        ),
    ],
)
def test_deleted_records_are_named(deleted: list[int], problems: list[str]) -> None:
    records = [r for r in chain(9) if r.seq not in deleted]
    assert verify_chain(records) == problems


def test_a_replaced_record_is_named() -> None:
    records = chain(6)
    other = ENTRY.model_copy(update={"action": "reject", "reason": "replaced"})
    records[2] = seal(other, 3, records[2].at, records[1].hash)  # a valid record, but not the one
    assert verify_chain(records) == ["record 4: previous hash does not match record 3"]


def test_swapped_contents_and_swapped_records_are_named() -> None:
    records = chain(5)
    a, b = records[1], records[2]
    swapped = [records[0], edited(b, seq=2), edited(a, seq=3), *records[3:]]
    assert verify_chain(swapped) == [
        "record 2: contents changed (hash mismatch)",
        "record 2: previous hash does not match record 1",
        "record 3: contents changed (hash mismatch)",
        "record 3: previous hash does not match record 2",
        "record 4: previous hash does not match record 3",
    ]
    reordered = [records[0], b, a, *records[3:]]
    assert verify_chain(reordered) == [
        "record 2 missing (seq jumps 1 -> 3)",
        "record 3: previous hash does not match record 1",
        "record 2: out of order or duplicated (after record 3)",
    ]
    assert verify_chain([*records[:3], records[2], *records[3:]]) == [
        "record 3: out of order or duplicated (after record 3)"
    ]


def test_records_are_utc_and_entries_refuse_unknown_fields() -> None:
    paris = T0.astimezone(timezone(timedelta(hours=1)))
    record = seal(ENTRY, 1, paris, GENESIS)
    assert record.at == T0 and record.at.tzinfo == UTC
    with pytest.raises(ValueError, match="timezone-aware"):
        seal(ENTRY, 1, T0.replace(tzinfo=None), GENESIS)
    with pytest.raises(ValidationError, match="approvr"):
        AuditEntry.model_validate({"action": "approve", "actor": "a", "approvr": "b"})
    with pytest.raises(ValidationError, match="action"):
        AuditEntry.model_validate({"action": "delete", "actor": "a"})
    with pytest.raises(ValidationError):
        ENTRY.reason = "changed"  # type: ignore[misc]
