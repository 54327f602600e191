"""Canary releases: a share of a product's requests served by its new production version.

A canary is recorded on the production registered model as the `canary` alias (the new
version) plus the `factory.canary` tag (this JSON); the `champion` alias keeps serving the
rest. Which requests go to the canary is sticky: the same request key always lands on the
same side, so one client sees one version.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from factory.core.errors import UserError

CANARY_ALIAS = "canary"
CANARY_TAG = "factory.canary"
BUCKETS = 10_000


class CanaryError(UserError, ValueError):
    """A canary that cannot be started, completed or aborted as asked."""

    hint = "`factory canary status` lists the running canaries"


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


def check_share(share: float) -> float:
    """A canary share as given (fleet.yaml, `--canary`, a flow parameter): 0 means no canary."""
    if not 0 <= share < 1:
        raise CanaryError(f"canary share {share:g} is out of range: give 0 (none) or 0 < x < 1")
    return share


def start_spec(version: int, champion: int | None, share: float, by: str) -> CanarySpec:
    """The record of a canary starting now."""
    return CanarySpec(
        version=str(version),
        champion_version=None if champion is None else str(champion),
        share=share,
        started_at=datetime.now(UTC).replace(microsecond=0),
        started_by=by,
    )


def read_spec(text: str | None) -> CanarySpec | None:
    """The canary record in a `factory.canary` tag (None: absent or unreadable)."""
    if not text:
        return None
    try:
        return CanarySpec.model_validate_json(text)
    except ValidationError:
        return None


@dataclass(frozen=True)
class RunningCanary:
    """One production model's canary as the registry holds it: alias, record, champion."""

    product_id: str
    model: str
    version: int | None  # what `@canary` points at
    champion: int | None  # what `@champion` points at
    spec: CanarySpec | None  # the `factory.canary` record (None: missing or unreadable)

    @property
    def problem(self) -> str | None:
        """Why alias and record do not make one canary that can be completed (None: they do)."""
        if self.version is None:
            return "a canary record but no @canary alias"
        if self.spec is None:
            return f"@canary v{self.version} without a readable {CANARY_TAG} record"
        if self.spec.version != str(self.version):
            return f"{CANARY_TAG} says v{self.spec.version} but @canary is v{self.version}"
        if self.champion is None:
            return "no @champion to share requests with"
        if self.champion == self.version:
            return f"@canary and @champion are both v{self.version}"
        return None


def canary_note(share: float) -> str:
    """The line a promotion plan's reader sees when its batch starts canaries ("" for none)."""
    if not share:
        return ""
    return (
        f"\n\n**Canary:** products already in production start the new version on {share * 100:g}%"
        " of requests (sticky by request key), beside their champion; `factory canary"
        " complete` or `abort` ends each one."
    )
