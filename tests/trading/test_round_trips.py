"""Round trips recorded as fills close them: through POST /orders, listed by GET /trades."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncSession

from tests.trading.support import API, FixedMarket, Trader, install_market, make_trader, order
from tradeos.config import Settings
from tradeos.trading import positions
from tradeos.trading.round_trips import closes_a_trade, duration_seconds


@pytest.fixture
def market(app: FastAPI, client: httpx.AsyncClient) -> FixedMarket:
    return install_market(app)


async def trades(client: httpx.AsyncClient, trader: Trader, **params: Any) -> dict[str, Any]:
    response = await client.get(f"{API}/trades", headers=trader.headers, params=params)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def test_a_buy_then_a_sell_is_one_round_trip(
    client: httpx.AsyncClient, session: AsyncSession, settings: Settings, market: FixedMarket
) -> None:
    trader = await make_trader(client, session, settings)
    bought = await order(client, trader, quantity="10", strategy_id="breakout")
    assert bought.status_code == 201  # 100.00 + 5 bps = 100.05, fee 1.0005
    assert (await trades(client, trader))["total"] == 0
    market.quote("AAPL", "109.90", "110.00", "110.00")
    sold = await order(client, trader, side="sell", quantity="10")
    assert sold.status_code == 201  # 109.90 − 5 bps = 109.84505, down to the tick: 109.84

    listed = await trades(client, trader)
    assert listed["total"] == 1
    trade = listed["items"][0]
    assert trade["account_id"] == trader.account_id and trade["symbol"] == "AAPL"
    assert trade["direction"] == "long" and trade["quantity"] == "10"
    assert trade["entry_price"] == "100.05" and trade["exit_price"] == "109.84"
    assert trade["pnl"] == "97.9"  # (109.84 − 100.05) × 10
    assert trade["fees"] == "2.0989"  # 1.0005 + 1.0984
    assert trade["net_pnl"] == "95.8011"
    assert trade["return_pct"] == "9.57532234"  # 95.8011 / 1000.5, in percent, 8 places
    assert trade["strategy_id"] == "breakout"  # the opening order's tag
    opened = datetime.fromisoformat(trade["opened_at"])
    closed = datetime.fromisoformat(trade["closed_at"])
    assert Decimal(trade["duration_seconds"]) == duration_seconds(opened, closed)

    assert (await trades(client, trader, outcome="win"))["total"] == 1
    assert (await trades(client, trader, outcome="loss"))["total"] == 0
    assert (await trades(client, trader, symbol="btc-usd"))["total"] == 0
    assert (await trades(client, trader, strategy_id="breakout"))["total"] == 1
    assert (await trades(client, trader, direction="short"))["total"] == 0


async def test_a_flip_closes_one_trip_and_opens_the_next(
    client: httpx.AsyncClient, session: AsyncSession, settings: Settings, market: FixedMarket
) -> None:
    trader = await make_trader(client, session, settings, allow_short=True)
    assert (await order(client, trader, quantity="10")).status_code == 201  # 100.05
    # Sell 15 at 99.85: closes the long 10, opens a short 5; fee 1.49775, 10/15 to the long.
    assert (await order(client, trader, side="sell", quantity="15")).status_code == 201
    listed = await trades(client, trader)
    assert listed["total"] == 1
    long = listed["items"][0]
    assert (long["direction"], long["quantity"], long["pnl"]) == ("long", "10", "-2")
    assert long["fees"] == "1.999" and long["net_pnl"] == "-3.999"  # 1.0005 + 0.9985

    assert (await order(client, trader, quantity="5")).status_code == 201  # covers at 100.05
    listed = await trades(client, trader, sort="closed")
    assert listed["total"] == 2
    short = listed["items"][1]
    assert (short["direction"], short["quantity"]) == ("short", "5")
    assert short["entry_price"] == "99.85" and short["exit_price"] == "100.05"
    assert short["pnl"] == "-1" and short["fees"] == "0.9995"  # 0.49925 + 0.50025
    assert short["net_pnl"] == "-1.9995"
    by_pnl = await trades(client, trader, sort="-net_pnl")
    assert [t["net_pnl"] for t in by_pnl["items"]] == ["-1.9995", "-3.999"]
    assert (await trades(client, trader, outcome="loss"))["total"] == 2


async def test_a_partial_close_records_nothing_until_flat(
    client: httpx.AsyncClient, session: AsyncSession, settings: Settings, market: FixedMarket
) -> None:
    trader = await make_trader(client, session, settings)
    other = await make_trader(client, session, settings)
    assert (await order(client, trader, quantity="10")).status_code == 201  # 100.05
    assert (await order(client, trader, quantity="10")).status_code == 201  # 100.05
    assert (await order(client, trader, side="sell", quantity="4")).status_code == 201
    assert (await trades(client, trader))["total"] == 0
    assert (await order(client, trader, side="sell", quantity="16")).status_code == 201
    listed = await trades(client, trader)
    assert listed["total"] == 1
    trade = listed["items"][0]
    assert trade["quantity"] == "20" and trade["exit_price"] == "99.85"
    assert trade["pnl"] == "-4"  # (99.85 − 100.05) × 20
    # Someone else sees none of it, even naming the account.
    assert (await trades(client, other))["total"] == 0
    assert (await trades(client, other, account_id=trader.account_id))["total"] == 0


async def test_bad_list_parameters_are_422(
    client: httpx.AsyncClient, session: AsyncSession, settings: Settings, market: FixedMarket
) -> None:
    trader = await make_trader(client, session, settings)
    for params in (
        {"sort": "size"},
        {"outcome": "draw"},
        {"closed_from": "2026-01-02T00:00:00Z", "closed_to": "2026-01-01T00:00:00Z"},
    ):
        response = await client.get(f"{API}/trades", headers=trader.headers, params=params)
        assert response.status_code == 422, params
        assert response.headers["content-type"].startswith("application/problem+json")


def test_which_fills_close_a_trade() -> None:
    def at(quantity: str) -> positions.Position:
        return positions.Position("AAPL", Decimal(quantity))

    assert not closes_a_trade(at("0"), at("5"))  # opens
    assert not closes_a_trade(at("5"), at("8"))  # grows
    assert not closes_a_trade(at("5"), at("2"))  # partial close
    assert closes_a_trade(at("5"), at("0"))
    assert closes_a_trade(at("5"), at("-1"))  # flips
    assert closes_a_trade(at("-5"), at("0"))
    moment = datetime(2026, 1, 1, tzinfo=UTC)
    later = moment + timedelta(hours=1, microseconds=250)
    assert duration_seconds(moment, later) == Decimal("3600.000250")


async def test_a_trade_of_many_fills_is_found_across_pages(
    client: httpx.AsyncClient, session: AsyncSession, settings: Settings, market: FixedMarket
) -> None:
    """The walk back to where the position was flat reads pages of growing size: a trade of
    more fills than the first page still starts at its first fill."""
    trader = await make_trader(client, session, settings)
    assert (await order(client, trader, quantity="1")).status_code == 201
    assert (await order(client, trader, side="sell", quantity="1")).status_code == 201
    for _ in range(20):  # 20 buys of 1 at 100.05, fee 0.10005 each
        assert (await order(client, trader, quantity="1")).status_code == 201
    assert (await order(client, trader, side="sell", quantity="20")).status_code == 201
    listed = await trades(client, trader, sort="closed")
    assert listed["total"] == 2
    last = listed["items"][-1]
    assert last["quantity"] == "20" and last["entry_price"] == "100.05"
    assert last["exit_price"] == "99.85" and last["pnl"] == "-4"  # (99.85 − 100.05) × 20
