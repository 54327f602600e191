"""A real MLflow auth server (`--app-name factory-auth`) on a free loopback port, with the
factory's three identities provisioned and fresh random passwords."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from mlflow import MlflowClient
from pydantic import SecretStr

from factory.adapters.identity import ROLES, Identity, provision
from factory.local import Service, free_port, start_mlflow


@dataclass(frozen=True)
class AuthStack:
    """The server, where it keeps its artifacts, and every password it knows."""

    server: Service
    artifacts: Path
    admin_password: str
    passwords: dict[str, str]  # role -> password

    @property
    def secrets(self) -> list[str]:
        return [self.admin_password, *self.passwords.values()]

    def env(self) -> dict[str, str]:
        """The FACTORY_* variables a process needs to act as the identities."""
        env = {"FACTORY_MLFLOW_TRACKING_URI": self.server.url}
        env |= {f"FACTORY_{r.upper()}_PASSWORD": p for r, p in self.passwords.items()}
        return env

    def client(self, role: str, monkeypatch: object) -> MlflowClient:
        """An MLflow client acting as `role` (its credentials set through `monkeypatch`)."""
        monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", f"factory-{role}")  # type: ignore[attr-defined]
        monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", self.passwords[role])  # type: ignore[attr-defined]
        return MlflowClient(self.server.url, self.server.url)


@contextmanager
def auth_stack(home: Path) -> Iterator[AuthStack]:
    """Start the auth server over a SQLite store in `home`, provision, stop it at the end."""
    admin = f"admin-{secrets.token_urlsafe(12)}"
    passwords = {r: f"{r}-{secrets.token_urlsafe(12)}" for r in ROLES}
    artifacts = home / "server-artifacts"
    server = start_mlflow(
        home,
        free_port(),
        f"sqlite:///{home / 'mlflow.db'}",
        str(artifacts),
        admin_password=SecretStr(admin),
    )
    try:
        identities = [Identity(r, f"factory-{r}", SecretStr(p)) for r, p in passwords.items()]
        provision(server.url, SecretStr(admin), identities)
        yield AuthStack(server, artifacts, admin, passwords)
    finally:
        server.stop()
