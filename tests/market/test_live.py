"""The live feed: ticks every second and closed bars when their period ends, as events the
WebSocket channels tickers:<symbol> and candles:<symbol>:<tf> deliver."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.testclient import TestClient

from tests.conftest import TEST_REDIS_URL
from tests.factories import make_user, sign_in
from tradeos.app import create_app
from tradeos.config import Settings
from tradeos.core.db import Database
from tradeos.core.events import make_event_bus
from tradeos.market import startup as market_startup
from tradeos.market.live import LiveFeed, candle_event, closed_periods, tick_event
from tradeos.market.providers.base import Bar, Tick
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


async def test_a_step_publishes_ticks_and_the_bars_that_closed(settings: Settings) -> None:
    now = datetime(2026, 11, 21, 12, 5, 0, 300_000, tzinfo=UTC)
    provider = SimProvider(clock=lambda: now)
    # The bus the app builds from the settings: Redis pub/sub when TEST_REDIS_URL is set.
    bus = make_event_bus(settings)
    assert bus.backend == ("redis" if TEST_REDIS_URL else "memory")
    feed = LiveFeed(provider, bus, ["BTC-USD", "EUR-USD"], clock=lambda: now)
    try:
        async with bus.subscribe(
            "tickers:BTC-USD", "candles:BTC-USD:1m", "candles:BTC-USD:5m", "tickers:EUR-USD"
        ) as events:
            await feed.step(datetime(2026, 11, 21, 12, 4, 59, 400_000, tzinfo=UTC), now)
            received = [await events.get(timeout=5) for _ in range(4)]
    finally:
        await bus.aclose()
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
    assert one_minute == candle_event("BTC-USD", Timeframe.M1, stored[0])
    assert one_minute["close"] == str(stored[0].close) == by_topic["candles:BTC-USD:5m"]["close"]
    tick = by_topic["tickers:BTC-USD"]
    assert tick == tick_event(await provider.ticker("BTC-USD"))
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


async def test_a_websocket_client_receives_the_bar_that_closed(
    settings_factory: Callable[..., Settings],
    database: Database,
    session: AsyncSession,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    user = await make_user(session)
    tokens = await sign_in(session, settings_factory(), user)
    await session.commit()
    # The app's own feed is off: this test drives one, on the app's provider and event bus
    # (Redis when TEST_REDIS_URL is set), across the close of the last minute.
    monkeypatch.setattr(market_startup, "live_feed", lambda *args: None)
    app = create_app(settings_factory(), configure_logs=False)
    with TestClient(app) as client, client.websocket_connect("/api/v1/ws") as ws:
        ws.send_json({"op": "auth", "token": tokens.access_token})
        assert ws.receive_json()["type"] == "authenticated"
        ws.send_json({"op": "subscribe", "channels": ["candles:SOL-USD:1m"]})
        assert ws.receive_json() == {"type": "subscribed", "channels": ["candles:SOL-USD:1m"]}

        provider = app.state.market.provider
        feed = LiveFeed(provider, app.state.events, ["SOL-USD"])
        minute_ended = Timeframe.M1.floor(datetime.now(UTC))
        closed = minute_ended - timedelta(minutes=1)
        assert client.portal is not None
        client.portal.call(feed.step, minute_ended - timedelta(milliseconds=500), minute_ended)
        frame = ws.receive_json()
        bars = client.portal.call(provider.candles, "SOL-USD", Timeframe.M1, closed, minute_ended)

    assert len(bars) == 1
    assert frame == {
        "type": "event",
        "channel": "candles:SOL-USD:1m",
        "data": candle_event("SOL-USD", Timeframe.M1, bars[0]),
    }
    assert frame["data"]["time"] == closed.isoformat()
    assert frame["data"]["closed"] is True


class ExchangeSpelling:
    """The sim provider asked as an exchange's symbols are spelled (`SOL/USD`, as CCXT_SYMBOLS
    may say), answering with canonical symbols as the ccxt provider does."""

    def __init__(self, sim: SimProvider) -> None:
        self.sim = sim
        self.name = sim.name

    async def ticker(self, symbol: str) -> Tick:
        return await self.sim.ticker(symbol.replace("/", "-"))

    async def candles(
        self, symbol: str, timeframe: Timeframe, start: datetime, end: datetime
    ) -> list[Bar]:
        return list(await self.sim.candles(symbol.replace("/", "-"), timeframe, start, end))


async def test_the_feed_publishes_on_the_canonical_symbol_whatever_the_configured_spelling(
    settings: Settings,
) -> None:
    now = datetime(2026, 11, 21, 12, 5, 0, 300_000, tzinfo=UTC)
    provider = ExchangeSpelling(SimProvider(clock=lambda: now))
    bus = make_event_bus(settings)
    feed = LiveFeed(provider, bus, ["SOL/USD"], clock=lambda: now)  # type: ignore[arg-type]
    try:
        # The channels the WebSocket gateway subscribes a client to, whatever it wrote.
        async with bus.subscribe("tickers:SOL-USD", "candles:SOL-USD:1m") as events:
            await feed.step(datetime(2026, 11, 21, 12, 4, 59, 400_000, tzinfo=UTC), now)
            received = [await events.get(timeout=5) for _ in range(2)]
    finally:
        await bus.aclose()
    by_topic = {event.topic: event.payload for event in received if event is not None}
    assert set(by_topic) == {"tickers:SOL-USD", "candles:SOL-USD:1m"}
    assert by_topic["tickers:SOL-USD"]["symbol"] == "SOL-USD"
    assert by_topic["candles:SOL-USD:1m"]["symbol"] == "SOL-USD"
