"""Positions: signed quantity, average entry, market value and PnL at the live mark."""

from __future__ import annotations

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncSession

from tests.trading.support import API, FixedMarket, install_market, make_trader, order
from tradeos.config import Settings


@pytest.fixture
def market(app: FastAPI, client: httpx.AsyncClient) -> FixedMarket:
    return install_market(app)


async def test_average_entry_realized_and_unrealized_pnl(
    client: httpx.AsyncClient, session: AsyncSession, settings: Settings, market: FixedMarket
) -> None:
    trader = await make_trader(client, session, settings)
    assert (await order(client, trader, quantity="10")).status_code == 201  # at 100.05
    market.quote("AAPL", "109.90", "110.00", "110.00")
    assert (await order(client, trader, quantity="10")).status_code == 201  # at 110.06
    # 110.00 × 1.0005 = 110.055, rounded up to the tick: 110.06.
    position = (await client.get(f"{API}/positions/aapl", headers=trader.headers)).json()
    assert position["symbol"] == "AAPL" and position["account_id"] == trader.account_id
    assert position["quantity"] == "20" and position["cost"] == "2101.1"
    assert position["average_entry_price"] == "105.055"
    assert position["mark_price"] == "110" and position["market_value"] == "2200"
    assert position["unrealized_pnl"] == "98.9" and position["realized_pnl"] == "0"
    assert position["opened_at"] is not None

    # Sell 5 at the bid 109.90 slipped: 109.845050, rounded down: 109.84.
    assert (await order(client, trader, side="sell", quantity="5")).status_code == 201
    position = (await client.get(f"{API}/positions/AAPL", headers=trader.headers)).json()
    assert position["quantity"] == "15" and position["average_entry_price"] == "105.055"
    assert position["realized_pnl"] == "23.925"  # (109.84 − 105.055) × 5
    assert position["unrealized_pnl"] == "74.175"  # 15 × 110.00 − 1575.825
    # Fees, 0.1 % of each notional: 1.0005 + 1.1006 + 0.5492.
    assert position["fees_paid"] == "2.6503"

    listed = (await client.get(f"{API}/positions", headers=trader.headers)).json()
    assert listed["total"] == 1 and listed["items"] == [position]
    by_account = await client.get(
        f"{API}/positions", headers=trader.headers, params={"account_id": trader.account_id}
    )
    assert by_account.json()["items"] == [position]


async def test_a_short_position_is_negative(
    client: httpx.AsyncClient, session: AsyncSession, settings: Settings, market: FixedMarket
) -> None:
    trader = await make_trader(client, session, settings, allow_short=True)
    assert (await order(client, trader, side="sell", quantity="4")).status_code == 201
    market.quote("AAPL", "89.90", "90.00", "90.00")
    position = (await client.get(f"{API}/positions/AAPL", headers=trader.headers)).json()
    assert position["quantity"] == "-4" and position["average_entry_price"] == "99.85"
    assert position["market_value"] == "-360" and position["unrealized_pnl"] == "39.4"
    # Covering at 90.05 (90.00 + 5 bps, rounded up) realizes (99.85 − 90.05) × 4.
    assert (await order(client, trader, side="buy", quantity="4")).status_code == 201
    position = (await client.get(f"{API}/positions/AAPL", headers=trader.headers)).json()
    assert position["quantity"] == "0" and position["realized_pnl"] == "39.2"
    detail = (
        await client.get(f"{API}/accounts/{trader.account_id}", headers=trader.headers)
    ).json()
    assert detail["reserved"] == "0" and detail["margin_used"] == "0"
    # 100000 + 39.20 − fees 0.3994 − 0.3602.
    assert detail["cash"] == "100038.4404"


async def test_no_position_and_other_users_positions_are_404(
    client: httpx.AsyncClient, session: AsyncSession, settings: Settings, market: FixedMarket
) -> None:
    owner = await make_trader(client, session, settings)
    intruder = await make_trader(client, session, settings)
    assert (await order(client, owner, quantity="1")).status_code == 201
    never = await client.get(f"{API}/positions/BTC-USD", headers=owner.headers)
    assert never.status_code == 404
    unknown = await client.get(f"{API}/positions/NOPE", headers=owner.headers)
    assert unknown.status_code == 404
    foreign = await client.get(
        f"{API}/positions/AAPL", headers=intruder.headers, params={"account_id": owner.account_id}
    )
    assert foreign.status_code == 404
    assert (await client.get(f"{API}/positions/AAPL", headers=intruder.headers)).status_code == 404
    listed = await client.get(
        f"{API}/positions", headers=intruder.headers, params={"account_id": owner.account_id}
    )
    assert listed.json()["total"] == 0
