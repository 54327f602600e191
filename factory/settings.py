"""Where things run: storage, tracking, Ray. Read lazily from the environment (FACTORY_*)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Deployment settings; fleet.yaml says WHAT to train, these say WHERE."""

    model_config = SettingsConfigDict(env_prefix="FACTORY_", env_file=".env", extra="ignore")

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
    ray_num_cpus: int | None = Field(None, description="CPUs for a local Ray; all cores if unset.")
    registry_threads: int | None = Field(
        None, description="Concurrent registry writers; 1 for SQLite stores, 4 for servers."
    )
    as_of: str | None = Field(None, description="Treat this date as today (YYYY-MM-DD).")
    lease_wait_s: float = Field(
        3600.0, ge=0, description="How long a training run waits for another run's lease."
    )

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
    def tracking_uri(self) -> str:
        """MLflow tracking URI; defaults to a SQLite file in <home>."""
        return self.mlflow_tracking_uri or f"sqlite:///{self.resolved_home / 'mlflow.db'}"

    @property
    def artifact_root(self) -> str | None:
        """Artifact root for the factory's experiment: a local folder for a local store; for a
        tracking server, the server's own (proxied) artifact store unless one is set."""
        if self.artifact_location or self.tracking_uri.startswith(("http://", "https://")):
            return self.artifact_location
        return (self.resolved_home / "artifacts").as_uri()

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


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read on first use (never at import)."""
    return Settings()
