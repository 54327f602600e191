"""What the planner's report shows, read from the state, the data and the registry: the fleet's
scores against the baseline, per-family counts, and chosen products' history, serving forecast
and backtest (recomputed with the factory's own core)."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from factory.adapters.data import parsed_rows, read_panel
from factory.adapters.preflight import mask_password
from factory.adapters.registry.names import NoModelError
from factory.adapters.registry.registry import Registry
from factory.adapters.signing import ModelIntegrityError
from factory.adapters.state import read_state
from factory.core.backtest import backtest
from factory.core.contract import fleet_series, validate_panel
from factory.core.errors import UserError
from factory.core.fleet import FamilySpec, FleetSpec, load_fleet
from factory.core.forecaster import ModelConfig, Series
from factory.core.outcomes import name_ids
from factory.core.training import product_windows
from factory.settings import Settings

log = logging.getLogger(__name__)

CONFIG_TAG = "factory.config"
SHORT_PATHS = ("short", "minimal")  # history paths of products too short for the full backtest
SHORT_EXTRA = 2  # short-history products added to the default choice
SEASONS_SHOWN = 3  # history shown before a product's forecast, at least
NOT_IN_DATA = "it is not in today's sales data"
EMPTY_ROWS = pd.DataFrame({"ds": pd.Series(dtype="datetime64[ns]"), "y": pd.Series(dtype=float)})


class NoTrainingRun(UserError, LookupError):
    """The report was asked for before any training run recorded an outcome."""

    hint = "`factory train` records every product's outcome; then `factory report`"


class UnknownReportProducts(UserError, LookupError):
    """Products asked for that the factory has no record of."""

    hint = "`factory status` lists the products the factory knows"


@dataclass(frozen=True)
class ProductScore:
    """One product's recorded outcome: its winning candidate's score and the baseline's."""

    product_id: str
    family: str
    status: str
    model_kind: str | None
    history: str | None
    score: float | None
    baseline: float | None

    @property
    def ratio(self) -> float | None:
        """Score over baseline (below 1: better than seasonal naive); None when undefined."""
        if self.score is None or self.baseline is None or self.baseline <= 0:
            return None
        return self.score / self.baseline


@dataclass(frozen=True)
class Headline:
    """The fleet in two numbers: share of scored products beating the baseline, median ratio."""

    scored: int
    beating: int
    median_ratio: float | None

    @property
    def share(self) -> float | None:
        """Share of scored products better than seasonal naive."""
        return self.beating / self.scored if self.scored else None


@dataclass(frozen=True)
class FamilySummary:
    """One family's products: median scores and counts by status, winning kind, history path."""

    name: str
    products: int
    median_score: float | None
    median_baseline: float | None
    statuses: dict[str, int]
    kinds: dict[str, int]
    histories: dict[str, int]


@dataclass(frozen=True)
class BacktestPath:
    """One backtest window: the forecast made at its origin, and its score."""

    ds: np.ndarray
    yhat: np.ndarray
    score: float | None


@dataclass(frozen=True)
class ProductView:
    """A chosen product: recent history, serving forecast with intervals, backtest windows."""

    product_id: str
    family: str
    model_name: str
    version: str
    alias: str
    kind: str
    history_path: str | None
    metric: str
    score: float | None  # recorded at training
    baseline: float | None
    history: pd.DataFrame  # ds, y: the periods shown
    forecast: pd.DataFrame  # ProductModel.forecast: ds, yhat, yhat_lo_80, ...
    backtests: tuple[BacktestPath, ...] = ()
    backtest_score: float | None = None  # recomputed on today's data
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class ReportData:
    """Everything the page draws."""

    created_at: pd.Timestamp
    fleet_path: str
    fleet_sha256: str
    registry_uri: str
    data_url: str
    metric: str
    scores: tuple[ProductScore, ...]
    headline: Headline
    families: tuple[FamilySummary, ...]
    products: tuple[ProductView, ...]
    skipped: dict[str, str] = field(default_factory=dict)

    @property
    def statuses(self) -> dict[str, int]:
        """Products per status over the fleet."""
        return dict(sorted(Counter(s.status for s in self.scores).items()))


# --- the fleet ----------------------------------------------------------------------------------


def read_scores(settings: Settings) -> pd.DataFrame:
    """The state of every product; NoTrainingRun before the first run."""
    state = read_state(settings.state_dir)
    if state.empty:
        raise NoTrainingRun("no training run yet: run `factory train` first")
    return state


def _float(value: Any) -> float | None:
    """A finite float, else None (missing, NaN or infinite)."""
    if value is None or pd.isna(value):
        return None
    number = float(value)
    return number if np.isfinite(number) else None


def _text(value: Any) -> str | None:
    """A string, else None (missing or NaN)."""
    return None if value is None or pd.isna(value) else str(value)


def product_scores(state: pd.DataFrame) -> tuple[ProductScore, ...]:
    """One ProductScore per state row."""
    return tuple(
        ProductScore(
            str(r["product_id"]),
            str(r["family"]),
            str(r["status"]),
            _text(r["model_kind"]),
            _text(r["history"]),
            _float(r["score"]),
            _float(r["baseline"]),
        )
        for r in state.to_dict("records")
    )


def headline(scores: Iterable[ProductScore]) -> Headline:
    """Share of products with a ratio below 1, and the median ratio."""
    ratios = [r for s in scores if (r := s.ratio) is not None]
    median = float(np.median(ratios)) if ratios else None
    return Headline(len(ratios), sum(r < 1 for r in ratios), median)


def _median(values: Iterable[float | None]) -> float | None:
    kept = [v for v in values if v is not None]
    return float(np.median(kept)) if kept else None


def family_summaries(scores: Iterable[ProductScore]) -> tuple[FamilySummary, ...]:
    """Per family (by name): products, median score and baseline, counts."""
    by_family: dict[str, list[ProductScore]] = {}
    for s in scores:
        by_family.setdefault(s.family, []).append(s)
    return tuple(
        FamilySummary(
            name,
            len(rows),
            _median(r.score for r in rows),
            _median(r.baseline for r in rows),
            _counts(r.status for r in rows),
            _counts(r.model_kind for r in rows if r.model_kind),
            _counts(r.history or "none" for r in rows),
        )
        for name, rows in sorted(by_family.items())
    )


def _counts(values: Iterable[str | None]) -> dict[str, int]:
    return dict(Counter(v for v in values if v is not None).most_common())


# --- choosing products --------------------------------------------------------------------------


def with_model(state: pd.DataFrame) -> pd.DataFrame:
    """The state rows of products that have a registered model (retired ones excluded)."""
    versions = state["production_version"].notna() | state["staging_version"].notna()
    return state[versions & (state["status"] != "retired")]


def recent_volume(rows: pd.DataFrame, periods: int) -> pd.Series:
    """Each product's sales over its last `periods` observations (parsed, date-sorted rows)."""
    tail = rows.sort_values(["unique_id", "ds"]).groupby("unique_id").tail(periods)
    return tail.groupby("unique_id")["y"].sum()


def choose_products(
    state: pd.DataFrame, rows: pd.DataFrame, spec: FleetSpec, top: int
) -> list[str]:
    """The `top` products with a model by recent sales, plus up to two short-history ones."""
    models = with_model(state)
    volume = recent_volume(rows, spec.promotion.volume_periods)
    ranked = models.assign(volume=models["product_id"].map(volume).fillna(0.0))
    ranked = ranked.sort_values(["volume", "product_id"], ascending=[False, True])
    chosen = list(ranked["product_id"].head(top))
    short = ranked[ranked["history"].isin(SHORT_PATHS) & ~ranked["product_id"].isin(chosen)]
    return [str(p) for p in [*chosen, *short["product_id"].head(SHORT_EXTRA)]]


def check_known(state: pd.DataFrame, products: list[str]) -> None:
    """UnknownReportProducts naming every asked product the state has no record of."""
    known = set(state["product_id"])
    unknown = [p for p in dict.fromkeys(products) if p not in known]
    if unknown:
        raise UnknownReportProducts(
            f"unknown product(s): {name_ids(unknown)} (no training outcome recorded)"
        )


# --- one product --------------------------------------------------------------------------------


@dataclass(frozen=True)
class ProductData:
    """A product's sales (parsed, date-sorted `ds, y`) and, when today's data passes validation,
    its family and the series training would see; else why not."""

    rows: pd.DataFrame
    family: FamilySpec | None = None
    series: Series | None = None
    why_not: str | None = None


def product_data(
    panel: pd.DataFrame, spec: FleetSpec, products: list[str], as_of: str | None
) -> dict[str, ProductData]:
    """The chosen products' data, validated as training validates it."""
    raw = panel[panel["unique_id"].isin(products)]
    if raw.empty:
        return {pid: ProductData(EMPTY_ROWS, why_not=NOT_IN_DATA) for pid in products}
    clean, report = validate_panel(raw, spec, pd.Timestamp(as_of) if as_of else None)
    series = fleet_series(clean, spec, report.assignment)
    family_of = {pid: name for name, ids in report.assignment.items() for pid in ids}
    rows = parsed_rows(raw).sort_values("ds")
    out = {}
    for pid in products:
        mine = rows.loc[rows["unique_id"] == pid, ["ds", "y"]].reset_index(drop=True)
        if mine.empty:
            out[pid] = ProductData(EMPTY_ROWS, why_not=NOT_IN_DATA)
        elif pid in series:
            out[pid] = ProductData(mine, spec.family(family_of[pid]), series[pid])
        elif pid in report.quarantined:
            why = "; ".join(report.quarantined[pid])
            out[pid] = ProductData(mine, why_not=f"today's data is quarantined ({why})")
        else:
            out[pid] = ProductData(mine, why_not="no family of fleet.yaml covers it now")
    return out


def backtest_paths(
    config: ModelConfig, family: FamilySpec, series: Series, metric: str
) -> tuple[tuple[BacktestPath, ...], float | None]:
    """The version's configuration backtested on the family's windows for this series: each
    window's forecast and score, and the mean score (no windows: a history too short)."""
    windows = product_windows(family, len(series.y))
    if not windows:
        return (), None
    result = backtest(config, series, windows)
    paths = tuple(
        BacktestPath(series.ds[w.origin : w.origin + w.horizon], path, _float(s.get(metric)))
        for w, path, s in zip(windows, result.paths, result.windows, strict=True)
    )
    return paths, _float(result.mean.get(metric))


def shown_history(
    rows: pd.DataFrame, backtests: tuple[BacktestPath, ...], season: int
) -> pd.DataFrame:
    """The last periods of a product's sales: at least three seasons, and every backtest window
    with as many periods again before the first."""
    n = len(rows)
    shown = SEASONS_SHOWN * season
    if backtests:
        covered = int((rows["ds"] >= pd.Timestamp(backtests[0].ds[0])).sum())
        shown = max(shown, covered + len(backtests[0].ds))
    return rows.tail(min(n, shown)).reset_index(drop=True)


def missing_inputs(config: ModelConfig, series: Series | None) -> str | None:
    """Why a version cannot be backtested on a series: exogenous columns it needs that the
    family (fleet.yaml as it is now) does not give."""
    missing = sorted(set(config.features.exogenous) - set(series.exog if series else ()))
    return (
        f"the model uses {', '.join(missing)}, which fleet.yaml no longer gives"
        if missing
        else None
    )


def pooled_note(config: ModelConfig) -> str | None:
    """Why a pooled model's backtest is not recomputed for one product."""
    return (
        "the model is pooled, trained across the products of its shard" if config.pooled else None
    )


def product_view(
    registry: Registry, row: dict[str, Any], data: ProductData, spec: FleetSpec
) -> ProductView:
    """A product's serving version (production, else staging), its forecast and its backtest
    on today's data; NoModelError when it has none."""
    mv, alias = registry.serving_version(str(row["product_id"]))
    model = registry.model_from(registry.version_files(mv))
    config = ModelConfig.from_json((mv.tags or {}).get(CONFIG_TAG) or model.manifest["config"])
    metric = _text(row["metric"]) or spec.gate.metric
    notes: list[str] = []
    paths: tuple[BacktestPath, ...] = ()
    recomputed = None
    why_not = data.why_not or missing_inputs(config, data.series) or pooled_note(config)
    if why_not is None and data.family is not None and data.series is not None:
        paths, recomputed = backtest_paths(config, data.family, data.series, metric)
        if not paths:
            notes.append("history too short to backtest: the forecast is the minimal one")
    else:
        notes.append(f"backtest not recomputed: {why_not}")
    season = data.family.season_length if data.family else config.season_length
    return ProductView(
        product_id=str(row["product_id"]),
        family=data.family.name if data.family else str(row["family"]),
        model_name=mv.name,
        version=str(mv.version),
        alias=alias,
        kind=config.kind,
        history_path=_text(row["history"]),
        metric=metric,
        score=_float(row["score"]),
        baseline=_float(row["baseline"]),
        history=shown_history(data.rows, paths, season),
        forecast=model.forecast(),
        backtests=paths,
        backtest_score=recomputed,
        notes=tuple(notes),
    )


def product_views(
    settings: Settings,
    state: pd.DataFrame,
    spec: FleetSpec,
    panel: pd.DataFrame,
    products: list[str],
) -> tuple[tuple[ProductView, ...], dict[str, str]]:
    """The chosen products' views, and the products skipped with why (no model, or one whose
    signature does not check out)."""
    if not products:
        return (), {}
    data = product_data(panel, spec, products, settings.as_of)
    registry = Registry(settings)
    rows = {str(r["product_id"]): r for r in state.to_dict("records")}
    views, skipped = [], {}
    for pid in products:
        log.info("report: forecasting and backtesting %s", pid)
        try:
            views.append(product_view(registry, rows[pid], data[pid], spec))
        except NoModelError as exc:
            skipped[pid] = f"{exc} ({_outcome(rows[pid])})"
        except ModelIntegrityError as exc:  # refused, as batch forecasting refuses it
            skipped[pid] = str(exc)
    return tuple(views), skipped


def _outcome(row: dict[str, Any]) -> str:
    """`status: reason` of a state row."""
    reason = _text(row["reason"])
    return f"{row['status']}: {reason}" if reason else str(row["status"])


# --- together -----------------------------------------------------------------------------------


def gather_report(
    settings: Settings, products: list[str] | None, top: int, fleet_path: Path | str
) -> ReportData:
    """Read the state, the data and the registry into everything the page draws."""
    state = read_scores(settings)
    if products is not None:
        check_known(state, products)
    loaded = load_fleet(fleet_path)
    panel = read_panel(settings.resolved_data_url)
    if products is None:
        products = choose_products(state, parsed_rows(panel), loaded.spec, top)
    chosen = list(dict.fromkeys(products))
    views, skipped = product_views(settings, state, loaded.spec, panel, chosen)
    scores = product_scores(state)
    return ReportData(
        created_at=pd.Timestamp.now(tz="UTC"),
        fleet_path=str(loaded.path),
        fleet_sha256=loaded.sha256,
        registry_uri=mask_password(settings.mlflow_registry_uri or settings.tracking_uri),
        data_url=mask_password(settings.resolved_data_url),
        metric=loaded.spec.gate.metric,
        scores=scores,
        headline=headline(scores),
        families=family_summaries(scores),
        products=views,
        skipped=skipped,
    )
