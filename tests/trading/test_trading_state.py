"""The trading state: the automatic halt when a fill takes today's loss past the daily loss
limit (event and notification), orders refused while halted, closes still accepted, the halt
lifted at the next UTC day, and the trader's own setting (409 while the automatic halt holds)."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select
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
from tradeos.core.db import Database, utcnow
from tradeos.core.events import flush_after_commit
from tradeos.notifications.models import Notification
from tradeos.risk.rules import TradingState
from tradeos.trading import state
from tradeos.trading.models import TradingAccount


@pytest.fixture
def market(app: FastAPI, client: httpx.AsyncClient) -> FixedMarket:
    return install_market(app)


@pytest.fixture
async def trader(
    client: httpx.AsyncClient, session: AsyncSession, settings: Settings, market: FixedMarket
) -> Trader:
    return await make_trader(client, session, settings)


def trading_state_url(trader: Trader) -> str:
    return f"{API}/accounts/{trader.account_id}/trading-state"


async def halt_by_loss(client: httpx.AsyncClient, trader: Trader, market: FixedMarket) -> None:
    """Buy 100 AAPL, let the price fall, and sell 10: the fill takes today's loss past 500."""
    await set_profile(client, trader, max_daily_loss="500")
    bought = await order(client, trader, quantity="100")
    assert bought.status_code == 201, bought.text
    # Day start 100000; bought at 100.05 with a 10.005 fee; marked at 99.95: a loss of 20.005.
    assert (await account(client, trader))["trading_state"] == "active"
    market.quote("AAPL", "94.00", "94.10", "94.05")
    sold = await order(client, trader, side="sell", quantity="10")  # reducing: it passes
    assert sold.status_code == 201, sold.text
    # Sold at 93.95 (94.00 less 5 bps, down to the tick), fee 0.9395: cash 90923.5555, 90
    # AAPL at 94.05 = 8464.5, equity 99388.0555, today's loss 611.9445 > 500.


async def test_a_fill_past_the_daily_loss_limit_halts_until_the_next_day(
    app: FastAPI,
    client: httpx.AsyncClient,
    session: AsyncSession,
    database: Database,
    trader: Trader,
    market: FixedMarket,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    user_id = trader.user.id
    async with app.state.events.subscribe(f"user:{user_id}:positions") as events:
        await halt_by_loss(client, trader, market)
        await flush_after_commit()
        received = [await events.get(timeout=5) for _ in range(4)]
    changes = [e.payload for e in received if e and e.payload["event"] == "account.trading_state"]
    assert len(changes) == 1
    assert changes[0]["trading_state"] == "halted" and changes[0]["trading_state_set_by"] == "risk"
    assert changes[0]["trading_state_resumes_to"] == "active"
    assert "611.9445" in changes[0]["trading_state_reason"]

    detail = await account(client, trader)
    assert detail["trading_state"] == "halted" and detail["equity"] == "99388.0555"
    note = await session.scalar(
        select(Notification).where(
            Notification.user_id == user_id, Notification.type == "account.trading_state"
        )
    )
    assert note is not None and note.data["trading_state"] == "halted"
    await session.commit()  # the test's unit of work leaves SQLite's write lock to the app

    # A new position is refused by the trading state rule; the trader cannot lift the halt.
    refused = await order(client, trader, symbol="BTC-USD", quantity="0.01")
    assert refused.status_code == 422
    assert refused.json()["rule"] == "trading_state" and refused.json()["limit"] == "halted"
    locked = await client.put(
        trading_state_url(trader), headers=trader.headers, json={"state": "active"}
    )
    assert locked.status_code == 409
    assert locked.headers["content-type"].startswith("application/problem+json")
    tomorrow = state.next_day_start(utcnow())
    assert locked.json()["resumes_at"] == tomorrow.isoformat()
    assert tomorrow.isoformat() in locked.json()["detail"]
    # Reducing orders still go: a halt never traps a trader in a losing position.
    reduced = await order(client, trader, side="sell", quantity="10")
    assert reduced.status_code == 201, reduced.text

    # The next UTC day: the day-start job lifts the halt and takes the new day-start equity.
    monkeypatch.setattr(state, "utcnow", lambda: tomorrow + timedelta(seconds=5))
    result = await state.start_day_everywhere(database, app.state.events, market)
    assert result == {"accounts": 1, "halts_lifted": 1}
    assert await state.start_day_everywhere(database, app.state.events, market) == {
        "accounts": 0,
        "halts_lifted": 0,
    }
    detail = await account(client, trader)
    assert detail["trading_state"] == "active"
    session.expire_all()
    row = await session.get(TradingAccount, trader.account_id)
    assert row is not None and row.day_start_equity == Decimal(detail["equity"])
    assert row.trading_state_resumes_to is None
    await session.commit()
    again = await order(client, trader, symbol="BTC-USD", quantity="0.01")
    assert again.status_code == 201, again.text


async def test_the_first_order_of_a_new_day_lifts_an_automatic_halt(
    client: httpx.AsyncClient,
    trader: Trader,
    market: FixedMarket,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    await halt_by_loss(client, trader, market)
    tomorrow = state.next_day_start(utcnow())
    monkeypatch.setattr(state, "utcnow", lambda: tomorrow + timedelta(hours=1))
    # Today's loss is measured from the new day's start: the same prices are no loss.
    placed = await order(client, trader, quantity="1")
    assert placed.status_code == 201, placed.text
    assert (await account(client, trader))["trading_state"] == "active"


async def test_the_trader_sets_the_state_and_reducing_admits_only_reducing_orders(
    client: httpx.AsyncClient,
    session: AsyncSession,
    settings: Settings,
    trader: Trader,
) -> None:
    assert (await order(client, trader, quantity="10")).status_code == 201
    url = trading_state_url(trader)
    response = await client.put(
        url, headers=trader.headers, json={"state": "reducing", "reason": "winding down"}
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["trading_state"] == "reducing" and body["trading_state_set_by"] == "user"
    assert body["trading_state_reason"] == "winding down" and body["resumes_at"] is None
    assert body["id"] == trader.account_id and body["cash"] == "98998.4995"

    refused = await order(client, trader, quantity="1")
    assert refused.status_code == 422 and refused.json()["rule"] == "trading_state"
    assert (await order(client, trader, side="sell", quantity="4")).status_code == 201
    closed = await client.post(f"{API}/positions/AAPL/close", headers=trader.headers)
    assert closed.status_code == 201, closed.text
    assert closed.json()["side"] == "sell" and closed.json()["quantity"] == "6"

    # A user-set halt the user lifts; every change is a notification.
    for wanted in ("halted", "active"):
        changed = await client.put(url, headers=trader.headers, json={"state": wanted})
        assert changed.status_code == 200 and changed.json()["trading_state"] == wanted
    await flush_after_commit()
    notes = (
        await session.scalars(
            select(Notification.data).where(Notification.type == "account.trading_state")
        )
    ).all()
    assert [data["trading_state"] for data in notes] == ["reducing", "halted", "active"]
    await session.commit()
    assert (await order(client, trader, quantity="1")).status_code == 201

    read = await client.get(url, headers=trader.headers)
    assert read.status_code == 200 and read.json()["trading_state"] == "active"
    bad = await client.put(url, headers=trader.headers, json={"state": "paused"})
    assert bad.status_code == 422
    intruder = await make_trader(client, session, settings)
    foreign = await client.put(url, headers=intruder.headers, json={"state": "halted"})
    assert foreign.status_code == 404
    assert (await client.get(url, headers=intruder.headers)).status_code == 404


def test_only_a_halt_the_risk_rules_set_resumes_by_itself() -> None:
    row = TradingAccount(trading_state="halted", trading_state_set_by="risk")
    row.trading_state_resumes_to = "reducing"
    assert state.status_of(row).resumes_to is TradingState.REDUCING
    row.trading_state_set_by = "user"
    assert not state.status_of(row).halted_automatically
    # A reset sets the state back to active: what the halt would resume to no longer counts.
    row.trading_state, row.trading_state_set_by = "active", "risk"
    assert state.status_of(row).state is TradingState.ACTIVE
    assert not state.status_of(row).halted_automatically
