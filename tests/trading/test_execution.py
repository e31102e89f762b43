"""The paper execution engine: resting limit, stop and stop-limit orders fill when the market
crosses them (driven by the engine directly, and by the app's own watcher on the live feed's
ticks with no request made), two matchers book one fill, day orders expire at 00:00 UTC."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from tests.conftest import serve_app
from tests.trading.support import API, FixedMarket, Trader, account, install_market, make_trader
from tests.trading.support import order as place
from tradeos.app import create_app
from tradeos.config import Settings
from tradeos.core.db import Database
from tradeos.core.events import Event, Subscription, flush_after_commit
from tradeos.core.jobs import JOBS, Every
from tradeos.notifications.models import Notification
from tradeos.trading import execution
from tradeos.trading.models import Fill


@pytest.fixture
def settings(settings_factory: Callable[..., Settings]) -> Settings:
    # The engine is driven by the tests here; the app's own watcher has a test of its own.
    return settings_factory(jobs_run_in_serve=False)


@pytest.fixture
def market(app: FastAPI, client: httpx.AsyncClient) -> FixedMarket:
    return install_market(app)


@pytest.fixture
async def trader(
    client: httpx.AsyncClient, session: AsyncSession, settings: Settings, market: FixedMarket
) -> Trader:
    return await make_trader(client, session, settings)


async def match(app: FastAPI, settings: Settings, symbol: str = "AAPL") -> execution.Outcome:
    return await execution.match_symbol(
        app.state.database, app.state.events, settings, app.state.market.provider, symbol
    )


async def get(client: httpx.AsyncClient, trader: Trader, order_id: int) -> dict[str, Any]:
    response = await client.get(f"{API}/orders/{order_id}", headers=trader.headers)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def drain(events: Subscription) -> list[Event]:
    await flush_after_commit()
    received = []
    while (event := await events.get(timeout=0.5)) is not None:
        received.append(event)
    return received


def names(received: list[Event]) -> list[str]:
    # Without the placements' order.accepted: on Redis one may arrive after subscribing.
    return [
        event.payload["event"]
        for event in received
        if event.topic.endswith(":orders") and event.payload["event"] != "order.accepted"
    ]


async def test_a_resting_buy_limit_fills_when_the_ask_reaches_it(
    app: FastAPI, client: httpx.AsyncClient, settings: Settings, market: FixedMarket, trader: Trader
) -> None:
    placed = await place(client, trader, type="limit", quantity="10", limit_price="95.00")
    assert placed.status_code == 201 and placed.json()["status"] == "accepted"
    order_id = placed.json()["id"]
    # 10 × 95 × 1.0005 = 950.475, + 0.1 % fee 0.950475: 951.425475 held.
    assert (await account(client, trader))["reserved"] == "951.425475"

    assert await match(app, settings) == execution.Outcome()  # the ask 100.00 is above 95
    assert (await get(client, trader, order_id))["status"] == "accepted"

    user = trader.user.id
    async with app.state.events.subscribe(f"user:{user}:orders") as events:
        market.quote("AAPL", "94.90", "95.00")
        assert await match(app, settings) == execution.Outcome(filled=1)
        assert await match(app, settings) == execution.Outcome()  # nothing left to fill
        received = await drain(events)
    assert names(received) == ["order.filled"]

    filled = await get(client, trader, order_id)
    assert filled["status"] == "filled" and filled["filled_quantity"] == "10"
    (fill,) = filled["fills"]
    # A resting limit is a maker: its own price, no slippage; fee 0.1 % of 950.
    assert fill["price"] == "95" and fill["liquidity"] == "maker" and fill["fee"] == "0.95"
    detail = await account(client, trader)
    assert detail["cash"] == detail["available"] == "99049.05" and detail["reserved"] == "0"
    position = (await client.get(f"{API}/positions/AAPL", headers=trader.headers)).json()
    assert position["quantity"] == "10" and position["cost"] == "950"


async def test_stop_and_stop_limit_orders_trigger(
    app: FastAPI, client: httpx.AsyncClient, settings: Settings, market: FixedMarket, trader: Trader
) -> None:
    stop = await place(client, trader, type="stop", quantity="1", stop_price="105.00")
    stop_limit = await place(
        client, trader, type="stop_limit", quantity="1", stop_price="105.00", limit_price="105.02"
    )
    assert stop.json()["status"] == stop_limit.json()["status"] == "accepted"

    # The ask gaps to 105.10: both trigger. The stop fills as a market order (105.10 slipped
    # 5 bps: 105.152550, up to the tick 105.16); the stop-limit's trigger price is beyond its
    # limit, so it rests, triggered, as a limit order at 105.02.
    market.quote("AAPL", "105.00", "105.10")
    assert await match(app, settings) == execution.Outcome(filled=1)
    stopped = await get(client, trader, stop.json()["id"])
    assert stopped["status"] == "filled" and stopped["average_fill_price"] == "105.16"
    assert stopped["fills"][0]["liquidity"] == "taker"
    waiting = await get(client, trader, stop_limit.json()["id"])
    assert waiting["status"] == "accepted" and waiting["triggered"] is True

    # Back to 105.00: the triggered stop-limit is a resting limit now, and fills at 105.02.
    market.quote("AAPL", "104.90", "105.00")
    assert await match(app, settings) == execution.Outcome(filled=1)
    limited = await get(client, trader, stop_limit.json()["id"])
    assert limited["status"] == "filled" and limited["average_fill_price"] == "105.02"
    # 100000 − (105.16 + 0.10516) − (105.02 + 0.10502)
    assert (await account(client, trader))["cash"] == "99789.60982"


async def test_two_matchers_racing_on_one_order_book_one_fill(
    app: FastAPI,
    client: httpx.AsyncClient,
    session: AsyncSession,
    settings: Settings,
    market: FixedMarket,
    trader: Trader,
) -> None:
    placed = await place(client, trader, type="limit", quantity="10", limit_price="95.00")
    market.quote("AAPL", "94.90", "95.00")
    outcomes = await asyncio.gather(*(match(app, settings) for _ in range(4)))
    assert sum(outcome.filled for outcome in outcomes) == 1
    assert await session.scalar(select(func.count()).select_from(Fill)) == 1
    filled = await get(client, trader, placed.json()["id"])
    assert filled["status"] == "filled" and len(filled["fills"]) == 1
    detail = await account(client, trader)
    assert detail["cash"] == detail["available"] == "99049.05" and detail["reserved"] == "0"


async def test_day_orders_expire_at_the_end_of_the_utc_day_and_the_sweep_fills(
    app: FastAPI,
    client: httpx.AsyncClient,
    session: AsyncSession,
    settings: Settings,
    market: FixedMarket,
    trader: Trader,
) -> None:
    day = await place(
        client, trader, type="limit", quantity="10", limit_price="90.00", time_in_force="day"
    )
    gtc = await place(client, trader, type="limit", quantity="1", limit_price="95.00")
    body = day.json()
    created = datetime.fromisoformat(body["created_at"])
    midnight = datetime.fromisoformat(body["expires_at"])
    assert midnight == (created + timedelta(days=1)).replace(
        hour=0, minute=0, second=0, microsecond=0, tzinfo=UTC
    )
    assert gtc.json()["expires_at"] is None

    def sweep(now: datetime) -> Any:
        return execution.sweep(
            app.state.database, app.state.events, settings, app.state.market.provider, now=now
        )

    assert await sweep(midnight - timedelta(microseconds=1)) == execution.Outcome()
    user = trader.user.id
    async with app.state.events.subscribe(f"user:{user}:orders") as events:
        market.quote("AAPL", "94.90", "95.00")  # crosses the GTC order, not the day order
        assert await sweep(midnight) == execution.Outcome(filled=1, expired=1)
        received = await drain(events)
    assert sorted(names(received)) == ["order.expired", "order.filled"]

    expired = await get(client, trader, body["id"])
    assert expired["status"] == "expired" and expired["reserved"] == "0"
    assert expired["filled_quantity"] == "0"
    assert (await get(client, trader, gtc.json()["id"]))["status"] == "filled"
    detail = await account(client, trader)
    assert detail["reserved"] == "0" and detail["cash"] == detail["available"] == "99904.905"
    note = await session.scalar(select(Notification).where(Notification.type == "order.expired"))
    assert note is not None and note.user_id == user and note.data["order_id"] == body["id"]
    # The sweep runs every minute.
    assert JOBS["trading.sweep_resting_orders"].schedule == Every(minutes=1)


async def test_a_resting_ioc_order_never_exists(client: httpx.AsyncClient, trader: Trader) -> None:
    placed = await place(
        client, trader, type="limit", quantity="1", limit_price="95.00", time_in_force="ioc"
    )
    assert placed.status_code == 201
    assert placed.json()["status"] == "canceled" and placed.json()["reserved"] == "0"
    fok = await place(
        client, trader, type="limit", quantity="1", limit_price="95.00", time_in_force="fok"
    )
    assert fok.json()["status"] == "canceled"
    assert (await account(client, trader))["reserved"] == "0"


# -- the app's own watcher ---------------------------------------------------------------------


@pytest.fixture
async def serving(
    settings_factory: Callable[..., Settings], database: Database
) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    """The app running its jobs, its live feed and the resting-order watcher, as `serve`."""
    app = create_app(settings_factory(jobs_run_in_serve=True), configure_logs=False)
    async with serve_app(app) as client:
        yield app, client


async def test_the_apps_watcher_fills_a_resting_order_with_no_request(
    serving: tuple[FastAPI, httpx.AsyncClient], session: AsyncSession
) -> None:
    app, client = serving
    market = install_market(app)
    trader = await make_trader(client, session, app.state.settings)
    placed = await place(client, trader, type="limit", quantity="10", limit_price="95.00")
    assert placed.json()["status"] == "accepted"
    user = trader.user.id
    async with app.state.events.subscribe(f"user:{user}:orders") as events:
        market.quote("AAPL", "94.90", "95.00")
        # The live feed publishes a tick every second; the watcher looks for new symbols every
        # two seconds. Bounded: 60 s at most, normally about three.
        event = None
        async with asyncio.timeout(60):
            while event is None or event.payload["event"] != "order.filled":
                event = await events.get()
    assert event.payload["order"]["id"] == placed.json()["id"]
    assert event.payload["order"]["average_fill_price"] == "95"
    detail = await account(client, trader)
    assert detail["cash"] == detail["available"] == "99049.05" and detail["reserved"] == "0"
    fills = (await session.scalars(select(Fill.fill_id))).all()
    assert fills == [f"paper:{placed.json()['id']}:0"]
