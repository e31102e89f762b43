"""SignalOS-style trading facade for terminal clients: /trading/execute, /trading/close,
/trading/orders, /trading/account, /trading/stats.

Thin wrappers over the same services as /orders, /positions and /portfolio. `execute` turns a
parsed signal into orders placed with `origin="signal"` through `service.place_order`, so it
passes every check of POST /orders:

- `entry` absent: market orders; present: limit orders at the entry.
- The quantity is `lot_size`, or sized by `risk.sizing.position_size` from `risk_percent` of
  the account's equity (at the live marks) and the distance from the entry (or the current
  ask / bid) to `stop_loss`.
- Each take-profit gets its own bracket order (with the stop-loss): the quantity split evenly
  on the instrument's step, the remainder on the last one. All the orders of one signal are
  placed or none: one refused refuses the signal (422), in one unit of work.
"""

from __future__ import annotations

from decimal import Decimal
from enum import StrEnum
from typing import Annotated

from fastapi import Query, status
from pydantic import BaseModel, ConfigDict, Field, model_validator
from sqlalchemy import Select
from sqlalchemy.ext.asyncio import AsyncSession

from tradeos.accounts.deps import ReaderDep, TraderDep
from tradeos.config import Settings
from tradeos.core.db import MAX_ROW_ID
from tradeos.core.deps import EventsDep, PageQuery, SessionDep, SettingsDep
from tradeos.core.errors import NotFound, ValidationFailed, field_error
from tradeos.core.events import EventBus
from tradeos.core.fields import NoNul, text
from tradeos.core.pagination import Page, paginate
from tradeos.core.routing import APIRouter
from tradeos.market import service as market_service
from tradeos.market.deps import ProviderDep
from tradeos.market.providers.base import MarketProvider
from tradeos.portfolio.schemas import PortfolioStatsOut
from tradeos.risk import sizing
from tradeos.trading import closing, service
from tradeos.trading.models import Order
from tradeos.trading.orders import ARITHMETIC, OrderSide, OrderType, floor_to_step
from tradeos.trading.schemas import (
    AccountDetailOut,
    OrderCreate,
    OrderOut,
    PlainDecimal,
    Positive,
    Tag,
    decimal_in,
)

MAX_TAKE_PROFITS = 10


class SignalAction(StrEnum):
    BUY = "buy"
    SELL = "sell"
    LONG = "long"
    SHORT = "short"

    @property
    def side(self) -> OrderSide:
        return OrderSide.BUY if self in (SignalAction.BUY, SignalAction.LONG) else OrderSide.SELL


AccountId = Annotated[int, Field(ge=1, le=MAX_ROW_ID)]


class ExecuteIn(BaseModel):
    """A parsed trading signal. Give `lot_size` or `risk_percent` (which needs `stop_loss`)."""

    model_config = ConfigDict(extra="forbid")

    action: SignalAction
    symbol: Annotated[str, text(41), NoNul]
    entry: Positive | None = Field(default=None, description="Absent: at market; else a limit.")
    stop_loss: Positive | None = None
    take_profits: list[Positive] = Field(default_factory=list, max_length=MAX_TAKE_PROFITS)
    lot_size: Positive | None = Field(default=None, description="The quantity to trade.")
    risk_percent: Annotated[Decimal, *decimal_in(gt=0, le=100)] | None = Field(
        default=None, description="Of the account's equity, lost if the stop-loss is hit."
    )
    account_id: AccountId | None = Field(default=None, description="Default: your first account.")
    signal_id: Tag | None = None
    strategy_id: Tag | None = None

    @model_validator(mode="after")
    def _one_size(self) -> ExecuteIn:
        if (self.lot_size is None) == (self.risk_percent is None):
            raise ValueError("give either lot_size or risk_percent")
        if self.risk_percent is not None and self.stop_loss is None:
            raise ValueError("risk_percent sizing needs a stop_loss")
        return self


class ExecuteOut(BaseModel):
    account_id: int
    symbol: str
    side: str
    quantity: PlainDecimal = Field(description="The total of the orders.")
    money_at_risk: PlainDecimal | None = Field(description="risk_percent sizing: to the stop.")
    orders: list[OrderOut]


class TradingCloseIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    symbol: Annotated[str, text(41), NoNul]
    account_id: AccountId | None = None
    quantity: Positive | None = None


# -- service ----------------------------------------------------------------------------------


async def execute(
    session: AsyncSession,
    events: EventBus,
    provider: MarketProvider | None,
    settings: Settings,
    user_id: int,
    body: ExecuteIn,
) -> ExecuteOut:
    """The signal's orders, placed (see the module's doc)."""
    account_id = (await service.account_or_first(session, user_id, body.account_id)).id
    try:
        instrument = await market_service.get_instrument(session, body.symbol)
    except NotFound as exc:
        raise _invalid("symbol", "no such instrument", exc.detail) from None
    side = body.action.side
    quantity, at_risk = body.lot_size, None
    if body.risk_percent is not None:
        assert body.stop_loss is not None  # the schema requires it with risk_percent
        entry = body.entry
        if entry is None:
            _, tick = await market_service.last_tick(session, provider, instrument)
            entry = tick.ask if side is OrderSide.BUY else tick.bid
        equity = (await service.account_detail(session, provider, user_id, account_id)).equity
        try:
            sized = sizing.position_size(
                equity,
                body.risk_percent,
                entry,
                body.stop_loss,
                instrument.quantity_step,
                instrument.tick_size,
            )
        except sizing.SizingError as exc:
            raise _invalid("risk_percent", str(exc), f"No size: {exc}.") from None
        if sized.quantity <= 0:
            raise _invalid(
                "risk_percent",
                f"the risk budget buys less than one quantity step ({instrument.quantity_step})",
                "The risk budget is too small for one quantity step.",
            )
        quantity, at_risk = sized.quantity, sized.money_at_risk
    assert quantity is not None
    parts = split_quantity(quantity, instrument.quantity_step, len(body.take_profits))
    targets: list[Decimal | None] = list(body.take_profits) or [None]
    placed: list[Order] = []
    for index, (part, take_profit) in enumerate(zip(parts, targets, strict=True)):
        order_body = OrderCreate(
            account_id=account_id,
            symbol=instrument.symbol,
            side=side,
            type=OrderType.MARKET if body.entry is None else OrderType.LIMIT,
            quantity=part,
            limit_price=body.entry,
            stop_loss=body.stop_loss,
            take_profit=take_profit,
            strategy_id=body.strategy_id,
            signal_id=body.signal_id,
        )
        try:
            order, _ = await service.place_order(
                session, events, provider, settings, user_id, order_body, origin="signal"
            )
        except ValidationFailed as exc:
            if len(parts) > 1:
                exc.extra.setdefault("take_profit_index", index)
            raise
        placed.append(order)
    return ExecuteOut(
        account_id=account_id,
        symbol=instrument.symbol,
        side=side.value,
        quantity=quantity,
        money_at_risk=at_risk,
        orders=[service.order_out(order) for order in placed],
    )


def split_quantity(quantity: Decimal, step: Decimal, parts: int) -> list[Decimal]:
    """`quantity` in `parts` (at least 1) on the step: equal shares rounded down, the
    remainder on the last; 422 when a share would be less than one step."""
    if parts <= 1:
        return [quantity]
    share = floor_to_step(ARITHMETIC.divide(quantity, Decimal(parts)), step)
    if share <= 0:
        raise _invalid(
            "take_profits",
            f"{quantity} cannot be split across {parts} take-profits on the step {step}",
            "The quantity is too small for that many take-profits.",
        )
    last = ARITHMETIC.subtract(quantity, ARITHMETIC.multiply(share, Decimal(parts - 1)))
    return [share] * (parts - 1) + [last]


def _invalid(field: str, message: str, detail: str) -> ValidationFailed:
    return ValidationFailed(detail, errors=[field_error(f"body.{field}", message)])


def orders_query(user_id: int, account_id: int | None, open_only: bool) -> Select[Order]:
    query = service.orders_query(user_id, account_id=account_id)
    if open_only:
        query = query.where(Order.status.in_(service.OPEN))
    return query.order_by(Order.created_at.desc(), Order.id.desc())


# -- endpoints --------------------------------------------------------------------------------

trading = APIRouter(prefix="/trading", tags=["signalos"])
AccountQuery = Annotated[
    int | None, Query(ge=1, le=MAX_ROW_ID, description="Default: your first account.")
]


@trading.post("/execute", status_code=status.HTTP_201_CREATED)
async def execute_signal(
    body: ExecuteIn,
    principal: TraderDep,
    session: SessionDep,
    events: EventsDep,
    provider: ProviderDep,
    settings: SettingsDep,
) -> ExecuteOut:
    """Execute a parsed signal: one order per take-profit (or one), market without `entry`,
    limit at `entry` with it, sized by `lot_size` or `risk_percent`; every check of POST
    /orders applies, and one refused order refuses the signal (422)."""
    return await execute(session, events, provider, settings, principal.user_id, body)


@trading.post("/close", status_code=status.HTTP_201_CREATED)
async def close(
    body: TradingCloseIn,
    principal: TraderDep,
    session: SessionDep,
    events: EventsDep,
    provider: ProviderDep,
    settings: SettingsDep,
) -> OrderOut:
    """Close a position at market (all, or `quantity`), as POST /positions/{symbol}/close."""
    order = await closing.close_position(
        session,
        events,
        provider,
        settings,
        principal.user_id,
        body.symbol,
        body.account_id,
        body.quantity,
    )
    return service.order_out(order)


@trading.get("/orders")
async def list_orders(
    principal: ReaderDep,
    session: SessionDep,
    paging: PageQuery,
    account_id: AccountQuery = None,
    open_only: Annotated[
        bool, Query(alias="open", description="Only open orders (accepted, partially filled).")
    ] = True,
) -> Page[OrderOut]:
    """Your orders, newest first: the open ones unless `open=false`."""
    if account_id is not None:
        await service.get_account(session, principal.user_id, account_id)
    query = orders_query(principal.user_id, account_id, open_only)
    page = await paginate(session, query, paging)
    return page.map(service.order_out)


@trading.get("/account")
async def account(
    principal: ReaderDep,
    session: SessionDep,
    provider: ProviderDep,
    account_id: AccountQuery = None,
) -> AccountDetailOut:
    """The account (default: your first one) with equity and PnL at the live marks."""
    found = (await service.account_or_first(session, principal.user_id, account_id)).id
    return await service.account_detail(session, provider, principal.user_id, found)


@trading.get("/stats")
async def stats(
    principal: ReaderDep,
    session: SessionDep,
    provider: ProviderDep,
    account_id: AccountQuery = None,
) -> PortfolioStatsOut:
    """The account's performance (default: your first account), as GET /portfolio/stats."""
    from tradeos.portfolio.service import portfolio_stats

    return await portfolio_stats(session, provider, principal.user_id, account_id)


routers = (trading,)
