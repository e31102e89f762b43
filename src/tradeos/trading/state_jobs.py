"""The trading state's periodic job: every account's UTC day starts at 00:00 UTC, so an
automatic halt of the day before is lifted (and GET /accounts says so) without waiting for the
account's next order."""

from __future__ import annotations

from typing import Any

from tradeos.core.jobs import Cron, JobContext, job
from tradeos.market.jobs import _market_data as market_data  # the process's shared providers
from tradeos.trading import state


@job("trading.start_day", timeout=600, max_attempts=3, backoff=60, schedule=Cron("0 0 * * *"))
async def start_day(ctx: JobContext) -> dict[str, Any]:
    """Every account's day-start equity, and automatic halts lifted, at 00:00 UTC. A retry or
    a late run starts only the accounts that have not started the day."""
    async with market_data(ctx) as market:
        return await state.start_day_everywhere(ctx.database, ctx.events, market.provider)
