"""deployments/serve.yaml is a valid Ray Serve config whose import path builds the app."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest
import yaml
from ray.serve.schema import ServeDeploySchema

from factory.serving.app import WITHHELD, replica_env
from factory.settings import get_settings

CONFIG = Path(__file__).parents[2] / "deployments" / "serve.yaml"


def test_the_cluster_config_builds_the_factory_app(factory_home: Path) -> None:
    config = ServeDeploySchema.model_validate(yaml.safe_load(CONFIG.read_text()))
    (app,) = config.applications
    module, attr = app.import_path.split(":")
    builder = getattr(importlib.import_module(module), attr)
    built = builder(app.args)
    deployment = built._bound_deployment
    assert deployment.name == "forecaster"
    assert deployment.num_replicas == app.args["replicas"]
    env, max_models, ttl_s, _ = deployment.init_args
    assert (max_models, ttl_s) == (app.args["max_models"], app.args["ttl_s"])
    assert env["FACTORY_HOME"] == str(factory_home)


def test_replicas_get_no_other_roles_secrets(
    factory_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in (*WITHHELD, "FACTORY_ANALYST_PASSWORD"):
        monkeypatch.setenv(name, "a-long-enough-secret")
    env = replica_env(get_settings())
    assert not set(WITHHELD) & set(env)
    assert env["FACTORY_ANALYST_PASSWORD"] == "a-long-enough-secret"  # it reads as the analyst
