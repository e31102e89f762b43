"""Requests and responses of the trading endpoints. Money, prices and quantities are exact
decimals: JSON strings, in requests and responses alike."""

from __future__ import annotations

import re
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    PlainValidator,
    WithJsonSchema,
)

from tradeos.core.db import strip_trailing_zeros
from tradeos.core.fields import NoNul, decimal_text, text
from tradeos.core.fields import PlainDecimal as _PlainDecimal
from tradeos.trading.orders import OrderSide, OrderType, TimeInForce

# Written in its shortest form: `1100`, not `1100.00`, whatever arithmetic made it.
PlainDecimal = Annotated[_PlainDecimal, AfterValidator(strip_trailing_zeros)]

# Starting balances above this are refused: a paper account is practice, not a fantasy.
MAX_STARTING_BALANCE = Decimal(1_000_000_000)
DEFAULT_ACCOUNT_NAME = "Paper"
DEFAULT_STARTING_BALANCE = Decimal(100_000)

# An exact decimal in a request: a JSON string, as in responses (a JSON number may already
# have been rounded by the client's parser). At most what NUMERIC(38,18) holds: 20 integer
# digits and 18 decimals; never negative.
DECIMAL_PATTERN = r"^[0-9]{1,20}(\.[0-9]{1,18})?$"
_DECIMAL_MESSAGE = 'must be a non-negative decimal number written as a string, e.g. "12.5"'


def _parse_decimal(value: object) -> Decimal:
    if isinstance(value, Decimal):  # built in Python (defaults, services): already exact
        return value
    if isinstance(value, str) and re.fullmatch(DECIMAL_PATTERN, value):
        return Decimal(value)
    raise ValueError(_DECIMAL_MESSAGE)


def _decimal_json(value: Decimal | str) -> str:
    return value if isinstance(value, str) else decimal_text(value)


def decimal_in(
    *, gt: Decimal | int | None = None, le: Decimal | int | None = None
) -> tuple[PlainValidator, AfterValidator, PlainSerializer, WithJsonSchema]:
    """The validators of a request decimal, with bounds beyond the pattern (> `gt`, <= `le`):
    `Annotated[Decimal, *decimal_in(gt=0)]`."""

    def bounded(value: Decimal) -> Decimal:
        if gt is not None and not value > gt:
            raise ValueError(f"must be greater than {gt}")
        if le is not None and not value <= le:
            raise ValueError(f"must be at most {le}")
        return value

    schema: dict[str, Any] = {"type": "string", "pattern": DECIMAL_PATTERN, "examples": ["12.5"]}
    return (
        PlainValidator(_parse_decimal),
        AfterValidator(bounded),
        PlainSerializer(_decimal_json, return_type=str, when_used="json"),
        WithJsonSchema(schema),
    )


Positive = Annotated[Decimal, *decimal_in(gt=0)]
NonNegative = Annotated[Decimal, *decimal_in()]
Tag = Annotated[str, text(64), NoNul]


class AccountCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Annotated[str, text(100), NoNul]
    kind: Literal["paper"] = Field(default="paper", description="Only paper accounts for now.")
    base_currency: Literal["USD"] = Field(default="USD", description="Only USD for now.")
    starting_balance: Annotated[
        Decimal, *decimal_in(gt=0, le=MAX_STARTING_BALANCE), Field(description="Up to 1e9.")
    ] = DEFAULT_STARTING_BALANCE
    allow_short: bool = Field(default=False, description="Whether sells may open a short.")


class AccountOut(BaseModel):
    id: int
    name: str
    kind: str
    base_currency: str
    starting_balance: PlainDecimal
    allow_short: bool
    trading_state: str
    cash: PlainDecimal = Field(description="Cash total: reserved + available.")
    reserved: PlainDecimal = Field(description="Held by open orders and short collateral.")
    available: PlainDecimal = Field(description="What new orders can spend.")
    created_at: datetime
    reset_at: datetime | None


class AccountDetailOut(AccountOut):
    equity: PlainDecimal = Field(description="Cash + market value of positions at the mark.")
    market_value: PlainDecimal = Field(description="Signed: shorts count negative.")
    unrealized_pnl: PlainDecimal
    realized_pnl: PlainDecimal = Field(description="Gross of fees, since the last reset.")
    fees_paid: PlainDecimal = Field(description="Since the last reset.")
    margin_used: PlainDecimal = Field(description="Cash held as collateral of open shorts.")


class OrderCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    account_id: int = Field(ge=1, le=2**63 - 1)
    symbol: Annotated[str, text(41), NoNul]
    side: OrderSide
    type: OrderType = OrderType.MARKET
    quantity: Positive | None = None
    notional: Positive | None = Field(
        default=None, description="Market orders: an amount of the quote currency to trade."
    )
    limit_price: Positive | None = None
    stop_price: Positive | None = None
    time_in_force: TimeInForce = TimeInForce.GTC
    stop_loss: Positive | None = None
    take_profit: Positive | None = None
    client_order_id: Tag | None = Field(
        default=None, description="Unique per account: a retry returns the first order."
    )
    strategy_id: Tag | None = None
    signal_id: Tag | None = None


class OrderAmend(BaseModel):
    """PATCH /orders/{id}: the fields to change of an open order; those not given keep their
    value, and `null` removes a stop-loss or take-profit."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"minProperties": 1})

    # Zero is refused with the order's other rules (422 naming the field), once the order is
    # known to be yours: someone else's order is a 404 whatever the body says.
    quantity: NonNegative | None = Field(
        default=None, description="The whole order, filled included."
    )
    limit_price: NonNegative | None = None
    stop_price: NonNegative | None = None
    stop_loss: NonNegative | None = None
    take_profit: NonNegative | None = None


class FillOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    fill_id: str
    order_id: int
    symbol: str
    side: str
    quantity: PlainDecimal
    price: PlainDecimal
    fee: PlainDecimal
    liquidity: str
    realized_pnl: PlainDecimal
    time: datetime


class OrderOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    account_id: int
    symbol: str
    side: str
    type: str
    time_in_force: str
    status: str
    quantity: PlainDecimal
    notional: PlainDecimal | None
    filled_quantity: PlainDecimal
    average_fill_price: PlainDecimal | None
    limit_price: PlainDecimal | None
    stop_price: PlainDecimal | None
    stop_loss: PlainDecimal | None
    take_profit: PlainDecimal | None
    reserved: PlainDecimal
    fees: PlainDecimal
    client_order_id: str | None
    strategy_id: str | None
    signal_id: str | None
    cancel_reason: str | None
    triggered: bool = Field(description="A stop (limit) order has reached its stop price.")
    origin: str = Field(description="api, bracket (a stop-loss / take-profit child), …")
    parent_order_id: int | None = Field(description="A bracket child's parent order.")
    bracket_role: str | None = Field(description="A bracket child's role: stop_loss | take_profit.")
    expires_at: datetime | None = Field(description="A day order's end: the next 00:00 UTC.")
    note: str | None = Field(default=None, description="A journal entry's note (POST /trades).")
    created_at: datetime
    updated_at: datetime


class OrderDetailOut(OrderOut):
    fills: list[FillOut]


class PositionOut(BaseModel):
    account_id: int
    symbol: str
    quantity: PlainDecimal = Field(description="Signed: negative is short.")
    average_entry_price: PlainDecimal
    mark_price: PlainDecimal | None
    market_value: PlainDecimal | None
    cost: PlainDecimal
    realized_pnl: PlainDecimal = Field(description="Gross of fees.")
    unrealized_pnl: PlainDecimal | None
    fees_paid: PlainDecimal
    opened_at: datetime | None
