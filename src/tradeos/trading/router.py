"""Trading endpoints: /accounts, /orders, /positions."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Query, Response, status

from tradeos.accounts.deps import ReaderDep, TraderDep
from tradeos.core.db import MAX_ROW_ID
from tradeos.core.deps import EventsDep, PageQuery, ResourceId, SessionDep, SettingsDep
from tradeos.core.errors import ValidationFailed, field_error
from tradeos.core.fields import Moment, NoNul
from tradeos.core.pagination import Ordering, Page, paginate
from tradeos.core.routing import APIRouter
from tradeos.market.deps import ProviderDep
from tradeos.trading import service
from tradeos.trading.orders import OrderSide, OrderStatus
from tradeos.trading.schemas import (
    AccountCreate,
    AccountDetailOut,
    AccountOut,
    OrderAmend,
    OrderCreate,
    OrderDetailOut,
    OrderOut,
    PositionOut,
)

accounts = APIRouter(prefix="/accounts", tags=["trading"])
orders = APIRouter(prefix="/orders", tags=["trading"])
positions = APIRouter(prefix="/positions", tags=["trading"])


AccountFilter = Annotated[
    int | None, Query(ge=1, le=MAX_ROW_ID, description="Only this trading account.")
]


@accounts.post("", status_code=status.HTTP_201_CREATED)
async def create_account(
    body: AccountCreate, principal: TraderDep, session: SessionDep
) -> AccountOut:
    """A new paper account (409 when you have one of that name)."""
    account = await service.create_account(session, principal.user_id, body)
    return service.account_out(account)


@accounts.get("")
async def list_accounts(
    principal: ReaderDep,
    session: SessionDep,
    paging: PageQuery,
    order: Annotated[Ordering, Depends(service.ACCOUNT_SORT)],
) -> Page[AccountOut]:
    query = service.accounts_query(principal.user_id).order_by(*order.clauses)
    page = await paginate(session, query, paging)
    return page.map(service.account_out)


@accounts.get("/{account_id}")
async def get_account(
    account_id: ResourceId, principal: ReaderDep, session: SessionDep, provider: ProviderDep
) -> AccountDetailOut:
    """Cash, reservations, equity at the live marks, PnL and margin."""
    return await service.account_detail(session, provider, principal.user_id, account_id)


@accounts.post("/{account_id}/reset")
async def reset_account(
    account_id: ResourceId, principal: TraderDep, session: SessionDep, events: EventsDep
) -> AccountOut:
    """Start over: open orders canceled, positions deleted, cash back to the starting
    balance. Orders and fills are kept as history."""
    account = await service.reset_account(session, events, principal.user_id, account_id)
    return service.account_out(account)


@orders.post(
    "",
    status_code=status.HTTP_201_CREATED,
    responses={200: {"model": OrderOut, "description": "A retry: the order first placed."}},
)
async def place_order(
    body: OrderCreate,
    response: Response,
    principal: TraderDep,
    session: SessionDep,
    events: EventsDep,
    provider: ProviderDep,
    settings: SettingsDep,
) -> OrderOut:
    """Place an order. Market orders (and marketable limit / reached stop orders) fill at once
    at the current price; others rest, accepted. 201 for a new order; 200 with the first order
    when `client_order_id` was used before on the account. 422 for an invalid order (naming
    the fields) or one a risk rule refuses (naming the rule, its limit and the value)."""
    order, created = await service.place_order(
        session, events, provider, settings, principal.user_id, body
    )
    if not created:
        response.status_code = status.HTTP_200_OK
    return service.order_out(order)


@orders.get("")
async def list_orders(
    principal: ReaderDep,
    session: SessionDep,
    paging: PageQuery,
    order: Annotated[Ordering, Depends(service.ORDER_SORT)],
    account_id: AccountFilter = None,
    status_filter: Annotated[OrderStatus | None, Query(alias="status")] = None,
    symbol: Annotated[str | None, Query(max_length=41), NoNul] = None,
    side: OrderSide | None = None,
    created_from: Annotated[Moment | None, Query(description="Created at or after.")] = None,
    created_to: Annotated[Moment | None, Query(description="Created before.")] = None,
) -> Page[OrderOut]:
    if created_from is not None and created_to is not None and created_from >= created_to:
        raise ValidationFailed(
            "created_from is not before created_to: the time window is empty.",
            errors=[field_error("query.created_from", "must be before created_to")],
        )
    query = service.orders_query(
        principal.user_id,
        account_id=account_id,
        status=status_filter.value if status_filter else None,
        symbol=symbol,
        side=side.value if side else None,
        created_from=created_from,
        created_to=created_to,
    )
    page = await paginate(session, query.order_by(*order.clauses), paging)
    return page.map(service.order_out)


@orders.get("/{order_id}")
async def get_order(
    order_id: ResourceId, principal: ReaderDep, session: SessionDep
) -> OrderDetailOut:
    return await service.order_detail(session, principal.user_id, order_id)


@orders.patch("/{order_id}")
async def amend_order(
    order_id: ResourceId,
    body: OrderAmend,
    principal: TraderDep,
    session: SessionDep,
    events: EventsDep,
    provider: ProviderDep,
    settings: SettingsDep,
) -> OrderOut:
    """Change the quantity or prices (limit, stop, stop-loss, take-profit) of an open order.
    Checked like a new order and its reservation taken again: 422 naming the fields or the
    risk rule (nothing changed), 409 when the order is no longer open. A change that makes
    the order marketable fills it at once."""
    order = await service.amend_order(
        session, events, provider, settings, principal.user_id, order_id, body
    )
    return service.order_out(order)


@orders.delete("/{order_id}")
async def cancel_order(
    order_id: ResourceId,
    principal: TraderDep,
    session: SessionDep,
    events: EventsDep,
    settings: SettingsDep,
) -> OrderOut:
    """Cancel an open order and release its reservation; 409 when it is not open. A bracket
    parent canceled after a partial fill gets its stop-loss / take-profit children."""
    order = await service.cancel_order(session, events, principal.user_id, order_id, settings)
    return service.order_out(order)


@positions.get("")
async def list_positions(
    principal: ReaderDep,
    session: SessionDep,
    paging: PageQuery,
    provider: ProviderDep,
    account_id: AccountFilter = None,
) -> Page[PositionOut]:
    """Open positions at the live mark price."""
    page = await paginate(session, service.positions_query(principal.user_id, account_id), paging)
    items = await service.positions_out(session, provider, page.items)
    return Page[PositionOut](
        items=items, total=page.total, page=page.page, size=page.size, pages=page.pages
    )


@positions.get("/{symbol}")
async def get_position(
    symbol: Annotated[str, NoNul],
    principal: ReaderDep,
    session: SessionDep,
    provider: ProviderDep,
    account_id: AccountFilter = None,
) -> PositionOut:
    """The position in one instrument (default account: your first one, "Paper"); 404 when
    the account never traded it."""
    return await service.position(session, provider, principal.user_id, symbol, account_id)


routers = (accounts, orders, positions)
