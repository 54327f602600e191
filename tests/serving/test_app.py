"""The online endpoint: a real Ray Serve app on a free loopback port over a real MLflow store
with models trained and promoted by the real flows (Prefect test harness, local Ray)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pandas as pd
import pytest
from mlflow import MlflowClient

from factory.adapters.data import read_panel, write_panel
from factory.adapters.forecasts import read_forecast_history
from factory.adapters.registry.lifecycle import complete_canaries
from factory.adapters.registry.registry import Registry
from factory.core.canary import takes_canary
from factory.core.synthetic import PanelSpec, generate_panel
from factory.serving.app import start, stop
from factory.settings import get_settings
from flows.promote_fleet import PromotionApproval, promote_fleet
from flows.train_fleet import train_fleet
from tests.support.fleets import AS_OF, write_fleet

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("prefect_harness", "local_ray")]

N, MAX_MODELS, TTL = 6, 4, 300.0


@pytest.fixture(scope="module")
def endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """Six products trained and in production (auto promotion); the endpoint on a free port
    with an LRU of four products per replica."""
    mp = pytest.MonkeyPatch()
    home = tmp_path_factory.mktemp("serve") / "factory"
    mp.setenv("FACTORY_HOME", str(home))
    mp.setenv("FACTORY_AS_OF", AS_OF)
    for var in ("FACTORY_DATA_URL", "FACTORY_MLFLOW_TRACKING_URI", "RAY_ADDRESS"):
        mp.delenv(var, raising=False)
    get_settings.cache_clear()
    panel = generate_panel(PanelSpec(n_products=N, seed=11))
    write_panel(panel.frame, get_settings().resolved_data_url)
    fleet = write_fleet(home.parent / "fleet.yaml", shard_size=N)
    train_fleet(str(fleet))
    url = start(get_settings(), max_models=MAX_MODELS, ttl_s=TTL, flush_s=0.5)
    try:
        yield url, fleet
    finally:
        stop()
        mp.undo()
        get_settings.cache_clear()


def products() -> list[str]:
    return sorted(Registry(get_settings()).current_models("production"))


def ask(url: str, **body: object) -> httpx.Response:
    return httpx.post(f"{url}/forecast", json=body, timeout=60)


def champion(pid: str) -> str:
    uri = get_settings().tracking_uri  # registry too: not whatever an earlier test left set
    client = MlflowClient(uri, registry_uri=uri)
    return str(client.get_registered_model(f"factory.production.{pid}").aliases["champion"])


def test_the_endpoint_forecast_equals_the_batch_forecast_of_the_same_version(
    endpoint: tuple[str, Path],
) -> None:
    url, _ = endpoint
    pid = products()[0]
    got = ask(url, product_id=pid).json()["forecasts"]
    assert len(got) == 1 and got[0]["served_as"] == "champion"
    assert got[0]["model_name"] == f"factory.production.{pid}"
    assert got[0]["model_version"] == champion(pid)
    registry = Registry(get_settings())
    mv = registry.client.get_model_version(got[0]["model_name"], got[0]["model_version"])
    expected = registry.load_model(mv).predict(pd.DataFrame({"h": [0]}))  # plain pyfunc
    assert len(got[0]["rows"]) == len(expected) == 28
    assert [pd.Timestamp(r["ds"]) for r in got[0]["rows"]] == list(expected["ds"])
    assert [r["yhat"] for r in got[0]["rows"]] == pytest.approx(list(expected["yhat"]), rel=1e-9)
    short = ask(url, product_ids=[pid, products()[1]], horizon=7).json()["forecasts"]
    assert [f["product_id"] for f in short] == [pid, products()[1]]
    assert [len(f["rows"]) for f in short] == [7, 7]
    assert [r["yhat"] for r in short[0]["rows"]] == pytest.approx(list(expected["yhat"][:7]))


def test_future_exogenous_values_are_used_as_the_pyfunc_model_uses_them(
    endpoint: tuple[str, Path],
) -> None:
    url, _ = endpoint
    pid = next(p for p in products() if p.startswith("grocery"))  # exogenous: price, promo
    first = ask(url, product_id=pid, horizon=1).json()["forecasts"][0]
    start_day = pd.Timestamp(first["rows"][0]["ds"])
    days = [str((start_day + pd.Timedelta(days=i)).date()) for i in (0, 1, 4)]
    future = [{"ds": d, "promo": float(i % 2), "price": 2.0 + i} for i, d in enumerate(days)]
    got = ask(url, product_id=pid, exogenous=future).json()["forecasts"][0]["rows"]
    assert [r["ds"][:10] for r in got] == days  # exactly the asked dates
    registry = Registry(get_settings())
    mv = registry.client.get_model_version(first["model_name"], first["model_version"])
    expected = registry.load_model(mv).predict(pd.DataFrame(future))
    assert [r["yhat"] for r in got] == pytest.approx(list(expected["yhat"]), rel=1e-9)
    assert ask(url, product_id=pid, exogenous=[{"promo": 1.0}]).status_code == 422  # no ds


def test_unknown_products_and_bad_requests_get_clear_errors(endpoint: tuple[str, Path]) -> None:
    url, _ = endpoint
    missing = ask(url, product_id="no-such-product")
    assert missing.status_code == 404
    assert "'no-such-product' has no registered model" in missing.json()["detail"]
    assert ask(url, product_ids=[products()[0], "nope"]).status_code == 404
    both = ask(url, product_id="a", product_ids=["b"])
    assert both.status_code == 422 and "either product_id or product_ids" in both.text
    assert ask(url, product_id=products()[0], horizon=0).status_code == 422
    assert ask(url, product_id=products()[0], colour="red").status_code == 422


def test_health_docs_and_a_bounded_lru_per_replica(endpoint: tuple[str, Path]) -> None:
    url, _ = endpoint
    for pid in products():  # six products through an LRU of four
        assert ask(url, product_id=pid).status_code == 200
    health = httpx.get(f"{url}/healthz", timeout=10).json()
    assert health["status"] == "ok" and health["max_models"] == MAX_MODELS
    assert 1 <= health["models_loaded"] <= MAX_MODELS
    spec = httpx.get(f"{url}/openapi.json", timeout=10).json()
    assert {"/forecast", "/healthz"} <= set(spec["paths"])
    assert httpx.get(f"{url}/docs", timeout=10).status_code == 200


def test_shadow_then_canary_then_completion_are_served_within_seconds(
    endpoint: tuple[str, Path],
) -> None:
    """A staging challenger is forecast in the shadow; promoted as a 30% canary it serves a
    sticky 30% of request keys; completed, it serves everyone. The endpoint's TTL is 5
    minutes: only the audit log's change feed can make these visible within seconds."""
    url, fleet = endpoint
    write_fleet(fleet, shard_size=N, promotion={"mode": "manual"})
    settings = get_settings()
    panel = read_panel(settings.resolved_data_url)
    recent = panel["ds"] > panel["ds"].max() - pd.Timedelta(days=20)
    panel.loc[recent, "y"] = (panel.loc[recent, "y"] * 1.4).round()
    write_panel(panel, settings.resolved_data_url)
    before = {p: champion(p) for p in products()}
    for p in before:
        ask(url, product_id=p)  # every product's versions read (and cached) now
    train_fleet(str(fleet))  # manual: new winners wait in staging (audited: register)
    staged = Registry(settings).current_models("staging")
    challenged = [p for p in before if int(staged[p]["version"]) > 1]
    assert challenged, "retraining on shifted demand made no new staging version"
    pid = challenged[0]
    shadow_version = str(staged[pid]["version"])
    rows = pd.DataFrame()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # production answers, the challenger is kept beside it
        assert ask(url, product_id=pid).json()["forecasts"][0]["model_version"] == before[pid]
        history = read_forecast_history(settings.resolved_forecasts_url)
        rows = history[(history["unique_id"] == pid) & (history["role"] == "shadow")]
        if len(rows):
            break
        time.sleep(0.5)
    assert set(rows["model_name"]) == {f"factory.staging.{pid}"}
    assert set(rows["model_version"]) == {shadow_version}

    approval = PromotionApproval(approver="ops", products=[pid], reason="shadow looked right")
    report = promote_fleet(str(fleet), approval=approval, canary_share=0.3)
    canary = str(report.canaries[pid])
    assert champion(pid) == before[pid]
    keys = [f"client-{i}" for i in range(300)]
    expected = {k for k in keys if takes_canary(pid, k, 0.3)}
    started = time.monotonic()

    def answers() -> dict[str, tuple[str, str]]:
        """Each key's (served as, version)."""
        out = {}
        for k in keys:
            a = ask(url, product_id=pid, request_key=k).json()["forecasts"][0]
            out[k] = (a["served_as"], a["model_version"])
        return out

    def on_canary() -> set[str]:
        got = answers()
        assert set(got.values()) <= {("canary", canary), ("champion", before[pid])}
        return {k for k, a in got.items() if a[0] == "canary"}

    probe = min(expected)  # a key the canary takes
    while ask(url, product_id=pid, request_key=probe).json()["forecasts"][0]["served_as"] != (
        "canary"
    ):
        assert time.monotonic() - started < 10, "the canary was not served within 10 s"
        time.sleep(0.1)
    seen = on_canary()
    assert seen == expected and 0.2 <= len(seen) / len(keys) <= 0.4  # sticky by key
    header = httpx.post(
        f"{url}/forecast", json={"product_id": pid}, headers={"X-Request-Key": min(seen)}
    ).json()["forecasts"][0]
    assert header["served_as"] == "canary"

    complete_canaries(Registry(settings), [pid], actor="ops", reason="canary looked right")
    assert champion(pid) == canary
    completed = time.monotonic()
    while ask(url, product_id=pid, request_key=probe).json()["forecasts"][0]["served_as"] != (
        "champion"
    ):
        assert time.monotonic() - completed < 10, "the completion was not served within 10 s"
        time.sleep(0.1)
    assert set(answers().values()) == {("champion", canary)}  # everyone on the new champion
    got = ask(url, product_id=pid, request_key=min(seen)).json()["forecasts"][0]
    assert (got["served_as"], got["model_version"]) == ("champion", canary)


def test_factory_serve_runs_the_endpoint_until_interrupted(endpoint: tuple[str, Path]) -> None:
    pid = products()[0]
    factory = str(Path(sys.executable).with_name("factory"))
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    proc = subprocess.Popen(
        [factory, "serve", "--port", "0", "--max-models", "8"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    try:
        lines = []
        assert proc.stdout is not None
        for line in proc.stdout:  # its own local Ray, its own port
            lines.append(line)
            if line.startswith("serving"):
                break
        assert lines and lines[-1].startswith("serving"), "".join(lines)
        url = lines[-1].split()[1].removesuffix("/forecast")
        got = ask(url, product_id=pid).json()["forecasts"][0]
        assert got["model_version"] == champion(pid)
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=120)
        assert proc.returncode == 0, "".join(lines) + out
        assert "stopped the forecast endpoint" in out
    finally:
        if proc.poll() is None:
            proc.kill()


def test_the_model_header_keeps_each_product_on_one_replica(endpoint: tuple[str, Path]) -> None:
    """With Serve's multiplexed-model header HAProxy sends a product to one replica, so it is
    loaded once; without it replicas take turns (and each loads it). Runs last: it redeploys
    the module's app with two fresh replicas."""
    url, _ = endpoint
    port = int(url.rsplit(":", 1)[1])
    start(get_settings(), port=port, replicas=2, max_models=20, ttl_s=TTL, flush_s=0.5)

    def loaded() -> dict[int, int]:
        seen: dict[int, int] = {}
        deadline = time.monotonic() + 60
        while len(seen) < 2 and time.monotonic() < deadline:
            health = httpx.get(f"{url}/healthz", timeout=30).json()
            if health["max_models"] == 20:  # a replica of the new deployment
                seen[health["pid"]] = health["models_loaded"]
        assert len(seen) == 2, seen
        return seen

    assert sum(loaded().values()) == 0
    with_header, without = products()[:3], products()[3]
    for pid in with_header:
        for _ in range(4):
            got = httpx.post(
                f"{url}/forecast",
                json={"product_id": pid},
                headers={"serve_multiplexed_model_id": pid},
                timeout=60,
            )
            assert got.status_code == 200, got.text
    assert sum(loaded().values()) == len(with_header)  # each on exactly one replica
    for _ in range(4):
        assert ask(url, product_id=without).status_code == 200
    assert sum(loaded().values()) == len(with_header) + 2  # taken by both


def test_stopping_gives_up_on_a_hung_serve_shutdown(monkeypatch) -> None:
    """Serve's shutdown can hang (ray-project/ray#16589); `factory serve` must still exit on
    Ctrl+C, so stop() waits a bounded time and says whether Serve finished."""
    import threading

    from factory.serving import app

    release = threading.Event()
    monkeypatch.setattr(app.serve, "shutdown", release.wait)
    started = time.monotonic()
    assert app.stop(wait_s=0.5) is False
    assert time.monotonic() - started < 5
    release.set()
    monkeypatch.setattr(app.serve, "shutdown", lambda: None)
    assert app.stop(wait_s=5) is True
