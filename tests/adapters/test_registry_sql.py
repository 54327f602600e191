"""The one-transaction registry write reads back through MlflowClient exactly like its calls."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from functools import partial
from pathlib import Path

import pytest
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from factory.adapters.registry import reading, rest_writer
from factory.adapters.registry.names import PRODUCTION, STAGING, TRAIN_KEY_TAG
from factory.adapters.registry.registry import Registry
from factory.adapters.registry.sql_writer import VersionPlan, write_versions
from factory.settings import Settings
from tests.support.postgres import temporary_database

PG = "root@127.0.0.1:5432"


def plans(product: str, run_id: str, source: str, key: str = "") -> list[VersionPlan]:
    """A staging version and its production copy, as Registry plans them."""
    staging = VersionPlan(
        train_key=key,
        name=f"t.staging.{product}",
        source=source,
        run_id=run_id,
        tags={
            "factory.product_id": product,
            "factory.data_fingerprint": f"fp-{run_id}",
            **({TRAIN_KEY_TAG: key} if key else {}),
        },
        alias="candidate",
        current_tag="factory.current",
        current={"config": "{}", "data_fingerprint": f"fp-{run_id}"},
        model_tags={"factory.product_id": product, "factory.environment": "staging"},
        description=f"Demand forecaster for {product} (staging).",
    )
    production = VersionPlan(
        name=f"t.production.{product}",
        source=source,
        run_id=run_id,
        tags=staging.tags,
        alias="champion",
        current_tag="factory.current",
        current=staging.current,
        model_tags={"factory.product_id": product, "factory.environment": "production"},
        copy_of=staging,
        train_key=key,
    )
    return [staging, production]


@pytest.fixture(params=["sqlite", "postgresql"])
def client(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[MlflowClient]:
    """A fresh registry: a SQLite file, or a PostgreSQL database of its own (dropped after)."""
    if request.param == "sqlite":
        uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
        yield MlflowClient(uri, uri)
        return
    with temporary_database("factory_registry") as name:
        uri = f"postgresql+psycopg2://{PG}/{name}"
        client = MlflowClient(uri, uri)
        yield client
        client._get_registry_client().store.engine.dispose()


def test_versions_aliases_tags_and_copies_read_back(client: MlflowClient, tmp_path: Path) -> None:
    store = client._get_registry_client().store
    src = (tmp_path / "run1" / "models" / "a").as_uri()
    created = write_versions(store, plans("a", "run1", src) + plans("b", "run1", src + "b"))
    assert created == {"t.staging.a": 1, "t.production.a": 1, "t.staging.b": 1, "t.production.b": 1}

    staged = client.get_model_version_by_alias("t.staging.a", "candidate")
    assert (str(staged.version), staged.source, staged.run_id) == ("1", src, "run1")
    assert staged.tags["factory.data_fingerprint"] == "fp-run1"
    assert staged.status == "READY"
    copy = client.get_model_version_by_alias("t.production.a", "champion")
    assert copy.source == "models:/t.staging.a/1"
    assert client.get_model_version_download_uri("t.production.a", "1") == src
    model = client.get_registered_model("t.production.a")
    assert model.tags["factory.environment"] == "production"
    assert json.loads(model.tags["factory.current"])["version"] == "1"
    assert model.description == ""
    assert client.get_registered_model("t.staging.b").description.endswith("(staging).")


def test_a_second_write_adds_versions_and_moves_aliases(client: MlflowClient) -> None:
    store = client._get_registry_client().store
    write_versions(store, plans("a", "run1", "file:///x/1"))
    # a version made by the ordinary client in between is counted
    client.create_model_version("t.staging.a", "file:///x/manual", "manual")
    created = write_versions(store, plans("a", "run2", "file:///x/2"))
    assert created == {"t.staging.a": 3, "t.production.a": 2}
    assert client.get_model_version_by_alias("t.staging.a", "candidate").run_id == "run2"
    assert client.get_model_version_by_alias("t.production.a", "champion").source == (
        "models:/t.staging.a/3"
    )
    model = client.get_registered_model("t.staging.a")
    assert json.loads(model.tags["factory.current"]) == {
        "version": "3",
        "config": "{}",
        "data_fingerprint": "fp-run2",
    }
    assert model.tags["factory.product_id"] == "a"  # creation tags kept
    assert len(client.search_model_versions("name = 't.staging.a'")) == 3


def test_an_invalid_plan_writes_nothing(client: MlflowClient) -> None:
    store = client._get_registry_client().store
    good, bad = plans("a", "run1", "file:///x/1")
    bad = VersionPlan(**{**bad.__dict__, "alias": "v1"})  # reserved alias form
    with pytest.raises(MlflowException):
        write_versions(store, [good, bad])
    assert client.search_registered_models() == []


def test_concurrent_writers_of_one_model_get_distinct_versions(client: MlflowClient) -> None:
    store = client._get_registry_client().store
    write_versions(store, plans("a", "run0", "file:///x/0"))
    with ThreadPoolExecutor(4) as pool:
        runs = [f"run{i}" for i in range(1, 9)]
        created = list(
            pool.map(lambda r: write_versions(store, plans("a", r, f"file:///{r}")), runs)
        )
    assert sorted(c["t.staging.a"] for c in created) == list(range(2, 10))
    versions = client.search_model_versions("name = 't.production.a'")
    assert sorted(int(v.version) for v in versions) == list(range(1, 10))
    for v in versions:  # every production copy points at the staging version of its own run
        source = client.get_model_version("t.staging.a", v.source.rsplit("/", 1)[1])
        assert source.run_id == v.run_id


def writer(client: MlflowClient, path: str) -> Callable[[list[VersionPlan]], dict[str, int]]:
    """The one-transaction writer, or the call-by-call one a tracking server uses."""
    if path == "database":
        return partial(write_versions, client._get_registry_client().store)
    return partial(rest_writer.write_versions, client)


@pytest.mark.parametrize("path", ["database", "client calls"])
def test_a_training_key_is_registered_once_and_a_rerun_completes_it(
    client: MlflowClient, path: str
) -> None:
    write = writer(client, path)
    assert write(plans("a", "run1", "file:///x/1", key="k1")) == {
        "t.staging.a": 1,
        "t.production.a": 1,
    }
    # an outage after the version was made: its alias and current tag never got written
    client.delete_registered_model_alias("t.production.a", "champion")
    client.delete_registered_model_tag("t.production.a", "factory.current")
    client.set_registered_model_alias("t.staging.a", "candidate", "1")
    again = write(plans("a", "run2", "file:///x/2", key="k1"))  # the retried shard
    assert again == {"t.staging.a": 1, "t.production.a": 1}
    assert len(client.search_model_versions("name = 't.staging.a'")) == 1
    assert str(client.get_model_version_by_alias("t.production.a", "champion").version) == "1"
    current = client.get_registered_model("t.production.a").tags["factory.current"]
    assert json.loads(current)["version"] == "1"
    # new data, a new key: a new version
    assert write(plans("a", "run3", "file:///x/3", key="k2"))["t.staging.a"] == 2


def test_concurrent_writers_of_one_key_make_one_version(client: MlflowClient) -> None:
    store = client._get_registry_client().store
    write_versions(store, plans("a", "run0", "file:///x/0", key="k0"))  # the model exists
    with ThreadPoolExecutor(4) as pool:
        runs = [f"run{i}" for i in range(1, 9)]
        created = list(
            pool.map(lambda r: write_versions(store, plans("a", r, f"file:///{r}", "k1")), runs)
        )
    assert {c["t.staging.a"] for c in created} == {2}
    assert len(client.search_model_versions("name = 't.production.a'")) == 2


@pytest.mark.parametrize("path", ["database", "client calls"])
def test_champions_are_read_for_all_or_some_products(
    path: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    registry = Registry(Settings(home=tmp_path, model_prefix="factory"))
    store = registry.client._get_registry_client().store
    for pid in ("a", "b", "c_1"):
        staging, production = plans(pid, "run1", f"file:///{pid}")
        staging = replace(staging, name=registry.name(STAGING, pid))
        production = replace(production, name=registry.name(PRODUCTION, pid), copy_of=staging)
        # b has no production model yet: its champion is its staging version
        write_versions(store, [staging] if pid == "b" else [staging, production])
    write_versions(store, [replace(plans("a", "run2", "file:///a2")[0], name="other.staging.a")])
    if path == "client calls":  # what a tracking server gets: searches and per-model reads
        monkeypatch.setattr(reading, "sql_store", lambda client: None)

    every = registry.champions()
    assert {p: (c.model_name, c.version) for p, c in every.items()} == {
        "a": ("factory.production.a", "1"),
        "b": ("factory.staging.b", "1"),
        "c_1": ("factory.production.c_1", "1"),
    }
    assert every["a"].data_fingerprint == "fp-run1"
    assert registry.champions(["b", "c_1", "unknown"]) == {p: every[p] for p in ("b", "c_1")}
