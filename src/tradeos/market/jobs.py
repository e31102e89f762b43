"""Market data jobs: listing syncs on schedules and on demand, the candle sync and back-fill of
tracked instruments, and price-history retention.

Jobs use the providers of the process that runs them when it shares them (`serve` shares the
app's, see `startup.prepare`): one exchange client with its markets loaded once, one simulated
market with what it has computed, one failure counter on /metrics. Elsewhere (`tradeos worker`)
a run makes the providers it needs and closes them; the simulated market, which holds no
connection, is made once per process.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from typing import TYPE_CHECKING, Any, Final
from weakref import WeakKeyDictionary

import structlog
from sqlalchemy import select

from tradeos.config import MAX_BACKFILL_DAYS
from tradeos.core.db import utcnow
from tradeos.core.jobs import Cron, Every, JobContext, JobRun, Priority, RunStatus, job
from tradeos.market import backfill, service
from tradeos.market.models import Instrument
from tradeos.market.providers.base import Listing, ListingsProvider, MarketProvider, ProviderError
from tradeos.market.providers.registry import (
    FallbackMarketProvider,
    MarketData,
    listings_adapter,
    make_market_data,
    primary_of,
)
from tradeos.market.providers.sim import SimProvider
from tradeos.market.timeframes import Timeframe

if TYPE_CHECKING:
    from tradeos.config import Settings
    from tradeos.core.jobs import JobQueue

logger = structlog.get_logger("tradeos.market")

# A stretch a provider showed it has no bars for is asked for again after this long: an
# exchange may still fill in history late.
HOLE_RECHECK_SECONDS: Final = 86_400
# Failures named one by one in a candle sync's result (a run's summary is kept short).
_LISTED_FAILURES: Final = 8

_shared: WeakKeyDictionary[JobQueue, MarketData] = WeakKeyDictionary()
_sims: dict[int, SimProvider] = {}


def share(queue: JobQueue, market: MarketData) -> None:
    """The market jobs `queue` runs use `market`, which whoever made it keeps and closes."""
    _shared[queue] = market


def _sim(settings: Settings) -> SimProvider:
    # One per seed and process: it caches the day extremes its listings' ATH/ATL are made of.
    sim = _sims.get(settings.sim_seed)
    if sim is None:
        sim = _sims[settings.sim_seed] = SimProvider(seed=settings.sim_seed)
    return sim


@asynccontextmanager
async def _market_data(ctx: JobContext) -> AsyncIterator[MarketData]:
    shared = _shared.get(ctx.queue)
    if shared is not None:
        yield shared
        return
    made = make_market_data(ctx.settings, sim=_sim(ctx.settings))
    try:
        yield made
    finally:
        await made.aclose()


# -- listings ---------------------------------------------------------------------------------


async def _fetch_listings(
    ctx: JobContext, market: MarketData, limit: int, provider: str | None
) -> tuple[str, Sequence[Listing]]:
    """The configured listings (with fallback), or exactly the provider asked for."""
    if provider is None:
        return await market.listings.fetch(limit)
    held = _held_listings(market, provider)
    if held is not None:
        return held.name, await held.listings(limit)
    adapter = listings_adapter(provider, ctx.settings, _sim(ctx.settings))
    try:
        return adapter.name, await adapter.listings(limit)
    finally:
        close: Any = getattr(adapter, "aclose", None)
        if close is not None:
            await close()


def _held_listings(market: MarketData, name: str) -> ListingsProvider | None:
    """A listings provider `market` holds under `name` already (sim is a market provider too)."""
    provider = market.provider
    market_providers: tuple[MarketProvider | None, ...] = (
        (provider.primary, provider.fallback)
        if isinstance(provider, FallbackMarketProvider)
        else (provider,)
    )
    for held in (market.listings.primary, market.listings.fallback, *market_providers):
        if held is not None and held.name == name and isinstance(held, ListingsProvider):
            return held
    return None


async def _sync(ctx: JobContext, limit: int, provider: str | None) -> dict[str, Any]:
    async with _market_data(ctx) as market:
        await ctx.progress(10, f"fetching the top {limit}")
        source, fetched = await _fetch_listings(ctx, market, limit, provider)
    await ctx.progress(60, f"storing {len(fetched)} listings from {source}")
    async with ctx.database.session() as session:
        changed, snapshots = await service.upsert_listings(
            session, fetched, source, snapshot_at=utcnow()
        )
    if changed or snapshots:
        await ctx.cache.invalidate_tag(service.LISTINGS_TAG)
    return {"source": source, "fetched": len(fetched), "changed": changed, "snapshots": snapshots}


@job("market.sync_listings", timeout=300, max_attempts=3, backoff=30)
async def sync_listings(
    ctx: JobContext, limit: int = 50, provider: str | None = None
) -> dict[str, Any]:
    """Fetch the top `limit` listings and store what changed, with a price snapshot each."""
    return await _sync(ctx, limit, provider)


@job("market.sync_top_listings", timeout=120, max_attempts=2, backoff=30, schedule=Every(minutes=5))
async def sync_top_listings(ctx: JobContext) -> dict[str, Any]:
    """The top LISTINGS_SYNC_TOP (50), every 5 minutes."""
    return await _sync(ctx, ctx.settings.listings_sync_top, None)


@job("market.sync_all_listings", priority=Priority.LOW, timeout=600, schedule=Every(hours=1))
async def sync_all_listings(ctx: JobContext) -> dict[str, Any]:
    """The top LISTINGS_SYNC_ALL (200), hourly."""
    return await _sync(ctx, ctx.settings.listings_sync_all, None)


@job("market.prune_price_history", priority=Priority.LOW, schedule=Cron("30 3 * * *"))
async def prune_price_history(ctx: JobContext) -> dict[str, int]:
    """Price history older than PRICE_HISTORY_KEEP_DAYS, daily at 03:30 UTC."""
    async with ctx.database.session() as session:
        deleted = await service.prune_price_history(session, ctx.settings.price_history_keep_days)
    if deleted:
        await ctx.cache.invalidate_tag(service.LISTINGS_TAG)
    return {"deleted": deleted}


# -- candles ----------------------------------------------------------------------------------


# One attempt: the next minute's run is the retry, and goes on where this one stopped.
@job("market.sync_candles", timeout=600, max_attempts=1, schedule=Every(minutes=1))
async def sync_candles(ctx: JobContext) -> dict[str, Any]:
    """The candles of MARKET_TRACKED_SYMBOLS in MARKET_SYNC_TIMEFRAMES, kept complete from
    MARKET_BACKFILL_DAYS ago up to the last closed bar, every minute: the first run back-fills
    the history, later ones add the bars closed since and fill any gap that appeared."""
    settings = ctx.settings
    if not settings.market_tracked_symbols:
        return {"instruments": 0}
    earlier = await _earlier_run(ctx)
    if earlier is not None:
        # A long back-fill outlasts the minute: a second run would fetch the same bars again.
        return {"skipped": f"run {earlier} is still syncing"}
    return await _sync_candles(
        ctx,
        settings.market_tracked_symbols,
        settings.market_sync_timeframes,
        settings.market_backfill_days,
    )


# One attempt: a failed run says why at once, and an admin's retry goes on where it stopped.
@job("market.backfill_candles", priority=Priority.LOW, timeout=3600, max_attempts=1)
async def backfill_candles(
    ctx: JobContext, symbol: str, timeframe: str = "1m", days: int | None = None
) -> dict[str, Any]:
    """One instrument's bars of one timeframe over the last `days` (MARKET_BACKFILL_DAYS if
    not given), on demand: history deeper than the schedule keeps, or of an instrument it does
    not track. A provider failure fails the run; what was stored stays."""
    days = ctx.settings.market_backfill_days if days is None else days
    if not 1 <= days <= MAX_BACKFILL_DAYS:
        raise ValueError(f"days must be 1 to {MAX_BACKFILL_DAYS}")
    result = await _sync_candles(ctx, [symbol], [Timeframe(timeframe)], days)
    if result.get("failed"):
        raise ProviderError(f"back-fill of {symbol} {timeframe} incomplete: {result['failed']}")
    return result


async def _earlier_run(ctx: JobContext) -> int | None:
    """An earlier run of this job that is still running, if any."""
    async with ctx.database.session(write=False) as session:
        run_id: int | None = await session.scalar(
            select(JobRun.id)
            .where(
                JobRun.name == ctx.name,
                JobRun.status == RunStatus.RUNNING,
                JobRun.id < ctx.run_id,
            )
            .order_by(JobRun.id)
            .limit(1)
        )
    return run_id


async def _sync_candles(
    ctx: JobContext, wanted: Sequence[str], timeframes: Sequence[Timeframe], days: int
) -> dict[str, Any]:
    """Sync each instrument × timeframe; one that fails does not stop the others. Cached
    candle reads of an instrument are dropped once its bars changed."""
    now = utcnow()
    totals = dict.fromkeys(("gaps", "requests", "fetched", "inserted", "updated", "unchanged"), 0)
    failed: dict[str, str] = {}
    async with _market_data(ctx) as market:
        provider = primary_of(market.provider)
        instruments = await _instruments(ctx, provider, wanted, failed)
        steps, done = len(instruments) * len(timeframes), 0
        for instrument in instruments:
            wrote = False
            for timeframe in timeframes:
                result = await _sync_one(ctx, market, provider, instrument, timeframe, now, days)
                for name in totals:
                    totals[name] += getattr(result, name)
                if result.error is not None:
                    failed[f"{instrument.symbol} {timeframe}"] = result.error
                wrote = wrote or result.wrote
                done += 1
                await ctx.progress(
                    min(99, 100 * done // steps),
                    f"{instrument.symbol} {timeframe}: {result.inserted} new bars",
                )
            if wrote:
                await ctx.cache.invalidate_tag(service.candles_tag(instrument.symbol))
    summary: dict[str, Any] = {
        "instruments": len(instruments),
        "timeframes": [timeframe.value for timeframe in timeframes],
        **totals,
    }
    if failed:
        summary["failures"] = len(failed)
        summary["failed"] = {
            name: error[:150] for name, error in list(failed.items())[:_LISTED_FAILURES]
        }
    return summary


async def _instruments(
    ctx: JobContext, provider: MarketProvider, wanted: Sequence[str], failed: dict[str, str]
) -> list[Instrument]:
    """The provider's instruments `wanted` names; those it does not list go to `failed`."""
    async with ctx.database.session(write=False) as session:
        found = await service.tracked_instruments(session, provider.name, wanted)
    if len(found) < len(wanted):
        # Not stored yet (a worker may start before any API process has listed them).
        try:
            specs = await provider.instruments()
        except ProviderError as exc:
            failed.update(
                (text, f"instruments unknown: {exc}") for text in wanted if text not in found
            )
            return list(found.values())
        async with ctx.database.session() as session:
            await service.upsert_instruments(session, specs, provider.name)
            found = await service.tracked_instruments(session, provider.name, wanted)
    failed.update(
        (text, f"{provider.name} does not list it") for text in wanted if text not in found
    )
    return list(found.values())


async def _sync_one(
    ctx: JobContext,
    market: MarketData,
    provider: MarketProvider,
    instrument: Instrument,
    timeframe: Timeframe,
    now: datetime,
    days: int,
) -> service.CandleSync:
    key = f"market:candle-holes:{provider.name}:{instrument.symbol}:{timeframe.value}"
    known = backfill.decode(await ctx.cache.get(key))
    result = await service.sync_candles(
        ctx.database, provider, instrument, timeframe, now=now, days=days, known_holes=known
    )
    if result.error is not None:
        if market.failures is not None:
            market.failures.labels(provider=provider.name, operation="candles").inc()
        logger.warning(
            "candle_sync_failed",
            provider=provider.name,
            symbol=instrument.symbol,
            timeframe=timeframe.value,
            error=result.error,
        )
    if result.holes:
        window = backfill.sync_window(timeframe, now, days)
        holes = [
            hole for hole in backfill.merge([*known, *result.holes]) if hole.end > window.start
        ]
        await ctx.cache.set(key, backfill.encode(holes), ttl=HOLE_RECHECK_SECONDS)
    return result
