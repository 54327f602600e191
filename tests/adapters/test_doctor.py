"""`factory doctor`: half-done registrations are found and repaired, on a database store and
through a tracking server, and the status store is brought in line with the registry."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from mlflow import MlflowClient
from mlflow.entities import Run

from factory.adapters.registry import rest_writer
from factory.adapters.registry.doctor import repair
from factory.adapters.registry.names import (
    CURRENT_TAG,
    PRODUCT_TAG,
    RETIRED_TAG,
    ROLLED_BACK_TAG,
    TRAIN_KEY_TAG,
)
from factory.adapters.registry.registry import Registry
from factory.adapters.registry.sql_writer import VersionPlan
from factory.adapters.state import merge_state, read_state
from factory.core.outcomes import ProductRecord
from factory.local import free_port, start_mlflow
from factory.settings import Settings


def plans(registry: Registry, run: Run, product: str, key: str) -> list[VersionPlan]:
    """What Registry plans for one winner: staging, and a production copy when promoting."""
    out: list[VersionPlan] = []
    for env, alias in (("staging", "candidate"), ("production", "champion")):
        out.append(
            VersionPlan(
                name=registry.name(env, product),
                source=f"{run.info.artifact_uri}/models/{product}",
                run_id=run.info.run_id,
                tags=version_tags(product, key),
                alias=alias,
                current_tag=CURRENT_TAG,
                current={"config": f"cfg-{key}", "data_fingerprint": f"fp-{key}"},
                model_tags={
                    PRODUCT_TAG: product,
                    "factory.family": "f",
                    "factory.environment": env,
                },
                copy_of=out[0] if out else None,
                train_key=key,
            )
        )
    return out


def version_tags(product: str, key: str) -> dict[str, str]:
    return {
        PRODUCT_TAG: product,
        "factory.family": "f",
        TRAIN_KEY_TAG: key,
        "factory.config": f"cfg-{key}",
        "factory.data_fingerprint": f"fp-{key}",
    }


@pytest.fixture(scope="module", params=["database", "server"])
def tracking(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """A registry on a SQLite file, or behind a real `mlflow server` (client calls)."""
    root = tmp_path_factory.mktemp(request.param)
    if request.param == "database":
        yield f"sqlite:///{root / 'mlflow.db'}"
        return
    server = start_mlflow(root, free_port(), f"sqlite:///{root / 'mlflow.db'}", str(root / "art"))
    try:
        yield server.url
    finally:
        server.stop()


def test_half_done_registrations_are_found_fixed_and_then_healthy(
    tracking: str, tmp_path: Path
) -> None:
    settings = Settings(home=tmp_path, mlflow_tracking_uri=tracking, model_prefix=tmp_path.name)
    registry = Registry(settings)
    client: MlflowClient = registry.client
    run = client.create_run(registry.experiment_id)
    client.set_terminated(run.info.run_id)
    for product in ("a", "b", "c"):
        rest_writer.write_versions(client, plans(registry, run, product, f"{product}1"))
    art, run_id = run.info.artifact_uri, run.info.run_id
    staging = {p: registry.name("staging", p) for p in "abc"}
    production = {p: registry.name("production", p) for p in "abc"}
    # a: a retried registration made a second version of the same key
    client.create_model_version(staging["a"], f"{art}/models/a", run_id, version_tags("a", "a1"))
    # b: a new winner's version was made, then the outage: no alias, tag or production copy
    client.create_model_version(staging["b"], f"{art}/models/b", run_id, version_tags("b", "b2"))
    # c: production lost its alias and current tag
    client.delete_registered_model_alias(production["c"], "champion")
    client.delete_registered_model_tag(production["c"], CURRENT_TAG)
    stuck = client.create_run(registry.experiment_id).info.run_id  # a crashed shard's run
    merge_state(settings.state_dir, [ProductRecord("a", "f", "kept", "x", staging_version="9")])

    found = repair(registry, settings.state_dir, promote=True, apply=False)
    problems = {(f.product_id, f.action) for f in found.fixes}
    assert problems >= {
        ("a", "delete-version"),
        ("b", "set-alias"),
        ("b", "set-current"),
        ("b", "copy-to-production"),
        ("c", "set-alias"),
        ("c", "set-current"),
    }
    assert found.runs_closed == [stuck]
    assert client.get_run(stuck).info.status == "RUNNING"  # a dry run changes nothing

    fixed = repair(registry, settings.state_dir, promote=True)
    assert not fixed.healthy
    assert [int(v.version) for v in client.search_model_versions(f"name = '{staging['a']}'")] == [1]
    assert int(client.get_model_version_by_alias(staging["b"], "candidate").version) == 2
    copy = client.get_model_version_by_alias(production["b"], "champion")
    assert copy.source == f"models:/{staging['b']}/2" and copy.tags[TRAIN_KEY_TAG] == "b2"
    current = json.loads(client.get_registered_model(production["b"]).tags[CURRENT_TAG])
    assert current == {
        "version": str(copy.version),
        "config": "cfg-b2",
        "data_fingerprint": "fp-b2",
    }
    assert int(client.get_model_version_by_alias(production["c"], "champion").version) == 1
    assert client.get_run(stuck).info.status == "KILLED"
    rows = read_state(settings.state_dir).set_index("product_id")
    assert rows.loc["a", "staging_version"] == "1" and rows.loc["a", "status"] == "kept"
    assert rows.loc["b", "staging_version"] == "2" and rows.loc["b", "train_key"] == "b2"
    assert rows.loc["c", "production_version"] == "1"

    assert repair(registry, settings.state_dir, promote=True).healthy


def test_rollbacks_stay_rolled_back_and_retired_products_stay_out(
    tracking: str, tmp_path: Path
) -> None:
    settings = Settings(home=tmp_path, mlflow_tracking_uri=tracking, model_prefix=tmp_path.name)
    registry = Registry(settings)
    client: MlflowClient = registry.client
    run = client.create_run(registry.experiment_id)
    client.set_terminated(run.info.run_id)
    for product, keys in (("r", "12"), ("m", "123"), ("x", "12")):
        for key in keys:
            rest_writer.write_versions(client, plans(registry, run, product, f"{product}{key}"))
    production = {p: registry.name("production", p) for p in "rmx"}
    # r: production rolled v2 back to v1 (staging's candidate is still the rolled-back model)
    client.set_registered_model_alias(production["r"], "champion", "1")
    current = {"version": "1", "config": "cfg-r1", "data_fingerprint": "fp-r1"}
    client.set_registered_model_tag(production["r"], CURRENT_TAG, json.dumps(current))
    client.set_model_version_tag(production["r"], "2", ROLLED_BACK_TAG, '{"reason": "bad"}')
    # m: v3 was rolled back, then production lost its alias
    client.set_model_version_tag(production["m"], "3", ROLLED_BACK_TAG, '{"reason": "bad"}')
    client.delete_registered_model_alias(production["m"], "champion")
    # x: retired, both models without aliases or current tags
    for env, alias in (("staging", "candidate"), ("production", "champion")):
        name = registry.name(env, "x")
        client.delete_registered_model_alias(name, alias)
        client.delete_registered_model_tag(name, CURRENT_TAG)
        client.set_registered_model_tag(name, RETIRED_TAG, '{"reason": "delisted"}')

    for promote in (False, True):
        found = repair(registry, settings.state_dir, promote=promote, apply=False)
        fixed = {(f.product_id, f.action, f.version) for f in found.fixes if f.model}
        assert fixed == {("m", "set-alias", 2), ("m", "set-current", 2)}, promote
        assert {f.product_id for f in found.fixes if f.action == "set-status"} == {"r", "m"}

    repair(registry, settings.state_dir, promote=True)
    assert int(client.get_model_version_by_alias(production["r"], "champion").version) == 1
    assert int(client.get_model_version_by_alias(production["m"], "champion").version) == 2
    kept = [len(client.search_model_versions(f"name = '{production[p]}'")) for p in "rmx"]
    assert kept == [2, 3, 2]  # no copy of a rolled-back model, nothing deleted
    for env in ("staging", "production"):
        retired = client.get_registered_model(registry.name(env, "x"))
        assert not retired.aliases and CURRENT_TAG not in retired.tags
    rows = read_state(settings.state_dir).set_index("product_id")
    assert rows.loc["r", "production_version"] == "1" and "x" not in rows.index
    assert repair(registry, settings.state_dir, promote=False).healthy
