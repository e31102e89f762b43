"""Market data jobs: listing syncs on schedules and on demand, and price-history retention."""

from __future__ import annotations

from typing import Any

from tradeos.core.db import utcnow
from tradeos.core.jobs import Cron, Every, JobContext, Priority, job
from tradeos.market import service
from tradeos.market.providers.registry import Listings, listings_adapter, make_market_data
from tradeos.market.providers.sim import SimProvider


def _listings_for(ctx: JobContext, provider: str | None) -> Listings:
    """The configured listings (with fallback), or exactly the provider asked for."""
    if provider is None:
        return make_market_data(ctx.settings).listings
    sim = SimProvider(seed=ctx.settings.sim_seed)
    return Listings(listings_adapter(provider, ctx.settings, sim), fallback=None)


async def _sync(ctx: JobContext, limit: int, provider: str | None) -> dict[str, Any]:
    listings = _listings_for(ctx, provider)
    try:
        await ctx.progress(10, f"fetching the top {limit}")
        source, fetched = await listings.fetch(limit)
    finally:
        await listings.aclose()
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
    """The top 50, every 5 minutes."""
    return await _sync(ctx, 50, None)


@job("market.sync_all_listings", priority=Priority.LOW, timeout=600, schedule=Every(hours=1))
async def sync_all_listings(ctx: JobContext) -> dict[str, Any]:
    """The top 200, hourly."""
    return await _sync(ctx, 200, None)


@job("market.prune_price_history", priority=Priority.LOW, schedule=Cron("30 3 * * *"))
async def prune_price_history(ctx: JobContext) -> dict[str, int]:
    """Price history older than PRICE_HISTORY_KEEP_DAYS, daily at 03:30 UTC."""
    async with ctx.database.session() as session:
        deleted = await service.prune_price_history(session, ctx.settings.price_history_keep_days)
    if deleted:
        await ctx.cache.invalidate_tag(service.LISTINGS_TAG)
    return {"deleted": deleted}
