"""Where things run: storage, tracking, Ray. Read lazily from the environment (FACTORY_*)."""

from __future__ import annotations

import json
import re
from datetime import date
from functools import lru_cache
from pathlib import Path
from typing import Any

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from factory.core.errors import UserError

ENV_PREFIX = "FACTORY_"
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


# Settings never printed, logged or echoed in an error (their pydantic type is SecretStr).
PASSWORDS = (
    "mlflow_admin_password",
    "trainer_password",
    "promoter_password",
    "analyst_password",
)
SECRETS = (*PASSWORDS, "signing_key")
MIN_PASSWORD = 12


class SettingsError(UserError, ValueError):
    """A FACTORY_* setting that cannot be used: one line per problem, naming the variable."""

    hint = "fix the variable named above (environment or .env); `factory validate` checks them all"


def setting_name(field: str) -> str:
    """The environment variable behind a settings field: `ray_num_cpus` -> FACTORY_RAY_NUM_CPUS."""
    return f"{ENV_PREFIX}{field.upper()}"


class Settings(BaseSettings):
    """Deployment settings; fleet.yaml says WHAT to train, these say WHERE."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_file=".env", extra="ignore", env_ignore_empty=True
    )

    home: Path = Field(Path(".factory"), description="Local state folder (embedded defaults).")
    data_url: str | None = Field(None, description="Folder or fsspec URL of sales files.")
    landing_url: str | None = Field(
        None, description="Folder or fsspec URL where new sales files land (watched)."
    )
    forecasts_url: str | None = Field(None, description="Folder or fsspec URL of forecasts.")
    mlflow_tracking_uri: str | None = Field(None, description="MLflow tracking URI.")
    mlflow_registry_uri: str | None = Field(None, description="MLflow registry URI.")
    artifact_location: str | None = Field(None, description="Artifact root for new experiments.")
    experiment: str = "model-factory"
    model_prefix: str = "factory"
    ray_address: str | None = Field(None, description="Ray cluster address; local Ray if unset.")
    ray_num_cpus: int | None = Field(
        None, gt=0, description="CPUs for a local Ray; all cores if unset."
    )
    registry_threads: int | None = Field(
        None, gt=0, description="Concurrent registry writers; 1 for SQLite stores, 4 for servers."
    )
    as_of: str | None = Field(None, description="Treat this date as today (YYYY-MM-DD).")
    lease_wait_s: float = Field(
        3600.0, ge=0, description="How long a training run waits for another run's lease."
    )
    mlflow_auth: bool = Field(
        False,
        description="Run the local MLflow as an auth server (`factory up` starts it) and act as "
        "the trainer, promoter or analyst identity.",
    )
    mlflow_admin_password: SecretStr | None = Field(
        None, description="Password of the auth server's admin (creates the three identities)."
    )
    trainer_password: SecretStr | None = Field(None, description="MLflow trainer's password.")
    promoter_password: SecretStr | None = Field(None, description="MLflow promoter's password.")
    analyst_password: SecretStr | None = Field(None, description="MLflow analyst's password.")
    audit_url: str | None = Field(
        None,
        description="SQLAlchemy URL of the audit trail (sqlite:///<home>/audit.db by default).",
    )

    signing_key: SecretStr | None = Field(
        None, description="PEM Ed25519 private key signing models (else <home>/keys/signing.key)."
    )
    trusted_keys: str | None = Field(
        None, description="Comma-separated PEM public key files of other trusted signers."
    )

    @field_validator("home")
    @classmethod
    def _home_is_a_folder(cls, home: Path) -> Path:
        """The state folder may not exist yet, but it cannot be (or lie under) a file."""
        path = home.expanduser().absolute()
        existing = next(p for p in (path, *path.parents) if p.exists() or p == p.parent)
        if existing == path and not path.is_dir():
            raise ValueError("is a file, not a folder")
        if not existing.is_dir():
            raise ValueError(f"{existing} is a file, so no folder can be made under it")
        return home

    @field_validator(*PASSWORDS)
    @classmethod
    def _long_enough(cls, secret: SecretStr | None) -> SecretStr | None:
        """MLflow's auth server refuses passwords shorter than 12 characters."""
        if secret is not None and 0 < len(secret.get_secret_value()) < MIN_PASSWORD:
            raise ValueError(f"too short (MLflow needs at least {MIN_PASSWORD} characters)")
        return secret

    @field_validator("as_of")
    @classmethod
    def _as_of_is_a_date(cls, as_of: str | None) -> str | None:
        """`today` for tests and backfills: a calendar date written YYYY-MM-DD."""
        if as_of is None:
            return None
        try:
            if not _DATE.fullmatch(as_of.strip()):
                raise ValueError
            return date.fromisoformat(as_of.strip()).isoformat()
        except ValueError:
            raise ValueError("not a date (expected YYYY-MM-DD, e.g. 2026-11-22)") from None

    @property
    def resolved_home(self) -> Path:
        """The state folder as an absolute path."""
        return self.home.expanduser().resolve()

    @property
    def resolved_data_url(self) -> str:
        """Sales data location; defaults to <home>/data."""
        return self.data_url or str(self.resolved_home / "data")

    @property
    def resolved_landing_url(self) -> str:
        """Landing zone for new sales files; defaults to <home>/landing."""
        return self.landing_url or str(self.resolved_home / "landing")

    @property
    def resolved_forecasts_url(self) -> str:
        """Where batch forecasts (and their history, for drift monitoring) go; <home>/forecasts."""
        return self.forecasts_url or str(self.resolved_home / "forecasts")

    @property
    def store_uri(self) -> str:
        """The embedded MLflow store: a SQLite file in <home>."""
        return f"sqlite:///{self.resolved_home / 'mlflow.db'}"

    @property
    def tracking_uri(self) -> str:
        """MLflow tracking URI: the one set; with `mlflow_auth`, the local auth server that
        `factory up` started; else the embedded SQLite store."""
        if self.mlflow_tracking_uri:
            return self.mlflow_tracking_uri
        if self.mlflow_auth:
            return self._local_mlflow_url()
        return self.store_uri

    def _local_mlflow_url(self) -> str:
        """The URL `factory up` recorded for its MLflow server (services.json in <home>)."""
        try:
            services = json.loads((self.resolved_home / "services.json").read_text())
            return str(next(s["url"] for s in services if s["name"] == "mlflow"))
        except (OSError, ValueError, StopIteration, KeyError, TypeError):
            raise SettingsError(
                f"{setting_name('mlflow_auth')}=true but no local MLflow auth server runs: "
                f"start it with `factory up`, or set {setting_name('mlflow_tracking_uri')}"
            ) from None

    @property
    def artifact_root(self) -> str | None:
        """Artifact root for the factory's experiment: a local folder for a local store; for a
        tracking server, the server's own (proxied) artifact store unless one is set."""
        if self.artifact_location or self.tracking_uri.startswith(("http://", "https://")):
            return self.artifact_location
        return (self.resolved_home / "artifacts").as_uri()

    @property
    def least_privilege(self) -> bool:
        """MLflow is reached as the trainer, promoter and analyst identities: training then
        writes staging only, and production is written by the promotion flows alone."""
        roles = ("trainer", "promoter", "analyst")
        return self.mlflow_auth or any(getattr(self, f"{r}_password") for r in roles)

    @property
    def resolved_audit_url(self) -> str:
        """Where the audit trail of lifecycle actions is kept; a SQLite file in <home>."""
        return self.audit_url or f"sqlite:///{self.resolved_home / 'audit.db'}"

    @property
    def state_dir(self) -> Path:
        """Where run outcomes and quarantine records are kept for `factory status`."""
        return self.resolved_home / "state"

    @property
    def registry_concurrency(self) -> int:
        """SQLite allows one writer; a tracking server takes several."""
        if self.registry_threads:
            return self.registry_threads
        return 1 if self.tracking_uri.startswith("sqlite") else 4


def describe_errors(exc: ValidationError) -> str:
    """One line per invalid setting: `FACTORY_RAY_NUM_CPUS='abc': not an integer`."""
    lines = []
    for error in exc.errors():
        field = str(error["loc"][0]) if error["loc"] else "?"
        shown = "<secret>" if field in SECRETS else repr(str(error["input"]))
        lines.append(f"{setting_name(field)}={shown}: {_reason(error)}")
    return "\n".join(lines)


def _reason(error: Any) -> str:
    """A short reason for one pydantic error (its own message when there is no shorter one)."""
    ctx = error.get("ctx") or {}
    reasons = {
        "int_parsing": "not an integer",
        "int_from_float": "not a whole number",
        "float_parsing": "not a number",
        "greater_than": f"must be greater than {ctx.get('gt')}",
        "greater_than_equal": f"must be at least {ctx.get('ge')}",
        "value_error": str(ctx.get("error", "")),
    }
    return reasons.get(error["type"]) or str(error["msg"])


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read on first use (never at import).

    Raises SettingsError naming each variable that does not parse."""
    try:
        return Settings()
    except ValidationError as exc:
        raise SettingsError(describe_errors(exc)) from None
