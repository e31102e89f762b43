"""Portfolio use cases: round trips and journal entries, the portfolio at its live marks, its
history and its performance statistics.

Round trips are stored by trading (`trading/round_trips.py`) as the fill that closes one is
booked; here they are listed. A journal entry (a trade made elsewhere) becomes an order of
origin "journal" and a fill booked by `trading.service.book_execution`, the same accounting as
a paper fill: position, balance, round trip and events.

Valuation is trading's (`account_detail`, `valuation`: cash plus the positions at their last
price, a position without a price at its cost); exposure by asset class is risk's
(`sizing.exposure_by_asset_class`); drawdown is `sizing.drawdown` over exact equities; win
rate, profit factor, Sharpe and Sortino are `backtest.metrics`, given floats once, at the edge
(`_curve_and_trade_metrics`), and read back as ratios. Money stays Decimal throughout.

Snapshots. `take_snapshots` stores one `PortfolioSnapshot` per account at the snapshot
interval's floor (multiples of PORTFOLIO_SNAPSHOT_MINUTES since 1970-01-01 UTC), once: a second
run in the same slot finds it taken. The history answers the last snapshot of each bucket of
15 minutes, an hour or a day, over a bounded range.

Statistics on daily returns: the equity of each UTC day is its last snapshot (since the
reset), today's is the current equity; returns need three such days (two returns) or the
ratios are null. They are annualized over 365 days (the snapshots run every day).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal, localcontext
from typing import TYPE_CHECKING, Final

import numpy as np
import structlog
from sqlalchemy import Select, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from tradeos.backtest import metrics
from tradeos.config import Settings
from tradeos.core.db import numeric_order, strip_trailing_zeros, utcnow
from tradeos.core.errors import NotFound, ValidationFailed, field_error
from tradeos.core.events import EventBus
from tradeos.core.fields import decimal_text
from tradeos.core.pagination import Sorting
from tradeos.market import service as market_service
from tradeos.market.providers.base import AssetClass, MarketProvider
from tradeos.portfolio.schemas import (
    AssetClassExposure,
    Cash,
    HistoryInterval,
    JournalEntryCreate,
    JournalEntryOut,
    PortfolioHistoryOut,
    PortfolioOut,
    PortfolioStatsOut,
    SnapshotOut,
    TradeOut,
    TradeOutcome,
)
from tradeos.risk import sizing
from tradeos.trading import ledger, orders
from tradeos.trading import service as trading
from tradeos.trading.errors import ShortSaleNotAllowed
from tradeos.trading.models import (
    Fill,
    Order,
    PortfolioSnapshot,
    Position,
    RoundTrip,
    TradingAccount,
)
from tradeos.trading.orders import ARITHMETIC, ZERO, OrderStatus, OrderType
from tradeos.trading.positions import Direction
from tradeos.trading.round_trips import duration_seconds
from tradeos.trading.schemas import FillOut

if TYPE_CHECKING:
    from tradeos.market.models import Instrument

logger = structlog.get_logger("tradeos.portfolio")

JOURNAL_ORIGIN: Final = "journal"
PERCENT_QUANTUM: Final = Decimal("0.0001")
RATIO_QUANTUM: Final = Decimal("0.0001")
MONEY_QUANTUM: Final = Decimal("1e-8")
DAYS_PER_YEAR: Final = 365
# A history answers at most this many buckets; a longer range is a 422 naming the limit.
MAX_HISTORY_POINTS: Final = 1000
DEFAULT_HISTORY_POINTS: Final = 96
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)


async def _account(
    session: AsyncSession, user_id: int, account_id: int | None, *, lock: bool = False
) -> TradingAccount:
    """The user's account (default: their first one); 404 for another user's or none."""
    return await trading.account_or_first(session, user_id, account_id, lock=lock)


def _invalid(field: str, message: str, detail: str) -> ValidationFailed:
    return ValidationFailed(detail, errors=[field_error(field, message)])


def _percent(part: Decimal, whole: Decimal) -> Decimal | None:
    if whole <= 0:
        return None
    with localcontext(ARITHMETIC):
        return (part * 100 / whole).quantize(PERCENT_QUANTUM, rounding=ROUND_HALF_UP)


# -- trades (round trips) ---------------------------------------------------------------------

TRADE_SORT = Sorting(
    {"closed": RoundTrip.closed_at, "net_pnl": RoundTrip.net_pnl, "return": RoundTrip.return_pct},
    default="-closed",
    tie_breaker=RoundTrip.id,
)


def trades_query(
    user_id: int,
    *,
    account_id: int | None = None,
    symbol: str | None = None,
    direction: Direction | None = None,
    strategy_id: str | None = None,
    closed_from: datetime | None = None,
    closed_to: datetime | None = None,
    outcome: TradeOutcome | None = None,
) -> Select[RoundTrip]:
    """The user's round trips, filtered; another user's account filters to nothing."""
    owned = select(TradingAccount.id).where(TradingAccount.owner_id == user_id)
    query = select(RoundTrip).where(RoundTrip.account_id.in_(owned))
    if account_id is not None:
        query = query.where(RoundTrip.account_id == account_id)
    if symbol is not None:
        query = query.where(RoundTrip.symbol == symbol.upper())
    if direction is not None:
        query = query.where(RoundTrip.direction == direction.value)
    if strategy_id is not None:
        query = query.where(RoundTrip.strategy_id == strategy_id)
    if closed_from is not None:
        query = query.where(RoundTrip.closed_at >= closed_from)
    if closed_to is not None:
        query = query.where(RoundTrip.closed_at < closed_to)
    if outcome is TradeOutcome.WIN:  # numeric_order: SQLite keeps exact decimals as text
        query = query.where(numeric_order(RoundTrip.net_pnl) > 0)
    elif outcome is TradeOutcome.LOSS:
        query = query.where(numeric_order(RoundTrip.net_pnl) < 0)
    return query


def trade_out(row: RoundTrip) -> TradeOut:
    return TradeOut(
        id=row.id,
        account_id=row.account_id,
        symbol=row.symbol,
        direction=row.direction,
        quantity=row.quantity,
        entry_price=row.entry_price,
        exit_price=row.exit_price,
        opened_at=row.opened_at,
        closed_at=row.closed_at,
        duration_seconds=duration_seconds(row.opened_at, row.closed_at),
        pnl=row.pnl,
        fees=row.fees,
        net_pnl=row.net_pnl,
        return_pct=row.return_pct,
        strategy_id=row.strategy_id,
    )


# -- journal entries --------------------------------------------------------------------------


async def record_journal_entry(
    session: AsyncSession,
    events: EventBus,
    settings: Settings,
    user_id: int,
    body: JournalEntryCreate,
) -> JournalEntryOut:
    """Book a trade made elsewhere as the account's fill (see the module's doc). 422 for an
    unknown symbol, a price or quantity off the instrument's tick or step, a time in the
    future, before the account's reset or before the last fill of an open position, a short
    sale the account does not permit, or a trade its available cash cannot pay."""
    await trading.get_account(session, user_id, body.account_id)  # 404 before anything else
    try:
        instrument = await market_service.get_instrument(session, body.symbol)
    except NotFound as exc:
        raise _invalid("body.symbol", "no such instrument", exc.detail) from None
    now = utcnow()
    executed_at = body.executed_at or now
    account = await trading.get_account(session, user_id, body.account_id, lock=True)
    errors = _journal_errors(body, executed_at, now, account, instrument)
    if errors:
        raise ValidationFailed(
            "The journal entry is invalid: " + "; ".join(f"{f} {m}" for f, m in errors) + ".",
            errors=[field_error(f"body.{field}", message) for field, message in errors],
        )
    held = await session.scalar(
        select(Position.quantity).where(
            Position.account_id == account.id, Position.symbol == instrument.symbol
        )
    )
    if held:  # an open position's fills stay in time order: its round trip is dated by them
        last = await session.scalar(
            select(func.max(Fill.time)).where(
                Fill.account_id == account.id, Fill.symbol == instrument.symbol
            )
        )
        if last is not None and executed_at < last:
            raise _invalid(
                "body.executed_at",
                f"is before the last fill of the open {instrument.symbol} position, {last}",
                "A journal entry on an open position is dated after its last fill.",
            )
    model = trading.fill_model(settings)
    try:  # only to ask whether the sale is permitted: a journal fill reserves nothing
        ledger.order_reservation(
            body.side,
            body.quantity,
            body.price,
            model,
            position_quantity=held or ZERO,
            allow_short=account.allow_short,
        )
    except ShortSaleNotAllowed as exc:
        raise _invalid("body.side", str(exc), "This account does not permit short sales.") from None

    row = Order(
        account_id=account.id,
        owner_id=user_id,
        symbol=instrument.symbol,
        side=body.side.value,
        type=OrderType.MARKET.value,
        time_in_force=orders.TimeInForce.GTC.value,
        status=OrderStatus.ACCEPTED.value,
        quantity=body.quantity,
        filled_quantity=ZERO,
        reserved=ZERO,
        fees=ZERO,
        strategy_id=body.strategy_id,
        origin=JOURNAL_ORIGIN,
        note=body.note,
    )
    session.add(row)
    await session.flush()
    before = orders.Order(
        side=body.side,
        type=OrderType.MARKET,
        quantity=body.quantity,
        status=OrderStatus.ACCEPTED,
    )
    execution = orders.Execution(body.quantity, body.price, body.fee, orders.Liquidity.TAKER)
    match = orders.Match(orders.record_fill(before, body.quantity), execution)
    booked = await trading.book_execution(
        session, events, model, account, row, before, match, executed_at
    )
    if not booked:  # the available cash cannot pay it: the unit of work rolls back
        raise _invalid(
            "body.quantity",
            "costs more than the account's available cash",
            f"The account cannot pay this trade: {row.cancel_reason}.",
        )
    fill = await session.scalar(select(Fill).where(Fill.order_id == row.id))
    assert fill is not None
    return JournalEntryOut(
        order=trading.order_out(row), fill=FillOut.model_validate(fill), note=row.note
    )


def _journal_errors(
    body: JournalEntryCreate,
    executed_at: datetime,
    now: datetime,
    account: TradingAccount,
    instrument: Instrument,
) -> list[tuple[str, str]]:
    errors = []
    if executed_at > now:
        errors.append(("executed_at", "is in the future"))
    if account.reset_at is not None and executed_at < account.reset_at:
        errors.append(("executed_at", f"is before the account's reset at {account.reset_at}"))
    if not orders.is_multiple(body.price, instrument.tick_size):
        tick = decimal_text(strip_trailing_zeros(instrument.tick_size))
        errors.append(("price", f"must be a multiple of the tick size {tick}"))
    if not orders.is_multiple(body.quantity, instrument.quantity_step):
        step = decimal_text(strip_trailing_zeros(instrument.quantity_step))
        errors.append(("quantity", f"must be a multiple of the quantity step {step}"))
    return errors


# -- portfolio --------------------------------------------------------------------------------


async def portfolio(
    session: AsyncSession, provider: MarketProvider | None, user_id: int, account_id: int | None
) -> PortfolioOut:
    """Cash, equity, PnL, exposure by asset class and the open positions, at the live marks."""
    account = await _account(session, user_id, account_id)
    detail = await trading.account_detail(session, provider, user_id, account.id)
    rows = list(await session.scalars(trading.positions_query(user_id, account.id)))
    positions = await trading.positions_out(session, provider, rows)
    holdings = [
        sizing.Holding(
            symbol=position.symbol,
            asset_class=await _asset_class(session, position.symbol),
            quantity=position.quantity,
            # Valued as the account is: at the mark, or at its cost without one.
            price=position.average_entry_price
            if position.mark_price is None
            else position.mark_price,
        )
        for position in positions
    ]
    exposure = [
        AssetClassExposure(
            asset_class=asset_class.value,
            long=value.long,
            short=value.short,
            gross=value.gross,
            net=value.net,
            gross_pct=_percent(value.gross, detail.equity),
            net_pct=_percent(value.net, detail.equity),
        )
        for asset_class, value in sorted(sizing.exposure_by_asset_class(holdings).items())
    ]
    return PortfolioOut(
        account_id=account.id,
        base_currency=account.base_currency,
        cash=Cash(total=detail.cash, reserved=detail.reserved, available=detail.available),
        equity=detail.equity,
        positions_value=detail.market_value,
        realized_pnl=detail.realized_pnl,
        unrealized_pnl=detail.unrealized_pnl,
        fees_paid=detail.fees_paid,
        exposure=exposure,
        positions=positions,
    )


async def _asset_class(session: AsyncSession, symbol: str) -> AssetClass:
    instrument = await market_service.get_instrument(session, symbol)
    return AssetClass(instrument.asset_class)


# -- snapshots and history --------------------------------------------------------------------


def floor_time(moment: datetime, minutes: int) -> datetime:
    """`moment` down to a multiple of `minutes` since 1970-01-01 UTC."""
    period = minutes * 60
    elapsed = int((moment - _EPOCH).total_seconds()) // period
    return _EPOCH + timedelta(seconds=elapsed * period)


def snapshot_time(settings: Settings, now: datetime) -> datetime:
    """The slot a snapshot taken `now` belongs to."""
    return floor_time(now, settings.portfolio_snapshot_minutes)


async def take_snapshots(
    session: AsyncSession, provider: MarketProvider | None, settings: Settings, now: datetime
) -> int:
    """One snapshot per account at the interval's floor of `now`, unless taken already; the
    number taken. (The job does the same in three short units of work.)"""
    at = snapshot_time(settings, now)
    symbols = await symbols_to_mark(session, at)
    marks = await trading.mark_prices(session, provider, symbols)
    return await store_snapshots(session, at, marks)


def _accounts_without_snapshot(at: datetime) -> Select[TradingAccount]:
    taken_already = select(PortfolioSnapshot.account_id).where(PortfolioSnapshot.time == at)
    return select(TradingAccount).where(TradingAccount.id.not_in(taken_already))


async def symbols_to_mark(session: AsyncSession, at: datetime) -> list[str]:
    """The symbols held open by the accounts whose snapshot at `at` is not taken yet."""
    waiting = _accounts_without_snapshot(at).with_only_columns(TradingAccount.id)
    symbols = await session.scalars(
        select(Position.symbol)
        .where(Position.account_id.in_(waiting), Position.quantity != ZERO)
        .distinct()
    )
    return sorted(symbols)


async def store_snapshots(
    session: AsyncSession, at: datetime, marks: Mapping[str, Decimal | None]
) -> int:
    """Store the snapshot at `at` of every account without one, valued at `marks` (a
    position without a mark at its cost); the number stored."""
    accounts = list(await session.scalars(_accounts_without_snapshot(at)))
    held: dict[int, list[Position]] = {account.id: [] for account in accounts}
    if held:
        for row in await session.scalars(
            select(Position).where(Position.account_id.in_(list(held))).order_by(Position.symbol)
        ):
            held[row.account_id].append(row)
    taken = 0
    for account in accounts:
        worth = trading.valuation(account, held[account.id], marks)
        try:
            async with session.begin_nested():
                session.add(
                    PortfolioSnapshot(
                        account_id=account.id,
                        time=at,
                        equity=worth.equity,
                        cash=account.cash_total,
                        positions_value=worth.market_value,
                        realized_pnl=worth.realized_pnl,
                        unrealized_pnl=worth.unrealized_pnl,
                    )
                )
                await session.flush()
        except IntegrityError:  # taken meanwhile by another run: once is enough
            continue
        taken += 1
    return taken


async def history(
    session: AsyncSession,
    settings: Settings,
    user_id: int,
    account_id: int | None,
    interval: HistoryInterval,
    start: datetime | None,
    end: datetime | None,
) -> PortfolioHistoryOut:
    """The last snapshot of each `interval` bucket in [start, end) (default: the last 96
    buckets); 422 for an interval finer than the snapshots or more than 1000 buckets."""
    account = await _account(session, user_id, account_id)
    if interval.minutes < settings.portfolio_snapshot_minutes:
        every = settings.portfolio_snapshot_minutes
        raise _invalid(
            "query.interval",
            f"must be at least the snapshot interval, {every} minutes",
            f"Snapshots are taken every {every} minutes: a {interval.value} history is finer.",
        )
    step = timedelta(minutes=interval.minutes)
    end = end or utcnow()
    start = start or end - step * DEFAULT_HISTORY_POINTS
    if start >= end:
        raise _invalid("query.start", "must be before end", "The time range is empty.")
    if (end - start) / step > MAX_HISTORY_POINTS:
        raise _invalid(
            "query.start",
            f"the range holds more than {MAX_HISTORY_POINTS} buckets of {interval.value}",
            f"Ask for at most {MAX_HISTORY_POINTS} buckets: narrow the range or widen the "
            "interval.",
        )
    rows = await session.scalars(
        select(PortfolioSnapshot)
        .where(
            PortfolioSnapshot.account_id == account.id,
            PortfolioSnapshot.time >= start,
            PortfolioSnapshot.time < end,
        )
        .order_by(PortfolioSnapshot.time)
    )
    last: dict[datetime, PortfolioSnapshot] = {}
    for row in rows:
        last[floor_time(row.time, interval.minutes)] = row  # in time order: the last wins
    return PortfolioHistoryOut(
        account_id=account.id,
        interval=interval,
        start=start,
        end=end,
        points=[SnapshotOut.model_validate(row) for row in last.values()],
    )


# -- statistics -------------------------------------------------------------------------------


async def portfolio_stats(
    session: AsyncSession, provider: MarketProvider | None, user_id: int, account_id: int | None
) -> PortfolioStatsOut:
    """The account's performance since its last reset (see the module's doc)."""
    account = await _account(session, user_id, account_id)
    detail = await trading.account_detail(session, provider, user_id, account.id)
    since = account.reset_at
    trips = select(RoundTrip.net_pnl, RoundTrip.return_pct).where(
        RoundTrip.account_id == account.id
    )
    snapshots = select(PortfolioSnapshot.time, PortfolioSnapshot.equity).where(
        PortfolioSnapshot.account_id == account.id
    )
    if since is not None:
        trips = trips.where(RoundTrip.closed_at >= since)
        snapshots = snapshots.where(PortfolioSnapshot.time >= since)
    trades = (await session.execute(trips.order_by(RoundTrip.closed_at, RoundTrip.id))).all()
    curve = (await session.execute(snapshots.order_by(PortfolioSnapshot.time))).all()
    net_pnls = [pnl for pnl, _ in trades]
    now = utcnow()
    daily = _daily_equity(((time, equity) for time, equity in curve), now.date(), detail.equity)
    result = _curve_and_trade_metrics(
        daily, net_pnls, [ret for _, ret in trades], account.starting_balance
    )
    fall = sizing.drawdown([account.starting_balance, *(e for _, e in curve), detail.equity])
    with localcontext(ARITHMETIC):
        total_return = (detail.equity - account.starting_balance) * 100 / account.starting_balance
    open_count = len(list(await session.scalars(trading.positions_query(user_id, account.id))))
    curve_defined = _returns_defined(daily)
    return PortfolioStatsOut(
        account_id=account.id,
        total_value=detail.equity,
        starting_balance=account.starting_balance,
        total_return_pct=total_return.quantize(PERCENT_QUANTUM, rounding=ROUND_HALF_UP),
        realized_pnl=detail.realized_pnl,
        unrealized_pnl=detail.unrealized_pnl,
        fees_paid=detail.fees_paid,
        number_of_trades=len(trades),
        win_rate=_ratio(result.win_rate),
        profit_factor=_ratio(result.profit_factor),
        average_win=_mean([pnl for pnl in net_pnls if pnl > 0]),
        average_loss=_mean([pnl for pnl in net_pnls if pnl < 0]),
        max_drawdown=fall.maximum,
        max_drawdown_pct=fall.maximum_pct,
        sharpe=_ratio(result.sharpe) if curve_defined else None,
        sortino=_ratio(result.sortino) if curve_defined else None,
        positions_count=open_count,
    )


def _daily_equity(
    curve: Iterable[tuple[datetime, Decimal]], today: date, current: Decimal
) -> list[Decimal]:
    """The last equity of each UTC day, oldest first; today's is `current`."""
    days: dict[date, Decimal] = {}
    for time, equity in curve:  # in time order: the day's last wins
        days[time.date()] = equity
    days[today] = current
    return [days[day] for day in sorted(days)]


def _returns_defined(daily: Sequence[Decimal]) -> bool:
    """Two daily returns at least, from a positive first equity."""
    return len(daily) >= 3 and daily[0] > 0


def _curve_and_trade_metrics(
    daily: Sequence[Decimal],
    net_pnls: Sequence[Decimal],
    returns_pct: Sequence[Decimal],
    starting_balance: Decimal,
) -> metrics.Metrics:
    """`backtest.metrics` of the daily curve and the trades: the one place decimals become
    floats. Without enough days the curve is the last point alone (its ratios are unused)."""
    if _returns_defined(daily):
        equity = np.array([float(value) for value in daily[1:]], dtype=np.float64)
        initial = float(daily[0])
    else:
        equity = np.array([float(daily[-1])], dtype=np.float64)
        initial = float(starting_balance)
    return metrics.compute_metrics(
        equity,
        np.array([float(pnl) for pnl in net_pnls], dtype=np.float64),
        np.array([float(ret) / 100 for ret in returns_pct], dtype=np.float64),
        DAYS_PER_YEAR,
        initial_equity=initial,
    )


def _ratio(value: float) -> Decimal | None:
    """A metric as an exact decimal to 4 places; None when undefined (NaN) or infinite."""
    if not math.isfinite(value):
        return None
    return Decimal(repr(value)).quantize(RATIO_QUANTUM, rounding=ROUND_HALF_UP)


def _mean(values: Sequence[Decimal]) -> Decimal | None:
    if not values:
        return None
    with localcontext(ARITHMETIC):
        total = sum(values, ZERO)
        return (total / len(values)).quantize(MONEY_QUANTUM, rounding=ROUND_HALF_UP)
