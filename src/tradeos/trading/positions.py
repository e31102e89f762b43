"""Positions, fills and round trips (pure: no I/O).

A position is a signed quantity per (account, instrument): positive long, negative short. It is
changed only by `apply(position, fill)`, which returns the new position, the PnL the fill
realized and the quantity it closed.

Average cost. The position keeps `cost`, the exact signed cost of its open quantity (what the
open quantity was bought for, or minus what it was sold short for); the average entry price is
`cost / quantity`.

- A fill on the position's side (or on a flat position) adds its notional to the cost: the
  average moves to the quantity-weighted average of the entries.
- A fill against the position closes `min(fill quantity, |position|)`. The closed share of the
  cost is released (`cost × closed / |quantity|`, rounded to 18 decimal places when it does not
  divide exactly; the whole cost when the position closes) and the realized PnL is
  `sign × closed × fill price − released cost`, i.e. `(fill price − average) × closed × sign`.
  The rounding residue of a partial close stays in the cost and is realized by the last close,
  so nothing is ever lost: cash + position value = start + realized + unrealized − fees, exactly.
- A fill larger than the position crosses through zero: it closes the old position and opens the
  remainder on the other side at the fill price (the new average is the fill price).

Fees are not folded into the average price: a position counts them apart in `fees_paid`, and its
realized PnL is gross (`net = realized_pnl − fees_paid`). So the average entry price is the price
the market gave, and fees show as what they are.

Unrealized PnL at a mark price is `quantity × mark − cost`; the market value `quantity × mark`.

Fill ids. Every fill carries a unique `fill_id`. `apply_fill_once(state, fill)` applies a fill at
most once, remembering the ids it has applied in the state. The trading service, which does not
keep every id of a position in memory, guarantees the same with a unique constraint on the fills
table's fill id, inserting the fill in the same transaction that updates the position.

Round trips. `round_trips(fills)` cuts a sequence of fills into closed trades with the same
average-cost accounting as the position (so the trades' PnL adds up to the positions' realized
PnL): a trade opens when a position leaves zero and closes when it comes back to zero (or crosses
it: the crossing fill closes one trade and opens the next, its fee shared in proportion of the
quantities). A trade's entry price is the average of its opening fills, its exit price the
average of its closing fills, its quantity the total opened; its return is its net PnL over its
entry notional.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal, localcontext
from enum import StrEnum
from typing import Final

from tradeos.trading.errors import InvalidFill
from tradeos.trading.orders import (
    ARITHMETIC,
    ZERO,
    OrderSide,
    in_trading_context,
    round_fee,
    round_to_storage,
)

RETURN_QUANTUM: Final = Decimal("1e-8")


@dataclass(frozen=True)
class Fill:
    """One execution of an order, as booked: `quantity` > 0, `side` gives its direction."""

    fill_id: str
    symbol: str
    side: OrderSide
    quantity: Decimal
    price: Decimal
    time: datetime
    fee: Decimal = ZERO
    strategy: str | None = None  # the strategy that placed the order, if any

    @property
    def signed_quantity(self) -> Decimal:
        # copy_negate is exact: unary minus would round to the current context's precision.
        return self.quantity if self.side is OrderSide.BUY else self.quantity.copy_negate()

    @property
    def notional(self) -> Decimal:
        with localcontext(ARITHMETIC):
            return self.quantity * self.price


@dataclass(frozen=True)
class Position:
    symbol: str
    quantity: Decimal = ZERO  # signed: positive long, negative short
    cost: Decimal = ZERO  # signed cost of the open quantity (negative for a short)
    realized_pnl: Decimal = ZERO  # gross of fees
    fees_paid: Decimal = ZERO

    @property
    def is_flat(self) -> bool:
        return self.quantity == 0

    @property
    def average_price(self) -> Decimal:
        """The average entry price of the open quantity (0 when flat), to 18 decimal places."""
        if self.is_flat:
            return ZERO
        with localcontext(ARITHMETIC):
            return round_to_storage(self.cost / self.quantity)


def _sign(value: Decimal) -> int:
    return (value > 0) - (value < 0)


@in_trading_context
def apply(position: Position, fill: Fill) -> tuple[Position, Decimal, Decimal]:
    """`(new position, realized PnL of this fill, quantity it closed)`."""
    if fill.symbol != position.symbol:
        raise InvalidFill(f"a {fill.symbol} fill cannot apply to the {position.symbol} position")
    if not fill.quantity > 0 or not fill.price > 0 or fill.fee < 0:
        raise InvalidFill("a fill has a positive quantity and price and a non-negative fee")
    fees_paid = position.fees_paid + fill.fee
    change = fill.signed_quantity
    if position.is_flat or _sign(change) == _sign(position.quantity):
        grown = replace(
            position,
            quantity=position.quantity + change,
            cost=position.cost + change * fill.price,
            fees_paid=fees_paid,
        )
        return grown, ZERO, ZERO
    held = abs(position.quantity)
    closed = min(fill.quantity, held)
    # The closed share of the cost; all of it when the position closes, so no residue is left.
    released = position.cost if closed == held else round_to_storage(position.cost * closed / held)
    realized = _sign(position.quantity) * closed * fill.price - released
    opened = fill.quantity - closed  # beyond zero: a new position at the fill price
    reduced = replace(
        position,
        quantity=position.quantity + change,
        cost=position.cost - released + _sign(change) * opened * fill.price,
        realized_pnl=position.realized_pnl + realized,
        fees_paid=fees_paid,
    )
    return reduced, realized, closed


@in_trading_context
def unrealized_pnl(position: Position, mark: Decimal) -> Decimal:
    return position.quantity * mark - position.cost


@in_trading_context
def market_value(position: Position, mark: Decimal) -> Decimal:
    """Signed: a short's market value is negative."""
    return position.quantity * mark


@dataclass(frozen=True)
class PositionState:
    """A position and the ids of the fills applied to it."""

    position: Position
    applied_fill_ids: frozenset[str] = field(default_factory=frozenset)


@dataclass(frozen=True)
class FillEffect:
    realized_pnl: Decimal
    closed_quantity: Decimal
    applied: bool  # False: the fill id had been applied before, nothing changed


def apply_fill_once(state: PositionState, fill: Fill) -> tuple[PositionState, FillEffect]:
    """`apply`, unless this fill id was applied already: then the state is returned as is."""
    if fill.fill_id in state.applied_fill_ids:
        return state, FillEffect(ZERO, ZERO, applied=False)
    position, realized, closed = apply(state.position, fill)
    new_state = PositionState(position, state.applied_fill_ids | {fill.fill_id})
    return new_state, FillEffect(realized, closed, applied=True)


# --------------------------------------------------------------------------- round trips


class Direction(StrEnum):
    LONG = "long"
    SHORT = "short"


@dataclass(frozen=True)
class Trade:
    """One closed round trip, flat to flat."""

    symbol: str
    direction: Direction
    quantity: Decimal  # total quantity opened
    entry_price: Decimal  # average of the opening fills
    exit_price: Decimal  # average of the closing fills
    pnl: Decimal  # realized, gross of fees
    fees: Decimal
    opened_at: datetime
    closed_at: datetime
    strategy: str | None

    @property
    def net_pnl(self) -> Decimal:
        with localcontext(ARITHMETIC):
            return self.pnl - self.fees

    @property
    def return_pct(self) -> Decimal:
        """Net PnL as a percentage of the entry notional, to 8 decimal places."""
        with localcontext(ARITHMETIC):
            entry = self.quantity * self.entry_price
            return (self.net_pnl * 100 / entry).quantize(RETURN_QUANTUM, rounding=ROUND_HALF_UP)

    @property
    def duration(self) -> timedelta:
        return self.closed_at - self.opened_at


@dataclass
class _OpenTrade:
    """The trade being built for one symbol (internal, mutable while scanning)."""

    direction: Direction
    opened_at: datetime
    strategy: str | None
    entered: Decimal = ZERO
    entry_notional: Decimal = ZERO
    exited: Decimal = ZERO
    exit_notional: Decimal = ZERO
    pnl: Decimal = ZERO
    fees: Decimal = ZERO

    def close(self, symbol: str, closed_at: datetime) -> Trade:
        return Trade(
            symbol=symbol,
            direction=self.direction,
            quantity=self.entered,
            entry_price=round_to_storage(self.entry_notional / self.entered),
            exit_price=round_to_storage(self.exit_notional / self.exited),
            pnl=self.pnl,
            fees=self.fees,
            opened_at=self.opened_at,
            closed_at=closed_at,
            strategy=self.strategy,
        )


@in_trading_context
def round_trips(fills: Iterable[Fill]) -> list[Trade]:
    """The closed trades of `fills` (in booking order, any number of symbols), in the order
    they closed. A trade still open at the end is not included."""
    positions: dict[str, Position] = {}
    open_trades: dict[str, _OpenTrade] = {}
    trades: list[Trade] = []
    for fill in fills:
        before = positions.get(fill.symbol, Position(fill.symbol))
        after, realized, closed = apply(before, fill)
        positions[fill.symbol] = after
        trade = open_trades.get(fill.symbol)
        opened = fill.quantity - closed
        closing_fee = ZERO
        if trade is not None and closed > 0:
            closing_fee = fill.fee if opened == 0 else round_fee(fill.fee * closed / fill.quantity)
            trade.exited += closed
            trade.exit_notional += closed * fill.price
            trade.pnl += realized
            trade.fees += closing_fee
            if after.is_flat or _sign(after.quantity) != _sign(before.quantity):
                trades.append(trade.close(fill.symbol, fill.time))
                del open_trades[fill.symbol]
                trade = None
        if opened > 0:
            if trade is None:
                direction = Direction.LONG if fill.side is OrderSide.BUY else Direction.SHORT
                trade = open_trades[fill.symbol] = _OpenTrade(direction, fill.time, fill.strategy)
            trade.entered += opened
            trade.entry_notional += opened * fill.price
            trade.fees += fill.fee - closing_fee
    return trades
