"""What the market domain sets up when a process starts."""

from __future__ import annotations

from typing import TYPE_CHECKING

import structlog
from prometheus_client import CollectorRegistry, Counter
from sqlalchemy import func, select

from tradeos.market import jobs as market_jobs
from tradeos.market import service
from tradeos.market.live import LiveFeed
from tradeos.market.models import CryptoListing
from tradeos.market.providers.registry import MarketData, make_market_data
from tradeos.market.symbols import normalize

if TYPE_CHECKING:
    from tradeos.config import Settings
    from tradeos.core.db import Database
    from tradeos.core.events import EventBus
    from tradeos.core.jobs import JobQueue

logger = structlog.get_logger("tradeos.market")


def make(settings: Settings, registry: CollectorRegistry | None) -> MarketData:
    failures = Counter(
        "tradeos_market_provider_failures",
        "Market data provider calls that failed (a fallback may have answered).",
        ["provider", "operation"],
        registry=registry,
    )
    return make_market_data(settings, failures)


async def prepare(database: Database, market: MarketData, jobs: JobQueue) -> None:
    """The provider's instruments are known, and a first listings sync is queued if there are
    no listings yet; the market jobs this process runs use these providers too. A database
    that cannot be reached is logged, not fatal: the probes say it is down, and the next start
    tries again."""
    market_jobs.share(jobs, market)
    try:
        specs = await market.provider.instruments()
        async with database.session() as session:
            changed = await service.upsert_instruments(session, specs, market.provider.name)
            listed = await session.scalar(select(func.count()).select_from(CryptoListing))
            if not listed:
                top = jobs.settings.listings_sync_top
                await jobs.enqueue(session, market_jobs.sync_listings, {"limit": top})
    except Exception as exc:
        logger.warning("market_setup_postponed", error=repr(exc))
        return
    if changed:
        logger.info("instruments_updated", provider=market.provider.name, changed=changed)


def live_feed(settings: Settings, market: MarketData, events: EventBus) -> LiveFeed | None:
    """The feed of ticks and closed bars: for every simulated instrument, or for the exchange
    instruments named in CCXT_SYMBOLS (polling all of an exchange every second is not on)."""
    if market.provider.name == "sim":
        from tradeos.market.providers.sim import CATALOGUE

        symbols = list(CATALOGUE)
    else:
        # One feed per instrument, however often CCXT_SYMBOLS spells it (BTC/USDT, btc-usdt).
        symbols = list(dict.fromkeys(normalize(symbol) for symbol in settings.ccxt_symbols))
    if not symbols:
        return None
    return LiveFeed(market.provider, events, symbols)
