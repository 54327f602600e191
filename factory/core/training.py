"""Per-product training: backtest candidates, gate the challenger, refit the winner."""

from __future__ import annotations

import time
import traceback
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from factory.core.backtest import BacktestResult, backtest, rolling_windows
from factory.core.fingerprints import series_fingerprint
from factory.core.fleet import FamilySpec, GateSpec
from factory.core.forecaster import FeatureConfig, ModelConfig, Series, fit, future_dates
from factory.core.gate import ChampionScore, decide

Status = Literal["registered", "kept", "rejected", "failed"]


@dataclass(frozen=True)
class ChampionRef:
    """What the registry knows about a product's current champion."""

    model_name: str
    version: str
    config_json: str
    data_fingerprint: str
    in_production: bool = False  # else its latest staging version stands in


@dataclass
class ProductOutcome:
    """Everything one product's training produced; the model itself only when it won."""

    product_id: str
    family: str
    status: Status
    reason: str
    n_obs: int = 0
    data_fingerprint: str = ""
    scores: dict[str, dict[str, float]] = field(default_factory=dict)
    decision: dict[str, object] | None = None
    challenger: str | None = None
    config_json: str | None = None
    payload: bytes | None = None
    history_tail: dict[str, list] | None = None
    forecast: list[float] | None = None
    forecast_ds: list[str] | None = None
    timings: dict[str, float] = field(default_factory=dict)


def model_configs(family: FamilySpec) -> dict[str, ModelConfig]:
    """The family's candidates by label (kind, suffixed when a kind repeats)."""
    feats = FeatureConfig(**family.features.model_dump())
    kinds = [m.kind for m in family.models]
    out = {}
    for i, spec in enumerate(family.models):
        label = spec.kind if kinds.count(spec.kind) == 1 else f"{spec.kind}_{i}"
        params = spec.model_dump(exclude={"kind"})
        out[label] = ModelConfig(spec.kind, params, feats, family.season_length, family.frequency)
    return out


def baseline_config(family: FamilySpec) -> ModelConfig:
    """The seasonal-naive baseline every challenger must beat."""
    feats = FeatureConfig(**family.features.model_dump())
    return ModelConfig("seasonal_naive", {}, feats, family.season_length, family.frequency)


def train_product(
    product_id: str,
    series: Series,
    family: FamilySpec,
    gate: GateSpec,
    champion: ChampionRef | None = None,
) -> ProductOutcome:
    """Backtest every candidate and the baseline, gate the best, refit it if it wins."""
    t0 = time.perf_counter()
    fp = series_fingerprint(series)
    windows = rolling_windows(
        len(series.y), family.horizon, family.backtest.windows, family.backtest_step
    )
    candidates = model_configs(family)
    results: dict[str, BacktestResult] = {
        "seasonal_naive": backtest(baseline_config(family), series, windows)
    }
    results.update({label: backtest(cfg, series, windows) for label, cfg in candidates.items()})
    metric = gate.metric
    label = min(candidates, key=lambda k: results[k].mean[metric])
    best = results[label]
    champ = _rescore_champion(champion, best, results, series, windows, metric, fp)
    decision = decide(best.mean[metric], results["seasonal_naive"].mean[metric], champ, gate)
    t1 = time.perf_counter()
    outcome = ProductOutcome(
        product_id,
        family.name,
        decision.verdict,
        decision.reason,
        n_obs=len(series.y),
        data_fingerprint=fp,
        scores={k: r.mean for k, r in results.items()},
        decision=decision.evidence(),
        challenger=label,
        config_json=best.config.key,
    )
    if decision.verdict == "registered":
        _attach_model(outcome, best.config, series, family.horizon)
    outcome.timings = {"backtest_s": t1 - t0, "fit_s": time.perf_counter() - t1}
    return outcome


def _rescore_champion(
    champion: ChampionRef | None,
    challenger: BacktestResult,
    results: dict[str, BacktestResult],
    series: Series,
    windows: list,
    metric: str,
    fingerprint: str,
) -> ChampionScore | None:
    """Score the champion's configuration on today's windows (reusing an identical candidate)."""
    if champion is None:
        return None
    same = next((r for r in results.values() if r.config.key == champion.config_json), None)
    if same is None:
        same = backtest(ModelConfig.from_json(champion.config_json), series, windows)
    return ChampionScore(
        champion.version,
        same.mean[metric],
        same_config=challenger.config.key == champion.config_json,
        same_data=champion.data_fingerprint == fingerprint,
    )


def _attach_model(
    outcome: ProductOutcome, config: ModelConfig, series: Series, horizon: int
) -> None:
    """Refit the winner on the full history; keep its bytes, history tail and forecast."""
    model = fit(config, series)
    ds = future_dates(series.ds[-1], horizon, config.frequency)
    outcome.payload = model.dumps()
    outcome.forecast = [float(v) for v in model.forecast(series, ds)]
    outcome.forecast_ds = [str(np.datetime_as_string(d, unit="D")) for d in ds]
    tail = max(config.features.lookback, config.season_length)
    outcome.history_tail = {
        "ds": [str(np.datetime_as_string(d, unit="D")) for d in series.ds[-tail:]],
        "y": [float(v) for v in series.y[-tail:]],
        **{k: [float(v) for v in series.exog[k][-tail:]] for k in sorted(series.exog)},
    }


def train_many(
    items: list[tuple[str, Series]],
    family: FamilySpec,
    gate: GateSpec,
    champions: dict[str, ChampionRef],
) -> list[ProductOutcome]:
    """Train a batch of products; a product that raises becomes a failed outcome with its error."""
    out = []
    for pid, series in items:
        try:
            out.append(train_product(pid, series, family, gate, champions.get(pid)))
        except Exception as exc:
            last = traceback.extract_tb(exc.__traceback__)[-1]
            where = f"{last.filename.rsplit('/', 1)[-1]}:{last.lineno}"
            out.append(
                ProductOutcome(
                    pid,
                    family.name,
                    "failed",
                    f"{type(exc).__name__}: {exc} ({where})",
                    n_obs=len(series.y),
                )
            )
    return out
