"""Orders: market fills to the cent, notional orders, validation against the instrument, each
risk refusal, cancel, idempotent retries, events, and the ledger under concurrent orders."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from tests.trading.support import (
    API,
    FixedMarket,
    Trader,
    account,
    install_market,
    make_trader,
    order,
    set_profile,
)
from tradeos.config import Settings
from tradeos.core.db import utcnow
from tradeos.core.events import flush_after_commit
from tradeos.market import service as market_service
from tradeos.market.providers.base import Tick
from tradeos.notifications.models import Notification
from tradeos.trading import orders, service
from tradeos.trading.models import Fill, Order, TradingAccount
from tradeos.trading.orders import OrderSide, OrderStatus, OrderType


@pytest.fixture
def market(app: FastAPI, client: httpx.AsyncClient) -> FixedMarket:
    return install_market(app)


@pytest.fixture
async def trader(
    client: httpx.AsyncClient, session: AsyncSession, settings: Settings, market: FixedMarket
) -> Trader:
    return await make_trader(client, session, settings)


async def test_market_buy_then_sell_to_the_cent(
    client: httpx.AsyncClient, trader: Trader, session: AsyncSession
) -> None:
    bought = await order(client, trader, quantity="10", strategy_id="s-1", signal_id="sig-9")
    assert bought.status_code == 201, bought.text
    buy = bought.json()
    # The ask 100.00 slipped 5 bps: 100.05; notional 1000.50; fee 0.1 %: 1.0005.
    assert buy["status"] == "filled" and buy["filled_quantity"] == "10"
    assert buy["average_fill_price"] == "100.05" and buy["fees"] == "1.0005"
    assert buy["reserved"] == "0"
    assert buy["strategy_id"] == "s-1" and buy["signal_id"] == "sig-9"
    detail = await account(client, trader)
    assert detail["cash"] == detail["available"] == "98998.4995"
    assert detail["reserved"] == "0"

    position = (await client.get(f"{API}/positions/AAPL", headers=trader.headers)).json()
    assert position["quantity"] == "10" and position["average_entry_price"] == "100.05"
    assert position["mark_price"] == "99.95" and position["market_value"] == "999.5"
    assert position["unrealized_pnl"] == "-1" and position["fees_paid"] == "1.0005"

    sold = await order(client, trader, side="sell", quantity="10")
    assert sold.status_code == 201, sold.text
    # The bid 99.90 slipped 5 bps: 99.85005, rounded down to the tick: 99.85; fee 0.9985.
    assert sold.json()["average_fill_price"] == "99.85" and sold.json()["fees"] == "0.9985"
    detail = await account(client, trader)
    assert detail["cash"] == "99996.001"  # 100000 − 2.00 realized − 1.999 fees
    assert detail["realized_pnl"] == "-2" and detail["fees_paid"] == "1.999"
    assert detail["equity"] == "99996.001" and detail["unrealized_pnl"] == "0"
    flat = (await client.get(f"{API}/positions/AAPL", headers=trader.headers)).json()
    assert flat["quantity"] == "0" and flat["realized_pnl"] == "-2" and flat["opened_at"] is None

    with_fills = (await client.get(f"{API}/orders/{buy['id']}", headers=trader.headers)).json()
    (fill,) = with_fills["fills"]
    assert fill["price"] == "100.05" and fill["quantity"] == "10" and fill["fee"] == "1.0005"
    assert fill["liquidity"] == "taker" and fill["fill_id"] == f"paper:{buy['id']}:0"
    await flush_after_commit()
    notes = await session.scalar(
        select(func.count()).select_from(Notification).where(Notification.type == "order.filled")
    )
    assert notes == 2


async def test_a_notional_market_order_buys_whole_steps(
    client: httpx.AsyncClient, trader: Trader
) -> None:
    response = await order(client, trader, symbol="btc-usd", notional="1000")
    assert response.status_code == 201, response.text
    body = response.json()
    # 1000 / 50000.00 = 0.02 BTC (steps of 0.00001), filled at 50025.00.
    assert body["symbol"] == "BTC-USD" and body["notional"] == "1000"
    assert body["quantity"] == "0.02" and body["average_fill_price"] == "50025"
    assert body["fees"] == "1.0005"
    assert (await account(client, trader))["cash"] == "98998.4995"
    too_small = await order(client, trader, symbol="BTC-USD", notional="0.10")
    assert too_small.status_code == 422
    assert [e["field"] for e in too_small.json()["errors"]] == ["body.notional"]


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"quantity": "1.5"}, "body.quantity"),  # AAPL trades in whole shares
        ({"type": "limit", "quantity": "1", "limit_price": "100.005"}, "body.limit_price"),
        ({"type": "limit", "quantity": "1"}, "body.limit_price"),
        ({"type": "stop", "quantity": "1", "stop_price": "120.001"}, "body.stop_price"),
        ({"quantity": "1", "stop_loss": "100.50"}, "body.stop_loss"),  # above a buy's entry
        ({"symbol": "NOPE", "quantity": "1"}, "body.symbol"),
        (
            {"type": "stop", "quantity": "1", "stop_price": "120", "time_in_force": "ioc"},
            "body.time_in_force",
        ),
    ],
)
async def test_an_invalid_order_is_422_naming_the_field(
    client: httpx.AsyncClient, trader: Trader, fields: dict[str, Any], field: str
) -> None:
    response = await order(client, trader, **fields)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert field in [error["field"] for error in response.json()["errors"]]
    assert (await account(client, trader))["available"] == "100000"


async def _refused(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 422, response.text
    body: dict[str, Any] = response.json()
    assert body["type"] == "urn:tradeos:problem:risk-rule-violated"
    return body


async def test_max_position_quantity(client: httpx.AsyncClient, trader: Trader) -> None:
    await set_profile(client, trader, max_position_quantity="5")
    assert (await order(client, trader, quantity="5")).status_code == 201  # at the limit
    body = await _refused(await order(client, trader, quantity="1"))
    assert (body["rule"], body["limit"], body["value"]) == ("max_position_quantity", "5", "6")


async def test_max_daily_trades(client: httpx.AsyncClient, trader: Trader) -> None:
    await set_profile(client, trader, max_daily_trades=2)
    for _ in range(2):
        assert (await order(client, trader, quantity="1")).status_code == 201
    body = await _refused(await order(client, trader, quantity="1"))
    assert (body["rule"], body["limit"], body["value"]) == ("max_daily_trades", "2", "3")


async def test_stop_loss_required(client: httpx.AsyncClient, trader: Trader) -> None:
    await set_profile(client, trader, stop_loss_required=True)
    body = await _refused(await order(client, trader, quantity="1"))
    assert (body["rule"], body["limit"], body["value"]) == (
        "stop_loss_required",
        "required",
        "none",
    )
    with_stop = await order(client, trader, quantity="1", stop_loss="95.00")
    assert with_stop.status_code == 201 and with_stop.json()["stop_loss"] == "95"


async def test_buying_power(
    client: httpx.AsyncClient, session: AsyncSession, settings: Settings, market: FixedMarket
) -> None:
    small = await make_trader(client, session, settings, starting_balance="1000")
    body = await _refused(await order(client, small, quantity="10"))
    # 10 × 100.05 + 1.0005 fee is reserved against 1000 available.
    assert (body["rule"], body["limit"], body["value"]) == ("buying_power", "1000", "1001.5005")
    assert body["violations"][0]["rule"] == "buying_power"
    assert (await account(client, small))["available"] == "1000"
    assert await session.scalar(select(func.count()).select_from(Order)) == 0  # not stored


async def test_a_short_sale_needs_allow_short(
    client: httpx.AsyncClient, session: AsyncSession, settings: Settings, trader: Trader
) -> None:
    refused = await order(client, trader, side="sell", quantity="1")
    assert refused.status_code == 422
    assert [e["field"] for e in refused.json()["errors"]] == ["body.side"]
    shorter = await make_trader(client, session, settings, allow_short=True)
    sold = await order(client, shorter, side="sell", quantity="10")
    assert sold.status_code == 201, sold.text
    detail = await account(client, shorter)
    # Proceeds 998.50 − fee 0.9985 in cash; proceeds + 100 % margin (2 × 998.50) held.
    assert detail["cash"] == "100997.5015" and detail["margin_used"] == "1997"
    assert detail["reserved"] == "1997" and detail["available"] == "99000.5015"


async def test_a_resting_limit_order_reserves_and_cancel_releases(
    client: httpx.AsyncClient, trader: Trader
) -> None:
    placed = await order(client, trader, type="limit", quantity="10", limit_price="90.00")
    assert placed.status_code == 201, placed.text
    resting = placed.json()
    assert resting["status"] == "accepted" and resting["filled_quantity"] == "0"
    # 10 × 90.00 × 1.0005 = 900.45, + 0.1 % fee 0.90045.
    assert resting["reserved"] == "901.35045"
    detail = await account(client, trader)
    assert detail["reserved"] == "901.35045" and detail["available"] == "99098.64955"
    assert detail["cash"] == "100000"

    url = f"{API}/orders/{resting['id']}"
    canceled = await client.delete(url, headers=trader.headers)
    assert canceled.status_code == 200 and canceled.json()["status"] == "canceled"
    assert canceled.json()["reserved"] == "0"
    detail = await account(client, trader)
    assert detail["reserved"] == "0" and detail["available"] == "100000"
    again = await client.delete(url, headers=trader.headers)
    assert again.status_code == 409
    assert again.headers["content-type"] == "application/problem+json"


async def test_a_marketable_limit_order_fills_at_once_never_beyond_its_limit(
    client: httpx.AsyncClient, trader: Trader
) -> None:
    placed = await order(client, trader, type="limit", quantity="2", limit_price="100.02")
    assert placed.status_code == 201
    # The slipped ask 100.05 is beyond the limit: it fills at the limit.
    assert placed.json()["status"] == "filled"
    assert placed.json()["average_fill_price"] == "100.02"
    assert (await account(client, trader))["reserved"] == "0"


async def test_list_orders_filters_sorts_and_pages(
    client: httpx.AsyncClient, trader: Trader
) -> None:
    await order(client, trader, quantity="1")
    await order(client, trader, symbol="BTC-USD", quantity="0.001")
    await order(client, trader, type="limit", quantity="1", limit_price="50")
    everything = (await client.get(f"{API}/orders", headers=trader.headers)).json()
    assert everything["total"] == 3
    assert [o["type"] for o in everything["items"]] == ["limit", "market", "market"]
    params: dict[str, Any] = {"status": "filled", "sort": "symbol", "size": 1}
    page = (await client.get(f"{API}/orders", headers=trader.headers, params=params)).json()
    assert page["total"] == 2 and page["pages"] == 2
    assert page["items"][0]["symbol"] == "AAPL"
    btc = await client.get(f"{API}/orders", headers=trader.headers, params={"symbol": "btc-usd"})
    assert [o["symbol"] for o in btc.json()["items"]] == ["BTC-USD"]
    sells = await client.get(f"{API}/orders", headers=trader.headers, params={"side": "sell"})
    assert sells.json()["total"] == 0
    bad = await client.get(f"{API}/orders", headers=trader.headers, params={"sort": "price"})
    assert bad.status_code == 422


async def test_another_users_order_is_404(
    client: httpx.AsyncClient, session: AsyncSession, settings: Settings, trader: Trader
) -> None:
    placed = await order(client, trader, type="limit", quantity="1", limit_price="50")
    intruder = await make_trader(client, session, settings)
    url = f"{API}/orders/{placed.json()['id']}"
    assert (await client.get(url, headers=intruder.headers)).status_code == 404
    assert (await client.delete(url, headers=intruder.headers)).status_code == 404
    assert (await client.get(f"{API}/orders", headers=intruder.headers)).json()["total"] == 0
    assert (await client.get(url, headers=trader.headers)).json()["status"] == "accepted"


async def test_events_go_to_the_users_private_channels_after_commit(
    app: FastAPI, client: httpx.AsyncClient, trader: Trader
) -> None:
    user_id = trader.user.id
    bus = app.state.events
    async with bus.subscribe(f"user:{user_id}:orders", f"user:{user_id}:positions") as events:
        await order(client, trader, quantity="1")
        await order(client, trader, quantity="1000000")  # refused: buying power
        await flush_after_commit()
        received = [await events.get(timeout=5) for _ in range(4)]
    names = [(event.topic.rsplit(":", 1)[1], event.payload["event"]) for event in received if event]
    assert names == [
        ("orders", "order.accepted"),
        ("orders", "order.filled"),
        ("positions", "position.changed"),
        ("orders", "order.rejected"),
    ]
    assert received[2] is not None and received[2].payload["position"]["quantity"] == "1"


async def test_a_fill_booked_twice_is_applied_once(
    app: FastAPI,
    client: httpx.AsyncClient,
    session: AsyncSession,
    settings: Settings,
    trader: Trader,
) -> None:
    placed = await order(client, trader, type="limit", quantity="10", limit_price="90.00")
    order_id = placed.json()["id"]
    instrument = await market_service.get_instrument(session, "AAPL")
    spec = service._spec(instrument)
    model = service.fill_model(settings)
    resting = orders.Order(
        OrderSide.BUY,
        OrderType.LIMIT,
        Decimal(10),
        limit_price=Decimal("90.00"),
        status=OrderStatus.ACCEPTED,
    )
    # The ask falls to 89.50: the resting limit fills at its price, as a maker.
    tick = Tick("AAPL", utcnow(), Decimal("89.45"), Decimal("89.40"), Decimal("89.50"))
    matched = orders.match(resting, tick, spec, model)
    assert matched.execution is not None
    for attempt in range(2):
        account_row = await session.get(TradingAccount, trader.account_id)
        order_row = await session.get(Order, order_id)
        assert account_row is not None and order_row is not None
        booked = await service.book_execution(
            session, app.state.events, model, account_row, order_row, resting, matched, tick.time
        )
        assert booked is (attempt == 0)
        await session.commit()
    filled = (await client.get(f"{API}/orders/{order_id}", headers=trader.headers)).json()
    assert filled["status"] == "filled" and len(filled["fills"]) == 1
    assert filled["fills"][0]["liquidity"] == "maker" and filled["fills"][0]["price"] == "90"
    # 900.00 + 0.90 fee, paid once; the reservation (901.35045) released.
    detail = await account(client, trader)
    assert detail["cash"] == detail["available"] == "99099.1" and detail["reserved"] == "0"
    position = (await client.get(f"{API}/positions/AAPL", headers=trader.headers)).json()
    assert position["quantity"] == "10"


# -- integrity under concurrency --------------------------------------------------------------


@pytest.fixture
def patient_sqlite(monkeypatch: pytest.MonkeyPatch) -> None:
    """200 orders at once queue for SQLite's one connection: on a slow machine the last ones
    wait longer than the 10 s after which a request is a 503. This test is about the money,
    so its app waits as long as it takes (set before the app makes its engine)."""
    monkeypatch.setattr("tradeos.core.db.SQLITE_CONNECTION_WAIT_SECONDS", 120)


async def test_concurrent_buys_never_spend_available_twice(
    patient_sqlite: None,
    client: httpx.AsyncClient,
    session: AsyncSession,
    settings: Settings,
    market: FixedMarket,
    app: FastAPI,
) -> None:
    if app.state.database.backend == "sqlite":
        assert app.state.database.engine.pool.timeout() == 120
    trader = await make_trader(client, session, settings, starting_balance="10000")
    await set_profile(client, trader, max_daily_trades=None)
    # Each buy of 1 AAPL reserves and then costs 100.05 + 0.10005 fee = 100.15005: 99 fit
    # in 10,000 (9,914.85495), the 100th would not.
    responses = await asyncio.gather(*(order(client, trader, quantity="1") for _ in range(200)))
    statuses = [response.status_code for response in responses]
    assert statuses.count(201) == 99, sorted(set(statuses))
    refused = [response.json() for response in responses if response.status_code == 422]
    assert len(refused) == 101
    assert {body["rule"] for body in refused} == {"buying_power"}
    detail = await account(client, trader)
    assert detail["cash"] == detail["available"] == str(Decimal(10000) - 99 * Decimal("100.15005"))
    assert detail["cash"] == "85.14505" and detail["reserved"] == "0"
    assert Decimal(detail["available"]) >= 0
    position = (await client.get(f"{API}/positions/AAPL", headers=trader.headers)).json()
    assert position["quantity"] == "99" and position["cost"] == "9904.95"
    assert await session.scalar(select(func.count()).select_from(Fill)) == 99
    fees = (await session.scalars(select(Fill.fee))).all()
    assert sum(fees, Decimal(0)) == Decimal("9.90495")
    row = await session.get(TradingAccount, trader.account_id)
    assert row is not None and row.cash_total == Decimal("85.14505")


async def test_one_client_order_id_makes_one_order_under_concurrent_retries(
    client: httpx.AsyncClient, session: AsyncSession, trader: Trader
) -> None:
    responses = await asyncio.gather(
        *(order(client, trader, quantity="1", client_order_id="retry-me") for _ in range(50))
    )
    statuses = sorted(response.status_code for response in responses)
    assert statuses == [200] * 49 + [201]
    bodies = [response.json() for response in responses]
    assert all(body == bodies[0] for body in bodies)
    assert (await account(client, trader))["cash"] == "99899.84995"  # bought once
    later = await order(client, trader, quantity="1", client_order_id="retry-me")
    assert later.status_code == 200 and later.json() == bodies[0]
    # The same id on another account is another order.
    other = await client.post(f"{API}/accounts", headers=trader.headers, json={"name": "Two"})
    elsewhere = await order(
        client, trader, account_id=other.json()["id"], quantity="1", client_order_id="retry-me"
    )
    assert elsewhere.status_code == 201 and elsewhere.json()["id"] != bodies[0]["id"]
    assert await session.scalar(select(func.count()).select_from(Order)) == 2
    assert await session.scalar(select(func.count()).select_from(Fill)) == 2
