"""Brackets: a parent with a stop-loss and a take-profit gets both children when it stops
filling; one filling cancels the other; a partial fill is protected for what filled; canceling
the parent before any fill makes no children, canceling one child leaves the other."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncSession

from tests.trading.support import API, FixedMarket, Trader, account, install_market, make_trader
from tests.trading.support import order as place
from tradeos.config import Settings
from tradeos.core.db import utcnow
from tradeos.core.events import flush_after_commit
from tradeos.market.providers.base import Tick
from tradeos.trading import execution, orders, service
from tradeos.trading.models import Order, TradingAccount
from tradeos.trading.orders import OrderSide, OrderStatus, OrderType


@pytest.fixture
def settings(settings_factory: Callable[..., Settings]) -> Settings:
    return settings_factory(jobs_run_in_serve=False)  # the tests drive the engine


@pytest.fixture
def market(app: FastAPI, client: httpx.AsyncClient) -> FixedMarket:
    return install_market(app)


@pytest.fixture
async def trader(
    client: httpx.AsyncClient, session: AsyncSession, settings: Settings, market: FixedMarket
) -> Trader:
    return await make_trader(client, session, settings)


async def match(app: FastAPI, settings: Settings) -> execution.Outcome:
    return await execution.match_symbol(
        app.state.database, app.state.events, settings, app.state.market.provider, "AAPL"
    )


async def children(client: httpx.AsyncClient, trader: Trader, parent_id: int) -> dict[str, Any]:
    listed = await client.get(f"{API}/orders", headers=trader.headers, params={"size": 100})
    return {
        child["bracket_role"]: child
        for child in listed.json()["items"]
        if child["parent_order_id"] == parent_id
    }


async def bracket_bought(client: httpx.AsyncClient, trader: Trader) -> dict[str, Any]:
    """10 AAPL bought at 100.05 (fee 1.0005), stop-loss 90, take-profit 110."""
    placed = await place(client, trader, quantity="10", stop_loss="90.00", take_profit="110.00")
    assert placed.status_code == 201, placed.text
    assert placed.json()["status"] == "filled"
    body: dict[str, Any] = placed.json()
    return body


async def test_the_take_profit_fills_and_cancels_the_stop_loss(
    app: FastAPI, client: httpx.AsyncClient, settings: Settings, market: FixedMarket, trader: Trader
) -> None:
    parent = await bracket_bought(client, trader)
    legs = await children(client, trader, parent["id"])
    assert set(legs) == {"stop_loss", "take_profit"}
    for leg in legs.values():
        assert leg["origin"] == "bracket" and leg["side"] == "sell" and leg["quantity"] == "10"
        assert leg["status"] == "accepted" and leg["reserved"] == "0"  # it closes the long
    assert legs["stop_loss"]["type"] == "stop" and legs["stop_loss"]["stop_price"] == "90"
    assert legs["take_profit"]["type"] == "limit" and legs["take_profit"]["limit_price"] == "110"

    async with app.state.events.subscribe(f"user:{trader.user.id}:orders") as events:
        market.quote("AAPL", "110.00", "110.10")
        assert await match(app, settings) == execution.Outcome(filled=1, canceled=1)
        await flush_after_commit()
        by_order = {}
        while len(by_order) < 2 and (event := await events.get(timeout=5)) is not None:
            if event.payload["event"] != "order.accepted":  # a late one of the placement
                by_order[event.payload["order"]["id"]] = event.payload
    assert by_order[legs["take_profit"]["id"]]["event"] == "order.filled"
    canceled = by_order[legs["stop_loss"]["id"]]
    assert canceled["event"] == "order.canceled"
    assert canceled["order"]["cancel_reason"] == execution.OCO_REASON

    after = await children(client, trader, parent["id"])
    assert after["take_profit"]["status"] == "filled"
    assert after["take_profit"]["average_fill_price"] == "110"  # a maker: its limit
    assert after["stop_loss"]["status"] == "canceled"
    # 100000 − 1001.5005 (the buy) + 1100 − 1.10 fee
    detail = await account(client, trader)
    assert detail["cash"] == detail["available"] == "100097.3995" and detail["reserved"] == "0"
    flat = (await client.get(f"{API}/positions/AAPL", headers=trader.headers)).json()
    assert flat["quantity"] == "0" and flat["realized_pnl"] == "99.5"


async def test_the_stop_loss_fills_and_cancels_the_take_profit(
    app: FastAPI, client: httpx.AsyncClient, settings: Settings, market: FixedMarket, trader: Trader
) -> None:
    parent = await bracket_bought(client, trader)
    market.quote("AAPL", "89.90", "90.00")
    assert await match(app, settings) == execution.Outcome(filled=1, canceled=1)
    after = await children(client, trader, parent["id"])
    # Triggered at the bid 89.90, sold as a market order: slipped 5 bps, down to the tick.
    assert after["stop_loss"]["status"] == "filled"
    assert after["stop_loss"]["average_fill_price"] == "89.85"
    assert after["take_profit"]["status"] == "canceled"
    # 100000 − 1001.5005 + 898.50 − 0.8985 fee
    detail = await account(client, trader)
    assert detail["cash"] == "99896.101" and detail["reserved"] == "0"
    assert (await client.get(f"{API}/positions/AAPL", headers=trader.headers)).json()[
        "quantity"
    ] == "0"


async def test_a_partly_filled_parent_canceled_protects_what_filled(
    app: FastAPI,
    client: httpx.AsyncClient,
    session: AsyncSession,
    settings: Settings,
    market: FixedMarket,
    trader: Trader,
) -> None:
    untouched = await place(
        client, trader, type="limit", quantity="10", limit_price="95.00", stop_loss="90.00"
    )
    canceled = await client.delete(f"{API}/orders/{untouched.json()['id']}", headers=trader.headers)
    assert canceled.json()["status"] == "canceled"
    assert await children(client, trader, untouched.json()["id"]) == {}  # no fill, no children

    placed = await place(
        client,
        trader,
        type="limit",
        quantity="10",
        limit_price="95.00",
        stop_loss="90.00",
        take_profit="110.00",
    )
    parent_id = placed.json()["id"]
    # Only 4 could fill as the ask touched 95 (a liquidity cap the paper engine does not have
    # itself): booked as the engine books any fill.
    resting = orders.Order(
        OrderSide.BUY,
        OrderType.LIMIT,
        Decimal(10),
        limit_price=Decimal("95.00"),
        status=OrderStatus.ACCEPTED,
        stop_loss=Decimal("90.00"),
        take_profit=Decimal("110.00"),
    )
    tick = Tick("AAPL", utcnow(), Decimal("94.95"), Decimal("94.90"), Decimal("95.00"))
    spec = service._spec(await service.market_service.get_instrument(session, "AAPL"))
    model = service.fill_model(settings)
    partial = orders.match(resting, tick, spec, model, liquidity=Decimal(4))
    account_row = await session.get(TradingAccount, trader.account_id)
    row = await session.get(Order, parent_id)
    assert account_row is not None and row is not None
    events = app.state.events
    assert await service.book_execution(
        session, events, model, account_row, row, resting, partial, tick.time
    )
    await service.open_bracket_children(session, events, model, account_row, row)
    await session.commit()
    assert await children(client, trader, parent_id) == {}  # still filling: no children yet

    closed = await client.delete(f"{API}/orders/{parent_id}", headers=trader.headers)
    assert closed.status_code == 200 and closed.json()["filled_quantity"] == "4"
    legs = await children(client, trader, parent_id)
    assert {role: leg["quantity"] for role, leg in legs.items()} == {
        "stop_loss": "4",
        "take_profit": "4",
    }
    assert all(leg["status"] == "accepted" for leg in legs.values())

    # Canceling one child leaves the other.
    url = f"{API}/orders/{legs['stop_loss']['id']}"
    assert (await client.delete(url, headers=trader.headers)).json()["status"] == "canceled"
    legs = await children(client, trader, parent_id)
    assert legs["take_profit"]["status"] == "accepted"
    market.quote("AAPL", "110.00", "110.10")
    assert await match(app, settings) == execution.Outcome(filled=1)
    legs = await children(client, trader, parent_id)
    assert legs["take_profit"]["status"] == "filled"
    position = (await client.get(f"{API}/positions/AAPL", headers=trader.headers)).json()
    assert position["quantity"] == "0"


async def test_a_child_whose_position_was_closed_otherwise_never_opens_a_short(
    app: FastAPI, client: httpx.AsyncClient, settings: Settings, market: FixedMarket, trader: Trader
) -> None:
    parent = await bracket_bought(client, trader)
    sold = await place(client, trader, side="sell", quantity="10")
    assert sold.json()["status"] == "filled"
    cash = (await account(client, trader))["cash"]
    market.quote("AAPL", "110.00", "110.10")
    assert await match(app, settings) == execution.Outcome(canceled=1)
    legs = await children(client, trader, parent["id"])
    assert legs["take_profit"]["status"] == "canceled"
    assert legs["take_profit"]["filled_quantity"] == "0"
    assert (await account(client, trader))["cash"] == cash
    assert (await client.get(f"{API}/positions/AAPL", headers=trader.headers)).json()[
        "quantity"
    ] == "0"
