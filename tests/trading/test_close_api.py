"""Closing positions: POST /positions/{symbol}/close (all or part, long or short) and
POST /positions/close-all, to the last digit of cash; errors and permissions."""

from __future__ import annotations

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select, update
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
from tradeos.market.models import Instrument
from tradeos.trading.models import Order


@pytest.fixture
def market(app: FastAPI, client: httpx.AsyncClient) -> FixedMarket:
    return install_market(app)


@pytest.fixture
async def trader(
    client: httpx.AsyncClient, session: AsyncSession, settings: Settings, market: FixedMarket
) -> Trader:
    return await make_trader(client, session, settings, allow_short=True)


async def position_quantity(client: httpx.AsyncClient, trader: Trader, symbol: str) -> str:
    response = await client.get(f"{API}/positions/{symbol}", headers=trader.headers)
    assert response.status_code == 200, response.text
    quantity: str = response.json()["quantity"]
    return quantity


async def test_close_a_long_in_two_parts_and_a_short_at_once(
    client: httpx.AsyncClient, session: AsyncSession, trader: Trader
) -> None:
    assert (await order(client, trader, quantity="10")).status_code == 201
    url = f"{API}/positions/AAPL/close"
    part = await client.post(url, headers=trader.headers, json={"quantity": "4"})
    assert part.status_code == 201, part.text
    assert part.json()["side"] == "sell" and part.json()["quantity"] == "4"
    assert part.json()["status"] == "filled" and part.json()["average_fill_price"] == "99.85"
    assert await position_quantity(client, trader, "AAPL") == "6"
    rest = await client.post(url, headers=trader.headers, params={"account_id": trader.account_id})
    assert rest.status_code == 201, rest.text
    assert rest.json()["quantity"] == "6"
    assert await position_quantity(client, trader, "AAPL") == "0"
    # Bought 10 at 100.05 (fee 1.0005), sold 10 at 99.85 (fees 0.3994 + 0.5991).
    detail = await account(client, trader)
    assert detail["cash"] == "99996.001" and detail["realized_pnl"] == "-2"
    origins = (await session.scalars(select(Order.origin).order_by(Order.id))).all()
    assert origins == ["api", "close", "close"]
    await session.commit()

    assert (await order(client, trader, side="sell", quantity="5")).status_code == 201
    covered = await client.post(url, headers=trader.headers)
    assert covered.status_code == 201, covered.text
    assert covered.json()["side"] == "buy" and covered.json()["quantity"] == "5"
    assert await position_quantity(client, trader, "AAPL") == "0"
    # Shorted 5 at 99.85 (fee 0.49925), covered 5 at 100.05 (fee 0.50025): −1 and −0.9995.
    assert (await account(client, trader))["cash"] == "99994.0015"


async def test_close_refusals_are_clear(
    client: httpx.AsyncClient, session: AsyncSession, settings: Settings, trader: Trader
) -> None:
    url = f"{API}/positions/AAPL/close"
    missing = await client.post(url, headers=trader.headers)
    assert missing.status_code == 404
    assert missing.headers["content-type"].startswith("application/problem+json")
    unknown = await client.post(f"{API}/positions/NOPE-USD/close", headers=trader.headers)
    assert unknown.status_code == 404
    assert (await order(client, trader, quantity="10")).status_code == 201
    too_many = await client.post(url, headers=trader.headers, json={"quantity": "11"})
    assert too_many.status_code == 422
    assert "quantity" in str(too_many.json()["errors"])
    off_step = await client.post(url, headers=trader.headers, json={"quantity": "0.5"})
    assert off_step.status_code == 422 and "quantity" in str(off_step.json()["errors"])

    intruder = await make_trader(client, session, settings)
    foreign = await client.post(
        url, headers=intruder.headers, params={"account_id": trader.account_id}
    )
    assert foreign.status_code == 404
    foreign_all = await client.post(
        f"{API}/positions/close-all",
        headers=intruder.headers,
        params={"account_id": trader.account_id},
    )
    assert foreign_all.status_code == 404
    # The intruder's own first account has no AAPL.
    assert (await client.post(url, headers=intruder.headers)).status_code == 404
    assert await position_quantity(client, trader, "AAPL") == "10"


async def test_close_all_closes_what_it_can_and_names_what_it_cannot(
    client: httpx.AsyncClient, session: AsyncSession, trader: Trader
) -> None:
    for symbol, quantity in (("AAPL", "10"), ("BTC-USD", "0.1"), ("ETH-USD", "1")):
        placed = await order(client, trader, symbol=symbol, quantity=quantity)
        assert placed.status_code == 201, placed.text
    await session.execute(
        update(Instrument).where(Instrument.symbol == "ETH-USD").values(status="halted")
    )
    await session.commit()

    preview = await client.get(f"{API}/positions/close-all", headers=trader.headers)
    assert preview.status_code == 200, preview.text
    assert [p["symbol"] for p in preview.json()["items"]] == ["AAPL", "BTC-USD", "ETH-USD"]
    response = await client.post(
        f"{API}/positions/close-all",
        headers=trader.headers,
        params={"account_id": trader.account_id},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert [(o["symbol"], o["side"], o["quantity"]) for o in body["orders"]] == [
        ("AAPL", "sell", "10"),
        ("BTC-USD", "sell", "0.1"),
    ]
    assert [(e["symbol"], e["status"]) for e in body["errors"]] == [("ETH-USD", 422)]
    assert "halted" in body["errors"][0]["detail"]
    assert await position_quantity(client, trader, "AAPL") == "0"
    assert await position_quantity(client, trader, "BTC-USD") == "0"
    assert await position_quantity(client, trader, "ETH-USD") == "1"
    # AAPL round trip −3.999; BTC: bought 0.1 at 50025 (fee 5.0025), sold at 49965 (fee
    # 4.9965): −15.999; ETH bought 1 at 3001.50 (fee 3.0015) and still held: −3004.5015.
    detail = await account(client, trader)
    assert detail["cash"] == "96975.5005"
