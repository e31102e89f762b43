"""What the trading API tests share: a market whose prices the test sets, and a signed-in
trader with a paper account."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

import httpx
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncSession

from tests.factories import bearer, make_user, sign_in
from tradeos.accounts.models import User
from tradeos.config import Settings
from tradeos.core.db import utcnow
from tradeos.market.providers.base import Bar, InstrumentSpec, Tick, UnknownSymbol
from tradeos.market.providers.sim import SimProvider
from tradeos.market.timeframes import Timeframe

API = "/api/v1"


class FixedMarket:
    """A market provider named like the simulated one (its instruments are stored under that
    name), whose bid, ask and last the test sets. It has no bars."""

    name = "sim"

    def __init__(self) -> None:
        self.quotes: dict[str, tuple[Decimal, Decimal, Decimal]] = {}

    def quote(self, symbol: str, bid: str, ask: str, last: str | None = None) -> None:
        mid = (Decimal(bid) + Decimal(ask)) / 2
        self.quotes[symbol] = (Decimal(bid), Decimal(ask), Decimal(last) if last else mid)

    async def instruments(self) -> Sequence[InstrumentSpec]:
        return await SimProvider().instruments()

    async def candles(
        self, symbol: str, timeframe: Timeframe, start: datetime, end: datetime
    ) -> Sequence[Bar]:
        return []

    async def ticker(self, symbol: str) -> Tick:
        if symbol not in self.quotes:
            raise UnknownSymbol(symbol)
        bid, ask, last = self.quotes[symbol]
        return Tick(symbol, utcnow(), last, bid, ask)


def install_market(app: FastAPI) -> FixedMarket:
    """Replace the running app's market provider (the lifespan has started)."""
    market = FixedMarket()
    market.quote("AAPL", "99.90", "100.00", "99.95")
    market.quote("BTC-USD", "49990.00", "50000.00", "49995.00")
    market.quote("ETH-USD", "2999.00", "3000.00", "2999.50")
    app.state.market.provider = market
    return market


@dataclass
class Trader:
    user: User
    headers: dict[str, str]
    account_id: int


async def make_trader(
    client: httpx.AsyncClient,
    session: AsyncSession,
    settings: Settings,
    *,
    starting_balance: str = "100000",
    **account: Any,
) -> Trader:
    user = await make_user(session)
    headers = bearer(await sign_in(session, settings, user))
    await session.commit()
    response = await client.post(
        f"{API}/accounts",
        headers=headers,
        json={"name": "Desk", "starting_balance": starting_balance, **account},
    )
    assert response.status_code == 201, response.text
    return Trader(user, headers, response.json()["id"])


async def set_profile(client: httpx.AsyncClient, trader: Trader, **limits: Any) -> None:
    response = await client.put(
        f"{API}/risk/profile",
        params={"account_id": trader.account_id},
        headers=trader.headers,
        json=limits,
    )
    assert response.status_code == 200, response.text


async def order(client: httpx.AsyncClient, trader: Trader, **fields: Any) -> httpx.Response:
    body = {"account_id": trader.account_id, "symbol": "AAPL", "side": "buy", "type": "market"}
    body.update(fields)
    return await client.post(f"{API}/orders", headers=trader.headers, json=body)


async def account(client: httpx.AsyncClient, trader: Trader) -> dict[str, Any]:
    response = await client.get(f"{API}/accounts/{trader.account_id}", headers=trader.headers)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body
