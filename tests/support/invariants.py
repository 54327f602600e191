"""The crash-safety invariants every fault-injection test ends with, read through MLflow's
public client and the status store (independently of `factory doctor`'s own code):

1. every fleet product has exactly one outcome (status row);
2. no two versions of a registered model share a training key;
3. every serving alias points to an existing version, and the model's `factory.current` tag
   names that version;
4. each product's status names the versions the registry serves;
5. no MLflow run of the factory is left RUNNING.
"""

from __future__ import annotations

import json
from collections import Counter

import pandas as pd
from mlflow import MlflowClient

from factory.settings import Settings

ALIASES = {"staging": "candidate", "production": "champion"}


def violations(settings: Settings, products: list[str]) -> list[str]:
    """Every broken invariant, one line each (empty when all hold)."""
    client = MlflowClient(
        settings.tracking_uri, settings.mlflow_registry_uri or settings.tracking_uri
    )
    path = settings.state_dir / "products.parquet"
    state = pd.read_parquet(path) if path.exists() else pd.DataFrame(columns=["product_id"])
    out = _outcomes(state, products)
    served = _registry(client, settings.model_prefix, out)
    rows = state.drop_duplicates("product_id").set_index("product_id")
    for (pid, env), version in sorted(served.items()):
        said = rows[f"{env}_version"].get(pid) if pid in rows.index else None
        if said is None or said != said or str(said) != version:
            out.append(f"{pid}: status says {env} v{said}, registry serves v{version}")
    exp = client.get_experiment_by_name(settings.experiment)
    if exp is not None:
        running = client.search_runs([exp.experiment_id], "attributes.status = 'RUNNING'")
        out += [f"MLflow run {r.info.run_id} left RUNNING" for r in running]
    return out


def _outcomes(state: pd.DataFrame, products: list[str]) -> list[str]:
    counts = Counter(state["product_id"])
    out = [f"{p}: no outcome" for p in products if counts[p] == 0]
    return out + [f"{p}: {n} outcomes" for p, n in counts.items() if n > 1]


def _registry(client: MlflowClient, prefix: str, out: list[str]) -> dict[tuple[str, str], str]:
    """Check invariants 2 and 3; return (product, environment) -> the served version."""
    served = {}
    for rm in client.search_registered_models(f"name LIKE '{prefix}.%'", max_results=1000):
        pid, env = rm.tags.get("factory.product_id"), rm.tags.get("factory.environment")
        versions = client.search_model_versions(f"name = '{rm.name}'", max_results=10_000)
        keys = Counter(v.tags.get("factory.train_key") for v in versions)
        out += [f"{rm.name}: {n} versions of key {k}" for k, n in keys.items() if n > 1]
        alias = ALIASES.get(env or "")
        target = (rm.aliases or {}).get(alias) if alias else None
        if target is None:
            out.append(f"{rm.name}: no @{alias}")
            continue
        if str(target) not in {str(v.version) for v in versions}:
            out.append(f"{rm.name}: @{alias} -> missing v{target}")
        current = json.loads(rm.tags.get("factory.current", "{}"))
        if current.get("version") != str(target):
            out.append(f"{rm.name}: current tag v{current.get('version')}, @{alias} v{target}")
        served[(str(pid), str(env))] = str(target)
    return served
