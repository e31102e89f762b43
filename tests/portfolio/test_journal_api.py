"""POST /trades: a journal entry is booked exactly as a paper fill, or refused with a 422."""

from __future__ import annotations

from datetime import timedelta
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
    order,
)
from tradeos.config import Settings
from tradeos.core.db import utcnow


@pytest.fixture
def market(app: FastAPI, client: httpx.AsyncClient) -> FixedMarket:
    return install_market(app)


async def journal(client: httpx.AsyncClient, trader: Trader, **fields: Any) -> httpx.Response:
    body = {"account_id": trader.account_id, "symbol": "AAPL", "side": "buy", "quantity": "10"}
    body.update(fields)
    return await client.post(f"{API}/trades", headers=trader.headers, json=body)


async def position(client: httpx.AsyncClient, trader: Trader) -> dict[str, Any]:
    response = await client.get(f"{API}/positions/AAPL", headers=trader.headers)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def test_a_journal_entry_books_like_a_paper_fill(
    client: httpx.AsyncClient, session: AsyncSession, settings: Settings, market: FixedMarket
) -> None:
    paper = await make_trader(client, session, settings)
    journaled = await make_trader(client, session, settings)
    assert (await order(client, paper, quantity="10")).status_code == 201  # 100.05, fee 1.0005
    entry = await journal(
        client, journaled, price="100.05", fee="1.0005", strategy_id="manual", note="phone"
    )
    assert entry.status_code == 201, entry.text
    body = entry.json()
    assert body["note"] == body["order"]["note"] == "phone"
    kept = await client.get(f"{API}/orders/{body['order']['id']}", headers=journaled.headers)
    assert kept.json()["note"] == "phone"  # stored with the trade, not only echoed
    assert body["order"]["status"] == "filled" and body["order"]["filled_quantity"] == "10"
    assert body["order"]["average_fill_price"] == "100.05" and body["order"]["fees"] == "1.0005"
    assert body["fill"]["price"] == "100.05" and body["fill"]["quantity"] == "10"
    assert body["fill"]["order_id"] == body["order"]["id"]

    drop = {"account_id", "opened_at"}
    mine = {k: v for k, v in (await position(client, journaled)).items() if k not in drop}
    theirs = {k: v for k, v in (await position(client, paper)).items() if k not in drop}
    assert mine == theirs and mine["cost"] == "1000.5"
    keep = ("cash", "reserved", "available", "equity", "realized_pnl", "fees_paid")
    journaled_account, paper_account = (
        await account(client, journaled),
        await account(client, paper),
    )
    assert {k: journaled_account[k] for k in keep} == {k: paper_account[k] for k in keep}
    assert journaled_account["cash"] == "98998.4995"  # 100000 − 1000.5 − 1.0005

    # Closing it by journal records a round trip, tagged by the opening entry.
    closed = await journal(client, journaled, side="sell", price="110", fee="1")
    assert closed.status_code == 201, closed.text
    trades = (await client.get(f"{API}/trades", headers=journaled.headers)).json()
    assert trades["total"] == 1
    trade = trades["items"][0]
    assert trade["pnl"] == "99.5" and trade["fees"] == "2.0005"  # (110 − 100.05) × 10
    assert trade["net_pnl"] == "97.4995" and trade["strategy_id"] == "manual"
    assert (await account(client, journaled))["cash"] == "100097.4995"  # + 1100 − 1


async def test_a_journal_entry_in_the_past_is_kept_at_its_time(
    client: httpx.AsyncClient, session: AsyncSession, settings: Settings, market: FixedMarket
) -> None:
    trader = await make_trader(client, session, settings)
    when = (utcnow() - timedelta(days=2)).replace(microsecond=0)
    entry = await journal(client, trader, price="90", executed_at=when.isoformat())
    assert entry.status_code == 201, entry.text
    assert entry.json()["fill"]["time"].startswith(when.strftime("%Y-%m-%dT%H:%M:%S"))
    assert entry.json()["fill"]["fee"] == "0"
    assert (await account(client, trader))["cash"] == "99100"
    # The open position's next entry is dated after its last fill, never before.
    earlier = (when - timedelta(days=1)).isoformat()
    out_of_order = await journal(client, trader, side="sell", price="95", executed_at=earlier)
    assert out_of_order.status_code == 422, out_of_order.text
    assert out_of_order.json()["errors"][0]["field"] == "body.executed_at"


async def test_journal_validation(
    client: httpx.AsyncClient, session: AsyncSession, settings: Settings, market: FixedMarket
) -> None:
    trader = await make_trader(client, session, settings)
    other = await make_trader(client, session, settings)
    future = (utcnow() + timedelta(hours=1)).isoformat()
    refused = {
        "body.price": {"price": "100.005"},  # AAPL ticks are 0.01
        "body.quantity": {"price": "100", "quantity": "1.5"},  # AAPL trades whole shares
        "body.executed_at": {"price": "100", "executed_at": future},
        "body.side": {"price": "100", "side": "sell"},  # no position, no shorting
        "body.symbol": {"price": "100", "symbol": "NOPE-USD"},
    }
    for field, fields in refused.items():
        response = await journal(client, trader, **fields)
        assert response.status_code == 422, (field, response.text)
        assert response.headers["content-type"].startswith("application/problem+json")
        assert field in [error["field"] for error in response.json()["errors"]], response.text
    # More than the cash can pay: refused, and nothing of it stays.
    too_much = await journal(client, trader, price="100", quantity="1001")
    assert too_much.status_code == 422, too_much.text
    assert (await account(client, trader))["cash"] == "100000"
    assert (await client.get(f"{API}/orders", headers=trader.headers)).json()["total"] == 0
    # Not someone else's account.
    response = await journal(client, other, price="100", account_id=trader.account_id)
    assert response.status_code == 404
    # Not before the account's reset.
    before_reset = utcnow().isoformat()
    reset = await client.post(f"{API}/accounts/{trader.account_id}/reset", headers=trader.headers)
    assert reset.status_code == 200
    response = await journal(client, trader, price="100", executed_at=before_reset)
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "body.executed_at"
