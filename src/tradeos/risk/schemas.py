"""Requests and responses of the risk profile endpoints."""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints

from tradeos.core.db import strip_trailing_zeros
from tradeos.core.fields import PlainDecimal as _PlainDecimal
from tradeos.market.providers.base import AssetClass
from tradeos.trading.schemas import decimal_in

# Written in its shortest form: `1100`, not `1100.00`, whatever arithmetic made it.
PlainDecimal = Annotated[_PlainDecimal, AfterValidator(strip_trailing_zeros)]

# Strings, like every decimal in the API; never negative (the pattern says so).
Percent = Annotated[Decimal, *decimal_in(le=100)]
Amount = Annotated[Decimal, *decimal_in()]
Leverage = Annotated[Decimal, *decimal_in(le=1000)]
Count = Annotated[int, Field(ge=0, le=1_000_000)]
SymbolText = Annotated[str, StringConstraints(min_length=1, max_length=41, pattern=r"^[^\s]+$")]


class RiskProfileIn(BaseModel):
    """An account's risk limits; null switches a rule off. Percentages are of equity, 0 to
    100; amounts and counts are non-negative."""

    model_config = ConfigDict(extra="forbid")

    max_position_quantity: Amount | None = None
    max_position_pct: Percent | None = None
    max_risk_per_trade_pct: Percent | None = Decimal(2)
    max_daily_loss: Amount | None = None
    max_daily_loss_pct: Percent | None = None
    max_daily_trades: Count | None = 50
    max_open_positions: Count | None = None
    max_leverage: (
        Annotated[Decimal, Field(ge=0, le=1000, max_digits=38, decimal_places=18)] | None
    ) = None
    allowed_symbols: list[SymbolText] | None = Field(default=None, max_length=500)
    allowed_asset_classes: list[AssetClass] | None = None
    stop_loss_required: bool = False


class RiskProfileOut(BaseModel):
    account_id: int
    max_position_quantity: PlainDecimal | None
    max_position_pct: PlainDecimal | None
    max_risk_per_trade_pct: PlainDecimal | None
    max_daily_loss: PlainDecimal | None
    max_daily_loss_pct: PlainDecimal | None
    max_daily_trades: int | None
    max_open_positions: int | None
    max_leverage: PlainDecimal | None
    allowed_symbols: list[str] | None
    allowed_asset_classes: list[str] | None
    stop_loss_required: bool


# -- risk tools -------------------------------------------------------------------------------

Price = Annotated[Decimal, *decimal_in(gt=0)]
# The risk per trade, in percent of equity: more than 0, at most 100.
RiskPercent = Annotated[Decimal, *decimal_in(gt=0, le=100)]


class PositionSizeIn(BaseModel):
    """Either `equity` or `account_id` (its equity at the live marks)."""

    model_config = ConfigDict(extra="forbid")

    symbol: SymbolText = Field(description="The instrument: its quantity step and tick size.")
    entry: Price
    stop: Price = Field(description="The stop-loss: below the entry for a long, above a short.")
    risk_percent: RiskPercent = Field(description="Of equity: more than 0, at most 100.")
    equity: Price | None = None
    account_id: int | None = Field(default=None, ge=1, le=2**63 - 1)


class PositionSizeOut(BaseModel):
    symbol: str
    direction: str = Field(description="long (stop below the entry) or short.")
    equity: PlainDecimal
    risk_percent: PlainDecimal
    risk_budget: PlainDecimal = Field(description="equity × risk_percent / 100.")
    entry: PlainDecimal
    stop: PlainDecimal
    risk_per_unit: PlainDecimal = Field(
        description="|entry − stop|, the two first rounded to the tick away from each other."
    )
    quantity: PlainDecimal = Field(description="Rounded down to the instrument's quantity step.")
    quantity_step: PlainDecimal
    money_at_risk: PlainDecimal = Field(description="quantity × risk per unit: within budget.")
    notional: PlainDecimal = Field(description="quantity × entry.")


class ExposureOut(BaseModel):
    long: PlainDecimal
    short: PlainDecimal = Field(description="The shorts' market value, as a positive amount.")
    gross: PlainDecimal
    net: PlainDecimal
    gross_pct_of_equity: PlainDecimal | None = Field(description="Null without positive equity.")


class SymbolExposureOut(ExposureOut):
    symbol: str
    asset_class: str
    quantity: PlainDecimal
    mark_price: PlainDecimal


class AssetClassExposureOut(ExposureOut):
    asset_class: str


class ValueAtRiskOut(BaseModel):
    confidence: PlainDecimal
    horizon_days: int
    amount: PlainDecimal | None = Field(
        description="The 1-day loss not exceeded on 95% of the historical days; null without "
        "at least two daily closes of every held symbol."
    )
    observations: int = Field(description="Daily returns the figure is computed from.")
    lookback_days: int


class DrawdownOut(BaseModel):
    current: PlainDecimal
    current_pct: PlainDecimal
    maximum: PlainDecimal
    maximum_pct: PlainDecimal
    points: int = Field(description="Equity points: the account's snapshots and equity now.")


class RiskAssessmentOut(BaseModel):
    account_id: int
    equity: PlainDecimal
    exposure: ExposureOut
    by_symbol: list[SymbolExposureOut]
    by_asset_class: list[AssetClassExposureOut]
    concentration: PlainDecimal = Field(description="The largest symbol's share of gross, 0–1.")
    gross_leverage: PlainDecimal | None = Field(description="Null without positive equity.")
    net_leverage: PlainDecimal | None
    value_at_risk: ValueAtRiskOut
    drawdown: DrawdownOut
