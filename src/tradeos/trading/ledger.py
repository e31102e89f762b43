"""An account's cash balance and its reservations (pure: no I/O).

A `Balance` is `(total, reserved)`; `available = total − reserved`. Every operation returns a
new balance and refuses, rather than breaks, the invariants:

    total == reserved + available,   reserved >= 0,   available >= 0

Nothing can spend `available` twice: the service applies these operations to the balance row
under a row lock, and an operation that would make `available` negative raises
`InsufficientFunds(needed, available)` instead.

Reservations. Accepting an order reserves the most it may cost, so that its fill is already
paid for when it comes:

    reservation = opening quantity × reference price × (1 + slippage_bps / 10000) + fee

where the reference price is the limit price of a limit or stop-limit order, the stop price of
a stop order and the ask (buy) or bid (sell) of a market order; the fee is the fill model's fee
on that amount at the higher of its taker and maker rates; the sum is rounded up to 8 places.

The opening quantity is the part of the order that grows the position: a sell that closes a
long needs no cash (its proceeds pay its fee), and a buy that covers a short is paid from the
short's collateral (below), so the part of an order that reduces the position reserves nothing.

Each fill releases its share of the order's reservation (`reservation_release`: in proportion
of the quantity, rounded down to 8 places; the last fill releases the rest), and a canceled or
expired order releases what is left.

Settling a fill applies its cash: a buy pays `−(quantity × price + fee)`, a sell receives
`quantity × price − fee`. A fill may cost more than its reservation (a stop that gapped, a
market order that moved); the difference comes out of `available`. If `available` cannot cover
it, `settle` raises `InsufficientFunds` and the engine cancels the order instead of filling it.

Short sales (a paper cash account). Shorting needs the account's permission (`allow_short`):
`order_reservation` raises `ShortSaleNotAllowed` for a sell that would open or grow a short
otherwise. A short's margin is reserved like a buy's cost: the sell order reserves its notional
(the same formula as a buy), and once it fills the short keeps `short_collateral` reserved for
as long as it is open: its sale proceeds plus a margin of `SHORT_MARGIN_RATE` (100 %) of its
entry notional, i.e. twice the short's entry notional. Proceeds cannot be spent, and every short
ties up as much of the trader's own cash as a purchase of the same size would. Buying back
releases the covered share of the collateral; a short that has lost more than its margin needs
the difference from `available` (or the engine cannot fill the cover, as above).
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_CEILING, ROUND_DOWN, Decimal
from typing import Final

from tradeos.trading.errors import InsufficientFunds, LedgerError, ShortSaleNotAllowed
from tradeos.trading.fill_model import FillModel, fill_fee
from tradeos.trading.orders import ZERO, OrderSide, in_trading_context
from tradeos.trading.positions import Position

MONEY_QUANTUM: Final = Decimal("1e-8")
SHORT_MARGIN_RATE: Final = Decimal(1)


def _check_amount(name: str, amount: Decimal) -> None:
    if not amount.is_finite() or amount < 0:
        raise LedgerError(f"{name} must be a non-negative amount, got {amount}")


@dataclass(frozen=True)
class Balance:
    total: Decimal
    reserved: Decimal = ZERO

    def __post_init__(self) -> None:
        if not self.total.is_finite() or not self.reserved.is_finite():
            raise LedgerError("a balance holds finite amounts")
        if self.reserved < 0:
            raise LedgerError(f"reserved cannot be negative, got {self.reserved}")
        if self.reserved > self.total:
            raise LedgerError(f"reserved {self.reserved} exceeds the total {self.total}")

    @property
    @in_trading_context
    def available(self) -> Decimal:
        return self.total - self.reserved

    @in_trading_context
    def reserve(self, amount: Decimal) -> Balance:
        """Set `amount` aside for an order (or a short's collateral)."""
        _check_amount("a reservation", amount)
        if amount > self.available:
            raise InsufficientFunds(amount, self.available)
        return Balance(self.total, self.reserved + amount)

    @in_trading_context
    def release(self, amount: Decimal) -> Balance:
        """Give back `amount` of what is reserved (a canceled order's reservation)."""
        _check_amount("a release", amount)
        if amount > self.reserved:
            raise LedgerError(f"cannot release {amount}: only {self.reserved} is reserved")
        return Balance(self.total, self.reserved - amount)

    @in_trading_context
    def settle(self, released: Decimal, cash_delta: Decimal, *, reserve: Decimal = ZERO) -> Balance:
        """Book a fill: release `released` of the reservations, apply `cash_delta` to the total,
        and reserve `reserve` more (a short's collateral), as one step."""
        _check_amount("a release", released)
        _check_amount("a reservation", reserve)
        if released > self.reserved:
            raise LedgerError(f"cannot release {released}: only {self.reserved} is reserved")
        total = self.total + cash_delta
        reserved = self.reserved - released + reserve
        if total - reserved < 0:
            raise InsufficientFunds(reserve - released - cash_delta, self.available)
        return Balance(total, reserved)

    @in_trading_context
    def deposit(self, amount: Decimal) -> Balance:
        _check_amount("a deposit", amount)
        return Balance(self.total + amount, self.reserved)

    @in_trading_context
    def withdraw(self, amount: Decimal) -> Balance:
        _check_amount("a withdrawal", amount)
        if amount > self.available:
            raise InsufficientFunds(amount, self.available)
        return Balance(self.total - amount, self.reserved)


@in_trading_context
def opening_quantity(side: OrderSide, quantity: Decimal, position_quantity: Decimal) -> Decimal:
    """The part of an order of `quantity` that grows |position| (the rest reduces it)."""
    against = max(-side.sign * position_quantity, ZERO)  # what the order can close first
    return max(quantity - against, ZERO)


@in_trading_context
def order_reservation(
    side: OrderSide,
    quantity: Decimal,
    reference_price: Decimal,
    fill_model: FillModel,
    *,
    position_quantity: Decimal = ZERO,
    allow_short: bool = False,
) -> Decimal:
    """What accepting the order reserves (see the module's doc)."""
    opening = opening_quantity(side, quantity, position_quantity)
    if opening == 0:
        return ZERO
    if side is OrderSide.SELL and not allow_short:
        raise ShortSaleNotAllowed(opening)
    notional = opening * reference_price * (10000 + fill_model.slippage_bps) / 10000
    rate = max(fill_model.taker_fee_rate, fill_model.maker_fee_rate)
    fee = fill_fee(notional, rate, fill_model.fixed_fee, fill_model.min_fee)
    return (notional + fee).quantize(MONEY_QUANTUM, rounding=ROUND_CEILING)


@in_trading_context
def reservation_release(
    order_reserved: Decimal, remaining_quantity: Decimal, fill_quantity: Decimal
) -> Decimal:
    """The share of an order's still-reserved `order_reserved` that a fill of `fill_quantity`
    (out of `remaining_quantity`) releases; the last fill releases everything."""
    if not 0 < fill_quantity <= remaining_quantity:
        raise LedgerError(f"a fill of {fill_quantity} out of {remaining_quantity} remaining")
    if fill_quantity == remaining_quantity:
        return order_reserved
    share = order_reserved * fill_quantity / remaining_quantity
    return share.quantize(MONEY_QUANTUM, rounding=ROUND_DOWN)


@in_trading_context
def fill_cash_delta(side: OrderSide, quantity: Decimal, price: Decimal, fee: Decimal) -> Decimal:
    """The cash a fill moves: a buy pays notional and fee, a sell receives notional less fee."""
    return -side.sign * quantity * price - fee


@in_trading_context
def short_collateral(position: Position) -> Decimal:
    """What an open short keeps reserved: its proceeds plus the margin (0 for a long)."""
    if position.quantity >= 0:
        return ZERO
    return -position.cost * (1 + SHORT_MARGIN_RATE)


@in_trading_context
def settle_fill(
    balance: Balance,
    *,
    released: Decimal,
    side: OrderSide,
    quantity: Decimal,
    price: Decimal,
    fee: Decimal,
    collateral_before: Decimal = ZERO,
    collateral_after: Decimal = ZERO,
) -> Balance:
    """Book one fill: release the order's share `released`, apply the fill's cash, and move the
    short collateral of the position from `collateral_before` to `collateral_after`."""
    change = collateral_after - collateral_before
    return balance.settle(
        released + max(-change, ZERO),
        fill_cash_delta(side, quantity, price, fee),
        reserve=max(change, ZERO),
    )
