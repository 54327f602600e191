"""The endpoint's request and response bodies (what its OpenAPI docs show)."""

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

MAX_HORIZON = 3660


class ForecastRequest(BaseModel):
    """One product (`product_id`) or several (`product_ids`)."""

    model_config = ConfigDict(extra="forbid")

    product_id: str | None = Field(None, min_length=1, examples=["grocery-00001"])
    product_ids: list[str] | None = Field(None, min_length=1, max_length=1000)
    horizon: int | None = Field(
        None, ge=1, le=MAX_HORIZON, description="Periods ahead (default: the family's horizon)."
    )
    exogenous: list[dict[str, Any]] | None = Field(
        None,
        min_length=1,
        description="Future rows: `ds` plus the family's exogenous columns (e.g. price, promo);"
        " the forecast covers exactly these dates.",
    )
    request_key: str | None = Field(
        None, description="Sticky key of the canary split (or the X-Request-Key header)."
    )

    @model_validator(mode="after")
    def _one_way_to_name_products(self) -> "ForecastRequest":
        if (self.product_id is None) == (self.product_ids is None):
            raise ValueError("give either product_id or product_ids")
        if self.exogenous is not None and any("ds" not in row for row in self.exogenous):
            raise ValueError("every exogenous row needs its date `ds`")
        return self

    @property
    def products(self) -> list[str]:
        """The asked-for products, in order, without repeats."""
        return list(dict.fromkeys(self.product_ids or [self.product_id or ""]))


class Row(BaseModel):
    """One forecast period, with its 80% and 95% prediction interval (absent for models
    registered before intervals existed)."""

    ds: str
    yhat: float
    yhat_lo_80: float | None = None
    yhat_hi_80: float | None = None
    yhat_lo_95: float | None = None
    yhat_hi_95: float | None = None


class ProductForecast(BaseModel):
    """One product's forecast and the version that made it."""

    product_id: str
    model_name: str
    model_version: str
    served_as: str = Field(description="champion | canary | candidate (staging, no production)")
    rows: list[Row]


class ForecastResponse(BaseModel):
    """Forecasts in the order asked."""

    forecasts: list[ProductForecast]


class Health(BaseModel):
    """A replica's state."""

    status: str
    models_loaded: int
    max_models: int
    pid: int
