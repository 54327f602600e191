"""Least privilege against a real MLflow auth server (`--app-name factory-auth`): the trainer
writes staging only, the promoter writes production, the analyst reads; every write the
analyst tries is refused; no password ends up in logs, tags, artifacts or files.

One server and one trained-and-promoted fleet (real Prefect harness, real local Ray) for the
whole module; each test looks at it from one side.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from mlflow.exceptions import MlflowException

from factory.adapters.data import write_panel
from factory.core.synthetic import PanelSpec, generate_panel
from factory.settings import get_settings
from flows.forecast_products import forecast_products_flow
from flows.promote_fleet import promote_fleet
from flows.train_fleet import train_fleet
from tests.support.auth_stack import AuthStack, auth_stack
from tests.support.fleets import AS_OF, write_fleet

pytestmark = pytest.mark.usefixtures("prefect_harness", "local_ray")

N = 6
PROD, STAGE = "factory.production", "factory.staging"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[AuthStack, Path]]:
    """Train (as the trainer) and promote (as the promoter) a small fleet through the server."""
    root = tmp_path_factory.mktemp("auth")
    home = root / "factory"
    home.mkdir()
    with pytest.MonkeyPatch.context() as mp, auth_stack(home) as auth:
        mp.setenv("FACTORY_HOME", str(home))
        mp.setenv("FACTORY_AS_OF", AS_OF)
        for var in ("FACTORY_DATA_URL", "RAY_ADDRESS", "MLFLOW_TRACKING_USERNAME"):
            mp.delenv(var, raising=False)
        mp.delenv("MLFLOW_TRACKING_PASSWORD", raising=False)
        for name, value in auth.env().items():
            mp.setenv(name, value)
        get_settings.cache_clear()
        panel = generate_panel(PanelSpec(n_products=N, seed=11))
        write_panel(panel.frame, get_settings().resolved_data_url)
        fleet = write_fleet(root / "fleet.yaml", shard_size=3)  # promotion: auto
        train_fleet(str(fleet))
        trained = _models(auth, mp)
        promote_fleet(str(fleet))
        forecast_products_flow()
        yield auth, trained
    get_settings.cache_clear()


def _models(auth: AuthStack, mp: pytest.MonkeyPatch) -> Path:
    """Registered model names right after training (as a file: the fixture yields a path)."""
    client = auth.client("analyst", mp)
    names = sorted(m.name for m in client.search_registered_models(max_results=1000))
    out = Path(os.environ["FACTORY_HOME"]) / "after-training.txt"
    out.write_text("\n".join(names))
    return out


def _denied(call: Callable[[], Any]) -> str:
    """The refusal of a write: MLflow's PERMISSION_DENIED (HTTP 403)."""
    with pytest.raises(MlflowException) as info:
        call()
    assert info.value.error_code == "PERMISSION_DENIED", info.value
    return str(info.value.error_code)


def test_training_writes_staging_only_even_with_automatic_promotion(stack: Any) -> None:
    _, trained = stack
    names = trained.read_text().split()
    assert len([n for n in names if n.startswith(STAGE)]) == N
    assert not [n for n in names if n.startswith(PROD)]


def test_the_promoter_writes_production(stack: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    auth, _ = stack
    client = auth.client("analyst", monkeypatch)
    production = client.search_registered_models(f"name LIKE '{PROD}.%'", max_results=100)
    assert len(production) == N
    for model in production:
        assert "champion" in model.aliases
        version = client.get_model_version(model.name, model.aliases["champion"])
        assert version.tags["factory.promoted_from"].startswith(STAGE)
    # and the promoter may move an alias and tag a production model directly
    promoter = auth.client("promoter", monkeypatch)
    model = production[0]
    promoter.set_registered_model_tag(model.name, "factory.note", "checked")
    promoter.set_registered_model_alias(model.name, "champion", model.aliases["champion"])


def test_the_trainer_cannot_create_or_change_production(
    stack: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    auth, _ = stack
    trainer = auth.client("trainer", monkeypatch)
    prod = trainer.search_registered_models(f"name LIKE '{PROD}.%'", max_results=1)[0]
    version = prod.aliases["champion"]
    staging = trainer.search_registered_models(f"name LIKE '{STAGE}.%'", max_results=1)[0]
    source = trainer.get_model_version(staging.name, staging.aliases["candidate"])
    _denied(lambda: trainer.create_registered_model(f"{PROD}.brand-new"))
    _denied(lambda: trainer.rename_registered_model(staging.name, f"{PROD}.renamed"))
    _denied(lambda: trainer.create_model_version(prod.name, source.source, source.run_id))
    _denied(lambda: trainer.set_registered_model_alias(prod.name, "champion", "1"))
    _denied(lambda: trainer.delete_registered_model_alias(prod.name, "champion"))
    _denied(lambda: trainer.set_registered_model_tag(prod.name, "factory.current", "{}"))
    _denied(lambda: trainer.set_model_version_tag(prod.name, version, "factory.gate", "x"))
    _denied(lambda: trainer.delete_model_version(prod.name, version))
    _denied(lambda: trainer.delete_registered_model(prod.name))
    # what training needs still works: a new staging model of its own
    trainer.create_registered_model(f"{STAGE}.made-by-trainer")
    trainer.delete_registered_model(f"{STAGE}.made-by-trainer")


def test_the_analyst_gets_403_on_every_write(stack: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    auth, _ = stack
    analyst = auth.client("analyst", monkeypatch)
    experiment = analyst.get_experiment_by_name(get_settings().experiment)
    assert experiment is not None
    run = analyst.search_runs([experiment.experiment_id], max_results=1)[0]
    run_id = run.info.run_id
    writes: dict[str, Callable[[], Any]] = {
        "create experiment": lambda: analyst.create_experiment("analyst-experiment"),
        "rename experiment": lambda: analyst.rename_experiment(experiment.experiment_id, "x"),
        "delete experiment": lambda: analyst.delete_experiment(experiment.experiment_id),
        "create run": lambda: analyst.create_run(experiment.experiment_id),
        "log metric": lambda: analyst.log_metric(run_id, "m", 1.0),
        "set run tag": lambda: analyst.set_tag(run_id, "k", "v"),
        "end run": lambda: analyst.set_terminated(run_id, "FAILED"),
        "delete run": lambda: analyst.delete_run(run_id),
    }
    for env in (STAGE, PROD):
        model = analyst.search_registered_models(f"name LIKE '{env}.%'", max_results=1)[0]
        alias = next(iter(model.aliases))
        version = model.aliases[alias]
        mv = analyst.get_model_version(model.name, version)
        writes |= {
            f"{env} create model": lambda e=env: analyst.create_registered_model(f"{e}.analyst"),
            f"{env} create version": lambda m=model, v=mv: analyst.create_model_version(
                m.name, v.source, v.run_id
            ),
            f"{env} set alias": lambda m=model, a=alias: analyst.set_registered_model_alias(
                m.name, a, "1"
            ),
            f"{env} delete alias": lambda m=model, a=alias: analyst.delete_registered_model_alias(
                m.name, a
            ),
            f"{env} model tag": lambda m=model: analyst.set_registered_model_tag(m.name, "k", "v"),
            f"{env} version tag": lambda m=model, v=version: analyst.set_model_version_tag(
                m.name, v, "k", "v"
            ),
            f"{env} describe": lambda m=model: analyst.update_registered_model(m.name, "x"),
            f"{env} rename": lambda m=model: analyst.rename_registered_model(m.name, "x.y"),
            f"{env} delete version": lambda m=model, v=version: analyst.delete_model_version(
                m.name, v
            ),
            f"{env} delete model": lambda m=model: analyst.delete_registered_model(m.name),
        }
    refused = {what: _denied(call) for what, call in writes.items()}
    assert len(refused) == len(writes)
    # artifacts go through the server's proxy: uploading into a run is refused too
    path = run.info.artifact_uri.split("mlflow-artifacts:/", 1)[-1].lstrip("/")
    put = httpx.put(
        f"{auth.server.url}/api/2.0/mlflow-artifacts/artifacts/{path}/planted.txt",
        content=b"x",
        auth=("factory-analyst", auth.passwords["analyst"]),
    )
    assert put.status_code == 403


def test_no_secret_in_logs_tags_artifacts_or_files(
    stack: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    auth, _ = stack
    analyst = auth.client("analyst", monkeypatch)
    texts: list[str] = []
    for rm in analyst.search_registered_models(max_results=1000):
        texts += [str(rm.tags), str(rm.description)]
        for mv in analyst.search_model_versions(f"name = '{rm.name}'"):
            texts += [str(mv.tags), str(mv.source), str(mv.description)]
    for exp in analyst.search_experiments():
        texts.append(str(exp.tags))
        for run in analyst.search_runs([exp.experiment_id], max_results=1000):
            texts += [str(run.data.tags), str(run.data.params)]
    texts.append(_prefect_logs())
    home = Path(os.environ["FACTORY_HOME"])
    blobs = [p.read_bytes() for p in home.rglob("*") if p.is_file()]  # artifacts, logs, state
    assert len(blobs) > 20
    for secret in auth.secrets:
        assert not any(secret in t for t in texts)
        assert not any(secret.encode() in b for b in blobs)


def _prefect_logs() -> str:
    """Every log line the Prefect API holds (the runs above included)."""
    from prefect.client.orchestration import get_client

    async def read() -> str:
        lines: list[str] = []
        async with get_client() as client:
            while page := await client.read_logs(limit=200, offset=len(lines)):
                lines += [log.message for log in page]
        assert lines, "no run logs were sent to the API"
        return "\n".join(lines)

    return asyncio.run(read())


def test_tampered_or_foreign_models_are_refused_through_the_server(
    stack: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from factory.adapters.registry.lifecycle import verify_all
    from factory.adapters.registry.registry import Registry
    from factory.adapters.signing import Signer
    from factory.core.promotion import PromotionError

    auth, _ = stack
    promoter = auth.client("promoter", monkeypatch)
    first, second = promoter.search_registered_models(f"name LIKE '{PROD}.%'", max_results=2)
    tampered = promoter.get_model_version(first.name, first.aliases["champion"])
    foreign = promoter.get_model_version(second.name, second.aliases["champion"])
    # a byte changed in the stored artifact behind the server's proxy
    staged = promoter.get_model_version_download_uri(tampered.name, tampered.version)
    run_path = staged.split("mlflow-artifacts:/", 1)[-1].lstrip("/")
    binary = auth.artifacts / run_path / "artifacts" / "model" / "model.bin"
    data = binary.read_bytes()
    binary.write_bytes(bytes([data[0] ^ 1]) + data[1:])
    # a model re-signed by a key nobody trusts
    stranger = Signer(Ed25519PrivateKey.generate(), [])
    resigned = stranger.sign(
        foreign.tags["factory.product_id"], foreign.tags["factory.model_digest"]
    )
    promoter.set_model_version_tag(
        foreign.name, foreign.version, "factory.model_signature", resigned.signature
    )
    promoter.set_model_version_tag(
        foreign.name, foreign.version, "factory.signing_key_id", resigned.key_id
    )
    foreign = promoter.get_model_version(foreign.name, foreign.version)  # its tags as now
    report = forecast_products_flow()  # as the analyst
    missing = report.missing
    assert "changed since signing" in missing[tampered.tags["factory.product_id"]]
    assert f"unknown key {resigned.key_id}" in missing[foreign.tags["factory.product_id"]]
    assert report.products == N - 2
    registry = Registry(get_settings())
    with pytest.raises(PromotionError) as refused:
        verify_all(registry, [tampered, foreign])  # what promotion checks before writing
    assert f"version {tampered.version} ({tampered.name})" in str(refused.value)
    assert f"version {foreign.version} ({foreign.name})" in str(refused.value)
