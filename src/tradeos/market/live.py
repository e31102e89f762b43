"""The live feed: every second, each instrument's tick on `tickers:<symbol>`; when a bar's period
ends, the closed bar on `candles:<symbol>:<timeframe>` (every timeframe). The WebSocket gateway
relays both channels.

It runs once per deployment, beside the schedules: in `serve` in embedded mode, in
`tradeos scheduler` when scaled out.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any

import structlog

from tradeos.core.db import utcnow
from tradeos.core.events import EventBus
from tradeos.market.providers.base import Bar, MarketProvider, Tick
from tradeos.market.timeframes import Timeframe

logger = structlog.get_logger("tradeos.market.live")

INTERVAL_SECONDS: float = 1.0


def tick_event(tick: Tick) -> dict[str, Any]:
    return {
        "symbol": tick.symbol,
        "time": tick.time.isoformat(),
        "last": str(tick.last),
        "bid": str(tick.bid),
        "ask": str(tick.ask),
    }


def candle_event(symbol: str, timeframe: Timeframe, bar: Bar) -> dict[str, Any]:
    return {
        "symbol": symbol,
        "timeframe": timeframe.value,
        "time": bar.open_time.isoformat(),
        "open": str(bar.open),
        "high": str(bar.high),
        "low": str(bar.low),
        "close": str(bar.close),
        "volume": str(bar.volume),
        "closed": True,
    }


def closed_periods(previous: datetime, now: datetime) -> list[tuple[Timeframe, datetime]]:
    """The bars (timeframe, open time) whose period ended between `previous` and `now`: for
    each timeframe, the bar that contained `previous` if `now` is past its end."""
    closed = []
    for timeframe in Timeframe:
        opened = timeframe.floor(previous)
        if timeframe.floor(now) > opened:
            closed.append((timeframe, opened))
    return closed


class LiveFeed:
    def __init__(
        self,
        provider: MarketProvider,
        events: EventBus,
        symbols: Sequence[str],
        *,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.provider = provider
        self.events = events
        self.symbols = list(symbols)
        self.clock = clock

    async def run(self) -> None:
        """Until cancelled."""
        previous = self.clock()
        while True:
            await asyncio.sleep(INTERVAL_SECONDS - (self.clock().timestamp() % INTERVAL_SECONDS))
            now = self.clock()
            try:
                await self.step(previous, now)
            except Exception as exc:  # a failed second must not end the feed
                logger.warning("live_feed_step_failed", error=repr(exc))
            previous = now

    async def step(self, previous: datetime, now: datetime) -> None:
        """Publish this second's ticks, and the bars that closed since `previous`.

        On the instrument's canonical symbol, the one its tick names (`BTC-USDT`), whatever
        spelling `symbols` asks the provider in (CCXT_SYMBOLS may say `BTC/USDT`): the
        WebSocket gateway subscribes clients to canonical channels."""
        closed = closed_periods(previous, now)
        for asked in self.symbols:
            tick = await self.provider.ticker(asked)
            symbol = tick.symbol
            await self.events.publish(f"tickers:{symbol}", tick_event(tick))
            for timeframe, opened in closed:
                bars = await self.provider.candles(
                    asked, timeframe, opened, opened + timedelta(seconds=timeframe.seconds)
                )
                if bars:
                    await self.events.publish(
                        f"candles:{symbol}:{timeframe.value}",
                        candle_event(symbol, timeframe, bars[-1]),
                    )
