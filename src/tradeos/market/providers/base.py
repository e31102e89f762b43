"""The market data port and the plain values that cross it (pure: no I/O here).

Prices and volumes are `Decimal` (exact), times are timezone-aware UTC. A provider returns
these values; the market service stores and serves them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Protocol, runtime_checkable

from tradeos.market.timeframes import Timeframe


class AssetClass(StrEnum):
    CRYPTO = "crypto"
    FOREX = "forex"
    EQUITY = "equity"
    INDEX = "index"
    COMMODITY = "commodity"


@dataclass(frozen=True)
class InstrumentSpec:
    symbol: str  # canonical: BTC-USD, EUR-USD, AAPL
    name: str
    asset_class: AssetClass
    base: str
    quote: str
    tick_size: Decimal  # smallest price increment
    quantity_step: Decimal  # smallest quantity increment


@dataclass(frozen=True)
class Bar:
    """One OHLCV candle. `open_time` is the UTC boundary the bar starts at."""

    open_time: datetime
    open: Decimal
    high: Decimal
    low: Decimal
    close: Decimal
    volume: Decimal


@dataclass(frozen=True)
class Tick:
    symbol: str
    time: datetime
    last: Decimal
    bid: Decimal
    ask: Decimal


@dataclass(frozen=True)
class Listing:
    """What a CoinGecko / CoinMarketCap style listing shows of one cryptocurrency. Fields a
    source does not give are None."""

    symbol: str  # the coin's ticker, upper case: BTC
    name: str
    rank: int | None
    price: Decimal | None  # in USD
    market_cap: Decimal | None
    volume_24h: Decimal | None
    change_1h: Decimal | None  # percent
    change_24h: Decimal | None
    change_7d: Decimal | None
    circulating_supply: Decimal | None
    total_supply: Decimal | None
    max_supply: Decimal | None
    ath: Decimal | None
    ath_date: datetime | None
    atl: Decimal | None
    atl_date: datetime | None
    categories: Sequence[str] = field(default_factory=tuple)
    description: str | None = None
    website: str | None = None
    image_url: str | None = None
    last_updated: datetime | None = None
    source_id: str | None = None  # the provider's own id (coingecko "bitcoin", cmc 1)


class ProviderError(Exception):
    """The provider could not answer (network, rate limit after retries, bad response)."""


class UnknownSymbol(ProviderError):
    """The provider does not know this symbol."""


@runtime_checkable
class MarketProvider(Protocol):
    """A source of candles and tickers. Adapters: sim (default, offline), csv, ccxt."""

    name: str

    async def instruments(self) -> Sequence[InstrumentSpec]: ...

    async def candles(
        self, symbol: str, timeframe: Timeframe, start: datetime, end: datetime
    ) -> Sequence[Bar]:
        """Bars with start <= open_time < end, oldest first."""

    async def ticker(self, symbol: str) -> Tick: ...


@runtime_checkable
class ListingsProvider(Protocol):
    """A source of crypto listings. Adapters: sim (default, offline), coingecko,
    coinmarketcap."""

    name: str

    async def listings(self, limit: int) -> Sequence[Listing]:
        """The top `limit` coins by market cap, rank order."""
