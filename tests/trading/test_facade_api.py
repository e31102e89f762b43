"""The SignalOS facade: /trading/execute with a lot size, with a risk percent, with several
take-profits (and refusals: one refused order refuses the signal); /trading/close, /orders,
/account, /stats; someone else's account is a 404."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from tests.trading.support import API, FixedMarket, Trader, install_market, make_trader
from tradeos.config import Settings
from tradeos.core.errors import ValidationFailed
from tradeos.trading.facade import split_quantity
from tradeos.trading.models import Order


@pytest.fixture
def market(app: FastAPI, client: httpx.AsyncClient) -> FixedMarket:
    return install_market(app)


@pytest.fixture
async def trader(
    client: httpx.AsyncClient, session: AsyncSession, settings: Settings, market: FixedMarket
) -> Trader:
    return await make_trader(client, session, settings)


async def execute(client: httpx.AsyncClient, trader: Trader, **fields: Any) -> httpx.Response:
    body: dict[str, Any] = {"action": "buy", "symbol": "AAPL"}
    body.update(fields)
    return await client.post(f"{API}/trading/execute", headers=trader.headers, json=body)


async def test_execute_a_lot_size_at_market_then_close(
    client: httpx.AsyncClient, session: AsyncSession, trader: Trader
) -> None:
    response = await execute(
        client, trader, action="long", lot_size="10", stop_loss="95.00", signal_id="sig-1",
        strategy_id="breakout",
    )  # fmt: skip
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["account_id"] == trader.account_id and body["side"] == "buy"
    assert body["quantity"] == "10" and body["money_at_risk"] is None
    (placed,) = body["orders"]
    assert placed["type"] == "market" and placed["status"] == "filled"
    assert placed["average_fill_price"] == "100.05" and placed["stop_loss"] == "95"
    assert placed["signal_id"] == "sig-1" and placed["strategy_id"] == "breakout"
    assert await session.scalar(select(Order.origin).where(Order.id == placed["id"])) == "signal"
    await session.commit()

    detail = await client.get(f"{API}/trading/account", headers=trader.headers)
    assert detail.status_code == 200 and detail.json()["cash"] == "98998.4995"
    closed = await client.post(
        f"{API}/trading/close", headers=trader.headers, json={"symbol": "AAPL", "quantity": "4"}
    )
    assert closed.status_code == 201, closed.text
    assert closed.json()["side"] == "sell" and closed.json()["quantity"] == "4"
    rest = await client.post(
        f"{API}/trading/close", headers=trader.headers, json={"symbol": "AAPL"}
    )
    assert rest.status_code == 201 and rest.json()["quantity"] == "6"
    # No order is left open on the flat position (a bracket's stop-loss is canceled with it).
    left = await client.get(f"{API}/trading/orders", headers=trader.headers)
    assert left.status_code == 200 and left.json()["total"] == 0
    everything = await client.get(
        f"{API}/trading/orders", headers=trader.headers, params={"open": "false"}
    )
    assert everything.json()["total"] >= 3

    stats = await client.get(f"{API}/trading/stats", headers=trader.headers)
    assert stats.status_code == 200, stats.text
    assert stats.json()["account_id"] == trader.account_id
    assert stats.json()["positions_count"] == 0 and stats.json()["total_value"] == "99996.001"


async def test_execute_sized_by_risk_percent(client: httpx.AsyncClient, trader: Trader) -> None:
    response = await execute(client, trader, risk_percent="1", stop_loss="97.55")
    assert response.status_code == 201, response.text
    body = response.json()
    # Equity 100000, 1% = 1000 at risk; entry at the ask 100.00, 2.45 a share to the stop.
    assert body["quantity"] == "408" and body["money_at_risk"] == "999.6"
    assert body["orders"][0]["quantity"] == "408" and body["orders"][0]["status"] == "filled"

    missing_stop = await execute(client, trader, risk_percent="1")
    assert missing_stop.status_code == 422
    both = await execute(client, trader, risk_percent="1", lot_size="1", stop_loss="97.55")
    assert both.status_code == 422
    unknown = await execute(client, trader, symbol="NOPE", lot_size="1")
    assert unknown.status_code == 422 and "symbol" in str(unknown.json()["errors"])


async def test_execute_splits_the_quantity_across_take_profits(
    client: httpx.AsyncClient, session: AsyncSession, settings: Settings, trader: Trader
) -> None:
    response = await execute(
        client, trader, action="buy", entry="99.00", stop_loss="95.00", lot_size="10",
        take_profits=["105.00", "110.00", "115.00"], signal_id="sig-3",
    )  # fmt: skip
    assert response.status_code == 201, response.text
    placed = response.json()["orders"]
    assert [(o["quantity"], o["take_profit"]) for o in placed] == [
        ("3", "105"),
        ("3", "110"),
        ("4", "115"),
    ]
    assert {(o["type"], o["limit_price"], o["status"], o["stop_loss"]) for o in placed} == {
        ("limit", "99", "accepted", "95")
    }
    listed = await client.get(f"{API}/trading/orders", headers=trader.headers)
    assert listed.json()["total"] == 3

    too_small = await execute(
        client, trader, entry="99.00", lot_size="2", take_profits=["105.00", "110.00", "115.00"]
    )
    assert too_small.status_code == 422 and "take_profits" in str(too_small.json()["errors"])
    # The third order cannot be paid: the whole signal is refused, nothing placed.
    refused = await execute(
        client, trader, entry="99.00", lot_size="1200", take_profits=["105.00", "110.00", "111.00"]
    )
    assert refused.status_code == 422 and refused.json()["rule"] == "buying_power"
    assert refused.json()["take_profit_index"] == 2
    count = await session.scalar(select(func.count()).select_from(Order))
    assert count == 3
    await session.commit()

    intruder = await make_trader(client, session, settings)
    mine = {"account_id": trader.account_id}
    assert (await execute(client, intruder, lot_size="1", **mine)).status_code == 404
    for path in ("orders", "account", "stats"):
        foreign = await client.get(f"{API}/trading/{path}", headers=intruder.headers, params=mine)
        assert foreign.status_code == 404, path
    assert (await client.get(f"{API}/trading/orders", headers=intruder.headers)).json()[
        "total"
    ] == 0


def test_split_quantity_on_the_step() -> None:
    assert split_quantity(Decimal("10"), Decimal("1"), 1) == [Decimal("10")]
    assert split_quantity(Decimal("10"), Decimal("1"), 3) == [3, 3, 4]
    assert split_quantity(Decimal("0.1"), Decimal("0.00001"), 3) == [
        Decimal("0.03333"),
        Decimal("0.03333"),
        Decimal("0.03334"),
    ]
    with pytest.raises(ValidationFailed):
        split_quantity(Decimal("2"), Decimal("1"), 3)
