"""Trading accounts: the default account at registration, creation, the detail with equity
and PnL at the live mark, reset, and other users' accounts."""

from __future__ import annotations

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from tests.trading.support import API, FixedMarket, account, install_market, make_trader, order
from tradeos.config import Settings
from tradeos.trading.models import Fill, Order


@pytest.fixture
def market(app: FastAPI, client: httpx.AsyncClient) -> FixedMarket:
    return install_market(app)


async def test_registration_opens_a_paper_account_with_100000_usd(
    client: httpx.AsyncClient,
) -> None:
    body = {"email": "ada@example.com", "username": "ada", "password": "Tr4ding-Desk-Ledger"}
    assert (await client.post(f"{API}/auth/register", json=body)).status_code == 201
    login = await client.post(
        f"{API}/auth/login", json={"login": "ada", "password": "Tr4ding-Desk-Ledger"}
    )
    headers = {"Authorization": f"Bearer {login.json()['access_token']}"}
    page = (await client.get(f"{API}/accounts", headers=headers)).json()
    assert page["total"] == 1 and page["pages"] == 1
    (default,) = page["items"]
    assert default["name"] == "Paper" and default["kind"] == "paper"
    assert default["base_currency"] == "USD"
    assert default["cash"] == default["available"] == default["starting_balance"] == "100000"
    assert default["reserved"] == "0"


async def test_create_list_and_refuse_what_is_not_a_paper_usd_account(
    client: httpx.AsyncClient, session: AsyncSession, settings: Settings, market: FixedMarket
) -> None:
    trader = await make_trader(client, session, settings, starting_balance="2500.50")
    detail = await account(client, trader)
    assert detail["cash"] == detail["available"] == detail["equity"] == "2500.5"
    assert detail["unrealized_pnl"] == detail["realized_pnl"] == detail["margin_used"] == "0"

    post = lambda body: client.post(f"{API}/accounts", headers=trader.headers, json=body)  # noqa: E731
    assert (await post({"name": "Desk"})).status_code == 409  # the same name twice
    for wrong in (
        {"name": "Live", "kind": "live"},
        {"name": "Euro", "base_currency": "EUR"},
        {"name": "Zero", "starting_balance": "0"},
        {"name": "Minus", "starting_balance": "-5"},
        {"name": "Huge", "starting_balance": "1000000000.01"},
    ):
        response = await post(wrong)
        assert response.status_code == 422, wrong
        assert response.headers["content-type"] == "application/problem+json"
    second = await post({"name": "Second", "starting_balance": "1000000000"})
    assert second.status_code == 201
    page = (await client.get(f"{API}/accounts", headers=trader.headers)).json()
    assert [item["name"] for item in page["items"]] == ["Desk", "Second"]


async def test_equity_and_pnl_at_the_live_mark(
    client: httpx.AsyncClient, session: AsyncSession, settings: Settings, market: FixedMarket
) -> None:
    trader = await make_trader(client, session, settings)
    assert (await order(client, trader, quantity="10")).status_code == 201
    # Bought 10 at 100.05 (ask 100.00 + 5 bps), fee 0.1 % = 1.0005.
    market.quote("AAPL", "109.90", "110.00", "110.00")
    detail = await account(client, trader)
    assert detail["cash"] == "98998.4995"
    assert detail["market_value"] == "1100"
    assert detail["equity"] == "100098.4995"
    assert detail["unrealized_pnl"] == "99.5"  # 10 × 110.00 − 1000.50
    assert detail["realized_pnl"] == "0" and detail["fees_paid"] == "1.0005"


async def test_reset_cancels_open_orders_clears_positions_and_keeps_history(
    client: httpx.AsyncClient, session: AsyncSession, settings: Settings, market: FixedMarket
) -> None:
    trader = await make_trader(client, session, settings, starting_balance="50000")
    assert (await order(client, trader, quantity="10")).status_code == 201
    resting = await order(client, trader, type="limit", quantity="5", limit_price="90.00")
    assert resting.json()["status"] == "accepted"

    reset = await client.post(f"{API}/accounts/{trader.account_id}/reset", headers=trader.headers)
    assert reset.status_code == 200
    assert reset.json()["cash"] == reset.json()["available"] == "50000"
    assert reset.json()["reserved"] == "0" and reset.json()["reset_at"] is not None
    positions = await client.get(f"{API}/positions", headers=trader.headers)
    assert positions.json()["total"] == 0
    detail = await account(client, trader)
    assert detail["equity"] == "50000" and detail["realized_pnl"] == "0"
    canceled = await client.get(f"{API}/orders/{resting.json()['id']}", headers=trader.headers)
    assert canceled.json()["status"] == "canceled" and canceled.json()["reserved"] == "0"
    # History stays: both orders and the fill.
    assert await session.scalar(select(func.count()).select_from(Order)) == 2
    assert await session.scalar(select(func.count()).select_from(Fill)) == 1


async def test_another_users_account_is_404(
    client: httpx.AsyncClient, session: AsyncSession, settings: Settings, market: FixedMarket
) -> None:
    owner = await make_trader(client, session, settings)
    intruder = await make_trader(client, session, settings)
    url = f"{API}/accounts/{owner.account_id}"
    assert (await client.get(url, headers=intruder.headers)).status_code == 404
    reset = await client.post(f"{url}/reset", headers=intruder.headers)
    assert reset.status_code == 404
    assert (
        await order(client, intruder, account_id=owner.account_id, quantity="1")
    ).status_code == 404
    mine = (await client.get(f"{API}/accounts", headers=intruder.headers)).json()
    assert [item["id"] for item in mine["items"]] == [intruder.account_id]
