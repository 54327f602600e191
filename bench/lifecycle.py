"""The governed production path at fleet size: promote, roll back, retire, restore, manifest.

    .venv/bin/python bench/lifecycle.py --products 1000 [--out bench/results]

Builds a fresh registry in a temporary FACTORY_HOME (SQLite store): N clones of a few really
trained products registered to staging in shards of 100, their v1 first-promoted to
production, then a second round under new training keys so every product has a staging v2.
Times, on the local store, each lifecycle action over the whole fleet (the v2 batch's
promotion and rollback, a roll forward, retire and restore of all N, a manifest export and a
10-product sync) and, for comparison, the rollback a user would write with `MlflowClient`
(alias + current tag + rolled-back mark, product by product). Then serves the same SQLite
store with `mlflow server` and repeats the rollback comparison over REST, where the factory
makes MLflow's client calls `registry_threads` at a time.

Prefect events are switched off in this process: with no PREFECT_API_URL, the first
`emit_event` would start an ephemeral Prefect server (a uvicorn subprocess, ~10 s).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

from mlflow import MlflowClient
from rich.console import Console
from rich.table import Table

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # bench.registry_throughput: the trained clones

from bench.registry_throughput import winners
from factory.adapters.lineage import RunLineage
from factory.adapters.registry import lifecycle, manifest
from factory.adapters.registry.doctor import snapshot
from factory.adapters.registry.names import CHAMPION_ALIAS, CURRENT_TAG, PRODUCTION, ROLLED_BACK_TAG
from factory.adapters.registry.registry import Registry
from factory.core.manifest import Manifest, ManifestEntry, dump_manifest
from factory.core.promotion import Retirement, pending_changes
from factory.core.repair import ModelState, current_body
from factory.core.training import ProductOutcome
from factory.local import Service, free_port, start_mlflow
from factory.settings import Settings

SHARD = 100
EDITED = 10  # products the edited manifest changes
BATCH = "bench-v2"
ACTOR = "bench"
T = TypeVar("T")


@dataclass(frozen=True)
class Timing:
    """One timed action on one store."""

    store: str
    action: str
    products: int
    seconds: float

    @property
    def rate(self) -> float:
        """Products per second."""
        return self.products / self.seconds if self.seconds else float("inf")


def timed(timings: list[Timing], store: str, action: str, n: int, call: Callable[[], T]) -> T:
    """Run `call`, append its wall time as `action` over `n` products, return its result."""
    t0 = time.perf_counter()
    out = call()
    timings.append(Timing(store, action, n, time.perf_counter() - t0))
    return out


def silence_events() -> None:
    """No Prefect events from this process, and so no Prefect server started for them.

    With no PREFECT_API_URL, Prefect's first `emit_event` starts an ephemeral server (a
    uvicorn subprocess, ~10 s); PREFECT_SERVER_EPHEMERAL_ENABLED=false does not stop the
    events worker from starting it, a null events client still starts it for the worker's
    orchestration client, and PREFECT_API_URL="" makes `emit_event` raise. So `emit_event`
    answers None, as Prefect's own does where it emits no events; the audit record stands.
    """
    import prefect.events

    os.environ.pop("PREFECT_API_URL", None)
    prefect.events.emit_event = lambda *_, **__: None  # read by audit_log at each call
    # one "event not sent (Prefect emits no events here)" warning per action otherwise
    logging.getLogger("factory.adapters.audit_log").setLevel(logging.ERROR)


def register_round(registry: Registry, outcomes: list[ProductOutcome], key: str) -> None:
    """Every outcome registered to staging (no promotion) under training key `<key>-<id>`."""
    lineage = RunLineage("f" * 64, "bench", "bench", "bench", "run", "")
    for start in range(0, len(outcomes), SHARD):
        shard = outcomes[start : start + SHARD]
        keys = {o.product_id: f"{key}-{o.product_id}" for o in shard}
        registry.register_shard(f"{key}-{start // SHARD}", shard, keys, lineage, False)


def production(registry: Registry) -> dict[str, ModelState]:
    """Each product's production model."""
    return {m.product_id: m for m in snapshot(registry) if m.environment == PRODUCTION}


def serving(registry: Registry) -> dict[str, tuple[int | None, str | None, frozenset[int]]]:
    """product -> (champion version, current-tag version, versions marked rolled back)."""
    out = {}
    for pid, m in production(registry).items():
        current = None if m.current is None else str(m.current.get("version"))
        marked = frozenset(v.version for v in m.versions if v.rolled_back)
        out[pid] = (m.aliases.get(CHAMPION_ALIAS), current, marked)
    return out


def expect(registry: Registry, champion: int, marked: frozenset[int], n: int) -> None:
    """Fail unless all n products serve `champion` with exactly these versions marked."""
    state = serving(registry)
    wrong = [p for p, s in state.items() if s != (champion, str(champion), marked)]
    if len(state) != n or wrong:
        raise AssertionError(
            f"{len(wrong)} of {len(state)} products not at v{champion}: {wrong[:3]}"
        )


def roll_forward(registry: Registry) -> list[lifecycle.Move]:
    """Production back on v2 for every product (a promotion that clears v2's mark)."""
    models = production(registry)
    moves = [
        lifecycle.Move(p, m.aliases.get(CHAMPION_ALIAS), 2)
        for p, m in models.items()
        if m.aliases.get(CHAMPION_ALIAS) != 2
    ]
    if not moves:
        return []
    return lifecycle.move_production(
        registry, models, moves, "promote", ACTOR, "bench roll forward"
    )


def plain_plan(registry: Registry) -> list[tuple[str, str, str]]:
    """(model name, current tag of v1, rolled-back mark) per product: what the loop writes."""
    mark = json.dumps({"reason": "bench plain rollback", "batch": BATCH, "by": ACTOR})
    out = []
    for m in production(registry).values():
        v1 = m.by_version(1)
        assert v1 is not None
        out.append((m.name, current_body(v1), mark))
    return out


def plain_rollback(client: MlflowClient, plan: list[tuple[str, str, str]]) -> None:
    """The rollback without the factory: alias, current tag and mark, product by product."""
    for name, current, mark in plan:
        client.set_registered_model_alias(name, CHAMPION_ALIAS, "1")
        client.set_registered_model_tag(name, CURRENT_TAG, current)
        client.set_model_version_tag(name, "2", ROLLED_BACK_TAG, mark)


def compare_rollback(
    registry: Registry, local: Registry, store: str, n: int, timings: list[Timing]
) -> None:
    """The v2 batch rolled back through `registry` by the factory, then by the plain loop,
    each from v2 serving. `local` reads and rolls forward the same store directly."""
    roll_forward(local)
    expect(local, 2, frozenset(), n)
    rollback = lambda: lifecycle.rollback(registry, [], ACTOR, "bench", batch=BATCH)  # noqa: E731
    moves = timed(timings, store, "rollback (factory)", n, rollback)
    assert len(moves) == n, f"rolled back {len(moves)} of {n}"
    expect(local, 1, frozenset({2}), n)
    factory_state = serving(local)
    roll_forward(local)
    expect(local, 2, frozenset(), n)
    plan = plain_plan(local)
    client = MlflowClient(registry.settings.tracking_uri, registry.settings.tracking_uri)
    client.get_registered_model(plan[0][0])  # the client's store opened outside the timing
    timed(timings, store, "rollback (plain MlflowClient)", n, lambda: plain_rollback(client, plan))
    if serving(local) != factory_state:
        raise AssertionError("the plain rollback left production unlike the factory's")


def build(registry: Registry, outcomes: list[ProductOutcome], timings: list[Timing]) -> None:
    """Staging v1, production v1 (first promotion), staging v2 under new training keys."""
    n, store = len(outcomes), "setup"
    registry.experiment_id  # noqa: B018 - create the experiment outside the timing
    timed(
        timings, store, "register staging v1", n, lambda: register_round(registry, outcomes, "k1")
    )
    first = pending_changes(snapshot(registry))
    promote = lambda: lifecycle.promote(registry, first, "bench-v1", ACTOR, "first")  # noqa: E731
    timed(timings, store, "promote v1 (first production model)", n, promote)
    timed(
        timings, store, "register staging v2", n, lambda: register_round(registry, outcomes, "k2")
    )
    expect(registry, 1, frozenset(), n)


def local_actions(registry: Registry, n: int, timings: list[Timing]) -> None:
    """Every lifecycle action over the whole fleet on the local store."""
    store = "sqlite (local store)"
    plan = lambda: pending_changes(snapshot(registry))  # noqa: E731
    changes = timed(timings, store, "plan (snapshot + pending_changes)", n, plan)
    assert len(changes) == n, f"{len(changes)} pending changes, expected {n}"
    promote = lambda: lifecycle.promote(registry, changes, BATCH, ACTOR, "bench v2")  # noqa: E731
    timed(timings, store, "promote v2", n, promote)
    expect(registry, 2, frozenset(), n)
    compare_rollback(registry, registry, store, n, timings)
    forward = lambda: roll_forward(registry)  # noqa: E731
    moved = timed(timings, store, "roll forward (move_production)", n, forward)
    assert len(moved) == n, f"rolled forward {len(moved)} of {n}"
    ids = sorted(serving(registry))
    gone = [Retirement(p, "bench") for p in ids]
    timed(timings, store, "retire", n, lambda: lifecycle.retire(registry, gone, ACTOR))
    timed(timings, store, "restore", n, lambda: lifecycle.restore(registry, ids, ACTOR, "bench"))
    expect(registry, 2, frozenset(), n)
    manifest_actions(registry, store, n, timings)


def manifest_actions(registry: Registry, store: str, n: int, timings: list[Timing]) -> None:
    """Export production's manifest, then dry-run and execute a sync that moves 10 products."""
    export = lambda: dump_manifest(manifest.production_manifest(registry))  # noqa: E731
    timed(timings, store, "manifest export", n, export)
    current = manifest.production_manifest(registry)
    edited = sorted(current.production)[:EDITED]
    names = {p: registry.name(PRODUCTION, p) for p in edited}
    digests = manifest.version_digests(registry, {(name, 1) for name in names.values()})
    desired = Manifest(
        production={
            **current.production,
            **{p: ManifestEntry(version=1, digest=digests.get((names[p], 1))) for p in edited},
        }
    )

    def sync(execute: bool) -> int:
        return len(manifest.sync_production(registry, desired, ACTOR, "bench", execute=execute))

    dry = timed(timings, store, f"sync dry run ({EDITED} changed)", n, lambda: sync(False))
    done = timed(timings, store, f"sync execute ({EDITED} changed)", n, lambda: sync(True))
    assert dry == done == EDITED, f"sync changed {dry}/{done}, expected {EDITED}"
    moved = {p: s[0] for p, s in serving(registry).items() if p in names}
    assert set(moved.values()) == {1}, moved


def server_actions(home: Path, n: int, workers: int, timings: list[Timing]) -> None:
    """The rollback comparison again, through `mlflow server` on the same SQLite store."""
    backend = f"sqlite:///{home / 'mlflow.db'}"
    server: Service = start_mlflow(home, free_port(), backend, str(home / "artifacts"), workers)
    try:
        remote = Registry(Settings(home=home, mlflow_tracking_uri=server.url))
        threads = remote.settings.registry_concurrency
        store = f"mlflow server (sqlite, {workers} worker(s), {threads} threads)"
        compare_rollback(remote, Registry(Settings(home=home)), store, n, timings)
    finally:
        server.stop()


def show(timings: list[Timing]) -> list[Table]:
    """One rich table per store, with plain/factory on the plain rollback's row."""
    tables = []
    for store in dict.fromkeys(t.store for t in timings):
        rows = [t for t in timings if t.store == store]
        factory = next((t.seconds for t in rows if t.action == "rollback (factory)"), None)
        table = Table(title=store, title_justify="left")
        for column in ("action", "products", "seconds", "products/s", "plain/factory"):
            table.add_column(column, justify="left" if column == "action" else "right")
        for t in rows:
            plain = t.action == "rollback (plain MlflowClient)"
            ratio = f"{t.seconds / factory:.1f}x" if plain and factory else ""
            table.add_row(t.action, str(t.products), f"{t.seconds:.2f}", f"{t.rate:.0f}", ratio)
        tables.append(table)
    return tables


def to_json(n: int, timings: list[Timing]) -> dict[str, object]:
    """`products`, `store` and per action `seconds` for the local store; the setup steps and
    the server's rollback comparison alongside."""

    def block(store: str) -> dict[str, dict[str, float]]:
        return {
            t.action: {"seconds": t.seconds, "products_per_s": t.rate}
            for t in timings
            if t.store == store
        }

    def ratio(store: str) -> float:
        rows = block(store)
        return (
            rows["rollback (plain MlflowClient)"]["seconds"] / rows["rollback (factory)"]["seconds"]
        )

    local = "sqlite (local store)"
    server = next(t.store for t in timings if t.store.startswith("mlflow server"))
    return {
        "products": n,
        "store": local,
        "actions": block(local),
        "rollback_plain_over_factory": ratio(local),
        "setup": block("setup"),
        "server": {
            "store": server,
            "actions": block(server),
            "rollback_plain_over_factory": ratio(server),
        },
        "timings": [asdict(t) for t in timings],
    }


def main() -> None:
    """Build the registry, time every action on both stores, print and save the figures."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--products", type=int, default=1000)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results")
    parser.add_argument("--server-workers", type=int, default=1, help="mlflow server workers")
    args = parser.parse_args()
    silence_events()
    console = Console()
    outcomes = winners(args.products)
    timings: list[Timing] = []
    with tempfile.TemporaryDirectory(prefix="bench-lifecycle-") as tmp:
        home = Path(tmp)
        registry = Registry(Settings(home=home))
        build(registry, outcomes, timings)
        local_actions(registry, args.products, timings)
        server_actions(home, args.products, args.server_workers, timings)
    for table in show(timings):
        console.print(table)
    args.out.mkdir(parents=True, exist_ok=True)
    out = args.out / f"lifecycle-{datetime.now(UTC):%Y%m%d}.json"
    out.write_text(json.dumps(to_json(args.products, timings), indent=2))
    console.print(f"wrote {out}")


if __name__ == "__main__":
    main()
