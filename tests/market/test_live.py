"""The live feed: ticks every second and closed bars when their period ends, as events the
WebSocket channels tickers:<symbol> and candles:<symbol>:<tf> deliver."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal

from sqlalchemy.ext.asyncio import AsyncSession
from starlette.testclient import TestClient

from tests.factories import make_user, sign_in
from tradeos.app import create_app
from tradeos.config import Settings
from tradeos.core.db import Database
from tradeos.core.events import MemoryEventBus
from tradeos.market.live import LiveFeed, closed_periods
from tradeos.market.providers.sim import SimProvider
from tradeos.market.timeframes import Timeframe


def test_a_bar_closes_when_its_period_ends() -> None:
    before = datetime(2026, 11, 23, 0, 59, 59, 600_000, tzinfo=UTC)  # a Monday
    after = datetime(2026, 11, 23, 1, 0, 0, 400_000, tzinfo=UTC)
    assert closed_periods(before, after) == [
        (Timeframe.M1, datetime(2026, 11, 23, 0, 59, tzinfo=UTC)),
        (Timeframe.M5, datetime(2026, 11, 23, 0, 55, tzinfo=UTC)),
        (Timeframe.M15, datetime(2026, 11, 23, 0, 45, tzinfo=UTC)),
        (Timeframe.M30, datetime(2026, 11, 23, 0, 30, tzinfo=UTC)),
        (Timeframe.H1, datetime(2026, 11, 23, 0, 0, tzinfo=UTC)),
    ]
    mid_minute = datetime(2026, 11, 23, 1, 0, 30, tzinfo=UTC)
    assert closed_periods(after, mid_minute) == []


async def test_a_step_publishes_ticks_and_the_bars_that_closed() -> None:
    now = datetime(2026, 11, 21, 12, 5, 0, 300_000, tzinfo=UTC)
    provider = SimProvider(clock=lambda: now)
    bus = MemoryEventBus()
    feed = LiveFeed(provider, bus, ["BTC-USD", "EUR-USD"], clock=lambda: now)
    async with bus.subscribe(
        "tickers:BTC-USD", "candles:BTC-USD:1m", "candles:BTC-USD:5m", "tickers:EUR-USD"
    ) as events:
        await feed.step(datetime(2026, 11, 21, 12, 4, 59, 400_000, tzinfo=UTC), now)
        received = [await events.get(timeout=1) for _ in range(4)]
    by_topic = {event.topic: event.payload for event in received if event is not None}
    assert set(by_topic) == {
        "tickers:BTC-USD",
        "candles:BTC-USD:1m",
        "candles:BTC-USD:5m",
        "tickers:EUR-USD",
    }
    one_minute = by_topic["candles:BTC-USD:1m"]
    assert (one_minute["time"], one_minute["closed"]) == ("2026-11-21T12:04:00+00:00", True)
    assert by_topic["candles:BTC-USD:5m"]["time"] == "2026-11-21T12:00:00+00:00"
    # The 1m bar that closed is the provider's bar, and its close is the 5m bar's close.
    stored = await provider.candles(
        "BTC-USD", Timeframe.M1, datetime(2026, 11, 21, 12, 4, tzinfo=UTC), now
    )
    assert one_minute["close"] == str(stored[0].close) == by_topic["candles:BTC-USD:5m"]["close"]
    tick = by_topic["tickers:BTC-USD"]
    assert Decimal(tick["bid"]) < Decimal(tick["last"]) < Decimal(tick["ask"])


async def test_a_websocket_client_sees_live_ticks(
    settings_factory: Callable[..., Settings], database: Database, session: AsyncSession
) -> None:
    user = await make_user(session)
    tokens = await sign_in(session, settings_factory(), user)
    await session.commit()
    app = create_app(settings_factory(jobs_run_in_serve=True), configure_logs=False)
    with TestClient(app) as client, client.websocket_connect("/api/v1/ws") as ws:
        ws.send_json({"op": "auth", "token": tokens.access_token})
        assert ws.receive_json()["type"] == "authenticated"
        ws.send_json({"op": "subscribe", "channels": ["tickers:SOL-USD"]})
        assert ws.receive_json()["type"] == "subscribed"
        first, second = ws.receive_json(), ws.receive_json()
    assert first["channel"] == second["channel"] == "tickers:SOL-USD"
    assert first["data"]["time"] < second["data"]["time"]
