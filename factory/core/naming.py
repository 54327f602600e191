"""Registry-safe product names: one slug per product id, distinct ids never share a name."""

from __future__ import annotations

import hashlib
import re
from collections import defaultdict
from collections.abc import Iterable

_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")
MAX_SLUG_PREFIX = 80


def product_slug(product_id: str) -> str:
    """A name-safe form of a product id.

    A safe id of at most 80 characters is its own slug (`grocery-00001`). Any other id becomes
    its safe, truncated form plus `-<8 hex digits of its SHA-256>`, so distinct ids get distinct
    names except by design (an id written as another's hashed name) or by chance: validation
    quarantines both products of any such pair (`slug_collisions`). Names never change for an
    id, so registered models keep matching their products.
    """
    if not product_id.strip():
        raise ValueError("a blank product id has no registry name")
    slug = _UNSAFE.sub("_", product_id)[:MAX_SLUG_PREFIX]
    if slug != product_id:
        slug += "-" + hashlib.sha256(product_id.encode()).hexdigest()[:8]
    return slug


def slug_collisions(product_ids: Iterable[str]) -> dict[str, list[str]]:
    """Each product whose registry name equals another's, ignoring case, and those others.

    Case is ignored because MLflow on some databases (MySQL, SQL Server) compares model names
    case-insensitively. Blank ids have no name and are left out (validation quarantines them).
    """
    by_name: dict[str, list[str]] = defaultdict(list)
    for pid in dict.fromkeys(product_ids):  # each id once, in order
        if pid.strip():
            by_name[product_slug(pid).lower()].append(pid)
    return {
        pid: sorted(o for o in ids if o != pid)
        for ids in by_name.values()
        if len(ids) > 1
        for pid in ids
    }
