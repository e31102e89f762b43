"""Recording round trips as the fills that close them are booked.

A trade closes when a fill brings its position back to zero or through it
(`positions.round_trips`). The trade is then computed by the same pure function, over the
fills of the symbol since the position was last flat, so its PnL is the positions' own
accounting: the booked trades add up to the realized PnL of the position.

Where the position was last flat is found by walking the account's fills of the symbol back,
newest first, from the quantity held before the closing fill: the fill before which the
quantity was zero opened the first trade of the stretch (a flip in between is handled by
`round_trips` itself). The walk reads only what it needs, in pages that start small (a trade is
usually a few fills) and double, and never looks past the account's last reset (which
flattened every position).

Fills are taken in booking order (their row id), as the position applied them. A trade's
strategy tag is the `strategy_id` of the order whose fill opened it. A trade is stored in the
unit of work that inserts its closing fill, whose id is unique: no other unit of work can store
the same trade, so it is inserted without a look first (`closing_fill_id` is unique on the
table as well, should that ever not hold).
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal, localcontext
from typing import Final

import structlog
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from tradeos.trading import positions
from tradeos.trading.models import Fill, Order, RoundTrip, TradingAccount
from tradeos.trading.orders import ARITHMETIC, ZERO, OrderSide

logger = structlog.get_logger("tradeos.trading")

# The first page of the walk back, and the largest it grows to.
_FIRST_PAGE: Final = 8
_LARGEST_PAGE: Final = 1024


def closes_a_trade(before: positions.Position, after: positions.Position) -> bool:
    """Whether a fill that took the position from `before` to `after` closed a trade: the
    position was open and went flat or crossed zero."""
    if before.is_flat:
        return False
    return after.is_flat or (after.quantity > 0) != (before.quantity > 0)


async def record_round_trip(
    session: AsyncSession,
    account: TradingAccount,
    before: positions.Position,
    after: positions.Position,
    fill: positions.Fill,
) -> None:
    """Store the trade `fill` closed, if it closed one (see the module's doc); the fill was
    inserted by this unit of work."""
    if not closes_a_trade(before, after):
        return
    account_id = account.id
    stretch = await _fills_since_flat(session, account, before, fill.fill_id)
    if stretch is None:
        logger.error("round_trip_start_not_found", account_id=account_id, fill_id=fill.fill_id)
        return
    trades = positions.round_trips([*stretch, fill])
    if not trades or trades[-1].closed_at != fill.time:
        logger.error("round_trip_not_closed", account_id=account_id, fill_id=fill.fill_id)
        return
    session.add(_row(account_id, trades[-1], fill.fill_id))


def _row(account_id: int, trade: positions.Trade, closing_fill_id: str) -> RoundTrip:
    return RoundTrip(
        account_id=account_id,
        symbol=trade.symbol,
        direction=trade.direction.value,
        quantity=trade.quantity,
        entry_price=trade.entry_price,
        exit_price=trade.exit_price,
        pnl=trade.pnl,
        fees=trade.fees,
        net_pnl=trade.net_pnl,
        return_pct=trade.return_pct,
        opened_at=trade.opened_at,
        closed_at=trade.closed_at,
        strategy_id=trade.strategy,
        closing_fill_id=closing_fill_id,
    )


async def _fills_since_flat(
    session: AsyncSession, account: TradingAccount, before: positions.Position, closing_fill_id: str
) -> list[positions.Fill] | None:
    """The fills of `before`'s symbol since the position was last flat, oldest first, without
    the closing fill; None when the walk back never reaches zero (history inconsistent)."""
    account_id, reset_at = account.id, account.reset_at
    query = (
        select(Fill, Order.strategy_id)
        .join(Order, Order.id == Fill.order_id)
        .where(
            Fill.account_id == account_id,
            Fill.symbol == before.symbol,
            Fill.fill_id != closing_fill_id,
        )
        .order_by(Fill.id.desc())
    )
    if reset_at is not None:
        query = query.where(Fill.time >= reset_at)
    held = before.quantity
    newest_first: list[positions.Fill] = []
    last_id: int | None = None
    size = _FIRST_PAGE
    while True:
        page = query if last_id is None else query.where(Fill.id < last_id)
        rows = (await session.execute(page.limit(size))).all()
        for row, strategy in rows:
            fill = _pure(row, strategy)
            newest_first.append(fill)
            with localcontext(ARITHMETIC):
                held -= fill.signed_quantity
            if held == ZERO:
                return newest_first[::-1]
        if len(rows) < size:
            return None
        last_id = rows[-1][0].id
        size = min(size * 2, _LARGEST_PAGE)


def _pure(row: Fill, strategy: str | None) -> positions.Fill:
    return positions.Fill(
        fill_id=row.fill_id,
        symbol=row.symbol,
        side=OrderSide(row.side),
        quantity=row.quantity,
        price=row.price,
        time=row.time,
        fee=row.fee,
        strategy=strategy,
    )


def duration_seconds(opened_at: datetime, closed_at: datetime) -> Decimal:
    """How long a trade was open, in seconds (exact to the microsecond)."""
    delta = closed_at - opened_at
    return Decimal(delta.days * 86_400 + delta.seconds) + Decimal(delta.microseconds).scaleb(-6)
