"""Risk tools: POST /risk/position-size (rounding, money at risk, the account's equity, clear
422s) and GET /risk/assessment (exposure, concentration, leverage, VaR from daily closes,
drawdown from the portfolio snapshots) against figures computed by hand."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
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
from tradeos.market import service as market_service
from tradeos.market.providers.base import Bar
from tradeos.market.timeframes import Timeframe
from tradeos.trading.models import PortfolioSnapshot


@pytest.fixture
def market(app: FastAPI, client: httpx.AsyncClient) -> FixedMarket:
    return install_market(app)


@pytest.fixture
async def trader(
    client: httpx.AsyncClient, session: AsyncSession, settings: Settings, market: FixedMarket
) -> Trader:
    return await make_trader(client, session, settings, allow_short=True)


async def size(client: httpx.AsyncClient, trader: Trader, **fields: Any) -> httpx.Response:
    body = {"symbol": "AAPL", "entry": "100.00", "stop": "97.55", "risk_percent": "1"}
    body.update(fields)
    return await client.post(f"{API}/risk/position-size", headers=trader.headers, json=body)


async def test_position_size_rounds_down_to_the_step_within_the_budget(
    client: httpx.AsyncClient, trader: Trader
) -> None:
    response = await size(client, trader, equity="100000")
    assert response.status_code == 200, response.text
    body = response.json()
    # Budget 1000 over 2.45 a share: 408.16…, down to whole shares.
    assert body["direction"] == "long" and body["risk_budget"] == "1000"
    assert body["risk_per_unit"] == "2.45" and body["quantity"] == "408"
    assert body["money_at_risk"] == "999.6" and body["notional"] == "40800"

    # A stop off the tick is rounded away from the entry: 49000.005 → 49000.00.
    btc = await size(
        client, trader, symbol="btc-usd", entry="50000", stop="49000.005", risk_percent="2",
        equity="12345.67",
    )  # fmt: skip
    assert btc.status_code == 200, btc.text
    # 2% of 12345.67 = 246.9134, over 1000 a coin: 0.2469134, down to the step 0.00001.
    assert btc.json()["symbol"] == "BTC-USD" and btc.json()["quantity"] == "0.24691"
    assert btc.json()["money_at_risk"] == "246.91" and btc.json()["risk_per_unit"] == "1000"

    short = await size(client, trader, symbol="ETH-USD", entry="3000", stop="3100",
                       account_id=trader.account_id)  # fmt: skip
    assert short.status_code == 200, short.text
    # The account's equity, 100000: 1000 at risk over 100 a coin.
    assert short.json()["direction"] == "short" and short.json()["equity"] == "100000"
    assert short.json()["quantity"] == "10" and short.json()["money_at_risk"] == "1000"


async def test_position_size_refusals(
    client: httpx.AsyncClient, session: AsyncSession, settings: Settings, trader: Trader
) -> None:
    cases = [
        ({"equity": "1000", "stop": "100.00"}, "stop"),
        ({"equity": "1000", "risk_percent": "0"}, "risk_percent"),
        ({"equity": "1000", "risk_percent": "100.5"}, "risk_percent"),
        ({"equity": "1000", "symbol": "NOPE"}, "symbol"),
        ({}, "equity"),
        ({"equity": "1000", "account_id": trader.account_id}, "equity"),
        ({"equity": -5}, "equity"),
    ]
    for fields, named in cases:
        response = await size(client, trader, **fields)
        assert response.status_code == 422, (fields, response.text)
        assert response.headers["content-type"].startswith("application/problem+json")
        assert named in str(response.json()["errors"]), (fields, response.json())
    intruder = await make_trader(client, session, settings)
    foreign = await size(client, intruder, account_id=trader.account_id)
    assert foreign.status_code == 404


async def daily_closes(session: AsyncSession, symbol: str, closes: list[str], ago: int) -> None:
    """Closed daily bars, the last one `ago` days before today's."""
    instrument = await market_service.get_instrument(session, symbol)
    today = Timeframe.D1.floor(utcnow())
    first = today - timedelta(days=ago + len(closes) - 1)
    bars = [
        Bar(first + timedelta(days=i), Decimal(c), Decimal(c), Decimal(c), Decimal(c), Decimal(1))
        for i, c in enumerate(closes)
    ]
    await market_service.upsert_candles(session, instrument.id, Timeframe.D1, bars, "test")


async def test_assessment_against_hand_computed_figures(
    client: httpx.AsyncClient, session: AsyncSession, settings: Settings, trader: Trader
) -> None:
    assert (await order(client, trader, quantity="10")).status_code == 201
    short = await order(client, trader, symbol="ETH-USD", side="sell", quantity="1")
    assert short.status_code == 201, short.text
    # Bought 10 AAPL at 100.05 (fee 1.0005), shorted 1 ETH at 2997.50 (fee 2.9975): marked
    # at 99.95 and 2999.50, equity is 101993.002 + 999.5 − 2999.5.
    assert (await account(client, trader))["equity"] == "99993.002"

    # Five aligned days (the oldest AAPL bar has no ETH bar: left out), the last yesterday.
    await daily_closes(session, "AAPL", ["90", "100", "102", "99", "101", "100"], 1)
    await daily_closes(session, "ETH-USD", ["3000", "3030", "2970", "3060", "3000"], 1)
    start = utcnow() - timedelta(days=3)
    for hours, equity in ((0, "100000"), (1, "101000"), (2, "99000")):
        session.add(
            PortfolioSnapshot(
                account_id=trader.account_id,
                time=start + timedelta(hours=hours),
                equity=Decimal(equity),
                cash=Decimal(equity),
                positions_value=Decimal(0),
                realized_pnl=Decimal(0),
                unrealized_pnl=Decimal(0),
            )
        )
    await session.commit()

    response = await client.get(
        f"{API}/risk/assessment", headers=trader.headers, params={"account_id": trader.account_id}
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["equity"] == "99993.002"
    assert body["exposure"] == {
        "long": "999.5",
        "short": "2999.5",
        "gross": "3999",
        "net": "-2000",
        "gross_pct_of_equity": "3.99927987",
    }
    assert [
        (s["symbol"], s["asset_class"], s["quantity"], s["net"]) for s in body["by_symbol"]
    ] == [
        ("AAPL", "equity", "10", "999.5"),
        ("ETH-USD", "crypto", "-1", "-2999.5"),
    ]
    assert {a["asset_class"]: a["gross"] for a in body["by_asset_class"]} == {
        "crypto": "2999.5",
        "equity": "999.5",
    }
    assert body["concentration"] == "0.75006252"  # 2999.5 / 3999
    assert body["gross_leverage"] == "0.0399928"  # 3999 / 99993.002
    assert body["net_leverage"] == "-0.0200014"
    # Daily PnLs 999.5 × r(AAPL) − 2999.5 × r(ETH): −10.005, 29.999, −70.702, 48.918; the 5th
    # percentile between the two lowest: −70.702 + 0.15 × 60.697 = −61.597.
    assert body["value_at_risk"]["amount"] == "61.6"
    assert body["value_at_risk"]["observations"] == 4
    # Snapshots 100000, 101000, 99000, then 99993.002 now: peak 101000.
    assert body["drawdown"] == {
        "current": "1006.998",
        "current_pct": "0.99702772",
        "maximum": "2000",
        "maximum_pct": "1.98019802",
        "points": 4,
    }

    intruder = await make_trader(client, session, settings)
    foreign = await client.get(
        f"{API}/risk/assessment", headers=intruder.headers, params={"account_id": trader.account_id}
    )
    assert foreign.status_code == 404
    empty = await client.get(
        f"{API}/risk/assessment",
        headers=intruder.headers,
        params={"account_id": intruder.account_id},
    )
    assert empty.status_code == 200, empty.text
    assert empty.json()["value_at_risk"]["amount"] == "0" and empty.json()["by_symbol"] == []
    assert empty.json()["drawdown"]["current"] == "0"
