"""Risk profiles: defaults, replace, validation and other users' accounts."""

from __future__ import annotations

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncSession

from tests.trading.support import API, FixedMarket, install_market, make_trader, order
from tradeos.config import Settings

URL = f"{API}/risk/profile"


@pytest.fixture
def market(app: FastAPI, client: httpx.AsyncClient) -> FixedMarket:
    return install_market(app)


async def test_defaults_then_replace(
    client: httpx.AsyncClient, session: AsyncSession, settings: Settings, market: FixedMarket
) -> None:
    trader = await make_trader(client, session, settings)
    params = {"account_id": trader.account_id}
    defaults = (await client.get(URL, headers=trader.headers, params=params)).json()
    assert defaults == {
        "account_id": trader.account_id,
        "max_position_quantity": None,
        "max_position_pct": None,
        "max_risk_per_trade_pct": "2",
        "max_daily_loss": None,
        "max_daily_loss_pct": None,
        "max_daily_trades": 50,
        "max_open_positions": None,
        "max_leverage": None,
        "allowed_symbols": None,
        "allowed_asset_classes": None,
        "stop_loss_required": False,
    }
    body = {
        "max_position_pct": "25.5",
        "max_daily_loss": "1000.00",
        "max_open_positions": 3,
        "allowed_symbols": ["aapl", "BTC-USD"],
        "allowed_asset_classes": ["equity", "crypto"],
        "stop_loss_required": True,
    }
    put = await client.put(URL, headers=trader.headers, params=params, json=body)
    assert put.status_code == 200, put.text
    stored = (await client.get(URL, headers=trader.headers, params=params)).json()
    assert stored == put.json()
    assert stored["max_position_pct"] == "25.5" and stored["max_daily_loss"] == "1000"
    assert stored["max_risk_per_trade_pct"] == "2"  # left out: its default
    assert stored["allowed_symbols"] == ["AAPL", "BTC-USD"]
    assert stored["allowed_asset_classes"] == ["crypto", "equity"]
    # The profile applies to orders: ETH-USD is not allowed.
    refused = await order(client, trader, symbol="ETH-USD", quantity="1", stop_loss="1")
    assert refused.status_code == 422 and refused.json()["rule"] == "allowed_symbols"


@pytest.mark.parametrize(
    "body",
    [
        {"max_position_pct": "100.01"},
        {"max_daily_loss_pct": "-1"},
        {"max_risk_per_trade_pct": "101"},
        {"max_daily_trades": -1},
        {"max_position_quantity": "-0.5"},
        {"allowed_asset_classes": ["stocks"]},
        {"unknown": 1},
    ],
)
async def test_invalid_limits_are_422(
    client: httpx.AsyncClient,
    session: AsyncSession,
    settings: Settings,
    market: FixedMarket,
    body: dict[str, object],
) -> None:
    trader = await make_trader(client, session, settings)
    response = await client.put(
        URL, headers=trader.headers, params={"account_id": trader.account_id}, json=body
    )
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"


async def test_another_users_account_is_404(
    client: httpx.AsyncClient, session: AsyncSession, settings: Settings, market: FixedMarket
) -> None:
    owner = await make_trader(client, session, settings)
    intruder = await make_trader(client, session, settings)
    params = {"account_id": owner.account_id}
    assert (await client.get(URL, headers=intruder.headers, params=params)).status_code == 404
    put = await client.put(URL, headers=intruder.headers, params=params, json={})
    assert put.status_code == 404
    missing = {"account_id": owner.account_id + 10_000}
    assert (await client.get(URL, headers=owner.headers, params=missing)).status_code == 404
