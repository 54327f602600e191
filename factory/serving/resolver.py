"""Which versions answer for a product right now: champion (or staging candidate), canary and
shadow challenger, read from the registry's aliases and tags and kept for a short TTL."""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException

from factory.adapters.registry import reading
from factory.adapters.registry.names import (
    CANDIDATE_ALIAS,
    CHAMPION_ALIAS,
    PRODUCTION,
    RETIRED_TAG,
    STAGING,
    NoModelError,
)
from factory.adapters.registry.registry import Registry
from factory.core.canary import CANARY_ALIAS, CANARY_TAG, CanarySpec, takes_canary

log = logging.getLogger(__name__)

MISSING = ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE")


class RegistryUnavailable(RuntimeError):
    """The registry could not be read and nothing is known about the product yet."""


@dataclass(frozen=True)
class VersionRef:
    """One registered model version."""

    name: str
    version: str

    @property
    def key(self) -> str:
        """`name/version`: unique across the registry."""
        return f"{self.name}/{self.version}"


@dataclass(frozen=True)
class Served:
    """What answers for one product: the serving version and, when running, its canary
    (with its share of requests) and a staging challenger scored in the shadow."""

    product_id: str
    serving: VersionRef
    served_as: str  # "champion" (production) or "candidate" (staging, nothing in production)
    canary: VersionRef | None = None
    canary_share: float = 0.0
    shadow: VersionRef | None = None

    def pick(self, request_key: str | None) -> tuple[VersionRef, str]:
        """The version answering this request, and as what ("champion", "canary", ...); a
        request without a key lands on either side at random, in the canary's share."""
        if self.canary is None:
            return self.serving, self.served_as
        key = request_key if request_key is not None else uuid.uuid4().hex
        if takes_canary(self.product_id, key, self.canary_share):
            return self.canary, "canary"
        return self.serving, self.served_as


class Resolver:
    """Product -> Served, read from the registry again after `ttl_s` or as soon as the
    products are `invalidate`d (the audit log's change feed names every product a promotion,
    rollback, canary or retirement touched). While the registry is unreachable, products keep
    their last known versions. Thread-safe."""

    def __init__(self, registry: Registry, ttl_s: float = 60.0) -> None:
        self.registry = registry
        self.ttl_s = ttl_s
        self._calls = reading.registry_calls(registry.client)
        self._cache: dict[str, tuple[float, Served]] = {}
        self._versions: dict[str, ModelVersion] = {}
        self._lock = threading.Lock()

    def fresh(self, product_id: str) -> Served | None:
        """The cached answer while it is fresh (no registry read, no lock)."""
        hit = self._cache.get(product_id)
        return hit[1] if hit is not None and hit[0] > time.monotonic() else None

    def invalidate(self, products: Collection[str]) -> None:
        """Read these products again on their next request (their versions changed)."""
        with self._lock:
            for pid in products:
                if pid in self._cache:
                    self._cache[pid] = (0.0, self._cache[pid][1])  # kept as last known

    def resolve(self, product_id: str) -> Served:
        """What serves `product_id` now. Raises NoModelError for unknown or retired ones."""
        now = time.monotonic()
        with self._lock:
            hit = self._cache.get(product_id)
        if hit is not None and hit[0] > now:
            return hit[1]
        try:
            served = self._read(product_id)
        except NoModelError:
            raise
        except Exception as exc:  # the registry is unreachable: keep serving what was known
            if hit is None:
                raise RegistryUnavailable(f"the registry did not answer: {exc}") from exc
            log.warning(
                "serving %s's last known versions: the registry failed: %s", product_id, exc
            )
            return hit[1]
        with self._lock:
            self._cache[product_id] = (now + self.ttl_s, served)
        return served

    def model_version(self, ref: VersionRef) -> ModelVersion:
        """The registry's record of a version (its tags carry the signature), read once: a
        version's files, source and signature never change."""
        mv = self._versions.get(ref.key)
        if mv is None:
            mv = self._versions[ref.key] = self._calls.get_model_version(ref.name, ref.version)
        return mv

    def _read(self, product_id: str) -> Served:
        prod_name = self.registry.name(PRODUCTION, product_id)
        stag_name = self.registry.name(STAGING, product_id)
        prod = self._model(prod_name)
        if prod is not None and RETIRED_TAG in prod["tags"]:
            why = json.loads(prod["tags"][RETIRED_TAG]).get("reason", "retired")
            raise NoModelError(f"product {product_id!r} is retired ({why})")
        stag = self._model(stag_name)
        candidate = None if stag is None else stag["aliases"].get(CANDIDATE_ALIAS)
        champion = None if prod is None else prod["aliases"].get(CHAMPION_ALIAS)
        if champion is None:
            if candidate is None:
                raise NoModelError(f"product {product_id!r} has no registered model")
            return Served(product_id, VersionRef(stag_name, candidate), CANDIDATE_ALIAS)
        assert prod is not None
        canary, share = None, 0.0
        canary_version = prod["aliases"].get(CANARY_ALIAS)
        if canary_version is not None and CANARY_TAG in prod["tags"]:
            spec = CanarySpec.model_validate_json(prod["tags"][CANARY_TAG])
            canary, share = VersionRef(prod_name, canary_version), spec.share
        shadow = None
        if candidate is not None and candidate not in (
            self._source(VersionRef(prod_name, champion)),
            None if canary is None else self._source(canary),
        ):
            shadow = VersionRef(stag_name, candidate)
        return Served(
            product_id, VersionRef(prod_name, champion), CHAMPION_ALIAS, canary, share, shadow
        )

    def _model(self, name: str) -> dict[str, Any] | None:
        """A registered model's aliases and tags, None when it does not exist."""
        try:
            rm = self._calls.get_registered_model(name)
        except MlflowException as exc:
            if exc.error_code in MISSING:
                return None
            raise
        return {
            "aliases": {a: str(v) for a, v in (rm.aliases or {}).items()},
            "tags": dict(rm.tags),
        }

    def _source(self, ref: VersionRef) -> str | None:
        """The staging version a production version was copied from (versions never change)."""
        source = reading.copied_from(str(self.model_version(ref).source or ""))
        return None if source is None else source[1]
