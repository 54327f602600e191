"""train-fleet end to end: real Prefect (test harness), real local Ray, real MLflow store."""

from __future__ import annotations

import json
import math
from pathlib import Path

import mlflow
import pandas as pd
import pytest
import ray
import yaml
from mlflow import MlflowClient

from factory.adapters.data import write_panel
from factory.core.synthetic import PanelSpec, generate_panel, product_ids
from factory.settings import get_settings
from tests.support.fleets import write_fleet

pytestmark = pytest.mark.usefixtures("prefect_harness", "local_ray")

IDS = product_ids(30)
DEFECTS = {IDS[3]: "negative", IDS[6]: "duplicate_dates"}
SHORT = IDS[9]  # a new product: too short for the family's backtest, not a defect
LINEAGE_TAGS = (
    "factory.data_fingerprint",
    "factory.fleet_sha256",
    "factory.package_version",
    "factory.git_commit",
    "factory.flow_run_id",
    "factory.flow_run_url",
    "factory.family",
    "factory.model_kind",
    "factory.params",
    "factory.config",
    "factory.gate",
    "factory.backtest_windows",
    "factory.history",
    "factory.metric.mase",
    "factory.metric.wape",
    "factory.baseline.mase",
)


@pytest.fixture
def fleet_run(factory_home: Path, tmp_path: Path):
    """A 30-product panel with two injected defects and a short product, and a fleet.yaml
    that trains it."""
    panel = generate_panel(
        PanelSpec(n_products=30, seed=11, defects={**DEFECTS, SHORT: "too_short"})
    )
    write_panel(panel.frame, get_settings().resolved_data_url)
    return write_fleet(tmp_path / "fleet.yaml", shard_size=8), panel


def client() -> MlflowClient:
    """A client on the test's MLflow store."""
    uri = get_settings().tracking_uri
    return MlflowClient(uri, registry_uri=uri)  # not MLflow's process-wide default


def champions(c: MlflowClient) -> dict[str, str]:
    """Production model name -> the version its @champion alias points at."""
    models = c.search_registered_models("name LIKE 'factory.production.%'", max_results=1000)
    return {rm.name: str(rm.aliases["champion"]) for rm in models}


def all_versions(c: MlflowClient) -> list:
    """Every model version in the registry."""
    return list(c.search_model_versions(max_results=10_000))


def test_quarantines_exactly_the_bad_products_and_registers_the_rest(fleet_run) -> None:
    from flows.train_fleet import train_fleet

    fleet, _ = fleet_run
    summary = train_fleet(str(fleet))
    assert set(summary.quarantined) == set(DEFECTS)
    assert "negative y" in summary.quarantined[IDS[3]][0]
    assert "duplicated" in summary.quarantined[IDS[6]][0]
    assert summary.counts["registered"] == 28  # every valid product gets a model

    c = client()
    state = pd.read_parquet(get_settings().state_dir / "products.parquet").set_index("product_id")
    winners = state.index[state["status"] == "registered"]
    assert len(winners) == summary.counts["registered"]
    for pid in winners:
        prod = c.get_model_version_by_alias(f"factory.production.{pid}", "champion")
        staging = c.get_model_version_by_alias(f"factory.staging.{pid}", "candidate")
        missing = [t for t in LINEAGE_TAGS if t not in staging.tags]
        assert not missing, f"{pid} staging version lacks {missing}"
        assert staging.tags["factory.flow_run_id"] == summary.flow_run_id
        assert staging.tags["factory.flow_run_url"].endswith(summary.flow_run_id)
        assert json.loads(staging.tags["factory.gate"])["verdict"] == "registered"
        assert prod.source == f"models:/factory.staging.{pid}/{staging.version}"
        expected = "full" if pid != SHORT else ("short", "minimal")
        assert staging.tags["factory.history"] in expected
    assert state.at[SHORT, "history"] in ("short", "minimal")
    # quarantined products never reach the registry
    names = {rm.name for rm in c.search_registered_models(max_results=1000)}
    assert not any(pid in name for pid in DEFECTS for name in names)
    # a few task runs per flow run, not one per product
    assert summary.task_runs == summary.shards + 3 < 30
    assert summary.report is not None and summary.report.exists()  # the run's HTML page


def test_unchanged_data_registers_nothing_new(fleet_run) -> None:
    from flows.train_fleet import train_fleet

    fleet, _ = fleet_run
    first = train_fleet(str(fleet))
    before = {(v.name, v.version) for v in all_versions(client())}
    second = train_fleet(str(fleet))
    after = {(v.name, v.version) for v in all_versions(client())}
    assert after == before
    assert second.counts == {"skipped": 28, "quarantined": 2}
    assert second.shards == 0 and second.task_runs == 1  # nothing reached Ray
    state = pd.read_parquet(get_settings().state_dir / "products.parquet").set_index("product_id")
    skipped = state[state["status"] == "skipped"]
    assert len(skipped) == 28
    assert skipped["reason"].str.startswith("unchanged since last run").all()
    registered_first = first.counts["registered"]
    assert skipped["production_version"].notna().sum() == registered_first


def test_only_products_with_new_data_are_retrained(fleet_run) -> None:
    from flows.train_fleet import train_fleet

    fleet, panel = fleet_run
    train_fleet(str(fleet))
    changed = [IDS[0], IDS[1]]
    frame = panel.frame.copy()
    last = frame["unique_id"].isin(changed) & (frame["ds"] == frame["ds"].max())
    frame.loc[last, "y"] += 5.0  # a late correction of the newest day
    write_panel(frame, get_settings().resolved_data_url)
    summary = train_fleet(str(fleet))
    assert summary.counts["skipped"] == 26
    assert summary.counts.get("registered", 0) + summary.counts.get("kept", 0) + summary.counts.get(
        "rejected", 0
    ) == len(changed)
    state = pd.read_parquet(get_settings().state_dir / "products.parquet").set_index("product_id")
    assert set(state.index[state["status"] != "skipped"]) == set(changed) | set(DEFECTS)
    for pid in changed:
        if state.at[pid, "status"] == "registered":  # a refresh on new data: new fingerprint
            v = client().get_model_version_by_alias(f"factory.staging.{pid}", "candidate")
            assert v.tags["factory.data_fingerprint"] == state.at[pid, "data_fingerprint"]
            assert str(v.version) == "2"


def test_worse_challenger_does_not_replace_champion(fleet_run, tmp_path: Path) -> None:
    from flows.train_fleet import train_fleet

    fleet, _ = fleet_run
    train_fleet(str(fleet))
    c = client()
    before = champions(c)
    versions = len(all_versions(c))
    assert len(before) >= 20
    spec = yaml.safe_load(fleet.read_text())
    for family in spec["families"]:
        family["models"] = [{"kind": "ridge", "alpha": 300.0}]  # heavily shrunk: a weak model
    weak = tmp_path / "weak.yaml"
    weak.write_text(yaml.safe_dump(spec))
    summary = train_fleet(str(weak))
    after = champions(c)
    state = pd.read_parquet(get_settings().state_dir / "products.parquet").set_index("product_id")
    kept = state[state["status"] == "kept"]
    replaced = state[state["status"] == "registered"]
    assert len(kept) + len(replaced) == len(before)
    for pid in kept.index:  # a losing challenger leaves the champion exactly as it was
        name = f"factory.production.{pid}"
        assert after[name] == before[name]
    # challengers that beat seasonal naive yet lost to the re-scored champion exist
    assert kept["reason"].str.contains("holds").sum() >= 5
    for pid in replaced.index:  # any replacement strictly beat its champion on the same windows
        gate = json.loads(
            c.get_model_version_by_alias(f"factory.staging.{pid}", "candidate").tags["factory.gate"]
        )
        assert gate["challenger"] < gate["champion"]
        assert after[f"factory.production.{pid}"] == str(
            int(before[f"factory.production.{pid}"]) + 1
        )
    assert len(all_versions(c)) == versions + 2 * len(replaced)
    assert summary.counts.get("registered", 0) == len(replaced)


def test_pyfunc_forecast_equals_the_reported_forecast(fleet_run, tmp_path: Path) -> None:
    from flows.forecast_products import forecast_products_flow
    from flows.train_fleet import train_fleet

    fleet, _ = fleet_run
    train_fleet(str(fleet))
    elsewhere = str(tmp_path / "not-the-factory-store")
    mlflow.set_tracking_uri(elsewhere)  # the flow must neither rely on it nor change it
    report = forecast_products_flow(None, None, str(tmp_path / "fc"))
    assert mlflow.get_tracking_uri() == elsewhere
    c = client()
    reported: dict[str, dict[str, float]] = {}
    for run in c.search_runs([c.get_experiment_by_name("model-factory").experiment_id]):
        path = c.download_artifacts(run.info.run_id, "outcomes.json", str(tmp_path))
        rows = json.loads(Path(path).read_text())["products"]
        for row in rows:
            if row["forecast"]:
                reported[row["product_id"]] = row["forecast"]
        # the shard run's summary: its products by status, the mean of their scores
        registered = sum(r["status"] == "registered" for r in rows)
        assert run.data.metrics.get("products_registered", 0) == registered
        chosen = [r["scores"][r["challenger"]] for r in rows if r["challenger"] in r["scores"]]
        mases = [m["mase"] for m in chosen if math.isfinite(m.get("mase", math.inf))]
        if mases:
            assert run.data.metrics["mean_mase"] == pytest.approx(sum(mases) / len(mases))
    assert len(reported) >= 20
    pid = sorted(reported)[0]
    mlflow.set_tracking_uri(get_settings().tracking_uri)  # as a user loading a model would
    model = mlflow.pyfunc.load_model(f"models:/factory.production.{pid}@champion")
    got = model.predict(pd.DataFrame({"h": [28]}))
    assert list(got["ds"].dt.strftime("%Y-%m-%d")) == list(reported[pid])
    assert got["yhat"].tolist() == pytest.approx(list(reported[pid].values()), rel=1e-9)

    assert not report.missing
    frame = pd.read_parquet(report.url)
    assert set(frame["unique_id"]) == set(reported)
    assert (frame.groupby("unique_id").size() == 28).all()  # each product once, full horizon
    one = frame[frame["unique_id"] == pid]
    assert one["yhat"].tolist() == pytest.approx(list(reported[pid].values()), rel=1e-9)
    assert (one["model_version"] == "1").all()
    assert (one["model_name"] == f"factory.production.{pid}").all()


def test_run_fails_past_the_failure_budget(fleet_run, tmp_path: Path) -> None:
    from factory.core.outcomes import BudgetExceeded
    from flows.train_fleet import train_fleet

    strict = write_fleet(tmp_path / "strict.yaml", failure_budget=0.05)
    with pytest.raises(BudgetExceeded, match="2 of 30 products quarantined"):
        train_fleet(str(strict))
    assert not all_versions(client())  # nothing trained, nothing registered


def test_a_shard_out_of_retries_fails_its_products_and_the_others_register(
    fleet_run, monkeypatch: pytest.MonkeyPatch
) -> None:
    import tasks.train
    from flows.train_fleet import train_fleet
    from tasks.train import train_shard

    fleet, _panel = fleet_run
    real = tasks.train.train_on_ray
    attempts = []

    def broken_for_one_shard(items_ref, family, gate, champions):
        if any(p == IDS[0] for p, _ in ray.get(items_ref)):
            attempts.append(1)
            raise ConnectionError("raylet lost")  # what an infrastructure failure looks like
        return real(items_ref, family, gate, champions)

    monkeypatch.setattr(tasks.train, "train_on_ray", broken_for_one_shard)
    monkeypatch.setattr(train_shard, "retry_delay_seconds", [0, 0])
    spec = yaml.safe_load(Path(fleet).read_text())
    Path(fleet).write_text(yaml.safe_dump({**spec, "failure_budget": 0.5}))

    summary = train_fleet(str(fleet))
    assert len(attempts) == 3  # the first try and its two retries
    assert IDS[0] in summary.failed and "raylet lost" in summary.failed[IDS[0]]
    assert 0 < len(summary.failed) <= 8  # only that shard's products
    assert summary.counts["registered"] >= 12  # the other shards went on
    state = pd.read_parquet(get_settings().state_dir / "products.parquet")
    assert len(state) == 30 and (state["status"] == "failed").sum() == len(summary.failed)

    monkeypatch.setattr(tasks.train, "train_on_ray", real)
    again = train_fleet(str(fleet))  # the failed products are retried, the rest skipped
    assert again.counts["skipped"] == 28 - len(summary.failed)
    assert not again.failed
