"""PATCH /orders/{id}: the quantity and prices of an open order change, its reservation is taken
again and the risk rules asked again; a change that makes it marketable fills it at once; every
refusal is a problem naming the field or rule and changes nothing."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncSession

from tests.trading.support import (
    API,
    FixedMarket,
    Trader,
    account,
    install_market,
    make_trader,
    set_profile,
)
from tests.trading.support import order as place
from tradeos.config import Settings
from tradeos.core.db import utcnow
from tradeos.core.events import flush_after_commit
from tradeos.market.providers.base import Tick
from tradeos.trading import orders, service
from tradeos.trading.models import Order, TradingAccount
from tradeos.trading.orders import OrderSide, OrderStatus, OrderType


@pytest.fixture
def market(app: FastAPI, client: httpx.AsyncClient) -> FixedMarket:
    return install_market(app)


@pytest.fixture
async def trader(
    client: httpx.AsyncClient, session: AsyncSession, settings: Settings, market: FixedMarket
) -> Trader:
    return await make_trader(client, session, settings, starting_balance="10000")


async def patch(
    client: httpx.AsyncClient, trader: Trader, order_id: int, **fields: Any
) -> httpx.Response:
    return await client.patch(f"{API}/orders/{order_id}", headers=trader.headers, json=fields)


async def test_changing_a_resting_order_takes_its_reservation_again(
    app: FastAPI, client: httpx.AsyncClient, trader: Trader
) -> None:
    placed = await place(client, trader, type="limit", quantity="10", limit_price="90.00")
    order_id = placed.json()["id"]
    assert placed.json()["reserved"] == "901.35045"
    async with app.state.events.subscribe(f"user:{trader.user.id}:orders") as events:
        changed = await patch(
            client, trader, order_id, quantity="20", limit_price="80.00", stop_loss="70.00"
        )
        await flush_after_commit()
        # (On Redis the placement's order.accepted may arrive after subscribing.)
        event = await events.get(timeout=5)
        while event is not None and event.payload["event"] == "order.accepted":
            event = await events.get(timeout=5)
    assert changed.status_code == 200, changed.text
    body = changed.json()
    assert body["status"] == "accepted" and body["quantity"] == "20"
    assert body["limit_price"] == "80" and body["stop_loss"] == "70"
    # 20 × 80 × 1.0005 = 1600.80, + 0.1 % fee 1.6008: the old 901.35045 released.
    assert body["reserved"] == "1602.4008"
    detail = await account(client, trader)
    assert detail["reserved"] == "1602.4008" and detail["available"] == "8397.5992"
    assert event is not None and event.payload["event"] == "order.replaced"
    assert event.payload["order"]["quantity"] == "20"

    removed = await patch(client, trader, order_id, stop_loss=None)
    assert removed.status_code == 200 and removed.json()["stop_loss"] is None


async def test_a_change_that_makes_the_order_marketable_fills_it_at_once(
    client: httpx.AsyncClient, trader: Trader
) -> None:
    placed = await place(client, trader, type="limit", quantity="2", limit_price="90.00")
    changed = await patch(client, trader, placed.json()["id"], limit_price="100.02")
    assert changed.status_code == 200, changed.text
    # As on placement: the slipped ask 100.05 is beyond the limit, so it fills at 100.02.
    assert changed.json()["status"] == "filled"
    assert changed.json()["average_fill_price"] == "100.02"
    detail = await account(client, trader)
    # 10000 − 200.04 − 0.20004 fee
    assert detail["cash"] == detail["available"] == "9799.75996" and detail["reserved"] == "0"


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"limit_price": "90.005"}, "body.limit_price"),  # off the tick
        ({"quantity": "1.5"}, "body.quantity"),  # AAPL trades whole shares
        ({"stop_price": "95"}, "body.stop_price"),  # a limit order has none
        ({"take_profit": "85.00"}, "body.take_profit"),  # below a buy's entry
        ({"limit_price": None}, "body.limit_price"),
        ({"quantity": "0"}, "body.quantity"),
        ({"side": "sell"}, "body.side"),  # not changeable
        ({}, "body"),
    ],
)
async def test_an_invalid_change_is_refused_naming_the_field(
    client: httpx.AsyncClient, trader: Trader, fields: dict[str, Any], field: str
) -> None:
    placed = await place(client, trader, type="limit", quantity="10", limit_price="90.00")
    refused = await patch(client, trader, placed.json()["id"], **fields)
    assert refused.status_code == 422, refused.text
    assert refused.headers["content-type"] == "application/problem+json"
    assert field in [error["field"] for error in refused.json()["errors"]]
    unchanged = await client.get(f"{API}/orders/{placed.json()['id']}", headers=trader.headers)
    assert unchanged.json()["quantity"] == "10" and unchanged.json()["reserved"] == "901.35045"


async def test_a_change_beyond_buying_power_changes_nothing(
    client: httpx.AsyncClient, trader: Trader
) -> None:
    placed = await place(client, trader, type="limit", quantity="10", limit_price="90.00")
    refused = await patch(client, trader, placed.json()["id"], quantity="200")
    assert refused.status_code == 422, refused.text
    assert refused.json()["rule"] == "buying_power"
    order = (await client.get(f"{API}/orders/{placed.json()['id']}", headers=trader.headers)).json()
    assert order["quantity"] == "10" and order["reserved"] == "901.35045"
    detail = await account(client, trader)
    assert detail["reserved"] == "901.35045" and detail["cash"] == "10000"


async def test_closed_partly_filled_and_foreign_orders(
    app: FastAPI,
    client: httpx.AsyncClient,
    session: AsyncSession,
    settings: Settings,
    trader: Trader,
) -> None:
    filled = await place(client, trader, quantity="1")
    conflict = await patch(client, trader, filled.json()["id"], quantity="2")
    assert conflict.status_code == 409
    assert conflict.headers["content-type"] == "application/problem+json"

    placed = await place(client, trader, type="limit", quantity="10", limit_price="95.00")
    order_id = placed.json()["id"]
    intruder = await make_trader(client, session, settings)
    assert (await patch(client, intruder, order_id, quantity="5")).status_code == 404

    # 4 of the 10 fill (a liquidity cap, booked as the engine books any fill).
    resting = orders.Order(
        OrderSide.BUY,
        OrderType.LIMIT,
        Decimal(10),
        limit_price=Decimal("95.00"),
        status=OrderStatus.ACCEPTED,
    )
    tick = Tick("AAPL", utcnow(), Decimal("94.95"), Decimal("94.90"), Decimal("95.00"))
    spec = service._spec(await service.market_service.get_instrument(session, "AAPL"))
    model = service.fill_model(settings)
    partial = orders.match(resting, tick, spec, model, liquidity=Decimal(4))
    account_row = await session.get(TradingAccount, trader.account_id)
    row = await session.get(Order, order_id)
    assert account_row is not None and row is not None
    assert await service.book_execution(
        session, app.state.events, model, account_row, row, resting, partial, tick.time
    )
    await session.commit()

    below = await patch(client, trader, order_id, quantity="4")
    assert below.status_code == 422
    assert [error["field"] for error in below.json()["errors"]] == ["body.quantity"]
    shrunk = await patch(client, trader, order_id, quantity="6", limit_price="94.00")
    assert shrunk.status_code == 200, shrunk.text
    body = shrunk.json()
    assert body["status"] == "partially_filled" and body["filled_quantity"] == "4"
    # What remains, 2 × 94 × 1.0005 = 188.094, + 0.1 % fee 0.188094.
    assert body["reserved"] == "188.282094"
    detail = await account(client, trader)
    # Cash: 10000 − 100.15005 (the market buy) − 380.38 (4 × 95 + 0.38 fee).
    assert detail["cash"] == "9519.46995" and detail["reserved"] == "188.282094"


async def test_a_change_is_not_another_trade_of_the_day(
    client: httpx.AsyncClient, trader: Trader
) -> None:
    """At the daily trades cap, the day's one order can still be changed; a new one cannot."""
    await set_profile(client, trader, max_daily_trades=1)
    placed = await place(client, trader, type="limit", quantity="10", limit_price="90.00")
    assert placed.status_code == 201, placed.text
    changed = await patch(client, trader, placed.json()["id"], limit_price="91.00")
    assert changed.status_code == 200, changed.text
    assert changed.json()["limit_price"] == "91"
    another = await place(client, trader, type="limit", quantity="1", limit_price="90.00")
    assert another.status_code == 422 and another.json()["rule"] == "max_daily_trades"
