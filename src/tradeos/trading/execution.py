"""The paper execution engine: resting orders fill when the market crosses them.

`match_symbol(database, events, settings, symbol, tick)` takes one tick of one instrument and
matches that instrument's open orders against it with `orders.match` (as resting orders, not on
arrival), booking fills with `service.book_execution`. Each order is matched in a unit of work
of its own that locks the account row first and then reads the order again (the lock order of
`place_order` and `cancel_order`), so a request and the matcher, or two matchers, never book one
fill twice; the fill id makes a replay apply once besides. The open orders are first matched
against the tick in a read-only pass: only an order the tick changes (a fill, a trigger, an
expiry) opens a writing unit of work.

Day orders whose UTC day has ended expire before they are matched. The two open children of one
bracket are matched as a pair (`orders.match_bracket`): when one fills, the other is canceled
(`orders.oco_after_fill`). A parent that stops filling gets its children
(`service.open_bracket_children`).

What drives it:

- `RestingOrderWatcher`, beside the live feed (in `serve` when it runs the jobs, in
  `tradeos scheduler`): it subscribes to `tickers:<symbol>` of the symbols with open orders,
  refreshing that set every few seconds, and matches a symbol when its tick is published. The
  event says "this price moved"; the tick matched is the market provider's current one, the
  price `place_order` uses.
- `sweep` (the `trading.sweep_resting_orders` job, every minute): expires what is due and
  matches every symbol with open orders against the provider's current tick, so a missed event
  never leaves a crossing order unfilled.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Final

import structlog
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from tradeos.config import Settings
from tradeos.core.db import Database, utcnow
from tradeos.core.errors import TradeOSError
from tradeos.core.events import EventBus, SubscriptionClosed
from tradeos.market import service as market_service
from tradeos.market.providers.base import InstrumentSpec, MarketProvider, ProviderError, Tick
from tradeos.market.providers.registry import sourced_ticker
from tradeos.trading import ledger, orders, service
from tradeos.trading import state as trading_state
from tradeos.trading.fill_model import FillModel
from tradeos.trading.models import Order, Position, TradingAccount
from tradeos.trading.orders import ZERO, OrderStatus

logger = structlog.get_logger("tradeos.trading.execution")

# How often the watcher looks again for the symbols with open orders.
REFRESH_SECONDS: float = 2.0
OCO_REASON: Final = "the other order of its bracket filled"


@dataclass(frozen=True)
class Outcome:
    """What one pass did: fills booked, orders expired, orders canceled (OCO, unpayable)."""

    filled: int = 0
    expired: int = 0
    canceled: int = 0

    def __add__(self, other: Outcome) -> Outcome:
        return Outcome(
            self.filled + other.filled,
            self.expired + other.expired,
            self.canceled + other.canceled,
        )


# -- what is open -----------------------------------------------------------------------------


async def open_symbols(database: Database) -> list[str]:
    """The symbols that have open (resting) orders."""
    async with database.session(write=False) as session:
        found = await session.scalars(
            select(Order.symbol).where(Order.status.in_(service.OPEN)).distinct()
        )
        return sorted(found)


async def _open_orders(session: AsyncSession, symbol: str) -> list[Order]:
    # ix_orders_symbol_status
    return list(
        await session.scalars(
            select(Order)
            .where(Order.symbol == symbol, Order.status.in_(service.OPEN))
            .order_by(Order.id)
        )
    )


async def current_tick(
    session: AsyncSession, provider: MarketProvider, symbol: str
) -> tuple[InstrumentSpec, Tick] | None:
    """The instrument and its live tick; None when the provider has none for it now (its
    orders wait for the next tick)."""
    try:
        instrument = await market_service.get_instrument(session, symbol)
        if provider.name != instrument.provider:
            return None  # no live price: a stored close is no price to fill at
        _, tick = await sourced_ticker(provider, instrument.symbol)
    except (TradeOSError, ProviderError) as exc:
        logger.warning("no_tick_to_match", symbol=symbol, error=repr(exc))
        return None
    return service._spec(instrument), tick


# -- matching ---------------------------------------------------------------------------------


def _changes(row: Order, tick: Tick, spec: InstrumentSpec, model: FillModel, now: datetime) -> bool:
    """Whether the tick (or the time) does anything to the order: worth a writing unit of work."""
    state = service.order_state(row)
    if orders.expire_if_due(state, row.created_at, now) is not state:
        return True
    result = orders.match(state, tick, spec, model)
    return result.execution is not None or result.order != state


async def match_symbol(
    database: Database,
    events: EventBus,
    settings: Settings,
    provider: MarketProvider,
    symbol: str,
    *,
    tick: Tick | None = None,
    now: datetime | None = None,
) -> Outcome:
    """Match the open orders of `symbol` against `tick` (default: the provider's current one);
    `now` decides which day orders are due (default: the clock)."""
    model = service.fill_model(settings)
    now = now or utcnow()
    async with database.session(write=False) as session:
        found = await current_tick(session, provider, symbol)
        if found is None:
            return Outcome()
        spec, live = found
        tick = tick or live
        due = [
            row.id
            for row in await _open_orders(session, symbol)
            if _changes(row, tick, spec, model, now)
        ]
    outcome = Outcome()
    for order_id in due:
        outcome += await match_order(
            database, events, provider, model, spec, tick, order_id, now=now
        )
    return outcome


async def match_order(
    database: Database,
    events: EventBus,
    provider: MarketProvider | None,
    model: FillModel,
    spec: InstrumentSpec,
    tick: Tick,
    order_id: int,
    *,
    now: datetime | None = None,
) -> Outcome:
    """One order (and its bracket sibling) against `tick`, in a unit of work of its own."""
    now = now or utcnow()
    async with database.session() as session:
        row = await session.get(Order, order_id)
        if row is None:
            return Outcome()
        account = await service.get_account(session, row.owner_id, row.account_id, lock=True)
        # As place_order does under the lock: today's start, and the provider for the review
        # of the account's trading state after a fill.
        await trading_state.start_day(session, events, provider, account)
        await session.refresh(row)  # read again under the lock: it may have changed meanwhile
        if row.status not in service.OPEN:
            return Outcome()
        state = service.order_state(row)
        if orders.expire_if_due(state, row.created_at, now) is not state:
            await service.expire_order(session, events, model, account, row)
            return Outcome(expired=1)
        if row.origin == "bracket" and await _would_open_a_short(session, account, row):
            service._close_unfilled(row, account, "the position it protected is no longer open")
            await session.flush()
            service._publish_order(session, events, row.owner_id, "order.canceled", row)
            return Outcome(canceled=1)
        sibling = await _open_sibling(session, row)
        if sibling is not None:
            return await _match_bracket(session, events, model, account, spec, tick, row, sibling)
        result = orders.match(state, tick, spec, model)
        return await _apply(session, events, model, account, row, state, result, tick)


async def _would_open_a_short(session: AsyncSession, account: TradingAccount, row: Order) -> bool:
    """Whether a bracket child would now open a short the account does not permit: the trader
    closed the position it protects some other way."""
    if account.allow_short:
        return False
    position = await session.scalar(
        select(Position.quantity).where(
            Position.account_id == account.id, Position.symbol == row.symbol
        )
    )
    remaining = row.quantity - row.filled_quantity
    side = orders.OrderSide(row.side)
    return side is orders.OrderSide.SELL and (
        ledger.opening_quantity(side, remaining, position or ZERO) > 0
    )


async def _open_sibling(session: AsyncSession, row: Order) -> Order | None:
    """The other child of the bracket `row` belongs to, if it is open too."""
    if row.parent_order_id is None or row.bracket_role is None:
        return None
    sibling = await session.scalar(
        select(Order)
        .where(Order.parent_order_id == row.parent_order_id, Order.id != row.id)
        .execution_options(populate_existing=True)
    )
    return sibling if sibling is not None and sibling.status in service.OPEN else None


async def _apply(
    session: AsyncSession,
    events: EventBus,
    model: FillModel,
    account: TradingAccount,
    row: Order,
    before: orders.Order,
    result: orders.Match,
    tick: Tick,
) -> Outcome:
    """Write what `orders.match` decided for one order."""
    if result.execution is not None:
        booked = await service.book_execution(
            session, events, model, account, row, before, result, tick.time
        )
        await service.open_bracket_children(session, events, model, account, row)
        if booked:
            return Outcome(filled=1)
        return Outcome(canceled=int(row.status == OrderStatus.CANCELED.value))
    if result.order.status is OrderStatus.CANCELED:  # an IOC / FOK: never resting, but safe
        service._close_unfilled(row, account, "not marketable")
        service._publish_order(session, events, row.owner_id, "order.canceled", row)
        return Outcome(canceled=1)
    row.triggered = result.order.triggered
    return Outcome()


async def _match_bracket(
    session: AsyncSession,
    events: EventBus,
    model: FillModel,
    account: TradingAccount,
    spec: InstrumentSpec,
    tick: Tick,
    row: Order,
    sibling: Order,
) -> Outcome:
    """Both open children of one bracket: at most one fills, the other follows it (OCO)."""
    stop_row, target_row = (row, sibling) if row.bracket_role == "stop_loss" else (sibling, row)
    stop, target = service.order_state(stop_row), service.order_state(target_row)
    stop_match, target_match = orders.match_bracket(stop, target, tick, spec, model)
    outcome = Outcome()
    pairs = ((stop_row, stop, stop_match), (target_row, target, target_match))
    # The child that filled first, then its sibling as oco_after_fill left it.
    for child_row, before, result in sorted(pairs, key=lambda p: p[2].execution is None):
        if result.execution is not None:
            outcome += await _apply(
                session, events, model, account, child_row, before, result, tick
            )
        elif result.order.status is OrderStatus.CANCELED and child_row.status in service.OPEN:
            service._close_unfilled(child_row, account, OCO_REASON)
            await session.flush()
            service._publish_order(session, events, child_row.owner_id, "order.canceled", child_row)
            outcome += Outcome(canceled=1)
        elif child_row.status in service.OPEN:
            # Shrunk to the position its sibling left open; a reducing order reserves nothing
            # more for it.
            child_row.quantity = result.order.quantity
            child_row.triggered = result.order.triggered
    return outcome


# -- what drives it ---------------------------------------------------------------------------


async def expire_due(
    database: Database, events: EventBus, settings: Settings, now: datetime | None = None
) -> int:
    """Expire every open day order whose UTC day has ended at `now`; how many expired."""
    now = now or utcnow()
    model = service.fill_model(settings)
    async with database.session(write=False) as session:
        due = list(
            await session.scalars(
                select(Order.id)
                .where(
                    Order.status.in_(service.OPEN),
                    Order.expires_at.is_not(None),
                    Order.expires_at <= now,
                )
                .order_by(Order.id)
            )
        )
    expired = 0
    for order_id in due:
        async with database.session() as session:
            row = await session.get(Order, order_id)
            if row is None:
                continue
            account = await service.get_account(session, row.owner_id, row.account_id, lock=True)
            await session.refresh(row)
            if row.status not in service.OPEN:
                continue
            state = service.order_state(row)
            if orders.expire_if_due(state, row.created_at, now) is not state:
                await service.expire_order(session, events, model, account, row)
                expired += 1
    return expired


async def sweep(
    database: Database,
    events: EventBus,
    settings: Settings,
    provider: MarketProvider,
    *,
    now: datetime | None = None,
) -> Outcome:
    """Expire what is due, then match every symbol with open orders at its current tick."""
    outcome = Outcome(expired=await expire_due(database, events, settings, now))
    for symbol in await open_symbols(database):
        outcome += await match_symbol(database, events, settings, provider, symbol, now=now)
    return outcome


class RestingOrderWatcher:
    """Matches resting orders as their instruments' ticks are published (see the module's
    doc). `provider` is asked each time: the process may swap its market provider."""

    def __init__(
        self,
        database: Database,
        events: EventBus,
        settings: Settings,
        provider: Callable[[], MarketProvider],
    ) -> None:
        self.database = database
        self.events = events
        self.settings = settings
        self.provider = provider

    async def run(self) -> None:
        """Until cancelled."""
        task = asyncio.current_task()
        while True:
            if task is not None and task.cancelling():
                # A cancel that arrived as a subscription's wait timed out can come back as
                # that timeout (asyncio.timeout in Python 3.11): stop all the same.
                raise asyncio.CancelledError
            try:
                symbols = await open_symbols(self.database)
                if symbols:
                    await self.watch(symbols, REFRESH_SECONDS)
                else:
                    await asyncio.sleep(REFRESH_SECONDS)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a failed round must not end the watcher
                logger.warning("resting_order_watch_failed", error=repr(exc))
                await asyncio.sleep(REFRESH_SECONDS)

    async def watch(self, symbols: Sequence[str], seconds: float) -> None:
        """Match `symbols` on each of their ticks for `seconds`."""
        loop = asyncio.get_running_loop()
        until = loop.time() + seconds
        topics = [f"tickers:{symbol}" for symbol in symbols]
        try:
            async with self.events.subscribe(*topics) as subscription:
                while (left := until - loop.time()) > 0:
                    event = await subscription.get(timeout=left)
                    if event is None:
                        break
                    symbol = event.topic.removeprefix("tickers:")
                    await match_symbol(
                        self.database, self.events, self.settings, self.provider(), symbol
                    )
        except SubscriptionClosed:  # fell behind: the next round subscribes afresh
            logger.info("resting_order_watch_resubscribes")
