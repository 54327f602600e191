"""A model folder's digest: sha256 over every file's relative path and bytes, in path order."""

from __future__ import annotations

import hashlib
from pathlib import Path

CHUNK = 1 << 20


def folder_digest(folder: Path) -> str:
    """`sha256:<hex>` of the folder's files (names and contents); any changed byte, renamed,
    added or removed file changes it."""
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        rel = path.relative_to(folder).as_posix().encode()
        digest.update(len(rel).to_bytes(8, "big") + rel)
        digest.update(path.stat().st_size.to_bytes(8, "big"))
        with path.open("rb") as fh:
            while chunk := fh.read(CHUNK):
                digest.update(chunk)
    return f"sha256:{digest.hexdigest()}"
