"""Per-product training: backtest candidates, gate the challenger, refit the winner."""

from __future__ import annotations

import time
import traceback
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from factory.core import classical, pooled, saved
from factory.core.backtest import (
    BacktestResult,
    Window,
    adaptive_windows,
    backtest,
    backtest_ensemble,
    errors,
    scored,
)
from factory.core.candidates import EnsembleSpec, candidate_labels
from factory.core.fingerprints import series_fingerprint
from factory.core.fleet import FamilySpec, GateSpec
from factory.core.forecaster import (
    POOLED,
    FeatureConfig,
    ModelConfig,
    Series,
    fit,
    future_dates,
)
from factory.core.gate import ChampionScore, beats, decide, fallback, minimal_decision
from factory.core.intervals import conformal_widths, naive_widths

Status = Literal["registered", "kept", "rejected", "failed"]
# full: the family's backtest; short: fewer or shorter windows and the short-history candidates;
# minimal: too short to backtest, the short-history `minimal` forecast
HistoryPath = Literal["full", "short", "minimal"]
BASELINE = "seasonal_naive"


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
    history: HistoryPath = "full"
    windows: tuple[int, int] = (0, 0)  # backtest windows and their horizon
    intervals: dict[str, list[float]] | None = None  # half-widths per step, by level
    dropped: dict[str, str] = field(default_factory=dict)  # candidates that could not run


def model_configs(family: FamilySpec, short: bool = False) -> dict[str, ModelConfig]:
    """The family's candidates by label (kind, suffixed when a kind repeats), the ensemble
    aside; with `short`, also the short-history candidates the family does not have already."""
    feats = FeatureConfig(**family.features.model_dump())
    specs = [m for m in family.models if m.kind != "ensemble"]
    out = {}
    for label, spec in zip(candidate_labels([m.kind for m in specs]), specs, strict=True):
        params = spec.model_dump(exclude={"kind"})
        out[label] = ModelConfig(spec.kind, params, feats, family.season_length, family.frequency)
    if short:
        known = {c.key for c in out.values()}
        for spec in family.short_history.models:
            params = spec.model_dump(exclude={"kind"})
            cfg = ModelConfig(spec.kind, params, feats, family.season_length, family.frequency)
            if cfg.key not in known:
                out[f"short_{spec.kind}" if spec.kind in out else spec.kind] = cfg
                known.add(cfg.key)
    return out


def ensemble_spec(family: FamilySpec) -> EnsembleSpec | None:
    """The family's ensemble candidate, if it has one."""
    return next((m for m in family.models if isinstance(m, EnsembleSpec)), None)


def min_train(config: ModelConfig) -> int:
    """Periods a candidate needs before a backtest origin: lag features need their lookback
    plus two seasons of rows; classical methods a couple of points; naive and mean one."""
    if config.kind == POOLED:
        return pooled.min_train(config)
    if config.uses_features:
        return config.features.lookback + 2 * config.season_length
    return 1 if config.kind in ("naive", "mean", BASELINE) else 2


def warm_up(family: FamilySpec, items: list[tuple[str, Series]]) -> None:
    """Compile the classical candidates these products will use once in this process (not
    per product): the family's, and its short-history ones when a product is short."""
    kinds = {m.kind for m in family.models}
    if any(len(series.y) < family.min_history for _, series in items):
        kinds |= {m.kind for m in family.short_history.models} | {family.short_history.minimal}
    if used := kinds & set(classical.CLASSICAL_KINDS):
        classical.warm_up(tuple(sorted(used)))


def pooled_candidates(family: FamilySpec, items: list[tuple[str, Series]]) -> pooled.PooledRun:
    """The family's pooled candidates trained across these products, once for the batch."""
    configs = {k: c for k, c in model_configs(family, short=True).items() if c.kind == POOLED}
    if not configs:
        return pooled.PooledRun()
    windows = {pid: product_windows(family, len(series.y)) for pid, series in items}
    try:
        return pooled.pooled_run(configs, items, windows, limit=2 * family.backtest.windows)
    except Exception as exc:  # the per-product candidates still run
        return pooled.failed(configs, items, f"pooled training failed: {type(exc).__name__}: {exc}")


def product_windows(family: FamilySpec, n: int) -> list[Window]:
    """A product's backtest windows: the family's, adapted to a history of n periods."""
    b = family.backtest
    return adaptive_windows(
        n, family.horizon, b.windows, b.min_windows, family.backtest_step, family.min_train
    )


def history_path(family: FamilySpec, windows: list[Window]) -> HistoryPath:
    """Which path a product's backtest windows put it on."""
    if not windows:
        return "minimal"
    full = len(windows) == family.backtest.windows and windows[0].horizon == family.horizon
    return "full" if full else "short"


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
    shared: pooled.PooledRun | None = None,
) -> ProductOutcome:
    """Backtest every candidate and the baseline on windows fitted to the history's length,
    gate the best, refit it if it wins. `shared` holds the pooled candidates of the batch
    this product is trained in."""
    t0 = time.perf_counter()
    windows = product_windows(family, len(series.y))
    path = history_path(family, windows)
    outcome = ProductOutcome(
        product_id,
        family.name,
        "failed",
        "",
        n_obs=len(series.y),
        data_fingerprint=series_fingerprint(series),
        history=path,
        windows=(len(windows), windows[0].horizon if windows else 0),
    )
    if not windows:
        return _train_minimal(outcome, series, family, gate, champion)
    results = _backtest_candidates(outcome, series, family, windows, gate.metric, shared)
    metric = gate.metric
    label = challenger_label(results, metric, ensemble_spec(family))
    baseline = results[BASELINE].mean[metric]
    passes = beats(results[label].mean[metric], baseline, gate.baseline_margin)
    if not passes and gate.fallback:
        label = fallback_label(results, label, metric, gate.fallback_tolerance)
    best = results[label]
    champ = _rescore_champion(champion, best, results, series, windows, metric, outcome)
    if passes or not gate.fallback:
        decision = decide(best.mean[metric], baseline, champ, gate)
    else:
        decision = fallback(label, best.mean[metric], baseline, champ, gate)
    t1 = time.perf_counter()
    outcome.status, outcome.reason = decision.verdict, decision.reason
    outcome.scores = {k: r.mean for k, r in results.items()}
    outcome.decision = decision.evidence()
    outcome.challenger, outcome.config_json = label, best.config.key
    if decision.verdict == "registered":
        widths = conformal_widths(errors(best, series, windows), family.horizon)
        boosters = shared.shared if shared else None
        _attach_model(outcome, best.config, series, family.horizon, widths, boosters)
    outcome.timings |= {"backtest_s": t1 - t0, "fit_s": time.perf_counter() - t1}
    return outcome


def challenger_label(
    results: dict[str, BacktestResult], metric: str, ensemble: EnsembleSpec | None
) -> str:
    """The best candidate by backtest score; the ensemble unless another beats it by the
    ensemble's `margin` (a few windows rank close candidates by chance: the combination is
    the steadier choice)."""
    label = min(results, key=lambda k: (k == BASELINE, results[k].mean[metric]))
    if ensemble is None or "ensemble" not in results or label == "ensemble":
        return label
    if beats(results[label].mean[metric], results["ensemble"].mean[metric], ensemble.margin):
        return label
    return "ensemble"


def fallback_label(
    results: dict[str, BacktestResult], label: str, metric: str, tolerance: float
) -> str:
    """When nothing beats seasonal naive by the margin: the chosen candidate if it is not
    worse than seasonal naive (within `tolerance`), else the best candidate that is, else
    seasonal naive itself."""
    limit = results[BASELINE].mean[metric] * (1 + tolerance)
    ranked = sorted((k for k in results if k != BASELINE), key=lambda k: results[k].mean[metric])
    for candidate in (label, *ranked):
        if candidate != BASELINE and results[candidate].mean[metric] <= limit:
            return candidate
    return BASELINE


def _backtest_candidates(
    outcome: ProductOutcome,
    series: Series,
    family: FamilySpec,
    windows: list[Window],
    metric: str,
    shared: pooled.PooledRun | None = None,
) -> dict[str, BacktestResult]:
    """The baseline and every candidate the history allows (and the family's ensemble of the
    best of them) on the same windows; a candidate that fails is dropped with its reason.
    Pooled candidates come already backtested in `shared`."""
    shared = shared or pooled.PooledRun()
    results = {BASELINE: backtest(baseline_config(family), series, windows)}
    candidates = model_configs(family, short=outcome.history != "full")
    for label, cfg in candidates.items():
        if windows[0].origin < min_train(cfg):
            outcome.dropped[label] = f"needs {min_train(cfg)} periods before its first window"
            continue
        start = time.perf_counter()
        if cfg.kind == POOLED:  # trained across the batch beforehand: only scored here
            made = shared.paths.get(outcome.product_id, {}).get(label)
            if made is None:
                why = shared.dropped.get(outcome.product_id, {}).get(label, "not trained")
                outcome.dropped[label] = why
            else:
                results[label] = scored(cfg, series, windows, made)
            outcome.timings[f"candidate.{label}_s"] = shared.seconds.get(label, 0.0)
            continue
        try:
            results[label] = backtest(cfg, series, windows)
        except Exception as exc:  # a method that cannot fit this series is not a failed product
            outcome.dropped[label] = f"{type(exc).__name__}: {exc}"
        outcome.timings[f"candidate.{label}_s"] = time.perf_counter() - start
    spec = ensemble_spec(family)
    ranked = sorted((k for k in results if k != BASELINE), key=lambda k: results[k].mean[metric])
    chosen = [k for k in ranked if k in spec.members] if spec and spec.members else ranked
    if spec is not None and len(chosen) >= 2:
        chosen = chosen if spec.members else chosen[: spec.top_k]
        cfg = ModelConfig(
            "ensemble",
            {"combine": spec.combine, "members": [results[k].config.key for k in chosen]},
            results[chosen[0]].config.features,
            family.season_length,
            family.frequency,
        )
        results["ensemble"] = backtest_ensemble(cfg, [results[k] for k in chosen], series, windows)
    return results


def _train_minimal(
    outcome: ProductOutcome,
    series: Series,
    family: FamilySpec,
    gate: GateSpec,
    champion: ChampionRef | None,
) -> ProductOutcome:
    """A history too short to backtest: the short-history `minimal` forecast, unscored."""
    kind = family.short_history.minimal
    feats = FeatureConfig(**family.features.model_dump())
    config = ModelConfig(kind, {}, feats, family.season_length, family.frequency)
    decision = minimal_decision(kind, len(series.y), champion is not None, gate)
    outcome.status, outcome.reason = decision.verdict, decision.reason
    outcome.decision = decision.evidence()
    outcome.challenger, outcome.config_json = kind, config.key
    if decision.verdict == "registered":
        _attach_model(
            outcome, config, series, family.horizon, naive_widths(series.y, family.horizon)
        )
    return outcome


def _rescore_champion(
    champion: ChampionRef | None,
    challenger: BacktestResult,
    results: dict[str, BacktestResult],
    series: Series,
    windows: list[Window],
    metric: str,
    outcome: ProductOutcome,
) -> ChampionScore | None:
    """Score the champion's configuration on today's windows (reusing an identical candidate);
    a champion that cannot run on them (e.g. too little history) scores infinitely bad."""
    if champion is None:
        return None
    same = next((r for r in results.values() if r.config.key == champion.config_json), None)
    if same is not None:
        value = same.mean[metric]
    else:
        try:
            config = ModelConfig.from_json(champion.config_json)
            value = backtest(config, series, windows).mean[metric]
        except Exception as exc:
            outcome.dropped["champion"] = f"{type(exc).__name__}: {exc}"
            value = float("inf")
    return ChampionScore(
        champion.version,
        value,
        same_config=challenger.config.key == champion.config_json,
        same_data=champion.data_fingerprint == outcome.data_fingerprint,
    )


def _attach_model(
    outcome: ProductOutcome,
    config: ModelConfig,
    series: Series,
    horizon: int,
    intervals: dict[str, list[float]],
    shared: dict[str, object] | None = None,
) -> None:
    """Refit the winner on the full history; keep its bytes, history tail, forecast and
    interval half-widths."""
    outcome.intervals = intervals
    model = fit(config, series, shared=shared)
    ds = future_dates(series.ds[-1], horizon, config.frequency)
    outcome.payload = saved.dumps(model)
    outcome.forecast = [float(v) for v in model.forecast(series, ds)]
    outcome.forecast_ds = [str(np.datetime_as_string(d, unit="D")) for d in ds]
    tail = max(
        config.features.lookback,
        config.season_length,
        *(m.features.lookback for m in config.members),
    )
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
    warm_up(family, items)
    shared = pooled_candidates(family, items)
    out = []
    for pid, series in items:
        try:
            out.append(train_product(pid, series, family, gate, champions.get(pid), shared))
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
