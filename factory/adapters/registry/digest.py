"""A model folder's digest: sha256 over every file's relative path and bytes, in path order."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from pathlib import Path, PurePosixPath

CHUNK = 1 << 20


def folder_digest(folder: Path) -> str:
    """`sha256:<hex>` of the folder's files (names and contents); any changed byte, renamed,
    added or removed file changes it."""
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        with path.open("rb") as fh:
            chunks = iter(lambda: fh.read(CHUNK), b"")
            _add(digest, path.relative_to(folder).as_posix(), path.stat().st_size, chunks)
    return f"sha256:{digest.hexdigest()}"


def write_folder(folder: Path, files: Mapping[str, bytes]) -> str:
    """Write `files` (relative posix path -> bytes) under a new folder and return its
    `folder_digest`, computed from the bytes written rather than read back."""
    digest = hashlib.sha256()
    for rel in sorted(files, key=lambda r: PurePosixPath(r).parts):  # folder_digest's order
        target = folder / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(files[rel])
        _add(digest, rel, len(files[rel]), (files[rel],))
    return f"sha256:{digest.hexdigest()}"


def _add(digest: hashlib._Hash, rel: str, size: int, chunks: Iterable[bytes]) -> None:
    name = rel.encode()
    digest.update(len(name).to_bytes(8, "big") + name)
    digest.update(size.to_bytes(8, "big"))
    for chunk in chunks:
        digest.update(chunk)
