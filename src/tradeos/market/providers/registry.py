"""Settings pick the market data adapters; a fallback serves when the primary fails."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar

import structlog

from tradeos.market.providers.base import (
    Bar,
    InstrumentSpec,
    Listing,
    ListingsProvider,
    MarketProvider,
    ProviderError,
    Tick,
    UnknownSymbol,
)
from tradeos.market.providers.sim import SimProvider
from tradeos.market.timeframes import Timeframe

if TYPE_CHECKING:
    from prometheus_client import Counter

    from tradeos.config import Settings

logger = structlog.get_logger("tradeos.market")

T = TypeVar("T")


def make_market_provider(settings: Settings, *, sim: SimProvider | None = None) -> MarketProvider:
    """The provider MARKET_PROVIDER names (`sim`, when given, is the simulated market)."""
    if settings.market_provider == "ccxt":
        from tradeos.market.providers.exchange import ExchangeProvider

        return ExchangeProvider(settings.ccxt_exchange, symbols=settings.ccxt_symbols or None)
    return sim or SimProvider(seed=settings.sim_seed)


def make_fallback_provider(settings: Settings, sim: SimProvider) -> MarketProvider | None:
    """The provider MARKET_FALLBACK_PROVIDER names, or None."""
    if settings.market_fallback_provider == "sim":
        return sim
    if settings.market_fallback_provider == "ccxt":
        from tradeos.market.providers.exchange import ExchangeProvider

        assert settings.ccxt_fallback_exchange is not None  # the settings check it
        return ExchangeProvider(settings.ccxt_fallback_exchange)
    return None


class FallbackMarketProvider:
    """A `MarketProvider` whose candles and tickers come from `primary`, or from `fallback` when
    the primary fails; each failure is logged and counted (`failures`, labels provider and
    operation), with or without a fallback.

    It bears the primary's name and lists the primary's instruments: instruments are stored
    with their provider's name and served only by it, the fallback merely stands in for a call
    that failed. `sourced_candles` / `sourced_ticker` say which provider answered, returned with
    the answer and never kept on the object, so concurrent requests each learn their own.

    A failure is any `ProviderError` but `UnknownSymbol`. The primary not knowing a symbol is an
    answer, not an outage: the market is gone from it (delisted), and another source's prices
    would pass off a different market as this one for as long as anyone asked. Likewise, when
    the fallback does not know a symbol (the simulated market has no BTC-USDT), the primary's
    failure is what surfaces.
    """

    def __init__(
        self,
        primary: MarketProvider,
        fallback: MarketProvider | None,
        failures: Counter | None = None,
    ) -> None:
        self.primary = primary
        self.fallback = fallback
        self.failures = failures
        self.name = primary.name

    async def instruments(self) -> Sequence[InstrumentSpec]:
        try:
            return await self.primary.instruments()
        except UnknownSymbol:
            raise
        except ProviderError as exc:
            self._failed(self.primary.name, "instruments", exc, symbol=None)
            raise

    async def candles(
        self, symbol: str, timeframe: Timeframe, start: datetime, end: datetime
    ) -> Sequence[Bar]:
        _source, bars = await self.sourced_candles(symbol, timeframe, start, end)
        return bars

    async def ticker(self, symbol: str) -> Tick:
        _source, tick = await self.sourced_ticker(symbol)
        return tick

    async def sourced_candles(
        self, symbol: str, timeframe: Timeframe, start: datetime, end: datetime
    ) -> tuple[str, Sequence[Bar]]:
        """(the provider that answered, bars with start <= open_time < end, oldest first)."""
        return await self._ask(
            "candles", symbol, lambda provider: provider.candles(symbol, timeframe, start, end)
        )

    async def sourced_ticker(self, symbol: str) -> tuple[str, Tick]:
        """(the provider that answered, its tick)."""
        return await self._ask("ticker", symbol, lambda provider: provider.ticker(symbol))

    async def _ask(
        self, operation: str, symbol: str, call: Callable[[MarketProvider], Awaitable[T]]
    ) -> tuple[str, T]:
        try:
            return self.primary.name, await call(self.primary)
        except UnknownSymbol:
            raise
        except ProviderError as exc:
            self._failed(self.primary.name, operation, exc, symbol=symbol)
            if self.fallback is None:
                raise
            failure = exc
        try:
            return self.fallback.name, await call(self.fallback)
        except UnknownSymbol:
            raise failure from None
        except ProviderError as exc:
            self._failed(self.fallback.name, operation, exc, symbol=symbol)
            raise ProviderError(
                f"{failure}; the fallback {self.fallback.name} failed too: {exc}"
            ) from exc

    def _failed(
        self, provider: str, operation: str, error: ProviderError, *, symbol: str | None
    ) -> None:
        if self.failures is not None:
            self.failures.labels(provider=provider, operation=operation).inc()
        stand_in = self.fallback if provider == self.primary.name else None
        logger.warning(
            "market_provider_failed",
            provider=provider,
            operation=operation,
            symbol=symbol,
            fallback=None if stand_in is None else stand_in.name,
            error=str(error),
        )

    async def aclose(self) -> None:
        for provider in (self.primary, self.fallback):
            close: Any = getattr(provider, "aclose", None)
            if close is not None:
                await close()


async def sourced_candles(
    provider: MarketProvider, symbol: str, timeframe: Timeframe, start: datetime, end: datetime
) -> tuple[str, Sequence[Bar]]:
    """`provider.candles(...)` with the name of the provider that answered."""
    if isinstance(provider, FallbackMarketProvider):
        return await provider.sourced_candles(symbol, timeframe, start, end)
    return provider.name, await provider.candles(symbol, timeframe, start, end)


async def sourced_ticker(provider: MarketProvider, symbol: str) -> tuple[str, Tick]:
    """`provider.ticker(symbol)` with the name of the provider that answered."""
    if isinstance(provider, FallbackMarketProvider):
        return await provider.sourced_ticker(symbol)
    return provider.name, await provider.ticker(symbol)


def primary_of(provider: MarketProvider) -> MarketProvider:
    """The provider itself, without a fallback: what stored history is fetched from (a
    fallback's bars written down as the instrument's history would stay there for good)."""
    return provider.primary if isinstance(provider, FallbackMarketProvider) else provider


def listings_adapter(name: str, settings: Settings, sim: SimProvider) -> ListingsProvider:
    if name == "sim":
        return sim
    if name == "coingecko":
        from tradeos.market.providers.coingecko import CoinGeckoClient

        return CoinGeckoClient(
            settings.coingecko_api_key,
            pro=settings.coingecko_pro,
            # The public API (no key) allows far fewer calls than a demo key.
            requests_per_minute=30 if settings.coingecko_api_key else 10,
        )
    from tradeos.market.providers.coinmarketcap import CoinMarketCapClient

    assert settings.coinmarketcap_api_key is not None  # the settings check it
    return CoinMarketCapClient(settings.coinmarketcap_api_key)


class Listings:
    """The listings provider the settings name, with its fallback. `fetch` says which source
    answered, so stored listings name where they came from."""

    def __init__(
        self,
        primary: ListingsProvider,
        fallback: ListingsProvider | None,
        failures: Counter | None = None,
    ) -> None:
        self.primary = primary
        self.fallback = fallback
        self.failures = failures

    async def fetch(self, limit: int) -> tuple[str, Sequence[Listing]]:
        try:
            return self.primary.name, await self.primary.listings(limit)
        except ProviderError as exc:
            if self.failures is not None:
                self.failures.labels(provider=self.primary.name, operation="listings").inc()
            if self.fallback is None:
                raise
            logger.warning(
                "listings_provider_failed",
                provider=self.primary.name,
                fallback=self.fallback.name,
                error=str(exc),
            )
            return self.fallback.name, await self.fallback.listings(limit)

    async def aclose(self) -> None:
        for provider in (self.primary, self.fallback):
            close: Any = getattr(provider, "aclose", None)
            if close is not None:
                await close()


def make_listings(
    settings: Settings, sim: MarketProvider, failures: Counter | None = None
) -> Listings:
    sim_provider = sim if isinstance(sim, SimProvider) else SimProvider(seed=settings.sim_seed)
    primary = listings_adapter(settings.listings_provider, settings, sim_provider)
    fallback = None
    if settings.listings_fallback_provider not in ("none", settings.listings_provider):
        fallback = listings_adapter(settings.listings_fallback_provider, settings, sim_provider)
    return Listings(primary, fallback, failures)


class MarketData:
    """What the market endpoints and jobs are given: the candle/ticker provider and the
    listings (both with their fallback), and the provider failure counter, if any."""

    def __init__(
        self, provider: MarketProvider, listings: Listings, failures: Counter | None = None
    ) -> None:
        self.provider = provider
        self.listings = listings
        self.failures = failures

    async def aclose(self) -> None:
        await self.listings.aclose()
        close: Any = getattr(self.provider, "aclose", None)
        if close is not None:
            await close()


def make_market_data(
    settings: Settings, failures: Counter | None = None, *, sim: SimProvider | None = None
) -> MarketData:
    """The providers the settings name. One simulated market serves wherever sim is named
    (candles, fallback, listings); `sim` passes one in to reuse (it caches what it computed)."""
    sim = sim or SimProvider(seed=settings.sim_seed)
    primary = make_market_provider(settings, sim=sim)
    provider = FallbackMarketProvider(primary, make_fallback_provider(settings, sim), failures)
    return MarketData(provider, make_listings(settings, sim, failures), failures)
