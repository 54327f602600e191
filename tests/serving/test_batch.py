"""Batch forecasts in shards on Ray, end to end: real Prefect (test harness), real local Ray,
a real MLflow store; shadow challengers through to the drift monitor and promote-fleet."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient
from typer.testing import CliRunner

from factory.adapters.data import read_panel, write_panel
from factory.adapters.forecasts import read_forecast_history
from factory.adapters.lineage import RunLineage
from factory.adapters.registry.registry import Registry
from factory.adapters.registry.verified import local_folder
from factory.adapters.state import read_drift
from factory.cli import app
from factory.core.contract import fleet_series, validate_panel
from factory.core.drift import DriftSpec
from factory.core.fleet import load_fleet
from factory.core.synthetic import PanelSpec, generate_panel, product_ids
from factory.core.training import train_many
from factory.serving.batch import ModelRef, ServingPlan
from factory.settings import get_settings
from tests.support.fleets import as_of, write_fleet
from tests.support.homes import home_in

N = 8
IDS = product_ids(N)


@pytest.fixture(scope="module")
def trained(
    prefect_harness: None, local_ray: None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict]:
    """One train-fleet run (auto promotion: production v1 copied from staging v1) shared by
    the module; each test gets the home with its settings re-read."""
    from flows.train_fleet import train_fleet

    root = tmp_path_factory.mktemp("batch")
    with home_in(root):
        panel = generate_panel(PanelSpec(n_products=N, seed=11))
        write_panel(panel.frame, get_settings().resolved_data_url)
        fleet = write_fleet(root / "fleet.yaml", shard_size=4)
        summary = train_fleet(str(fleet))
        registered = sorted(Registry(get_settings()).current_models("production"))
        assert len(registered) >= 5, summary.counts
        yield {"root": root, "fleet": fleet, "registered": registered}


@pytest.fixture
def home(trained: dict) -> Iterator[dict]:
    with home_in(trained["root"]):
        yield trained


def client() -> MlflowClient:
    uri = get_settings().tracking_uri
    return MlflowClient(uri, registry_uri=uri)  # not MLflow's process-wide default


def pyfunc_forecast(name: str, version: str) -> pd.DataFrame:
    """What a user gets loading this version through MLflow's pyfunc (family horizon)."""
    model = mlflow.pyfunc.load_model(client().get_model_version_download_uri(name, version))
    return model.predict(pd.DataFrame({"h": [0]}))


def model_bin(name: str, version: str) -> Path:
    """A version's payload file in the local artifact store."""
    folder = local_folder(client().get_model_version_download_uri(name, version))
    assert folder is not None
    return folder / "artifacts" / "model" / "model.bin"


def test_batch_forecast_equals_the_pyfunc_forecast_of_the_same_version(
    home: dict, tmp_path: Path
) -> None:
    from flows.forecast_products import forecast_products_flow

    registered = home["registered"]
    report = forecast_products_flow(None, None, str(tmp_path / "fc"), shard_size=3)
    assert not report.missing and report.products == len(registered)
    frame = pd.read_parquet(report.url)
    intervals = ["yhat_lo_80", "yhat_hi_80", "yhat_lo_95", "yhat_hi_95"]
    assert list(frame.columns) == [
        "unique_id",
        "ds",
        "yhat",
        *intervals,
        "model_name",
        "model_version",
        "role",
    ]
    assert frame[intervals].notna().all().all()  # every row has its intervals
    assert (frame["yhat_lo_95"] <= frame["yhat"]).all() and (
        frame["yhat"] <= frame["yhat_hi_95"]
    ).all()
    serving = frame[frame["role"] == "serving"]
    assert set(serving["unique_id"]) == set(registered)
    assert (serving.groupby("unique_id").size() == 28).all()  # each product once, full horizon
    kinds = set()
    for pid in registered:  # lag models, classical models and ensembles alike
        rows = serving[serving["unique_id"] == pid].reset_index(drop=True)
        assert set(rows["model_name"]) == {f"factory.production.{pid}"}
        assert set(rows["model_version"]) == {"1"}
        expected = pyfunc_forecast(f"factory.production.{pid}", "1")
        assert list(rows["ds"]) == list(expected["ds"])
        for column in ("yhat", *intervals):
            assert rows[column].tolist() == pytest.approx(expected[column].tolist(), rel=1e-12)
        kinds.add(
            client().get_model_version(f"factory.production.{pid}", "1").tags["factory.model_kind"]
        )
    assert kinds & {"theta", "croston", "ensemble"}, kinds  # the repo fleet's classical kinds
    history = read_forecast_history(get_settings().resolved_forecasts_url)
    assert {"role", "model_version", "model_name"} <= set(history.columns)
    assert set(history.loc[history["unique_id"].isin(registered), "role"]) >= {"serving"}


def test_known_future_inputs_reach_the_models_and_equal_the_pyfunc_forecast(
    home: dict, tmp_path: Path
) -> None:
    """A promotion calendar given to the batch forecast changes the forecasts of the models
    that use promo, exactly as the same future rows given to the pyfunc model do."""
    from flows.forecast_products import forecast_products_flow

    def serving(folder: str, inputs: str | None = None) -> pd.DataFrame:
        report = forecast_products_flow(None, None, str(tmp_path / folder), inputs_url=inputs)
        frame = pd.read_parquet(report.url)
        return frame[frame["role"] == "serving"].reset_index(drop=True)

    plain = serving("plain")
    calendar = plain[["unique_id", "ds"]].assign(promo=1.0)  # every day on promotion
    calendar.to_csv(tmp_path / "promos.csv", index=False)
    promoted = serving("promoted", str(tmp_path / "promos.csv"))
    changed = []
    for pid in home["registered"]:
        before = plain[plain["unique_id"] == pid].reset_index(drop=True)
        after = promoted[promoted["unique_id"] == pid].reset_index(drop=True)
        model = mlflow.pyfunc.load_model(
            client().get_model_version_download_uri(f"factory.production.{pid}", "1")
        )
        expected = model.predict(pd.DataFrame({"ds": before["ds"], "promo": 1.0}))
        assert after["yhat"].tolist() == pytest.approx(expected["yhat"].tolist(), rel=1e-12)
        if not np.allclose(before["yhat"], after["yhat"]):
            changed.append(pid)
    assert changed  # the repo fleet's lag models use promo


def test_a_tampered_model_is_refused_by_name_and_the_others_are_forecast(
    home: dict, tmp_path: Path
) -> None:
    from flows.forecast_products import forecast_products_flow

    victim, *others = home["registered"]
    payload = model_bin(f"factory.production.{victim}", "1")
    original = payload.read_bytes()
    payload.write_bytes(original + b"\n")  # one byte more than was signed
    try:
        report = forecast_products_flow(None, None, str(tmp_path / "fc"), shard_size=3)
    finally:
        payload.write_bytes(original)
    assert set(report.missing) == {victim}
    why = report.missing[victim]
    assert f"product {victim!r} version 1" in why and "changed since signing" in why
    frame = pd.read_parquet(report.url)
    assert victim not in set(frame["unique_id"])
    assert set(frame["unique_id"]) == set(others)


def register_challenger(pid: str, scale: float) -> int:
    """Train `pid` on its demand scaled by `scale` and register the winner to staging only
    (a new training key): its staging @candidate is then newer than production's original."""
    settings = get_settings()
    spec = load_fleet(Path("fleet.yaml")).spec
    panel = read_panel(settings.resolved_data_url)
    clean, report = validate_panel(panel, spec, as_of())
    family = next(f for f, ids in report.assignment.items() if pid in ids)
    series = fleet_series(clean, spec, {family: [pid]})[pid]
    scaled = dataclasses.replace(series, y=series.y * scale)
    (outcome,) = train_many([(pid, scaled)], spec.family(family), spec.gate, {})
    assert outcome.status == "registered", outcome.reason
    registry = Registry(settings)
    lineage = RunLineage("f" * 64, "test", "test", "test", "run", "")
    done, _ = registry.register_shard("challenger", [outcome], {pid: "k2"}, lineage, False)
    return int(done[0].staging_version)


def add_actuals(pid: str, frame: pd.DataFrame, days: int) -> pd.DataFrame:
    """The first `days` forecast dates of `pid` become actuals equal to `frame`'s yhat."""
    url = get_settings().resolved_data_url
    panel = read_panel(url)
    last = panel[panel["unique_id"] == pid].sort_values("ds").iloc[-1]
    new = frame.sort_values("ds").head(days)
    rows = pd.DataFrame(
        {
            "unique_id": pid,
            "ds": new["ds"].to_numpy(),
            "y": new["yhat"].to_numpy(),
            "price": last["price"],
            "promo": 0.0,
        }
    )
    write_panel(pd.concat([panel, rows], ignore_index=True), url)
    return rows


def test_a_newer_staging_candidate_is_forecast_in_the_shadow_and_its_errors_reach_promotion(
    home: dict, tmp_path: Path
) -> None:
    from flows.forecast_products import forecast_products_flow
    from flows.monitor_drift import monitor_drift
    from flows.promote_fleet import promote_fleet

    pid, other = home["registered"][1], home["registered"][2]
    version = register_challenger(pid, scale=1.5)
    report = forecast_products_flow(None, None, str(tmp_path / "fc"), shard_size=3)
    frame = pd.read_parquet(report.url)
    mine = frame[frame["unique_id"] == pid]
    serving, shadow = mine[mine["role"] == "serving"], mine[mine["role"] == "shadow"]
    assert set(serving["model_name"]) == {f"factory.production.{pid}"}
    assert set(serving["model_version"]) == {"1"}
    assert set(shadow["model_name"]) == {f"factory.staging.{pid}"}
    assert set(shadow["model_version"]) == {str(version)} and len(shadow) == 28
    expected = pyfunc_forecast(f"factory.staging.{pid}", str(version))
    assert shadow["yhat"].tolist() == pytest.approx(expected["yhat"].tolist(), rel=1e-12)
    assert report.shadow_rows == 28 and report.products == len(home["registered"])
    assert set(frame.loc[frame["unique_id"] == other, "role"]) == {"serving"}  # no challenger
    history = read_forecast_history(get_settings().resolved_forecasts_url)
    kept = history[history["unique_id"] == pid]
    assert set(zip(kept["role"], kept["model_version"], strict=True)) >= {
        ("serving", "1"),
        ("shadow", str(version)),
    }

    # 21 days of actuals exactly as production forecast them: 3 weekly periods compared
    actuals = add_actuals(pid, serving, 21)
    drift = monitor_drift(str(home["fleet"]), DriftSpec(), [pid], emit=False)
    assert drift.checked == 1
    (checked,) = read_drift(get_settings().state_dir).query("product_id == @pid").to_dict("records")
    aligned = shadow.set_index("ds").loc[actuals["ds"], "yhat"].to_numpy()
    y = actuals["y"].to_numpy()
    expected_wape = abs(y - aligned).sum() / abs(y).sum()
    assert checked["shadow_model_version"] == str(version) and checked["drift_model_version"] == "1"
    assert checked["shadow_periods"] == 3
    assert checked["serving_wape"] == pytest.approx(0.0, abs=1e-6)
    assert checked["shadow_wape"] == pytest.approx(expected_wape, rel=1e-6)
    assert checked["shadow_wape"] > 0.1  # trained on demand 1.5x: visibly worse here
    assert f"shadow v{version} WAPE" in checked["drift_detail"]
    shown = CliRunner().invoke(app, ["status", "-p", pid], env={"COLUMNS": "250"})
    assert shown.exit_code == 0, shown.output
    assert f"v{version}: {expected_wape:.3f} vs 0.000 (3 periods)" in shown.stdout

    plan = promote_fleet(str(home["fleet"]), [pid], dry_run=True)
    assert "shadow WAPE | production WAPE | shadow periods" in plan.description
    (row,) = [line for line in plan.description.splitlines() if line.startswith(f"| `{pid}`")]
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[8:11] == [f"{expected_wape:.4g}", "0", "3"]


def test_shards_keep_each_product_with_its_shadow_challenger() -> None:
    from factory.adapters.registry.verified import VersionFiles

    def ref(pid: str, role: str) -> ModelRef:
        return ModelRef(pid, role, VersionFiles(pid, f"m.{pid}", "1", "/nowhere", {}))  # type: ignore[arg-type]

    plan = ServingPlan(
        [ref("a", "serving"), ref("a", "shadow"), ref("b", "serving"), ref("c", "serving")]
    )
    shards = plan.shards(2)
    assert [s.product_ids for s in shards] == [["a", "b"], ["c"]]
    assert [len(s.refs) for s in shards] == [3, 1]
    assert plan.products == ["a", "b", "c"] and list(plan.shadows) == ["a"]
