"""Signed models: an Ed25519 signature over each model's product id and folder digest.

At registration the folder digest (`digest.folder_digest`: every file's path and bytes) is
signed with the factory's key; digest, signature and key id become version tags. Before any
use (forecasts, serving, promotion, `factory verify`) the downloaded folder's digest is
recomputed and the signature checked against the trusted public keys.

Keys: the signing key comes from `FACTORY_SIGNING_KEY` (PEM, a secret setting) or
`$FACTORY_HOME/keys/signing.key`, made on first use (mode 0600, safe against two processes
making it at once) with its public key beside it. Trusted public keys: the signing key's own,
every `$FACTORY_HOME/keys/trusted/*.pub` and the files named in `FACTORY_TRUSTED_KEYS`. To
rotate, put the old public key in `keys/trusted/`, then replace the signing key: old models
verify until their key is removed from the trusted ones.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import os
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from factory.adapters.registry.digest import folder_digest
from factory.core.errors import UserError
from factory.settings import Settings, SettingsError, setting_name

MESSAGE = b"factory.model.v1"


class ModelIntegrityError(UserError, ValueError):
    """A model that cannot be proven to be the one the factory trained: never used."""

    hint = (
        "find out who changed it; `factory rollback -p <product> -r <why>` serves the"
        " previous production version; trust a rotated key in keys/trusted (README: signed models)"
    )


@dataclass(frozen=True)
class Signature:
    """What a version carries: the folder digest, its signature and the signing key's id."""

    digest: str
    signature: str
    key_id: str


def _raw(public: Ed25519PublicKey) -> bytes:
    return public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def key_id(public: Ed25519PublicKey) -> str:
    """`ed25519:<first 16 hex of sha256 of the raw public key>`."""
    return f"ed25519:{hashlib.sha256(_raw(public)).hexdigest()[:16]}"


def message(product_id: str, digest: str) -> bytes:
    """The signed bytes: the product is bound to its digest (a folder cannot be moved to
    another product)."""
    return b"\n".join((MESSAGE, product_id.encode(), digest.encode()))


def _public_pem(public: Ed25519PublicKey) -> bytes:
    return public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


@dataclass(frozen=True)
class Verifier:
    """The trusted public keys (key id -> raw Ed25519 key): checks signatures and signs
    nothing, so it is plain data a Ray worker may receive (the signing key stays behind)."""

    keys: dict[str, bytes]

    def verify(self, folder: Path, product_id: str, tags: dict[str, str], label: str) -> str:
        """Check a downloaded model folder against its version tags; returns the key id.

        `label` names the model in the error (product, version, registered model)."""
        from factory.adapters.registry.names import DIGEST_TAG, SIGNATURE_TAG, SIGNING_KEY_TAG

        signed, signature, kid = (tags.get(t) for t in (DIGEST_TAG, SIGNATURE_TAG, SIGNING_KEY_TAG))
        if not signed or not signature or not kid:
            raise ModelIntegrityError(f"{label} is unsigned: it cannot be checked")
        raw = self.keys.get(kid)
        if raw is None:
            raise ModelIntegrityError(f"{label} is signed by unknown key {kid} (not trusted here)")
        try:
            Ed25519PublicKey.from_public_bytes(raw).verify(
                base64.b64decode(signature, validate=True), message(product_id, signed)
            )
        except (InvalidSignature, ValueError):
            raise ModelIntegrityError(
                f"{label}: bad signature (its digest or product tag was changed)"
            ) from None
        actual = folder_digest(folder)
        if actual != signed:
            raise ModelIntegrityError(
                f"{label}: model files changed since signing "
                f"(digest {actual[:19]}... != signed {signed[:19]}...)"
            )
        return kid


class Signer:
    """The factory's signing key and the public keys it trusts."""

    def __init__(self, private: Ed25519PrivateKey, trusted: list[Ed25519PublicKey]) -> None:
        self._private = private
        self.key_id = key_id(private.public_key())
        self.trusted = {key_id(k): k for k in [private.public_key(), *trusted]}
        self.verifier = Verifier({kid: _raw(k) for kid, k in self.trusted.items()})

    def sign(self, product_id: str, digest: str) -> Signature:
        """Sign one product's model digest."""
        raw = self._private.sign(message(product_id, digest))
        return Signature(digest, base64.b64encode(raw).decode(), self.key_id)

    def verify(self, folder: Path, product_id: str, tags: dict[str, str], label: str) -> str:
        """Check a downloaded model folder against its version tags (`Verifier.verify`)."""
        return self.verifier.verify(folder, product_id, tags, label)


def key_folder(settings: Settings) -> Path:
    return settings.resolved_home / "keys"


def signer(settings: Settings) -> Signer:
    """The signer for these settings (keys read once per home and setting values)."""
    key = settings.signing_key.get_secret_value() if settings.signing_key else None
    return _signer(str(key_folder(settings)), key, settings.trusted_keys or "")


@functools.lru_cache(maxsize=8)
def _signer(folder: str, key_pem: str | None, trusted: str) -> Signer:
    keys = Path(folder)
    if key_pem:
        private = _private_from(key_pem.encode(), setting_name("signing_key"))
    else:
        private = _own_key(keys)
    publics = [_public_from(p) for p in sorted((keys / "trusted").glob("*.pub"))]
    publics += [_public_from(Path(p.strip())) for p in trusted.split(",") if p.strip()]
    return Signer(private, publics)


def _private_from(pem: bytes, where: str) -> Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError):
        raise SettingsError(f"{where}: not a PEM private key") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise SettingsError(f"{where}: not an Ed25519 key")
    return key


def _public_from(path: Path) -> Ed25519PublicKey:
    try:
        key = serialization.load_pem_public_key(path.read_bytes())
    except OSError as exc:
        raise SettingsError(
            f"{setting_name('trusted_keys')}: cannot read {path}: {exc.strerror}"
        ) from None
    except ValueError:
        raise SettingsError(f"trusted key {path}: not a PEM public key") from None
    if not isinstance(key, Ed25519PublicKey):
        raise SettingsError(f"trusted key {path}: not an Ed25519 key")
    return key


def _own_key(folder: Path) -> Ed25519PrivateKey:
    """`<folder>/signing.key`, made on first use: written to a temp file (0600) and linked
    into place, so a concurrent first use keeps whichever key was linked first."""
    path = folder / "signing.key"
    if not path.exists():
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        private = Ed25519PrivateKey.generate()
        pem = private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".signing-")  # mode 0600
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(pem)
            os.link(tmp, path)  # fails if another process linked its key first
        except FileExistsError:
            pass
        finally:
            os.unlink(tmp)
    private = _private_from(path.read_bytes(), str(path))
    public, shown = folder / "signing.pub", _public_pem(private.public_key())
    if not public.exists() or public.read_bytes() != shown:  # missing, or left from an old key
        staged = public.with_name(f".signing-{os.getpid()}-{threading.get_ident()}.pub")
        staged.write_bytes(shown)
        os.replace(staged, public)
    return private
