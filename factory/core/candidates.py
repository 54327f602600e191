"""The candidates a family can list in fleet.yaml: one pydantic spec per model kind."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, PositiveInt


class StrictSpec(BaseModel):
    """A fleet.yaml section: frozen, and a key it does not know is an error."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class RidgeSpec(StrictSpec):
    """scikit-learn Ridge regression on the family's features."""

    kind: Literal["ridge"]
    alpha: float = Field(1.0, ge=0)


class ElasticNetSpec(StrictSpec):
    """scikit-learn ElasticNet on the family's features."""

    kind: Literal["elastic_net"]
    alpha: float = Field(0.1, ge=0)
    l1_ratio: float = Field(0.5, ge=0, le=1)


class RandomForestSpec(StrictSpec):
    """scikit-learn RandomForestRegressor on the family's features."""

    kind: Literal["random_forest"]
    n_estimators: PositiveInt = 100
    max_depth: PositiveInt | None = 8
    min_samples_leaf: PositiveInt = 5


class BoostingParams(StrictSpec):
    """LightGBM's parameters, shared by the per-product and the pooled kind."""

    n_estimators: PositiveInt = 100
    learning_rate: float = Field(0.05, gt=0, le=1)
    num_leaves: int = Field(31, ge=2)
    min_data_in_leaf: PositiveInt = 20
    feature_fraction: float = Field(1.0, gt=0, le=1)
    objective: Literal["regression", "poisson", "tweedie", "l1"] = "regression"


class LightGBMSpec(BoostingParams):
    """LightGBM gradient boosting on one product's features."""

    kind: Literal["lightgbm"]


class PooledLightGBMSpec(BoostingParams):
    """One LightGBM trained across the products trained together (a shard of the family), on
    each product's features scaled by its recent level; forecasts per product as usual.
    Registration stays one model version per product (it carries the shared booster)."""

    kind: Literal["pooled_lightgbm"]
    n_estimators: PositiveInt = 300


class AutoETSSpec(StrictSpec):
    """Exponential smoothing (ETS), its form chosen by AICc: statsforecast's AutoETS."""

    kind: Literal["auto_ets"]
    # error, trend, season: A additive, M multiplicative, N none, Z chosen
    model: str = Field("ZZZ", pattern=r"^[AMZ][ANMZ][ANMZ]$")
    damped: bool | None = None  # None: tried both ways


class ThetaSpec(StrictSpec):
    """The Theta family: standard, optimized, dynamic, or the best of them (auto)."""

    kind: Literal["theta"]
    variant: Literal["auto", "standard", "optimized", "dynamic", "dynamic_optimized"] = "auto"
    decomposition: Literal["multiplicative", "additive"] = "multiplicative"


class AutoARIMASpec(StrictSpec):
    """Seasonal ARIMA, orders chosen by a stepwise AICc search: statsforecast's AutoARIMA."""

    kind: Literal["auto_arima"]
    max_p: int = Field(5, ge=0, le=10)
    max_q: int = Field(5, ge=0, le=10)
    max_P: int = Field(2, ge=0, le=4)
    max_Q: int = Field(2, ge=0, le=4)
    stepwise: bool = True
    approximation: bool = True  # approximate likelihood during the search (much faster)
    nmodels: PositiveInt = 94


class CrostonSpec(StrictSpec):
    """Croston's method for intermittent demand (classic, SBA-debiased, or optimized)."""

    kind: Literal["croston"]
    variant: Literal["classic", "sba", "optimized"] = "sba"


class ADIDASpec(StrictSpec):
    """ADIDA: temporal aggregation to the mean interval between sales, then smoothing."""

    kind: Literal["adida"]


class IMAPASpec(StrictSpec):
    """IMAPA: ADIDA over several aggregation levels, averaged."""

    kind: Literal["imapa"]


class TSBSpec(StrictSpec):
    """Teunter-Syntetos-Babai: smooths demand size and the probability of a sale."""

    kind: Literal["tsb"]
    alpha_d: float = Field(0.1, gt=0, le=1)
    alpha_p: float = Field(0.1, gt=0, le=1)


class NaiveSpec(StrictSpec):
    """The last value, repeated."""

    kind: Literal["naive"]


class MeanSpec(StrictSpec):
    """The mean of the history, repeated."""

    kind: Literal["mean"]


class EnsembleSpec(StrictSpec):
    """The best `top_k` of the family's other candidates by backtest score, combined step by
    step; backtested on the same windows like any candidate."""

    kind: Literal["ensemble"]
    top_k: int = Field(3, ge=2)
    combine: Literal["mean", "median"] = "median"
    # fixed members instead (candidate labels, e.g. [auto_ets, theta, auto_arima]: the
    # classical combination), those of them that ran on the product
    members: tuple[str, ...] = ()
    # another candidate is chosen over the ensemble only when it beats the ensemble's
    # backtest score by this fraction (0: the best score wins outright)
    margin: float = Field(0.0, ge=0, lt=1)


BaseModelSpec = Annotated[
    RidgeSpec
    | ElasticNetSpec
    | RandomForestSpec
    | LightGBMSpec
    | PooledLightGBMSpec
    | AutoETSSpec
    | ThetaSpec
    | AutoARIMASpec
    | CrostonSpec
    | ADIDASpec
    | IMAPASpec
    | TSBSpec
    | NaiveSpec
    | MeanSpec,
    Field(discriminator="kind"),
]
ModelSpec = Annotated[BaseModelSpec | EnsembleSpec, Field(discriminator="kind")]


def candidate_labels(kinds: Sequence[str]) -> list[str]:
    """Each candidate's label: its kind, suffixed with its position when the kind repeats."""
    return [k if kinds.count(k) == 1 else f"{k}_{i}" for i, k in enumerate(kinds)]
