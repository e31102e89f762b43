"""Requests and responses of the backtest endpoints."""

from __future__ import annotations

import re
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    PlainValidator,
    StringConstraints,
    WithJsonSchema,
)

from tradeos.backtest.models import BacktestKind, BacktestStatus
from tradeos.core.fields import Moment, NoNul, PlainDecimal, decimal_text
from tradeos.market.timeframes import Timeframe
from tradeos.strategies.schemas import ParameterValue, ParameterValues
from tradeos.trading.fill_model import IntrabarRule

MAX_SYMBOLS = 10
# The most bars one backtest reads per instrument: (end - start) / timeframe.
MAX_BARS = 200_000
# The most trades a GET answer lists (all are stored); the equity curve's most points.
MAX_TRADES_SHOWN = 10_000
MAX_CURVE_POINTS = 2_000
MAX_TOP = 50
MAX_INITIAL_CASH = Decimal(1_000_000_000_000)

# An exact decimal in a request: a JSON string (a number may have been rounded by the client's
# parser already), at most what NUMERIC(38,18) holds, never negative.
DECIMAL_PATTERN = r"^[0-9]{1,20}(\.[0-9]{1,18})?$"


def _parse_cash(value: object) -> Decimal:
    if isinstance(value, Decimal):
        return value
    if isinstance(value, str) and re.fullmatch(DECIMAL_PATTERN, value):
        return Decimal(value)
    raise ValueError('must be a non-negative decimal number written as a string, e.g. "10000"')


def _positive_cash(value: Decimal) -> Decimal:
    if not 0 < value <= MAX_INITIAL_CASH:
        raise ValueError(f"must be greater than 0 and at most {MAX_INITIAL_CASH}")
    return value


Cash = Annotated[
    Decimal,
    PlainValidator(_parse_cash),
    AfterValidator(_positive_cash),
    PlainSerializer(decimal_text, return_type=str, when_used="json"),
    WithJsonSchema({"type": "string", "pattern": DECIMAL_PATTERN, "examples": ["10000"]}),
]
Symbol = Annotated[str, StringConstraints(min_length=1, max_length=40), NoNul]
Formula = Annotated[str, StringConstraints(min_length=1), NoNul]


class Fill(StrEnum):
    NEXT_OPEN = "next_open"
    CLOSE = "close"


class SizingMode(StrEnum):
    FIXED = "fixed"
    PERCENT_EQUITY = "percent_equity"
    PERCENT_CASH = "percent_cash"
    RISK = "risk"


class Objective(StrEnum):
    """The metrics an optimization can rank by (`runner.METRIC_NAMES`)."""

    TOTAL_RETURN = "total_return"
    CAGR = "cagr"
    VOLATILITY = "volatility"
    SHARPE = "sharpe"
    SORTINO = "sortino"
    CALMAR = "calmar"
    MAX_DRAWDOWN = "max_drawdown"
    MAX_DRAWDOWN_DURATION = "max_drawdown_duration"
    TRADES = "trades"
    WIN_RATE = "win_rate"
    PROFIT_FACTOR = "profit_factor"
    EXPECTANCY = "expectancy"
    AVG_WIN = "avg_win"
    AVG_LOSS = "avg_loss"
    BEST_TRADE = "best_trade"
    WORST_TRADE = "worst_trade"
    EXPOSURE = "exposure"
    BUY_AND_HOLD_RETURN = "buy_and_hold_return"


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SizingIn(_Request):
    mode: SizingMode = Field(
        description="fixed: `value` units per entry; percent_equity / percent_cash: `value` % "
        "of equity / free cash per entry; risk: lose at most `value` % of equity at the "
        "formula's stop (an entry without a stop is not taken)."
    )
    value: float = Field(gt=0, le=1_000_000_000, description="Units, or a percentage (≤ 100).")


class _Config(_Request):
    strategy_id: int | None = Field(
        default=None,
        ge=1,
        description="A strategy you may read (yours, or a public one). Exactly one of "
        "`strategy_id` and `formula`.",
    )
    formula: Formula | None = Field(default=None, description="An inline formula instead.")
    timeframe: Timeframe = Timeframe.H1
    start: Moment = Field(description="First bar's open time (inclusive, UTC).")
    end: Moment = Field(
        description=f"Bars opening before this (exclusive); after start, at most {MAX_BARS:,} "
        "bars of the timeframe."
    )
    initial_cash: Cash = Field(default=Decimal(10_000), description="Starting cash (> 0).")
    commission: float = Field(
        default=0.0, ge=0, le=0.1, description="Fee per fill (each side), a fraction of notional."
    )
    fixed_fee: float = Field(
        default=0.0,
        ge=0,
        le=1_000_000,
        description="A fixed fee per fill (each side) in the quote currency, on top of the "
        "commission.",
    )
    min_fee: float = Field(
        default=0.0, ge=0, le=1_000_000, description="The least a fill pays in fees."
    )
    slippage_bps: float = Field(default=0.0, ge=0, le=1000, description="Slippage per fill.")
    fill: Fill = Field(
        default=Fill.NEXT_OPEN,
        description="next_open: a signal fills at the next bar's open; close: at its close.",
    )
    intrabar_rule: IntrabarRule = Field(
        default=IntrabarRule.WORST,
        description="When one bar's range reaches both the stop-loss and the take-profit: "
        "worst (the one worse for the trader), best, or nearest_to_open (the level nearer the "
        "bar's open).",
    )
    sizing: SizingIn = Field(
        default_factory=lambda: SizingIn(mode=SizingMode.PERCENT_EQUITY, value=100)
    )
    whole_units: bool = Field(
        default=True,
        description="true: whole units only; false: the instrument's quantity step.",
    )
    allow_short: bool = Field(default=True, description="Let entry_short open shorts.")
    params: ParameterValues = Field(default_factory=dict)


class BacktestIn(_Config):
    symbols: list[Symbol] = Field(
        min_length=1,
        max_length=MAX_SYMBOLS,
        description="Instruments on one cash balance; more than one needs a plan with "
        "multi-asset backtests.",
    )


class GridRange(_Request):
    start: ParameterValue
    stop: ParameterValue = Field(description="Inclusive.")
    step: ParameterValue = Field(description="Greater than 0.")


GridValues = Annotated[list[ParameterValue], Field(min_length=1, max_length=10_000)]


class OptimizeIn(_Config):
    symbol: Symbol
    grid: dict[
        Annotated[str, StringConstraints(min_length=1, max_length=100)], GridValues | GridRange
    ] = Field(
        min_length=1,
        max_length=20,
        description="Parameter name → values to try, or {start, stop, step}; at most "
        "10,000 combinations in all.",
    )
    objective: Objective = Objective.TOTAL_RETURN
    top: int = Field(default=10, ge=1, le=MAX_TOP)


class BacktestAccepted(BaseModel):
    id: int
    kind: BacktestKind
    status: BacktestStatus
    job_id: int


class TradeOut(BaseModel):
    symbol: str
    side: str
    entry_time: datetime
    exit_time: datetime
    # Numbers; null only where one is not finite (a return on a zero notional).
    entry_price: float | None
    exit_price: float | None
    quantity: float | None
    fees: float | None
    pnl: float | None
    return_: float | None = Field(alias="return", serialization_alias="return")
    exit_reason: str

    model_config = ConfigDict(populate_by_name=True)


class EquityPoint(BaseModel):
    time: datetime
    equity: float | None
    drawdown: float | None = Field(description="Below the running peak: -0.1 is 10 % below.")


Metrics = dict[str, float | int | None]


class OptimizationRowOut(BaseModel):
    rank: int
    params: dict[str, float]
    final_equity: float | None
    metrics: Metrics


class BacktestOut(BaseModel):
    id: int
    kind: BacktestKind
    status: BacktestStatus
    progress: int = Field(description="0–100.")
    progress_message: str | None
    error: str | None = Field(description="Why it failed.")
    job_id: int | None
    strategy_id: int | None
    request: dict[str, Any] = Field(description="The parameters it was asked to run with.")
    total_return: PlainDecimal | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


class BacktestDetailOut(BacktestOut):
    bars: int | None = Field(default=None, description="Bars simulated (once succeeded).")
    params: dict[str, float] | None = Field(default=None, description="Every parameter value used.")
    final_equity: float | None = None
    metrics: Metrics | None = Field(
        default=None, description="Each metric a number; NaN and infinities as null."
    )
    trades: list[TradeOut] | None = Field(
        default=None, description=f"The closed trades, the first {MAX_TRADES_SHOWN:,}."
    )
    trade_count: int | None = None
    trades_truncated: bool | None = None
    equity_curve: list[EquityPoint] | None = Field(
        default=None, description=f"At most {MAX_CURVE_POINTS:,} points, extremes kept."
    )
    top: list[OptimizationRowOut] | None = Field(
        default=None, description="An optimization's best parameter sets, best first."
    )
