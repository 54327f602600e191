"""One registered version's model folder, found and checked against its signature from plain
data (its download URI and tags): `Registry.verified_folder` and the batch workers on Ray share
this, so a version is located and verified the same way everywhere."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import mlflow
from mlflow.exceptions import MlflowException
from mlflow.utils.file_utils import local_file_uri_to_path
from mlflow.utils.uri import is_local_uri

from factory.adapters.registry.names import DIGEST_TAG, SIGNATURE_TAG, SIGNING_KEY_TAG
from factory.adapters.signing import ModelIntegrityError, Verifier

SIGNATURE_TAGS = (DIGEST_TAG, SIGNATURE_TAG, SIGNING_KEY_TAG)


@dataclass(frozen=True)
class VersionFiles:
    """Where one version's files are and the tags they must match (picklable: no client)."""

    product_id: str  # the product its signature must name
    name: str
    version: str
    download_uri: str
    tags: dict[str, str]
    source: str = ""  # the version's source (a production copy: `models:/<staging>/<version>`)

    @property
    def label(self) -> str:
        """How errors name it: product, version and registered model."""
        return f"product {self.product_id!r} version {self.version} ({self.name})"


def verified_folder(
    files: VersionFiles, verifier: Verifier, tracking_uri: str, dst: str | None = None
) -> Path:
    """The version's model folder (a remote store's is downloaded, into `dst` when given),
    checked against its signature tags.

    Raises ModelIntegrityError (naming product, version and model) when it is unsigned, signed
    by an untrusted key, its files changed since signing, or they are missing."""
    missing = ModelIntegrityError(f"{files.label}: model files missing from the artifact store")
    local = local_folder(files.download_uri)  # a local store's folder is checked where it lies
    if local is None:
        try:
            local = Path(
                mlflow.artifacts.download_artifacts(
                    artifact_uri=files.download_uri, tracking_uri=tracking_uri, dst_path=dst
                )
            )
        except MlflowException as exc:
            if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
                raise
            raise missing from None
    elif not local.is_dir():
        raise missing
    verifier.verify(local, files.product_id, files.tags, files.label)
    return local


def local_folder(uri: str) -> Path | None:
    """The folder a local artifact URI (`file:` or a path) names; None for a remote store."""
    return Path(local_file_uri_to_path(uri)) if is_local_uri(uri, False) else None
