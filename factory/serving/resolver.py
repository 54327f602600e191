"""Which versions answer for a product right now: champion (or staging candidate), canary and
shadow challenger, read in bulk from the registry's aliases and tags and kept for a short TTL."""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections.abc import Collection
from dataclasses import dataclass

from factory.adapters.registry import reading
from factory.adapters.registry.names import (
    CANDIDATE_ALIAS,
    CHAMPION_ALIAS,
    PRODUCT_TAG,
    PRODUCTION,
    RETIRED_TAG,
    STAGING,
    NoModelError,
)
from factory.adapters.registry.reading import ModelState
from factory.adapters.registry.registry import Registry
from factory.adapters.registry.verified import VersionFiles
from factory.core.canary import CANARY_ALIAS, CANARY_TAG, CanarySpec, takes_canary

log = logging.getLogger(__name__)


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
    """Product -> Served, for every product at once (`load()`: a few bulk registry queries)
    and again for the products a change names (`load(products)`: the audit log's change feed
    names every product a promotion, rollback, canary or retirement touched). A product read
    more than `ttl_s` ago, or never, is read on its own when asked for. While the registry is
    unreachable, products keep their last known versions. Thread-safe."""

    def __init__(self, registry: Registry, ttl_s: float = 60.0) -> None:
        self.registry = registry
        self.ttl_s = ttl_s
        self._prefix = f"{registry.prefix}."
        self._cache: dict[str, tuple[float, Served | str]] = {}  # str: why it is refused
        self._files: dict[str, VersionFiles] = {}  # VersionRef.key -> files of a served version
        self._lock = threading.Lock()

    def fresh(self, product_id: str) -> Served | None:
        """The answer read less than `ttl_s` ago (no registry read, no lock); None when there
        is none. Raises NoModelError for a product refused (unknown, retired) that recently."""
        hit = self._cache.get(product_id)
        if hit is None or hit[0] <= time.monotonic():
            return None
        if isinstance(hit[1], str):
            raise NoModelError(hit[1])
        return hit[1]

    def invalidate(self, products: Collection[str]) -> None:
        """Read these products again on their next request (their versions changed)."""
        with self._lock:
            for pid in products:
                if pid in self._cache:
                    self._cache[pid] = (0.0, self._cache[pid][1])  # kept as last known

    def resolve(self, product_id: str) -> Served:
        """What serves `product_id` now. Raises NoModelError for unknown or retired ones."""
        served = self.fresh(product_id)
        if served is not None:
            return served
        last = self._cache.get(product_id)
        try:
            self.load([product_id])
        except Exception as exc:  # the registry is unreachable: keep serving what was known
            if last is None or isinstance(last[1], str):
                raise RegistryUnavailable(f"the registry did not answer: {exc}") from exc
            log.warning(
                "serving %s's last known versions: the registry failed: %s", product_id, exc
            )
            return last[1]
        answer = self._cache[product_id][1]
        if isinstance(answer, str):
            raise NoModelError(answer)
        return answer

    def load(self, products: Collection[str] | None = None) -> int:
        """Read what serves these products (every registered product by default) in a few
        bulk queries; returns how many products are served."""
        names = None
        if products is not None:
            names = [self.registry.name(e, p) for p in products for e in (PRODUCTION, STAGING)]
        states = reading.model_states(self.registry.client, self._prefix, KEYS, names)
        found: dict[str, dict[str, tuple[str, ModelState]]] = {}
        for name, state in states.items():
            pid = state.tags.get(PRODUCT_TAG)
            env = next((e for e in ENVIRONMENTS if pid and self.registry.name(e, pid) == name), "")
            if pid and env:
                found.setdefault(pid, {})[env] = (name, state)
        files = self._version_files(found)
        now = time.monotonic()
        answers: dict[str, tuple[float, Served | str]] = {}
        for pid in found if products is None else products:
            try:
                answers[pid] = (now + self.ttl_s, served(pid, found.get(pid, {}), files))
            except NoModelError as exc:
                answers[pid] = (now + self.ttl_s, str(exc))
        with self._lock:
            if products is None:
                self._cache, self._files = answers, files
            else:
                self._cache.update(answers)
                self._files.update(files)
        return sum(not isinstance(a, str) for _, a in answers.values())

    def files(self, ref: VersionRef) -> VersionFiles:
        """Where a served version's files are and its signature tags."""
        found = self._files.get(ref.key)
        if found is None:
            files = reading.version_files(
                self.registry.client, self._prefix, {ref.name: ref.version}
            )
            if ref.name not in files:
                raise NoModelError(f"{ref.name} version {ref.version} is not in the registry")
            found = self._files[ref.key] = files[ref.name]
        return found

    def _version_files(
        self, found: dict[str, dict[str, tuple[str, ModelState]]]
    ) -> dict[str, VersionFiles]:
        """VersionRef.key -> files, for every version an alias points at: those not known yet
        read in bulk (a version's files never change), one version per name per read."""
        rounds: list[dict[str, str]] = [{}, {}]
        needed = []
        for models in found.values():
            for name, state in models.values():
                for alias in (CHAMPION_ALIAS, CANDIDATE_ALIAS, CANARY_ALIAS):
                    version = state.aliases.get(alias)
                    if version is None:
                        continue
                    needed.append(f"{name}/{version}")
                    if needed[-1] not in self._files:
                        rounds[alias == CANARY_ALIAS][name] = version
        out = {key: self._files[key] for key in needed if key in self._files}
        for wanted in filter(None, rounds):
            for name, files in reading.version_files(
                self.registry.client, self._prefix, wanted
            ).items():
                out[f"{name}/{files.version}"] = files
        return out


KEYS = (PRODUCT_TAG, RETIRED_TAG, CANARY_TAG)
ENVIRONMENTS = (PRODUCTION, STAGING)


def served(
    product_id: str, models: dict[str, tuple[str, ModelState]], files: dict[str, VersionFiles]
) -> Served:
    """What answers for a product, from its production and staging models' aliases and tags
    (`models`: environment -> (name, state)) and the files of the versions they point at.
    Raises NoModelError for an unknown or retired product."""
    prod_name, prod = models.get(PRODUCTION, ("", None))
    stag_name, stag = models.get(STAGING, ("", None))
    if prod is not None and RETIRED_TAG in prod.tags:
        why = json.loads(prod.tags[RETIRED_TAG]).get("reason", "retired")
        raise NoModelError(f"product {product_id!r} is retired ({why})")
    candidate = None if stag is None else stag.aliases.get(CANDIDATE_ALIAS)
    champion = None if prod is None else prod.aliases.get(CHAMPION_ALIAS)
    if champion is None:
        if candidate is None:
            raise NoModelError(f"product {product_id!r} has no registered model")
        return Served(product_id, VersionRef(stag_name, candidate), CANDIDATE_ALIAS)
    assert prod is not None
    canary, share = None, 0.0
    canary_version = prod.aliases.get(CANARY_ALIAS)
    if canary_version is not None and CANARY_TAG in prod.tags:
        spec = CanarySpec.model_validate_json(prod.tags[CANARY_TAG])
        canary, share = VersionRef(prod_name, canary_version), spec.share
    serving = VersionRef(prod_name, champion)

    def source(ref: VersionRef | None) -> str | None:
        """The staging version a production version was copied from."""
        copied = None if ref is None or ref.key not in files else files[ref.key].source
        found = reading.copied_from(copied or "")
        return None if found is None else found[1]

    shadow = None
    if candidate is not None and candidate not in (source(serving), source(canary)):
        shadow = VersionRef(stag_name, candidate)
    return Served(product_id, serving, CHAMPION_ALIAS, canary, share, shadow)
