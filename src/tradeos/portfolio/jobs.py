"""Portfolio jobs: the periodic snapshot of every account's worth, which the history and the
daily-return statistics are made of."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from tradeos.core.db import utcnow
from tradeos.core.jobs import Every, JobContext, Priority, job
from tradeos.market.providers.registry import make_market_data
from tradeos.portfolio import service
from tradeos.trading import service as trading


# Every minute: a run takes the snapshots of its PORTFOLIO_SNAPSHOT_MINUTES slot that are not
# taken yet, so the setting alone decides the interval, and a run inside a slot already taken
# costs two small queries and no price.
@job("portfolio.snapshot", priority=Priority.LOW, timeout=300, schedule=Every(minutes=1))
async def snapshot_portfolios(ctx: JobContext) -> dict[str, Any]:
    """One snapshot per account at the current slot (the floor of PORTFOLIO_SNAPSHOT_MINUTES).

    Short units of work: which symbols need a price, then each price (a provider call, and
    on SQLite the process's only connection, so one symbol at a time), then the snapshots,
    valued at those prices, in one transaction."""
    at = service.snapshot_time(ctx.settings, utcnow())
    async with ctx.database.session(write=False) as session:
        symbols = await service.symbols_to_mark(session, at)
    marks: dict[str, Decimal | None] = {}
    if symbols:
        market = make_market_data(ctx.settings)
        try:
            for symbol in symbols:
                async with ctx.database.session(write=False) as session:
                    marks |= await trading.mark_prices(session, market.provider, [symbol])
        finally:
            await market.aclose()
    async with ctx.database.session() as session:
        taken = await service.store_snapshots(session, at, marks)
    return {"time": at.isoformat(), "snapshots": taken, "priced": len(symbols)}
