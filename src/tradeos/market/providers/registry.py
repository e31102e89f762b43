"""Settings pick the market data adapters; a fallback serves when the primary fails."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import structlog

from tradeos.market.providers.base import Listing, ListingsProvider, MarketProvider, ProviderError
from tradeos.market.providers.sim import SimProvider

if TYPE_CHECKING:
    from prometheus_client import Counter

    from tradeos.config import Settings

logger = structlog.get_logger("tradeos.market")


def make_market_provider(settings: Settings) -> MarketProvider:
    if settings.market_provider == "ccxt":
        from tradeos.market.providers.exchange import ExchangeProvider

        return ExchangeProvider(settings.ccxt_exchange, symbols=settings.ccxt_symbols or None)
    return SimProvider(seed=settings.sim_seed)


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
    listings (with fallback)."""

    def __init__(self, provider: MarketProvider, listings: Listings) -> None:
        self.provider = provider
        self.listings = listings

    async def aclose(self) -> None:
        await self.listings.aclose()
        close: Any = getattr(self.provider, "aclose", None)
        if close is not None:
            await close()


def make_market_data(settings: Settings, failures: Counter | None = None) -> MarketData:
    provider = make_market_provider(settings)
    return MarketData(provider, make_listings(settings, provider, failures))
