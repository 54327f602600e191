"""The signing key and model verification: each refusal is one line naming the model."""

from __future__ import annotations

import shutil
import stat
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from factory.adapters.registry.names import DIGEST_TAG, SIGNATURE_TAG, SIGNING_KEY_TAG
from factory.adapters.signing import ModelIntegrityError, Signer, _own_key, _signer, signer
from factory.core.errors import UserError
from factory.settings import Settings, SettingsError

LABEL = "product 'p1' version 3 (factory.production.p1)"


@pytest.fixture(autouse=True)
def fresh_keys() -> None:
    _signer.cache_clear()


def model(folder: Path) -> Path:
    (folder / "artifacts").mkdir(parents=True)
    (folder / "MLmodel").write_text("flavors: {}\n")
    (folder / "artifacts" / "model.bin").write_bytes(b"\x00weights\x01" * 50)
    return folder


def tags_for(s: Signer, folder: Path, product: str = "p1") -> dict[str, str]:
    from factory.adapters.registry.digest import folder_digest

    signed = s.sign(product, folder_digest(folder))
    return {
        DIGEST_TAG: signed.digest,
        SIGNATURE_TAG: signed.signature,
        SIGNING_KEY_TAG: signed.key_id,
    }


def pem(key: Ed25519PrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


def public_file(key: Ed25519PrivateKey, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return path


def test_key_is_made_on_first_use_private_to_the_owner_and_reused(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path / "home")
    first = signer(settings)
    key = tmp_path / "home" / "keys" / "signing.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert (tmp_path / "home" / "keys" / "signing.pub").exists()
    _signer.cache_clear()
    assert signer(settings).key_id == first.key_id
    assert first.key_id.startswith("ed25519:") and len(first.key_id) == 8 + 16


def test_concurrent_first_uses_agree_on_one_key(tmp_path: Path) -> None:
    folder = tmp_path / "keys"
    with ThreadPoolExecutor(8) as pool:
        keys = list(pool.map(lambda _: _own_key(folder), range(16)))
    raw = {k.private_bytes_raw() for k in keys}
    assert len(raw) == 1
    assert [p.name for p in folder.iterdir() if p.name.startswith(".signing-")] == []


def test_key_from_settings_is_used_and_a_bad_one_is_named(tmp_path: Path) -> None:
    key = Ed25519PrivateKey.generate()
    s = signer(Settings(home=tmp_path, signing_key=pem(key)))  # type: ignore[arg-type]
    assert s.key_id == signer_id(key)
    assert not (tmp_path / "keys" / "signing.key").exists()
    _signer.cache_clear()
    with pytest.raises(SettingsError, match="FACTORY_SIGNING_KEY: not a PEM private key") as bad:
        signer(Settings(home=tmp_path, signing_key="not a key at all"))  # type: ignore[arg-type]
    assert "not a key at all" not in str(bad.value)  # a secret is never echoed


def signer_id(key: Ed25519PrivateKey) -> str:
    return Signer(key, []).key_id


def test_an_untouched_model_verifies(tmp_path: Path) -> None:
    s = signer(Settings(home=tmp_path))
    folder = model(tmp_path / "m")
    assert s.verify(folder, "p1", tags_for(s, folder), LABEL) == s.key_id


@pytest.mark.parametrize(
    "tamper",
    [
        lambda f: (f / "artifacts" / "model.bin").write_bytes(
            b"\x01" + (f / "artifacts" / "model.bin").read_bytes()[1:]
        ),
        lambda f: (f / "artifacts" / "extra.py").write_text("import os\n"),
        lambda f: (f / "artifacts" / "model.bin").rename(f / "artifacts" / "model2.bin"),
        lambda f: (f / "MLmodel").unlink(),
    ],
    ids=["changed-byte", "added-file", "renamed-file", "removed-file"],
)
def test_a_changed_model_folder_is_refused(tmp_path: Path, tamper) -> None:  # type: ignore[no-untyped-def]
    s = signer(Settings(home=tmp_path))
    folder = model(tmp_path / "m")
    tags = tags_for(s, folder)
    tamper(folder)
    with pytest.raises(ModelIntegrityError) as info:
        s.verify(folder, "p1", tags, LABEL)
    assert str(info.value).startswith(LABEL) and "changed since signing" in str(info.value)
    assert isinstance(info.value, UserError) and "\n" not in str(info.value)


def test_unsigned_forged_moved_and_unknown_key_models_are_refused(tmp_path: Path) -> None:
    s = signer(Settings(home=tmp_path))
    folder = model(tmp_path / "m")
    tags = tags_for(s, folder)
    unsigned = {DIGEST_TAG: tags[DIGEST_TAG]}
    with pytest.raises(ModelIntegrityError, match="is unsigned"):
        s.verify(folder, "p1", unsigned, LABEL)
    # the folder re-digested after tampering, with the old signature: the digest tag lies
    forged = {**tags, DIGEST_TAG: "sha256:" + "0" * 64}
    with pytest.raises(ModelIntegrityError, match="bad signature"):
        s.verify(folder, "p1", forged, LABEL)
    # a genuine model registered under another product
    with pytest.raises(ModelIntegrityError, match="bad signature"):
        s.verify(folder, "p2", tags, LABEL)
    stranger = Signer(Ed25519PrivateKey.generate(), [])
    theirs = tags_for(stranger, folder)
    with pytest.raises(ModelIntegrityError, match=f"unknown key {stranger.key_id}"):
        s.verify(folder, "p1", theirs, LABEL)


def test_rotation_old_models_verify_while_their_key_is_trusted(tmp_path: Path) -> None:
    home = tmp_path / "home"
    old = signer(Settings(home=home))
    folder = model(tmp_path / "m")
    tags = tags_for(old, folder)
    # rotate as the README says: copy signing.pub to keys/trusted, remove signing.key
    keys = home / "keys"
    (keys / "trusted").mkdir()
    shutil.copy(keys / "signing.pub", keys / "trusted" / "old.pub")
    (keys / "signing.key").unlink()
    _signer.cache_clear()
    new = signer(Settings(home=home))
    assert new.key_id != old.key_id
    assert (keys / "signing.pub").read_bytes() != (keys / "trusted" / "old.pub").read_bytes()
    assert signer_id(_own_key(keys)) == new.key_id  # signing.pub now is the new key's
    assert new.verify(folder, "p1", tags_for(new, folder), LABEL) == new.key_id
    assert new.verify(folder, "p1", tags, LABEL) == old.key_id
    (keys / "trusted" / "old.pub").unlink()
    _signer.cache_clear()
    with pytest.raises(ModelIntegrityError, match="unknown key"):
        signer(Settings(home=home)).verify(folder, "p1", tags, LABEL)


def test_trusted_keys_setting_adds_other_signers(tmp_path: Path) -> None:
    other = Ed25519PrivateKey.generate()
    folder = model(tmp_path / "m")
    tags = tags_for(Signer(other, []), folder)
    pub = public_file(other, tmp_path / "elsewhere" / "team-b.pub")
    s = signer(Settings(home=tmp_path / "home", trusted_keys=f" {pub} "))
    assert s.verify(folder, "p1", tags, LABEL) == signer_id(other)
    _signer.cache_clear()
    with pytest.raises(ModelIntegrityError, match=f"unknown key {signer_id(other)}"):
        signer(Settings(home=tmp_path / "home")).verify(folder, "p1", tags, LABEL)
    _signer.cache_clear()
    with pytest.raises(SettingsError, match="FACTORY_TRUSTED_KEYS: cannot read"):
        signer(Settings(home=tmp_path / "home", trusted_keys=str(tmp_path / "missing.pub")))
