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
