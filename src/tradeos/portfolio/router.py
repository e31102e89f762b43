"""Portfolio endpoints: /trades (round trips and journal entries), /portfolio, its history
and its statistics."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import Depends, Query, status

from tradeos.accounts.deps import ReaderDep, TraderDep
from tradeos.core.db import MAX_ROW_ID
from tradeos.core.deps import EventsDep, PageQuery, SessionDep, SettingsDep
from tradeos.core.errors import ValidationFailed, field_error
from tradeos.core.fields import Moment, NoNul
from tradeos.core.pagination import Ordering, Page, paginate
from tradeos.core.routing import APIRouter
from tradeos.market.deps import ProviderDep
from tradeos.portfolio import service
from tradeos.portfolio.schemas import (
    HistoryInterval,
    JournalEntryCreate,
    JournalEntryOut,
    PortfolioHistoryOut,
    PortfolioOut,
    PortfolioStatsOut,
    TradeOut,
    TradeOutcome,
)
from tradeos.trading.positions import Direction

trades = APIRouter(prefix="/trades", tags=["portfolio"])
portfolio = APIRouter(prefix="/portfolio", tags=["portfolio"])


AccountFilter = Annotated[
    int | None,
    Query(ge=1, le=MAX_ROW_ID, description="The trading account (default: your first)."),
]


def _check_window(start_field: str, start: datetime | None, end: datetime | None) -> None:
    if start is not None and end is not None and start >= end:
        raise ValidationFailed(
            f"{start_field} is not before the end: the time window is empty.",
            errors=[field_error(f"query.{start_field}", "must be before the end")],
        )


@trades.get("")
async def list_trades(
    principal: ReaderDep,
    session: SessionDep,
    paging: PageQuery,
    order: Annotated[Ordering, Depends(service.TRADE_SORT)],
    account_id: AccountFilter = None,
    symbol: Annotated[str | None, Query(max_length=41), NoNul] = None,
    direction: Direction | None = None,
    strategy_id: Annotated[str | None, Query(max_length=64), NoNul] = None,
    closed_from: Annotated[Moment | None, Query(description="Closed at or after.")] = None,
    closed_to: Annotated[Moment | None, Query(description="Closed before.")] = None,
    outcome: Annotated[TradeOutcome | None, Query(description="win: net PnL > 0.")] = None,
) -> Page[TradeOut]:
    """Closed round trips (flat to flat), newest first by default."""
    _check_window("closed_from", closed_from, closed_to)
    query = service.trades_query(
        principal.user_id,
        account_id=account_id,
        symbol=symbol,
        direction=direction,
        strategy_id=strategy_id,
        closed_from=closed_from,
        closed_to=closed_to,
        outcome=outcome,
    )
    page = await paginate(session, query.order_by(*order.clauses), paging)
    return page.map(service.trade_out)


@trades.post("", status_code=status.HTTP_201_CREATED)
async def record_trade(
    body: JournalEntryCreate,
    principal: TraderDep,
    session: SessionDep,
    events: EventsDep,
    settings: SettingsDep,
) -> JournalEntryOut:
    """Record a trade made elsewhere (a journal entry): booked like a paper fill, it moves the
    position and the cash and closes round trips. 422 for a price or quantity off the
    instrument's tick or step, a time in the future or before the account's reset, a short
    sale the account does not permit, or what the available cash cannot pay."""
    return await service.record_journal_entry(session, events, settings, principal.user_id, body)


@portfolio.get("")
async def get_portfolio(
    principal: ReaderDep,
    session: SessionDep,
    provider: ProviderDep,
    account_id: AccountFilter = None,
) -> PortfolioOut:
    """Cash, equity, PnL, exposure by asset class and the open positions at the live marks."""
    return await service.portfolio(session, provider, principal.user_id, account_id)


@portfolio.get("/history")
async def get_history(
    principal: ReaderDep,
    session: SessionDep,
    settings: SettingsDep,
    account_id: AccountFilter = None,
    interval: HistoryInterval = HistoryInterval.H1,
    start: Annotated[Moment | None, Query(description="From (default: 96 buckets back).")] = None,
    end: Annotated[Moment | None, Query(description="Before (default: now).")] = None,
) -> PortfolioHistoryOut:
    """Equity, cash and PnL snapshots: the last of each bucket, at most 1000 buckets."""
    _check_window("start", start, end)
    return await service.history(
        session, settings, principal.user_id, account_id, interval, start, end
    )


@portfolio.get("/stats")
async def get_stats(
    principal: ReaderDep,
    session: SessionDep,
    provider: ProviderDep,
    account_id: AccountFilter = None,
) -> PortfolioStatsOut:
    """Performance since the last reset; ratios without enough data are null."""
    return await service.portfolio_stats(session, provider, principal.user_id, account_id)


routers = (trades, portfolio)
