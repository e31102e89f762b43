"""Trading jobs: the minute sweep of resting orders.

The live watcher (trading/execution.py) matches resting orders on each published tick; this
sweep, every minute, expires the day orders whose UTC day has ended and matches every symbol
with open orders against the provider's current tick, so a missed event (a restart, a lost
subscription) never leaves a crossing order unfilled.
"""

from __future__ import annotations

from typing import Any

from tradeos.core.jobs import Every, JobContext, job
from tradeos.market.jobs import _market_data as market_data
from tradeos.trading import execution


# One attempt: the next minute's sweep is the retry.
@job("trading.sweep_resting_orders", timeout=55, max_attempts=1, schedule=Every(minutes=1))
async def sweep_resting_orders(ctx: JobContext) -> dict[str, Any]:
    async with market_data(ctx) as market:
        outcome = await execution.sweep(ctx.database, ctx.events, ctx.settings, market.provider)
    return {"filled": outcome.filled, "expired": outcome.expired, "canceled": outcome.canceled}
