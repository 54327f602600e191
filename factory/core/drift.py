"""Drift of production models: rising error on recent actuals, and shifted demand (PSI).

Performance drift: the production version's own forecasts are scored against the actuals that
arrived after its training data, one WAPE per period of `period` observations; a period
breaches when its WAPE exceeds (1 + threshold) x the version's backtest WAPE (the
`factory.metric.wape` tag), and the model drifts after `consecutive` breaching periods in a row
(the latest ones). Input drift: the population stability index of those recent actuals against
the last `reference_window` observations the model was trained on.

Shadow evidence: for a product with a staging challenger forecast in the shadow, the WAPE of
the challenger and of the serving version over the same actuals (the dates both forecast), in
complete periods: what promote-fleet shows beside its re-scored backtests.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, PositiveInt

from factory.core.metrics import wape

DriftStatus = Literal["ok", "performance", "input", "performance+input", "insufficient"]
PSI_FLOOR = 1e-4  # a bin's share is floored here so an empty bin does not make PSI infinite


class DriftSpec(BaseModel):
    """When a production model counts as drifted, and which drift retrains it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    threshold: float = Field(0.25, ge=0, description="Allowed relative rise of WAPE per period.")
    consecutive: PositiveInt = Field(3, description="Breaching periods in a row that mean drift.")
    period: PositiveInt = Field(7, description="Observations per evaluation period.")
    psi_threshold: float = Field(0.25, gt=0, description="PSI above this is input drift.")
    psi_bins: int = Field(5, ge=2, description="Quantile bins of the training window.")
    psi_min_recent: PositiveInt = Field(56, description="Recent observations PSI needs.")
    reference_window: PositiveInt = Field(364, description="Training observations PSI uses.")
    retrain_on: tuple[Literal["performance", "input"], ...] = ("performance", "input")


@dataclass(frozen=True)
class ProductionModel:
    """A product's serving production version and what it was trained on."""

    product_id: str
    name: str
    version: str
    reference_wape: float | None
    trained_until: pd.Timestamp | None


class DriftReport(BaseModel):
    """What one monitor-drift run found and announced."""

    checked: int
    counts: dict[str, int]
    retrain: list[str]
    event_ids: list[str]


class ShadowEvidence(BaseModel):
    """A staging challenger's realized error beside the serving version's, on the same actuals."""

    shadow_version: str
    serving_version: str
    periods: int = 0  # complete periods of `period` observations both forecast, with actuals
    shadow_wape: float | None = None  # None: no complete period yet
    serving_wape: float | None = None

    def line(self) -> str:
        """One line for logs and the drift detail."""
        if not self.periods or self.shadow_wape is None or self.serving_wape is None:
            return f"shadow v{self.shadow_version}: no complete period with actuals yet"
        return (
            f"shadow v{self.shadow_version} WAPE {self.shadow_wape:.3f} vs serving"
            f" v{self.serving_version} {self.serving_wape:.3f} over {self.periods} period(s)"
        )


class DriftOutcome(BaseModel):
    """One product's drift check."""

    product_id: str
    model_name: str
    model_version: str
    status: DriftStatus
    detail: str
    reference_wape: float | None = None
    period_wapes: list[float] = []
    breaches: int = 0
    psi: float | None = None
    shadow: ShadowEvidence | None = None

    @property
    def kinds(self) -> set[str]:
        """The kinds of drift found (`performance`, `input`)."""
        return set(self.status.split("+")) & {"performance", "input"}


# --- pure metrics -------------------------------------------------------------------------------


def period_wapes(y: np.ndarray, yhat: np.ndarray, period: int) -> list[float]:
    """WAPE of each complete period of `period` consecutive observations, oldest first."""
    n = len(y) // period
    return [
        wape(y[i * period : (i + 1) * period], yhat[i * period : (i + 1) * period])
        for i in range(n)
    ]


def trailing_breaches(wapes: list[float], reference: float, threshold: float) -> int:
    """How many of the latest periods in a row have WAPE above (1 + threshold) x reference."""
    limit = (1 + threshold) * reference
    count = 0
    for value in reversed(wapes):
        if not value > limit:
            break
        count += 1
    return count


def shadow_wapes(
    actuals: pd.DataFrame, serving: pd.DataFrame, shadow: pd.DataFrame, period: int
) -> tuple[int, float | None, float | None]:
    """(complete periods, shadow WAPE, serving WAPE) over the dates with an actual and a
    forecast from both versions (`ds, y` and two `ds, yhat` frames), oldest periods first."""
    if actuals.empty or serving.empty or shadow.empty:
        return 0, None, None
    joined = (
        actuals[["ds", "y"]]
        .merge(serving[["ds", "yhat"]], on="ds")
        .merge(shadow[["ds", "yhat"]].rename(columns={"yhat": "shadow"}), on="ds")
        .drop_duplicates("ds")
        .sort_values("ds")
    )
    periods = len(joined) // period
    if not periods:
        return 0, None, None
    used = joined.iloc[: periods * period]
    y = used["y"].to_numpy(float)
    return periods, wape(y, used["shadow"].to_numpy(float)), wape(y, used["yhat"].to_numpy(float))


def psi(reference: np.ndarray, recent: np.ndarray, bins: int = 10) -> float:
    """Population stability index of `recent` against `reference`, on reference quantile bins.

    sum over bins of (recent share - reference share) x ln(recent share / reference share);
    ties in the reference (intermittent demand) merge bins; shares are floored at 1e-4.
    """
    reference, recent = np.asarray(reference, float), np.asarray(recent, float)
    if not len(reference) or not len(recent):
        raise ValueError("psi needs observations in both samples")
    edges = np.unique(np.quantile(reference, np.linspace(0, 1, bins + 1)[1:-1]))
    ref_share = _shares(reference, edges)
    new_share = _shares(recent, edges)
    return float(np.sum((new_share - ref_share) * np.log(new_share / ref_share)))


def _shares(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Share of values per bin (bins split at `edges`; a value on an edge goes up)."""
    counts = np.bincount(np.searchsorted(edges, values, side="right"), minlength=len(edges) + 1)
    return np.maximum(counts / len(values), PSI_FLOOR)


# --- one product --------------------------------------------------------------------------------


def assess(
    model: ProductionModel, actuals: pd.DataFrame, forecasts: pd.DataFrame, spec: DriftSpec
) -> DriftOutcome:
    """Drift of one production version from its product's actuals (ds, y) and its forecasts."""
    base = {
        "product_id": model.product_id,
        "model_name": model.name,
        "model_version": model.version,
    }
    actuals = actuals.sort_values("ds")
    cutoff = model.trained_until
    if cutoff is None:
        return DriftOutcome(**base, status="insufficient", detail="no trained_until tag")
    recent = actuals.loc[actuals["ds"] > cutoff]
    joined = recent.merge(forecasts[["ds", "yhat"]], on="ds", how="inner").sort_values("ds")
    wapes = period_wapes(joined["y"].to_numpy(float), joined["yhat"].to_numpy(float), spec.period)
    ref = model.reference_wape
    breaches = trailing_breaches(wapes, ref, spec.threshold) if ref is not None else 0
    value = None
    if len(recent) >= spec.psi_min_recent:
        window = actuals.loc[actuals["ds"] <= cutoff, "y"].to_numpy(float)[-spec.reference_window :]
        value = psi(window, recent["y"].to_numpy(float), spec.psi_bins) if len(window) else None
    performance = ref is not None and breaches >= spec.consecutive
    shifted = value is not None and value > spec.psi_threshold
    status = _status(performance, shifted, len(wapes) >= spec.consecutive or value is not None)
    return DriftOutcome(
        **base,
        status=status,
        detail=_detail(wapes, ref, spec, breaches, value, len(joined)),
        reference_wape=ref,
        period_wapes=[round(w, 6) if math.isfinite(w) else w for w in wapes],
        breaches=breaches,
        psi=value,
    )


def _status(performance: bool, shifted: bool, evaluable: bool) -> DriftStatus:
    if performance and shifted:
        return "performance+input"
    if performance:
        return "performance"
    if shifted:
        return "input"
    return "ok" if evaluable else "insufficient"


def _detail(
    wapes: list[float],
    ref: float | None,
    spec: DriftSpec,
    breaches: int,
    value: float | None,
    scored: int,
) -> str:
    if ref is None:
        perf = "no backtest WAPE tag"
    elif not wapes:
        perf = f"{scored} forecast days with actuals (< one period of {spec.period})"
    else:
        shown = ", ".join(f"{w:.3f}" for w in wapes[-spec.consecutive :])
        perf = (
            f"WAPE per {spec.period} obs {shown} vs limit {(1 + spec.threshold) * ref:.3f}"
            f" (backtest {ref:.3f}); {breaches} breaching in a row"
        )
    inp = "PSI n/a (too few recent obs)" if value is None else f"PSI {value:.3f}"
    return f"{perf}; {inp}"


def should_retrain(outcome: DriftOutcome, spec: DriftSpec) -> bool:
    """True when the product drifted in a way the spec retrains on."""
    return bool(outcome.kinds & set(spec.retrain_on))


# --- the fleet ----------------------------------------------------------------------------------


def assess_fleet(
    models: dict[str, ProductionModel],
    history: pd.DataFrame,
    forecasts: pd.DataFrame,
    spec: DriftSpec,
    shadows: dict[str, tuple[str, str]] | None = None,
) -> list[DriftOutcome]:
    """Drift of every production model from the history and the forecast history; with
    `shadows` (product -> its challenger's model name and version), each challenger's realized
    error beside the production version's on the same actuals."""
    actual = {pid: g for pid, g in history.groupby(history["unique_id"].astype(str), sort=False)}
    if forecasts.empty:
        forecasts = pd.DataFrame(columns=["unique_id", "ds", "yhat", "model_name", "model_version"])
    made = forecasts.groupby(["model_name", "model_version"], sort=False)
    own = {key: g for key, g in made}
    empty = pd.DataFrame({"ds": pd.Series(dtype="datetime64[ns]"), "yhat": pd.Series(dtype=float)})
    out = []
    for pid, model in models.items():
        mine = own.get((model.name, model.version), empty)
        rows = actual.get(pid, pd.DataFrame({"ds": [], "y": []}))
        outcome = assess(model, rows[["ds", "y"]], mine, spec)
        challenger = (shadows or {}).get(pid)
        if challenger is not None:
            theirs = own.get(challenger, empty)
            periods, shadow, serving = shadow_wapes(rows, mine, theirs, spec.period)
            outcome.shadow = ShadowEvidence(
                shadow_version=challenger[1],
                serving_version=model.version,
                periods=periods,
                shadow_wape=shadow,
                serving_wape=serving,
            )
            outcome.detail += f"; {outcome.shadow.line()}"
        out.append(outcome)
    return out
