"""Content hashes: of a product's rows, of a set of products' data, of a training key."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

import numpy as np

from factory.core.fleet import FamilySpec, FleetSpec, GateSpec
from factory.core.forecaster import Series


def fingerprint_arrays(arrays: Iterable[np.ndarray]) -> str:
    """A content hash of the exact values (and their order) in some arrays."""
    digest = hashlib.sha256()
    for arr in arrays:
        digest.update(np.ascontiguousarray(arr).tobytes())
    return digest.hexdigest()[:32]


def series_fingerprint(series: Series) -> str:
    """Hash of exactly the rows (dates, target, exogenous) a model trains on."""
    arrays = [series.ds.view("int64"), series.y, *(series.exog[k] for k in sorted(series.exog))]
    return fingerprint_arrays(arrays)


def combined_fingerprint(fingerprints: dict[str, str]) -> str:
    """One hash over (product, fingerprint) pairs: the new data behind an event."""
    digest = hashlib.sha256()
    for pid, fp in sorted(fingerprints.items()):
        digest.update(f"{pid}={fp}\n".encode())
    return digest.hexdigest()[:32]


def training_key(data_fingerprint: str, family: FamilySpec, gate: GateSpec, code: str) -> str:
    """What a product's outcome depends on: its rows, its family config, the gate and the code."""
    parts = [data_fingerprint, family.model_dump_json(), gate.model_dump_json(), code]
    return fingerprint_arrays(np.frombuffer(p.encode(), dtype=np.uint8) for p in parts)


def training_keys(
    series: dict[str, Series], fleet: FleetSpec, assignment: dict[str, list[str]], code: str
) -> dict[str, str]:
    """Each assigned product's training key (data fingerprint, family config, gate, code)."""
    return {
        pid: training_key(series_fingerprint(series[pid]), fleet.family(f), fleet.gate, code)
        for f, ids in assignment.items()
        for pid in ids
    }
