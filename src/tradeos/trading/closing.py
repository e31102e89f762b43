"""Closing positions: POST /positions/{symbol}/close and POST /positions/close-all.

A close is a market order on the opposite side for the position's size (or part of it, on the
quantity step), placed through `service.place_order` with `origin="close"`, so it passes every
check an order does and fills the same way. A close only reduces a position, so the risk rules
accept it whatever the account's trading state: `reducing` and `halted` accounts can always be
flattened (a halt stops new risk; it never traps a trader in a losing position).

`GET /positions/close-all` lists what a close-all would close (this router is included before
the one of `GET /positions/{symbol}`, so the literal path is answered here).

A full close first cancels the position's open bracket children (stop-loss, take-profit): they
protect a position that no longer exists and would otherwise open the opposite one.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated

from fastapi import Body, Query, status
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from tradeos.accounts.deps import ReaderDep, TraderDep
from tradeos.config import Settings
from tradeos.core.db import MAX_ROW_ID
from tradeos.core.deps import EventsDep, PageQuery, SessionDep, SettingsDep
from tradeos.core.errors import NotFound, TradeOSError, ValidationFailed, field_error
from tradeos.core.events import EventBus
from tradeos.core.fields import NoNul
from tradeos.core.pagination import Page, paginate
from tradeos.core.routing import APIRouter
from tradeos.market import service as market_service
from tradeos.market.deps import ProviderDep
from tradeos.market.providers.base import MarketProvider
from tradeos.trading import service
from tradeos.trading.models import Order, Position
from tradeos.trading.orders import OrderSide, OrderType
from tradeos.trading.schemas import OrderCreate, OrderOut, PositionOut, Positive


class CloseIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    quantity: Positive | None = Field(
        default=None, description="A partial close: at most the position, on the quantity step."
    )


class CloseError(BaseModel):
    symbol: str
    status: int
    detail: str


class CloseAllOut(BaseModel):
    account_id: int
    orders: list[OrderOut] = Field(description="The close orders placed, by symbol.")
    errors: list[CloseError] = Field(description="The positions a check refused to close.")


# -- service ----------------------------------------------------------------------------------


async def close_position(
    session: AsyncSession,
    events: EventBus,
    provider: MarketProvider | None,
    settings: Settings,
    user_id: int,
    symbol: str,
    account_id: int | None,
    quantity: Decimal | None = None,
    *,
    origin: str = "close",
) -> Order:
    """The market order closing the position in `symbol` (all of it, or `quantity`); 404 when
    the account holds none, 422 for a quantity over the position or off the step."""
    account_id = (await service.account_or_first(session, user_id, account_id)).id
    try:
        instrument = await market_service.get_instrument(session, symbol)
    except NotFound:
        raise NotFound(f"No open position in {symbol[:41]!r}.") from None
    held = await session.scalar(
        select(Position.quantity).where(
            Position.account_id == account_id, Position.symbol == instrument.symbol
        )
    )
    if not held:
        raise NotFound(f"No open position in {instrument.symbol}.")
    size = abs(held)
    if quantity is not None and quantity > size:
        raise ValidationFailed(
            f"The position in {instrument.symbol} is {size}: a close cannot sell more.",
            errors=[field_error("body.quantity", f"must be at most the position, {size}")],
        )
    if quantity is None or quantity == size:
        await _cancel_brackets(session, events, user_id, account_id, instrument.symbol)
    body = OrderCreate(
        account_id=account_id,
        symbol=instrument.symbol,
        side=OrderSide.SELL if held > 0 else OrderSide.BUY,
        type=OrderType.MARKET,
        quantity=size if quantity is None else quantity,
    )
    order, _ = await service.place_order(
        session, events, provider, settings, user_id, body, origin=origin
    )
    return order


async def _cancel_brackets(
    session: AsyncSession, events: EventBus, user_id: int, account_id: int, symbol: str
) -> None:
    children = await session.scalars(
        select(Order.id).where(
            Order.account_id == account_id,
            Order.symbol == symbol,
            Order.origin == "bracket",
            Order.status.in_(service.OPEN),
        )
    )
    for order_id in list(children):
        await service.cancel_order(session, events, user_id, order_id)


async def close_all(
    session: AsyncSession,
    events: EventBus,
    provider: MarketProvider | None,
    settings: Settings,
    user_id: int,
    account_id: int | None,
) -> CloseAllOut:
    """Close every open position of the account, each in its own savepoint: one a check
    refuses is reported in `errors` and the others still close."""
    account_id = (await service.account_or_first(session, user_id, account_id)).id
    symbols = list(
        await session.scalars(
            select(Position.symbol)
            .where(Position.account_id == account_id, Position.quantity != 0)
            .order_by(Position.symbol)
        )
    )
    placed: list[OrderOut] = []
    errors: list[CloseError] = []
    for symbol in symbols:
        try:
            async with session.begin_nested():
                order = await close_position(
                    session, events, provider, settings, user_id, symbol, account_id
                )
        except TradeOSError as exc:
            errors.append(CloseError(symbol=symbol, status=exc.status, detail=exc.detail))
            continue
        placed.append(service.order_out(order))
    return CloseAllOut(account_id=account_id, orders=placed, errors=errors)


# -- endpoints --------------------------------------------------------------------------------

positions = APIRouter(prefix="/positions", tags=["trading"])
AccountQuery = Annotated[
    int | None, Query(ge=1, le=MAX_ROW_ID, description="Default: your first account.")
]


@positions.get("/close-all")
async def positions_to_close(
    principal: ReaderDep,
    session: SessionDep,
    provider: ProviderDep,
    paging: PageQuery,
    account_id: AccountQuery = None,
) -> Page[PositionOut]:
    """What POST /positions/close-all would close: the account's open positions at the live
    mark (a terminal's confirmation step)."""
    found = (await service.account_or_first(session, principal.user_id, account_id)).id
    page = await paginate(session, service.positions_query(principal.user_id, found), paging)
    items = await service.positions_out(session, provider, page.items)
    return Page[PositionOut](
        items=items, total=page.total, page=page.page, size=page.size, pages=page.pages
    )


@positions.post("/close-all")
async def close_all_positions(
    principal: TraderDep,
    session: SessionDep,
    events: EventsDep,
    provider: ProviderDep,
    settings: SettingsDep,
    account_id: AccountQuery = None,
) -> CloseAllOut:
    """Close every open position of the account at market (reducing orders: accepted in a
    halted or reducing account too). The orders placed, and per symbol what was refused."""
    return await close_all(session, events, provider, settings, principal.user_id, account_id)


@positions.post("/{symbol}/close", status_code=status.HTTP_201_CREATED)
async def close_position_endpoint(
    symbol: Annotated[str, NoNul],
    principal: TraderDep,
    session: SessionDep,
    events: EventsDep,
    provider: ProviderDep,
    settings: SettingsDep,
    account_id: AccountQuery = None,
    body: Annotated[CloseIn | None, Body()] = None,
) -> OrderOut:
    """Close the position in `symbol` at market, all of it or `quantity` (on the quantity
    step). 404 without an open position. Accepted in a halted or reducing account."""
    order = await close_position(
        session,
        events,
        provider,
        settings,
        principal.user_id,
        symbol,
        account_id,
        None if body is None else body.quantity,
    )
    return service.order_out(order)


routers = (positions,)
