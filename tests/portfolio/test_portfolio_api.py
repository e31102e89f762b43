"""GET /portfolio, the snapshot job and GET /portfolio/history, GET /portfolio/stats."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from tests.trading.support import API, FixedMarket, Trader, install_market, make_trader, order
from tradeos.config import Settings
from tradeos.core.db import utcnow
from tradeos.core.errors import ValidationFailed
from tradeos.core.jobs import JobContext
from tradeos.jobs import JOBS
from tradeos.portfolio import service
from tradeos.portfolio.jobs import snapshot_portfolios
from tradeos.portfolio.schemas import HistoryInterval
from tradeos.trading.models import PortfolioSnapshot


@pytest.fixture
def market(app: FastAPI, client: httpx.AsyncClient) -> FixedMarket:
    return install_market(app)


async def get(client: httpx.AsyncClient, trader: Trader, path: str, **params: Any) -> Any:
    response = await client.get(f"{API}{path}", headers=trader.headers, params=params)
    assert response.status_code == 200, response.text
    return response.json()


async def test_the_portfolio_at_the_marks(
    client: httpx.AsyncClient, session: AsyncSession, settings: Settings, market: FixedMarket
) -> None:
    trader = await make_trader(client, session, settings)
    assert (await order(client, trader, quantity="10")).status_code == 201  # 100.05, 1.0005
    btc = await order(client, trader, symbol="BTC-USD", quantity="0.1")  # 50025, fee 5.0025
    assert btc.status_code == 201, btc.text
    body = await get(client, trader, "/portfolio")  # the first account by default
    assert body["account_id"] == trader.account_id
    # 100000 − 1000.5 − 1.0005 − 5002.5 − 5.0025
    assert body["cash"] == {"total": "93990.997", "reserved": "0", "available": "93990.997"}
    assert body["positions_value"] == "5999"  # 10 × 99.95 + 0.1 × 49995
    assert body["equity"] == "99989.997"
    assert body["unrealized_pnl"] == "-4"  # (999.5 − 1000.5) + (4999.5 − 5002.5)
    assert body["realized_pnl"] == "0" and body["fees_paid"] == "6.003"
    assert body["exposure"] == [
        {
            "asset_class": "crypto",
            "long": "4999.5",
            "short": "0",
            "gross": "4999.5",
            "net": "4999.5",
            "gross_pct": "5",  # 4999.5 / 99989.997 = 5.00000015 %
            "net_pct": "5",
        },
        {
            "asset_class": "equity",
            "long": "999.5",
            "short": "0",
            "gross": "999.5",
            "net": "999.5",
            "gross_pct": "0.9996",  # 0.99959999 %
            "net_pct": "0.9996",
        },
    ]
    listed = await get(client, trader, "/positions", account_id=trader.account_id)
    assert body["positions"] == listed["items"]


async def test_the_snapshot_job_takes_one_per_slot_and_history_buckets_them(
    client: httpx.AsyncClient, session: AsyncSession, settings: Settings, market: FixedMarket
) -> None:
    assert "portfolio.snapshot" in JOBS
    trader = await make_trader(client, session, settings)
    assert (await order(client, trader, quantity="10")).status_code == 201
    now = datetime(2026, 3, 2, 10, 7, 30, tzinfo=UTC)
    taken = await service.take_snapshots(session, market, settings, now)
    assert taken == 1
    again = await service.take_snapshots(session, market, settings, now + timedelta(minutes=5))
    assert again == 0  # the same 10:00 slot
    await session.commit()
    count = await session.scalar(select(func.count()).select_from(PortfolioSnapshot))
    assert count == 1
    row = await session.scalar(select(PortfolioSnapshot))
    assert row is not None and row.time == datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
    assert (row.cash, row.positions_value) == (Decimal("98998.4995"), Decimal("999.5"))
    assert (row.equity, row.unrealized_pnl) == (Decimal("99997.9995"), Decimal(-1))

    # Four more snapshots in the 10:00 and 11:00 hours (equity 1..4 above the first).
    for minutes, extra in ((15, 1), (30, 2), (45, 3), (60, 4)):
        session.add(
            PortfolioSnapshot(
                account_id=trader.account_id,
                time=row.time + timedelta(minutes=minutes),
                equity=row.equity + extra,
                cash=row.cash,
                positions_value=row.positions_value + extra,
                realized_pnl=Decimal(0),
                unrealized_pnl=row.unrealized_pnl + extra,
            )
        )
    await session.commit()
    window = {"start": "2026-03-02T10:00:00Z", "end": "2026-03-02T12:00:00Z"}
    hourly = await get(client, trader, "/portfolio/history", interval="1h", **window)
    assert [p["time"][11:16] for p in hourly["points"]] == ["10:45", "11:00"]
    assert [p["equity"] for p in hourly["points"]] == ["100000.9995", "100001.9995"]
    quarterly = await get(client, trader, "/portfolio/history", interval="15m", **window)
    assert len(quarterly["points"]) == 5
    daily = await get(client, trader, "/portfolio/history", interval="1d", **window)
    assert [p["time"][11:16] for p in daily["points"]] == ["11:00"]

    too_long = {"start": "2026-01-01T00:00:00Z", "end": "2026-03-01T00:00:00Z"}
    for params in (
        {"interval": "15m", **too_long},
        {"interval": "5m"},
        {**window, "end": window["start"]},
    ):
        response = await client.get(
            f"{API}/portfolio/history", headers=trader.headers, params=params
        )
        assert response.status_code == 422, params
        assert response.headers["content-type"].startswith("application/problem+json")


async def test_history_finer_than_the_snapshots_is_422(
    client: httpx.AsyncClient, session: AsyncSession, settings: Settings, market: FixedMarket
) -> None:
    trader = await make_trader(client, session, settings)
    coarse = settings.model_copy(update={"portfolio_snapshot_minutes": 60})
    with pytest.raises(ValidationFailed, match="taken every 60 minutes"):
        await service.history(
            session,
            coarse,
            trader.user.id,
            trader.account_id,
            HistoryInterval.M15,
            None,
            None,
        )


async def test_stats_against_figures_computed_by_hand(
    client: httpx.AsyncClient, session: AsyncSession, settings: Settings, market: FixedMarket
) -> None:
    trader = await make_trader(client, session, settings)
    empty = await get(client, trader, "/portfolio/stats")
    assert empty["number_of_trades"] == 0 and empty["positions_count"] == 0
    assert empty["total_value"] == "100000" and empty["total_return_pct"] == "0"
    for ratio in ("win_rate", "profit_factor", "average_win", "average_loss", "sharpe", "sortino"):
        assert empty[ratio] is None, ratio
    assert empty["max_drawdown"] == "0" and empty["max_drawdown_pct"] == "0"

    entries = [("buy", "100"), ("sell", "110"), ("buy", "100"), ("sell", "95")]
    for side, price in entries:  # +100 − 2 = 98, then −50 − 2 = −52; fee 1 each
        body = {"account_id": trader.account_id, "symbol": "AAPL", "side": side}
        body |= {"quantity": "10", "price": price, "fee": "1"}
        response = await client.post(f"{API}/trades", headers=trader.headers, json=body)
        assert response.status_code == 201, response.text
    today = utcnow().replace(hour=12, minute=0, second=0, microsecond=0)
    for days, hour, equity in (
        (3, 12, "100000"),
        (2, 0, "100500"),
        (2, 12, "101000"),
        (1, 12, "99990"),
    ):
        time = today.replace(hour=hour) - timedelta(days=days)
        value = Decimal(equity)
        session.add(
            PortfolioSnapshot(
                account_id=trader.account_id,
                time=time,
                equity=value,
                cash=value,
                positions_value=Decimal(0),
                realized_pnl=Decimal(0),
                unrealized_pnl=Decimal(0),
            )
        )
    await session.commit()

    stats = await service.portfolio_stats(session, market, trader.user.id, None)
    body = (await client.get(f"{API}/portfolio/stats", headers=trader.headers)).json()
    assert body == stats.model_dump(mode="json")
    assert body["total_value"] == "100046" and body["total_return_pct"] == "0.046"
    assert body["realized_pnl"] == "50" and body["fees_paid"] == "4"
    assert body["unrealized_pnl"] == "0" and body["positions_count"] == 0
    assert body["number_of_trades"] == 2 and body["win_rate"] == "0.5"
    assert body["profit_factor"] == "1.8846"  # 98 / 52
    assert body["average_win"] == "98" and body["average_loss"] == "-52"
    # Peak 101000, then 99990: 1010 below, 1 %.
    assert body["max_drawdown"] == "1010" and body["max_drawdown_pct"] == "1"
    # Daily returns 0.01, −0.00990099 (99990 / 101000 − 1), 0.00056006 (100046 / 99990 − 1):
    # mean / sample std × √365 and mean / √(mean of squared losses) × √365.
    assert body["sharpe"] == "0.3565" and body["sortino"] == "0.6178"


async def test_someone_elses_account_is_404(
    client: httpx.AsyncClient, session: AsyncSession, settings: Settings, market: FixedMarket
) -> None:
    owner = await make_trader(client, session, settings)
    intruder = await make_trader(client, session, settings)
    for path in ("/portfolio", "/portfolio/history", "/portfolio/stats"):
        response = await client.get(
            f"{API}{path}", headers=intruder.headers, params={"account_id": owner.account_id}
        )
        assert response.status_code == 404, path
        assert response.headers["content-type"].startswith("application/problem+json")


async def test_the_scheduled_job_snapshots_every_account(
    app: FastAPI,
    client: httpx.AsyncClient,
    session: AsyncSession,
    settings: Settings,
    market: FixedMarket,
) -> None:
    holder = await make_trader(client, session, settings)
    idle = await make_trader(client, session, settings)
    assert (await order(client, holder, quantity="10")).status_code == 201
    ctx = JobContext(0, "portfolio.snapshot", 1, 1, None, app.state.jobs, "")
    result = await snapshot_portfolios(ctx)
    assert result["snapshots"] == 2 and result["priced"] == 1  # AAPL, at the job's own market
    rows = list(await session.scalars(select(PortfolioSnapshot).order_by(PortfolioSnapshot.id)))
    assert {row.account_id for row in rows} == {holder.account_id, idle.account_id}
    assert all(row.time.isoformat() == result["time"] for row in rows)
    idle_row = next(row for row in rows if row.account_id == idle.account_id)
    assert idle_row.equity == idle_row.cash == Decimal(100000)
