"""`factory up` and `factory down`: the local Prefect server and MLflow server (or the MLflow
auth server, with its identities) in the background."""

from __future__ import annotations

from typing import Annotated

import typer
from pydantic import SecretStr

from factory.cli_common import console
from factory.cli_errors import friendly
from factory.settings import PASSWORDS, Settings, SettingsError, get_settings, setting_name


@friendly
def up(
    prefect_port: Annotated[int, typer.Option(min=1, max=65535)] = 4200,
    mlflow_port: Annotated[int, typer.Option(min=1, max=65535)] = 5000,
    serve: Annotated[
        bool, typer.Option("--serve", help="Also start the online forecast endpoint.")
    ] = False,
    serve_port: Annotated[int, typer.Option(min=1, max=65535)] = 8000,
) -> None:
    """Start a local Prefect server and MLflow UI (SQLite, local artifacts) in the background,
    and with --serve the online forecast endpoint (`factory serve`).

    With FACTORY_MLFLOW_AUTH=true the MLflow server is the auth server: every factory command
    then goes through it as the trainer, promoter or analyst (their passwords are settings)."""
    from factory.adapters.identity import ROLES, identity, provision
    from factory.adapters.zombies import ensure_zombie_automation, zombie_window
    from factory.local import (
        alive,
        free_port,
        load_services,
        save_services,
        start_mlflow,
        start_prefect,
        start_serve,
    )

    settings = get_settings()
    admin = _auth_secrets(settings) if settings.mlflow_auth else None
    home = settings.resolved_home
    home.mkdir(parents=True, exist_ok=True)
    running = [s for s in load_services(home) if alive(s)]
    if not running:
        with console.status("starting Prefect server and MLflow UI"):
            running = [
                start_prefect(home, free_port(prefect_port)),
                start_mlflow(
                    home,
                    free_port(mlflow_port),
                    settings.mlflow_tracking_uri or settings.store_uri,
                    settings.artifact_location or str(home / "artifacts"),
                    admin_password=admin,
                    model_prefix=settings.model_prefix,
                ),
            ]
        save_services(home, running)
    if serve and not any(s.name == "serve" for s in running):
        with console.status("starting the forecast endpoint (Ray Serve)"):
            running.append(start_serve(home, free_port(serve_port)))
        save_services(home, running)
    mlflow_url = next(s.url for s in running if s.name == "mlflow")
    if admin is not None:
        identities = [i for r in ROLES if (i := identity(settings, r)) is not None]
        provision(mlflow_url, admin, identities)
        console.print("mlflow   auth: " + ", ".join(i.username for i in identities))
    for s in running:
        console.print(f"{s.name:8} {s.url}  (log: {s.log})")
    prefect = next(s for s in running if s.name == "prefect")
    ensure_zombie_automation(f"{prefect.url}/api")
    window = zombie_window().total_seconds()
    console.print(f"{'zombies':8} flow runs without a heartbeat for {window:.0f} s become Crashed")


def _auth_secrets(settings: Settings) -> SecretStr:
    """The admin password, after checking every password the auth stack needs is set."""
    missing = [setting_name(f) for f in PASSWORDS if getattr(settings, f) is None]
    if missing:
        raise SettingsError(
            f"{setting_name('mlflow_auth')}=true needs these set: {', '.join(missing)}"
        )
    assert settings.mlflow_admin_password is not None
    return settings.mlflow_admin_password


def down() -> None:
    """Stop the servers `factory up` or `factory demo` started."""
    from factory.local import load_services, save_services

    home = get_settings().resolved_home
    for s in load_services(home):
        s.stop()
        console.print(f"stopped {s.name} (pid {s.pid})")
    save_services(home, []) if home.exists() else None
