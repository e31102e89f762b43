"""Requests and responses of the portfolio endpoints. Money, prices, quantities and ratios are
exact decimals: JSON strings. A ratio that is undefined (no trades, too few returns) is null."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from tradeos.core.fields import Moment, NoNul, text
from tradeos.trading.orders import OrderSide
from tradeos.trading.schemas import (
    FillOut,
    OrderOut,
    PlainDecimal,
    PositionOut,
    Positive,
    Tag,
    decimal_in,
)


class TradeOutcome(StrEnum):
    WIN = "win"  # net PnL > 0
    LOSS = "loss"  # net PnL < 0


class TradeOut(BaseModel):
    """One closed round trip, flat to flat."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    account_id: int
    symbol: str
    direction: str = Field(description="long | short")
    quantity: PlainDecimal = Field(description="The total quantity opened.")
    entry_price: PlainDecimal = Field(description="Average price of the opening fills.")
    exit_price: PlainDecimal = Field(description="Average price of the closing fills.")
    opened_at: datetime
    closed_at: datetime
    duration_seconds: PlainDecimal
    pnl: PlainDecimal = Field(description="Realized, gross of fees.")
    fees: PlainDecimal
    net_pnl: PlainDecimal
    return_pct: PlainDecimal = Field(description="Net PnL in percent of the entry notional.")
    strategy_id: str | None


class JournalEntryCreate(BaseModel):
    """A trade made elsewhere, recorded as if the account had filled it."""

    model_config = ConfigDict(extra="forbid")

    account_id: int = Field(ge=1, le=2**63 - 1)
    symbol: Annotated[str, text(41), NoNul]
    side: OrderSide
    quantity: Positive
    price: Positive
    fee: Annotated[Decimal, *decimal_in()] = Decimal(0)
    executed_at: Moment | None = Field(
        default=None, description="When it was traded (default: now); not in the future."
    )
    strategy_id: Tag | None = None
    note: Annotated[str, text(500), NoNul] | None = Field(
        default=None, description="Your own words on the trade, kept with it."
    )


class JournalEntryOut(BaseModel):
    order: OrderOut
    fill: FillOut
    note: str | None


class Cash(BaseModel):
    total: PlainDecimal = Field(description="reserved + available")
    reserved: PlainDecimal
    available: PlainDecimal


class AssetClassExposure(BaseModel):
    asset_class: str
    long: PlainDecimal = Field(description="Market value of the longs.")
    short: PlainDecimal = Field(description="Market value of the shorts, as a positive amount.")
    gross: PlainDecimal
    net: PlainDecimal
    gross_pct: PlainDecimal | None = Field(description="Of equity; null when equity <= 0.")
    net_pct: PlainDecimal | None


class PortfolioOut(BaseModel):
    account_id: int
    base_currency: str
    cash: Cash
    equity: PlainDecimal = Field(description="Cash + market value of the positions.")
    positions_value: PlainDecimal = Field(description="Signed: shorts count negative.")
    realized_pnl: PlainDecimal = Field(description="Gross of fees, since the last reset.")
    unrealized_pnl: PlainDecimal
    fees_paid: PlainDecimal
    exposure: list[AssetClassExposure]
    positions: list[PositionOut]


class HistoryInterval(StrEnum):
    M15 = "15m"
    H1 = "1h"
    D1 = "1d"

    @property
    def minutes(self) -> int:
        return {"15m": 15, "1h": 60, "1d": 1440}[self.value]


class SnapshotOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    time: datetime = Field(description="When the snapshot was taken (the bucket's last).")
    equity: PlainDecimal
    cash: PlainDecimal
    positions_value: PlainDecimal
    realized_pnl: PlainDecimal
    unrealized_pnl: PlainDecimal


class PortfolioHistoryOut(BaseModel):
    account_id: int
    interval: HistoryInterval
    start: datetime
    end: datetime
    points: list[SnapshotOut]


class PortfolioStatsOut(BaseModel):
    account_id: int
    total_value: PlainDecimal = Field(description="Equity at the live marks.")
    starting_balance: PlainDecimal
    total_return_pct: PlainDecimal = Field(description="Since the last reset.")
    realized_pnl: PlainDecimal = Field(description="Gross of fees, since the last reset.")
    unrealized_pnl: PlainDecimal
    fees_paid: PlainDecimal
    number_of_trades: int = Field(description="Round trips closed since the last reset.")
    win_rate: PlainDecimal | None = Field(description="Winning trades / trades (0 to 1).")
    profit_factor: PlainDecimal | None = Field(
        description="Gross profit / gross loss of the trades; null without a losing trade."
    )
    average_win: PlainDecimal | None = Field(description="Mean net PnL of the winning trades.")
    average_loss: PlainDecimal | None = Field(
        description="Mean net PnL of the losing trades (negative)."
    )
    max_drawdown: PlainDecimal = Field(description="Deepest fall below a running equity peak.")
    max_drawdown_pct: PlainDecimal = Field(description="That fall, in percent of the peak.")
    sharpe: PlainDecimal | None = Field(description="On daily returns, annualized (365 days).")
    sortino: PlainDecimal | None = Field(description="On daily returns, annualized (365 days).")
    positions_count: int = Field(description="Open positions.")
