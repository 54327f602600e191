"""Files on a local folder or any fsspec URL, replaced atomically."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path
from typing import IO

import fsspec


def atomic_write(target: str | Path, write: Callable[[IO[bytes]], object]) -> str:
    """Write a file through a temporary sibling, then move it over `target`.

    Readers see the old file or the new one, never a partial one. Returns the written path
    (without protocol, as fsspec names it).
    """
    fs, path = fsspec.core.url_to_fs(str(target))
    folder, name = path.rsplit("/", 1)
    fs.makedirs(folder, exist_ok=True)
    tmp = f"{folder}/.{name}.{uuid.uuid4().hex[:8]}.tmp"
    try:
        with fs.open(tmp, "wb") as fh:
            write(fh)
        fs.mv(tmp, path)
    except BaseException:
        if fs.exists(tmp):
            fs.rm(tmp)
        raise
    return str(path)
