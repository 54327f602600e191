"""Which versions answer for a product: aliases read with a TTL, retired and unknown products
refused, the last known answer kept while the registry fails (a real local MLflow store)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from factory.adapters.registry import reading
from factory.adapters.registry.names import NoModelError
from factory.adapters.registry.registry import Registry
from factory.serving.resolver import RegistryUnavailable, Resolver, VersionRef
from factory.settings import get_settings


def version(client: MlflowClient, env: str, pid: str, source: str = "file:///nowhere") -> str:
    name = f"factory.{env}.{pid}"
    if not client.search_registered_models(f"name = '{name}'"):
        client.create_registered_model(name, tags={"factory.product_id": pid})
    return str(client.create_model_version(name, source).version)


@pytest.fixture
def client(factory_home: Path) -> MlflowClient:
    uri = get_settings().tracking_uri
    return MlflowClient(uri, registry_uri=uri)


def test_champion_candidate_shadow_and_ttl(client: MlflowClient) -> None:
    staged = version(client, "staging", "p")
    client.set_registered_model_alias("factory.staging.p", "candidate", staged)
    resolver = Resolver(Registry(get_settings()), ttl_s=0.3)
    served = resolver.resolve("p")  # nothing in production: the staging candidate answers
    assert (served.serving, served.served_as) == (VersionRef("factory.staging.p", "1"), "candidate")
    prod = version(client, "production", "p", source="models:/factory.staging.p/1")
    client.set_registered_model_alias("factory.production.p", "champion", prod)
    assert resolver.resolve("p").served_as == "candidate"  # cached for ttl_s...
    time.sleep(0.4)
    served = resolver.resolve("p")  # ...then read again
    assert served.serving == VersionRef("factory.production.p", "1") and served.shadow is None
    newer = version(client, "staging", "p")
    client.set_registered_model_alias("factory.staging.p", "candidate", newer)
    time.sleep(0.4)
    assert resolver.resolve("p").shadow == VersionRef("factory.staging.p", "2")


def test_unknown_and_retired_products_are_refused(client: MlflowClient) -> None:
    resolver = Resolver(Registry(get_settings()), ttl_s=0)
    with pytest.raises(NoModelError, match="'q' has no registered model"):
        resolver.resolve("q")
    prod = version(client, "production", "r")
    client.set_registered_model_alias("factory.production.r", "champion", prod)
    version(client, "staging", "r")
    client.set_registered_model_alias("factory.staging.r", "candidate", "1")
    reason = json.dumps({"reason": "left the fleet"})
    client.set_registered_model_tag("factory.production.r", "factory.retired", reason)
    with pytest.raises(NoModelError, match="'r' is retired \\(left the fleet\\)"):
        resolver.resolve("r")  # even with a staging candidate


def test_a_failing_registry_keeps_the_last_known_versions(
    client: MlflowClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    for pid in ("a", "b"):
        prod = version(client, "production", pid)
        client.set_registered_model_alias(f"factory.production.{pid}", "champion", prod)
    resolver = Resolver(Registry(get_settings()), ttl_s=0)
    known = resolver.resolve("a")

    def down(*args: object, **kwargs: object) -> None:
        raise MlflowException("connection refused", error_code="TEMPORARILY_UNAVAILABLE")

    monkeypatch.setattr(reading, "model_states", down)
    assert resolver.resolve("a") == known
    with pytest.raises(RegistryUnavailable, match="connection refused"):
        resolver.resolve("b")  # never read: nothing to fall back on


def test_one_bulk_read_serves_every_product_and_a_named_change_is_read_again(
    client: MlflowClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    for pid in ("a", "b", "c"):
        staged = version(client, "staging", pid)
        client.set_registered_model_alias(f"factory.staging.{pid}", "candidate", staged)
    for pid in ("a", "b"):
        prod = version(client, "production", pid, source=f"models:/factory.staging.{pid}/1")
        client.set_registered_model_alias(f"factory.production.{pid}", "champion", prod)
    client.set_registered_model_tag(
        "factory.production.b", "factory.retired", json.dumps({"reason": "gone"})
    )
    resolver = Resolver(Registry(get_settings()), ttl_s=300)
    assert resolver.load() == 2  # a (champion) and c (staging candidate); b is retired
    reads = []
    real = reading.model_states
    monkeypatch.setattr(reading, "model_states", lambda *a, **k: reads.append(a) or real(*a, **k))
    assert resolver.resolve("a") == resolver.fresh("a")
    assert (resolver.resolve("a").serving.name, resolver.resolve("a").shadow) == (
        "factory.production.a",
        None,  # its production version is a copy of the candidate
    )
    assert resolver.resolve("c").serving == VersionRef("factory.staging.c", "1")
    with pytest.raises(NoModelError, match="retired \\(gone\\)"):
        resolver.resolve("b")
    assert reads == []  # all answered from the bulk read
    files = resolver.files(VersionRef("factory.production.a", "1"))
    assert (files.version, files.source) == ("1", "models:/factory.staging.a/1")
    newer = version(client, "staging", "a")
    client.set_registered_model_alias("factory.staging.a", "candidate", newer)
    assert resolver.resolve("a").shadow is None  # not named by a change yet: still cached
    resolver.load({"a"})
    assert resolver.resolve("a").shadow == VersionRef("factory.staging.a", "2")
    assert len(reads) == 1
