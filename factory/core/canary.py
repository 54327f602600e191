"""Canary releases: a share of a product's requests served by its new production version.

A canary is recorded on the production registered model as the `canary` alias (the new
version) plus the `factory.canary` tag (this JSON); the `champion` alias keeps serving the
rest. Which requests go to the canary is sticky: the same request key always lands on the
same side, so one client sees one version.
"""

from __future__ import annotations

import hashlib
from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

CANARY_ALIAS = "canary"
CANARY_TAG = "factory.canary"
BUCKETS = 10_000


class CanarySpec(BaseModel):
    """A running canary: which version, what share of requests, since when and by whom."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    version: str
    champion_version: str | None = None
    share: float = Field(gt=0, lt=1, description="Share of requests the canary serves.")
    started_at: datetime
    started_by: str = ""


def bucket(product_id: str, request_key: str) -> int:
    """The request's stable bucket in [0, BUCKETS) for this product (blake2b of both)."""
    digest = hashlib.blake2b(f"{product_id}\0{request_key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % BUCKETS


def takes_canary(product_id: str, request_key: str, share: float) -> bool:
    """Whether this request key is served by the product's canary."""
    return bucket(product_id, request_key) < round(share * BUCKETS)
