"""Promotion through the MLflow auth server, as the promoter: the factory against plain calls.

    .venv/bin/python bench/auth_promotion.py --products 1000 [--workers 2] [--out bench/results]

Starts `mlflow server --app-name factory-auth` on a free loopback port over a SQLite store in a
temporary FACTORY_HOME and provisions the three identities. As the trainer, registers N clones
of a few really trained products to staging (shards of 100, through the server: runs,
artifacts and versions over REST). As the promoter, promotes all N with the factory
(`lifecycle.promote`: every staging model verified, then copies written `registry_threads`
products at a time, alias and current tag), registers a second staging round, and promotes
that round the way a user would with `MlflowClient`, product by product: `copy_model_version`,
alias, current tag. Same work both ways; prints seconds, models/s and the ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from mlflow import MlflowClient
from pydantic import SecretStr
from rich.console import Console
from rich.table import Table

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.lifecycle import register_round, silence_events
from bench.registry_throughput import winners
from factory.adapters.identity import PROMOTER, ROLES, TRAINER, Identity, act_as, provision
from factory.adapters.registry import lifecycle
from factory.adapters.registry.doctor import snapshot
from factory.adapters.registry.names import CHAMPION_ALIAS, CURRENT_TAG
from factory.adapters.registry.registry import Registry
from factory.core.promotion import Change, pending_changes
from factory.local import free_port, start_mlflow
from factory.settings import Settings


def plain_promote(client: MlflowClient, changes: list[Change]) -> None:
    """What a user writes: copy, alias, current tag, one product after the other."""
    for c in changes:
        mv = client.copy_model_version(
            f"models:/{c.staging_model}/{c.staging.version}", c.production_model
        )
        client.set_registered_model_alias(c.production_model, CHAMPION_ALIAS, mv.version)
        current = {"version": str(mv.version), "config": c.staging.config}
        client.set_registered_model_tag(c.production_model, CURRENT_TAG, json.dumps(current))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--products", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=2, help="mlflow server workers")
    parser.add_argument("--threads", type=int, default=8, help="the factory's registry_threads")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results")
    args = parser.parse_args()
    silence_events()
    console = Console()
    n = args.products
    outcomes = winners(n)
    admin = SecretStr(os.urandom(12).hex())
    passwords = {r: SecretStr(os.urandom(12).hex()) for r in ROLES}
    figures: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="bench-auth-") as tmp:
        home = Path(tmp)
        backend = f"sqlite:///{home / 'mlflow.db'}"
        server = start_mlflow(
            home, free_port(), backend, str(home / "artifacts"), args.workers, admin_password=admin
        )
        try:
            provision(server.url, admin, [Identity(r, f"factory-{r}", passwords[r]) for r in ROLES])
            settings = Settings(
                home=home,
                mlflow_tracking_uri=server.url,
                registry_threads=args.threads,
                trainer_password=passwords[TRAINER],
                promoter_password=passwords[PROMOTER],
            )
            registry = Registry(settings)
            act_as(settings, TRAINER)
            t0 = time.perf_counter()
            register_round(registry, outcomes, "k1")
            figures["register staging as trainer"] = time.perf_counter() - t0
            act_as(settings, PROMOTER)
            changes = pending_changes(snapshot(registry))
            assert len(changes) == n, f"{len(changes)} pending, expected {n}"
            t0 = time.perf_counter()
            moves = lifecycle.promote(registry, changes, "bench-1", "bench", "bench")
            figures["promote (factory)"] = time.perf_counter() - t0
            assert len(moves) == n
            act_as(settings, TRAINER)
            register_round(registry, outcomes, "k2")
            act_as(settings, PROMOTER)
            changes = pending_changes(snapshot(registry))
            assert len(changes) == n
            t0 = time.perf_counter()
            plain_promote(registry.client, changes)
            figures["promote (plain MlflowClient)"] = time.perf_counter() - t0
        finally:
            server.stop()
    ratio = figures["promote (plain MlflowClient)"] / figures["promote (factory)"]
    table = Table(title=f"auth server, {args.workers} worker(s), {args.threads} threads")
    for column in ("action", "products", "seconds", "models/s"):
        table.add_column(column, justify="left" if column == "action" else "right")
    for action, seconds in figures.items():
        table.add_row(action, str(n), f"{seconds:.1f}", f"{n / seconds:.1f}")
    console.print(table)
    console.print(f"plain/factory: {ratio:.1f}x")
    args.out.mkdir(parents=True, exist_ok=True)
    out = args.out / f"auth-promotion-{datetime.now(UTC):%Y%m%d}.json"
    result = {
        "products": n,
        "server_workers": args.workers,
        "registry_threads": args.threads,
        "seconds": figures,
        "plain_over_factory": ratio,
    }
    out.write_text(json.dumps(result, indent=2))
    console.print(f"wrote {out}")


if __name__ == "__main__":
    main()
