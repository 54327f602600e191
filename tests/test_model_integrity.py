"""Signed models end to end (real training, real MLflow store, the CLI in-process): every
version is signed; a tampered, re-signed or unsigned model is refused by forecasts, by
`factory verify` and by promotion, each with one line naming product and version."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion

from factory.adapters.data import write_panel
from factory.adapters.registry.names import (
    DIGEST_TAG,
    PRODUCT_TAG,
    SIGNATURE_TAG,
    SIGNING_KEY_TAG,
)
from factory.adapters.signing import Signer, message
from factory.core.synthetic import PanelSpec, generate_panel
from factory.settings import get_settings
from tests.support.fleets import REPO
from tests.support.homes import home_in
from tests.test_cli import invoke

pytestmark = pytest.mark.usefixtures("prefect_harness", "local_ray")


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """8 products trained on the repository's fleet.yaml (staging only: promotion approve)."""
    root = tmp_path_factory.mktemp("signed")
    with home_in(root):
        write_panel(generate_panel(PanelSpec(n_products=8, seed=4)).frame, data_url())
        assert invoke("train", "--fleet", str(REPO / "fleet.yaml")).exit_code == 0
        yield root


def data_url() -> str:
    return get_settings().resolved_data_url


def client() -> MlflowClient:
    return MlflowClient(get_settings().tracking_uri, get_settings().tracking_uri)


def candidates() -> list[ModelVersion]:
    c = client()
    out = []
    for rm in c.search_registered_models("name LIKE 'factory.staging.%'", max_results=100):
        out.append(c.get_model_version(rm.name, rm.aliases["candidate"]))
    return sorted(out, key=lambda mv: mv.name)


def model_folder(mv: ModelVersion) -> Path:
    uri = client().get_model_version_download_uri(mv.name, mv.version)
    return Path(uri.removeprefix("file://"))


def model_bin(mv: ModelVersion) -> Path:
    return model_folder(mv) / "artifacts" / "model" / "model.bin"


def test_every_version_is_signed_and_verifies(home: Path) -> None:
    with home_in(home):
        versions = candidates()
        assert len(versions) >= 6
        key_ids = {mv.tags[SIGNING_KEY_TAG] for mv in versions}
        assert len(key_ids) == 1 and all(
            mv.tags[DIGEST_TAG].startswith("sha256:") for mv in versions
        )
        result = invoke("verify", "--all")
        assert result.exit_code == 0, result.output
        assert result.stdout.count("verified") == len(versions)


def test_a_changed_byte_is_refused_by_forecast_verify_and_promotion(home: Path) -> None:
    with home_in(home):
        victim, *_ = candidates()
        product = victim.tags["factory.product_id"]
        path = model_bin(victim)
        original = path.read_bytes()
        path.write_bytes(bytes([original[0] ^ 1]) + original[1:])
        try:
            forecast = invoke("forecast")
            assert forecast.exit_code == 0, forecast.output  # the others are forecast
            line = f"product '{product}' version {victim.version}"
            assert line in forecast.output and "changed since signing" in forecast.output
            assert f"for {len(candidates()) - 1} products" in forecast.output
            verify = invoke("verify", product)
            assert verify.exit_code == 1 and line in verify.output
            assert verify.output.count("error:") == 1
            before = client().search_registered_models("name LIKE 'factory.production.%'")
            promote = invoke("promote", "--fleet", str(REPO / "fleet.yaml"), "--approve")
            assert promote.exit_code == 2 and "production unchanged" in promote.output
            assert line in promote.output and "Traceback" not in promote.output
            after = client().search_registered_models("name LIKE 'factory.production.%'")
            assert len(after) == len(before) == 0
        finally:
            path.write_bytes(original)
        assert invoke("verify", product).exit_code == 0


def test_unknown_key_and_unsigned_versions_are_refused(home: Path) -> None:
    with home_in(home):
        _, first, second, *_ = candidates()
        c = client()
        stranger = Ed25519PrivateKey.generate()
        product = first.tags["factory.product_id"]
        forged = base64.b64encode(stranger.sign(message(product, first.tags[DIGEST_TAG])))
        originals = {k: first.tags[k] for k in (SIGNATURE_TAG, SIGNING_KEY_TAG)}
        c.set_model_version_tag(first.name, first.version, SIGNATURE_TAG, forged.decode())
        c.set_model_version_tag(
            first.name, first.version, SIGNING_KEY_TAG, Signer(stranger, []).key_id
        )
        c.delete_model_version_tag(second.name, second.version, SIGNATURE_TAG)
        try:
            result = invoke("verify", "--all", "--json")
            assert result.exit_code == 1
            checks = json.loads(result.stdout)
            refused = {c["model"]: c["error"] for c in checks if c["error"]}
            assert set(refused) == {first.name, second.name}
            assert "unknown key" in refused[first.name]
            assert "unsigned" in refused[second.name]
        finally:
            for key, value in originals.items():
                c.set_model_version_tag(first.name, first.version, key, value)
            c.set_model_version_tag(
                second.name, second.version, SIGNATURE_TAG, second.tags[SIGNATURE_TAG]
            )
        assert invoke("verify", "--all").exit_code == 0


def test_missing_model_files_are_refused(home: Path) -> None:
    with home_in(home):
        *_, victim = candidates()
        folder = model_folder(victim)
        moved = folder.with_name(f"{folder.name}.moved")
        folder.rename(moved)
        try:
            result = invoke("verify", victim.tags[PRODUCT_TAG])
            assert result.exit_code == 1 and result.output.count("error:") == 1
            missing = f"version {victim.version} ({victim.name}): model files missing"
            assert missing in result.output
        finally:
            moved.rename(folder)


def test_promoted_copies_carry_the_signature_and_verify(home: Path) -> None:
    """Last in this module: it fills production."""
    with home_in(home):
        staged = {mv.tags[PRODUCT_TAG]: mv for mv in candidates()}
        promote = invoke("promote", "--fleet", str(REPO / "fleet.yaml"), "--approve")
        assert promote.exit_code == 0, promote.output
        c = client()
        champions = [
            c.get_model_version(rm.name, rm.aliases["champion"])
            for rm in c.search_registered_models("name LIKE 'factory.production.%'")
        ]
        assert champions
        for mv in champions:
            twin = staged[mv.tags[PRODUCT_TAG]]
            for tag in (DIGEST_TAG, SIGNATURE_TAG, SIGNING_KEY_TAG):
                assert mv.tags[tag] == twin.tags[tag]
        result = invoke("verify", "--all")
        assert result.exit_code == 0, result.output
        assert result.stdout.count("verified") == len(staged) + len(champions)
