"""Orders: their model, their state machine, request validation and matching (pure: no I/O).

Everything money or quantity is an exact `Decimal`, computed in `ARITHMETIC`, a context of 38
significant digits: quantities and prices are stored as NUMERIC(38,18), and the default context
of 28 digits would silently round a product of two such values.

Statuses. An order moves only along this table; anything else raises `InvalidTransition`:

    new              -> accepted | rejected | canceled
    accepted         -> partially_filled | filled | canceled | expired
    partially_filled -> partially_filled | filled | canceled | expired
    filled, canceled, rejected, expired: terminal

`rejected` means "never accepted" (validation, risk rules, funds): it is reachable from `new`
only. A `new` order can also be canceled before it is accepted (a trader canceling an order not
yet acknowledged, a bracket child whose sibling filled first).

Once accepted, an order ends by filling, by cancellation (the trader, the rest of an IOC,
an unfillable FOK, the other leg of a bracket, or the engine when a fill would cost more than the
account holds) or by expiry (a day order at the end of its UTC day). `partially_filled ->
partially_filled` is another partial fill. The open statuses, those that can still fill, are
`accepted` and `partially_filled`.

Requests. `validate_order` checks a request against its instrument and returns a `new` order, or
raises `OrderInvalid` naming every refused field (the API answers 422 with them):

- `quantity` > 0 and a multiple of the instrument's quantity step. A market order may give
  `notional` (an amount of the quote currency) instead: it becomes the largest quantity, in whole
  steps, that the notional buys at the reference price (rounded down); one that buys less than
  one step is refused.
- `limit_price` is required by limit and stop-limit orders and refused on the others;
  `stop_price` is required by stop and stop-limit orders and refused on the others. Both are
  > 0 and multiples of the tick size.
- `time_in_force` IOC and FOK are for market and limit orders only: a stop order waits for its
  trigger, which contradicts "immediately".
- Bracket prices (`stop_loss`, `take_profit`) are > 0, multiples of the tick, and on the correct
  side of every price the entry can fill at (the limit, the stop, both for a stop-limit, the
  reference price for a market order): a buy needs stop_loss < entry < take_profit, a sell
  take_profit < entry < stop_loss.

Matching. `match(order, update, …)` decides what one market update does to one open order. An
update is a `Tick` (bid/ask now) or a `Bar` (what traded since the previous update):

- Market orders are takers: a buy fills at the ask, a sell at the bid (on a bar: the open).
- A stop order triggers when the market reaches its stop (buy: ask >= stop, sell: bid <= stop;
  on a bar: the range reaches it) and then fills as a market order: on a tick at the ask/bid, on
  a bar at the stop level, or at the open when the bar opened beyond it (a gap).
- A stop-limit triggers the same way and then becomes a limit order at the trigger price: it
  fills at once (taker) if the trigger price is within its limit, and rests otherwise until the
  next update (the path inside a bar after the trigger is unknown).
- A limit order arriving (or any IOC/FOK) fills at once as a taker when marketable (buy: ask <=
  limit), at the slipped ask but never beyond its limit. A resting limit order is a maker: it
  fills at its limit price when the market touches it (buy: ask <= limit or, on a bar, low <=
  limit); on a bar that opens beyond the limit it fills at the open (the fill model's gap rule, so
  paper trading on bars agrees with the backtests).
- Taker prices are slipped by the shared fill model; maker prices are not. Every fill price is
  rounded to the instrument's tick in the direction worse for the trader (buys up, sells down).
  Fees come from the fill model (taker or maker rate) and are kept exact to 8 decimal places
  (ROUND_HALF_UP), whatever the quote currency.
- The paper engine fills the whole remaining quantity. With a `liquidity` cap (quantity available
  in this update) it fills at most that, in whole quantity steps: FOK fills everything or nothing
  and is canceled otherwise; IOC fills what it can and its remainder is canceled; GTC and day
  orders keep their remainder open.
- Day orders expire at the end of the UTC day they were created on (`expires_at`).

Brackets. A parent order may carry stop-loss and take-profit prices. When the parent stops
filling with a filled quantity, `bracket_children` gives the two children (opposite side, the
filled quantity, GTC): a stop order at the stop-loss and a limit order at the take-profit. They
are one-cancels-other: `oco_after_fill` cancels a child's sibling once the child is filled, and
shrinks it to the still-open quantity after a partial fill. When one bar reaches both levels,
`match_bracket` lets the fill model's intrabar rule pick the one that filled.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from decimal import (
    ROUND_CEILING,
    ROUND_FLOOR,
    ROUND_HALF_EVEN,
    ROUND_HALF_UP,
    Context,
    Decimal,
    DivisionByZero,
    InvalidOperation,
    Overflow,
    localcontext,
)
from enum import StrEnum
from typing import Final, ParamSpec, TypeVar

from tradeos.market.providers.base import Bar, InstrumentSpec, Tick
from tradeos.trading.errors import (
    FieldError,
    InvalidFill,
    InvalidTransition,
    OrderInvalid,
    OrderNotOpen,
)
from tradeos.trading.fill_model import EXIT_STOP_LOSS, EXIT_TAKE_PROFIT, FillModel

# --------------------------------------------------------------------------- exact arithmetic

# 38 digits: what NUMERIC(38,18) holds. Divisions (average prices, shares) are rounded
# explicitly where they happen; nothing else needs rounding at this precision.
ARITHMETIC: Final = Context(
    prec=38, rounding=ROUND_HALF_EVEN, traps=[InvalidOperation, DivisionByZero, Overflow]
)
# The storage scale: average prices and shares of a cost are rounded to it.
STORAGE_QUANTUM: Final = Decimal("1e-18")
FEE_QUANTUM: Final = Decimal("1e-8")
ZERO: Final = Decimal(0)

_P = ParamSpec("_P")
_R = TypeVar("_R")


def in_trading_context(function: Callable[_P, _R]) -> Callable[_P, _R]:
    """Run `function` with `ARITHMETIC` as the current decimal context."""

    @functools.wraps(function)
    def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        with localcontext(ARITHMETIC):
            return function(*args, **kwargs)

    return wrapper


@in_trading_context
def is_multiple(value: Decimal, step: Decimal) -> bool:
    """Whether `value` is a whole number of `step`s."""
    try:
        return value % step == 0
    except InvalidOperation:  # more than 38 digits of steps: far beyond any stored value
        return False


@in_trading_context
def floor_to_step(value: Decimal, step: Decimal) -> Decimal:
    """The largest whole number of `step`s not above `value`."""
    return (value / step).to_integral_value(rounding=ROUND_FLOOR) * step


@in_trading_context
def round_to_tick(price: Decimal, tick: Decimal, rounding: str) -> Decimal:
    return (price / tick).to_integral_value(rounding=rounding) * tick


def round_fee(fee: Decimal) -> Decimal:
    """Fees are kept exact to 8 decimal places, half up."""
    return fee.quantize(FEE_QUANTUM, rounding=ROUND_HALF_UP, context=ARITHMETIC)


def round_to_storage(value: Decimal) -> Decimal:
    return value.quantize(STORAGE_QUANTUM, rounding=ROUND_HALF_EVEN, context=ARITHMETIC)


# --------------------------------------------------------------------------- the model


class OrderSide(StrEnum):
    BUY = "buy"
    SELL = "sell"

    @property
    def sign(self) -> int:
        """+1 for a buy, -1 for a sell: the sign of the position change."""
        return 1 if self is OrderSide.BUY else -1

    @property
    def opposite(self) -> OrderSide:
        return OrderSide.SELL if self is OrderSide.BUY else OrderSide.BUY


class OrderType(StrEnum):
    MARKET = "market"
    LIMIT = "limit"
    STOP = "stop"
    STOP_LIMIT = "stop_limit"


class TimeInForce(StrEnum):
    GTC = "gtc"
    DAY = "day"
    IOC = "ioc"
    FOK = "fok"


class OrderStatus(StrEnum):
    NEW = "new"
    ACCEPTED = "accepted"
    PARTIALLY_FILLED = "partially_filled"
    FILLED = "filled"
    CANCELED = "canceled"
    REJECTED = "rejected"
    EXPIRED = "expired"


class Liquidity(StrEnum):
    """Whether a fill took liquidity (market, stop, marketable limit) or made it (resting
    limit): it picks the fee rate and whether slippage applies."""

    MAKER = "maker"
    TAKER = "taker"


TRANSITIONS: Final[Mapping[OrderStatus, frozenset[OrderStatus]]] = {
    OrderStatus.NEW: frozenset({OrderStatus.ACCEPTED, OrderStatus.REJECTED, OrderStatus.CANCELED}),
    OrderStatus.ACCEPTED: frozenset(
        {
            OrderStatus.PARTIALLY_FILLED,
            OrderStatus.FILLED,
            OrderStatus.CANCELED,
            OrderStatus.EXPIRED,
        }
    ),
    OrderStatus.PARTIALLY_FILLED: frozenset(
        {
            OrderStatus.PARTIALLY_FILLED,
            OrderStatus.FILLED,
            OrderStatus.CANCELED,
            OrderStatus.EXPIRED,
        }
    ),
    OrderStatus.FILLED: frozenset(),
    OrderStatus.CANCELED: frozenset(),
    OrderStatus.REJECTED: frozenset(),
    OrderStatus.EXPIRED: frozenset(),
}
OPEN_STATUSES: Final = frozenset({OrderStatus.ACCEPTED, OrderStatus.PARTIALLY_FILLED})
TERMINAL_STATUSES: Final = frozenset(status for status, nexts in TRANSITIONS.items() if not nexts)
IMMEDIATE: Final = frozenset({TimeInForce.IOC, TimeInForce.FOK})


def can_transition(current: OrderStatus, target: OrderStatus) -> bool:
    return target in TRANSITIONS[current]


def transition(current: OrderStatus, target: OrderStatus) -> OrderStatus:
    """`target`, if the table allows moving there from `current`; `InvalidTransition` if not."""
    if not can_transition(current, target):
        raise InvalidTransition(current, target)
    return target


@dataclass(frozen=True)
class Order:
    """An order as the engine sees it. `quantity` is the whole order, `filled_quantity` what
    has filled so far; `triggered` says a stop (limit) order has reached its stop price."""

    side: OrderSide
    type: OrderType
    quantity: Decimal
    time_in_force: TimeInForce = TimeInForce.GTC
    limit_price: Decimal | None = None
    stop_price: Decimal | None = None
    status: OrderStatus = OrderStatus.NEW
    filled_quantity: Decimal = ZERO
    triggered: bool = False
    stop_loss: Decimal | None = None  # bracket: the stop-loss child's price
    take_profit: Decimal | None = None  # bracket: the take-profit child's price

    @property
    def remaining_quantity(self) -> Decimal:
        with localcontext(ARITHMETIC):
            return self.quantity - self.filled_quantity

    @property
    def is_open(self) -> bool:
        return self.status in OPEN_STATUSES

    def moved_to(self, status: OrderStatus) -> Order:
        """This order in `status`, through the transition table."""
        return replace(self, status=transition(self.status, status))


def accept(order: Order) -> Order:
    return order.moved_to(OrderStatus.ACCEPTED)


def reject(order: Order) -> Order:
    return order.moved_to(OrderStatus.REJECTED)


def cancel(order: Order) -> Order:
    return order.moved_to(OrderStatus.CANCELED)


@in_trading_context
def record_fill(order: Order, quantity: Decimal) -> Order:
    """The order after `quantity` more has filled: filled once nothing remains, partially
    filled otherwise."""
    if not order.is_open:
        raise OrderNotOpen(f"a {order.status} order cannot fill")
    if quantity <= 0:
        raise InvalidFill(f"a fill quantity must be positive, got {quantity}")
    if quantity > order.remaining_quantity:
        raise InvalidFill(f"a fill of {quantity} exceeds the remaining {order.remaining_quantity}")
    filled = order.filled_quantity + quantity
    status = OrderStatus.FILLED if filled == order.quantity else OrderStatus.PARTIALLY_FILLED
    return replace(order, filled_quantity=filled, status=transition(order.status, status))


def expires_at(created_at: datetime) -> datetime:
    """When a day order created at `created_at` expires: the next 00:00 UTC."""
    if created_at.tzinfo is None or created_at.utcoffset() is None:
        raise ValueError("naive datetime refused: order times are timezone-aware UTC")
    day = created_at.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return day + timedelta(days=1)


def expire_if_due(order: Order, created_at: datetime, now: datetime) -> Order:
    """The order expired if it is an open day order whose UTC day has ended at `now`;
    otherwise unchanged."""
    if order.time_in_force is TimeInForce.DAY and order.is_open and now >= expires_at(created_at):
        return order.moved_to(OrderStatus.EXPIRED)
    return order


# --------------------------------------------------------------------------- requests


@dataclass(frozen=True)
class OrderRequest:
    """What a trader asks for, before validation."""

    side: OrderSide
    type: OrderType
    quantity: Decimal | None = None
    notional: Decimal | None = None  # market orders only: an amount of the quote currency
    limit_price: Decimal | None = None
    stop_price: Decimal | None = None
    time_in_force: TimeInForce = TimeInForce.GTC
    stop_loss: Decimal | None = None
    take_profit: Decimal | None = None


_NEEDS_LIMIT: Final = frozenset({OrderType.LIMIT, OrderType.STOP_LIMIT})
_NEEDS_STOP: Final = frozenset({OrderType.STOP, OrderType.STOP_LIMIT})


def order_errors(
    request: OrderRequest, instrument: InstrumentSpec, reference_price: Decimal | None = None
) -> list[FieldError]:
    """Every rule `request` breaks, as field errors (empty when it is valid).

    `reference_price` is the price a market order is expected to fill at (the ask for a buy,
    the bid for a sell): needed to turn a notional into a quantity and to check a market order's
    bracket prices.
    """
    errors: list[FieldError] = []
    errors += _price_errors(request, instrument)
    quantity_errors, _ = _resolve_quantity(request, instrument, reference_price)
    errors += quantity_errors
    if request.time_in_force in IMMEDIATE and request.type not in (
        OrderType.MARKET,
        OrderType.LIMIT,
    ):
        errors.append(
            FieldError(
                "time_in_force",
                f"{request.time_in_force.upper()} is for market and limit orders only",
            )
        )
    if not errors:  # the entry prices are sound: the bracket can be checked against them
        errors += _bracket_errors(request, instrument, reference_price)
    return errors


def validate_order(
    request: OrderRequest, instrument: InstrumentSpec, reference_price: Decimal | None = None
) -> Order:
    """The `new` order `request` describes, or `OrderInvalid` naming every refused field."""
    errors = order_errors(request, instrument, reference_price)
    if errors:
        raise OrderInvalid(tuple(errors))
    _, quantity = _resolve_quantity(request, instrument, reference_price)
    assert quantity is not None  # no errors: the quantity resolved
    return Order(
        side=request.side,
        type=request.type,
        quantity=quantity,
        time_in_force=request.time_in_force,
        limit_price=request.limit_price,
        stop_price=request.stop_price,
        stop_loss=request.stop_loss,
        take_profit=request.take_profit,
    )


def _positive_error(field: str, value: Decimal) -> FieldError | None:
    if not value.is_finite():
        return FieldError(field, "must be a finite number")
    if value <= 0:
        return FieldError(field, "must be greater than 0")
    return None


def _price_error(field: str, value: Decimal, instrument: InstrumentSpec) -> FieldError | None:
    error = _positive_error(field, value)
    if error is None and not is_multiple(value, instrument.tick_size):
        error = FieldError(field, f"must be a multiple of the tick size {instrument.tick_size}")
    return error


def _price_errors(request: OrderRequest, instrument: InstrumentSpec) -> list[FieldError]:
    errors: list[FieldError] = []
    for field, value, needed in (
        ("limit_price", request.limit_price, request.type in _NEEDS_LIMIT),
        ("stop_price", request.stop_price, request.type in _NEEDS_STOP),
    ):
        if value is None and needed:
            errors.append(FieldError(field, f"a {request.type} order needs a {field}"))
        elif value is not None and not needed:
            errors.append(FieldError(field, f"a {request.type} order takes no {field}"))
        elif value is not None:
            error = _price_error(field, value, instrument)
            if error is not None:
                errors.append(error)
    return errors


@in_trading_context
def _resolve_quantity(
    request: OrderRequest, instrument: InstrumentSpec, reference_price: Decimal | None
) -> tuple[list[FieldError], Decimal | None]:
    """The field errors of the quantity / notional, and the quantity when there are none."""
    step = instrument.quantity_step
    if request.quantity is not None and request.notional is not None:
        return [FieldError("notional", "give either a quantity or a notional, not both")], None
    if request.notional is not None:
        if request.type is not OrderType.MARKET:
            return [FieldError("notional", "only market orders may give a notional")], None
        error = _positive_error("notional", request.notional)
        if error is not None:
            return [error], None
        price = _required_reference(reference_price, "a notional")
        quantity = floor_to_step(request.notional / price, step)
        if quantity <= 0:
            message = f"buys less than one quantity step ({step}) at {price}"
            return [FieldError("notional", message)], None
        return [], quantity
    if request.quantity is None:
        return [FieldError("quantity", "give a quantity (or a notional, for a market order)")], None
    error = _positive_error("quantity", request.quantity)
    if error is None and not is_multiple(request.quantity, step):
        error = FieldError("quantity", f"must be a multiple of the quantity step {step}")
    return ([error], None) if error is not None else ([], request.quantity)


def _required_reference(reference_price: Decimal | None, purpose: str) -> Decimal:
    # The service always has a quote for a market order; a missing one is a programming error.
    if reference_price is None or not reference_price.is_finite() or reference_price <= 0:
        raise ValueError(f"a market order with {purpose} needs a positive reference price")
    return reference_price


def entry_prices(request: OrderRequest, reference_price: Decimal | None) -> tuple[Decimal, ...]:
    """Every price the request's entry is expected to fill around."""
    prices = tuple(p for p in (request.limit_price, request.stop_price) if p is not None)
    if request.type is OrderType.MARKET:
        prices = (_required_reference(reference_price, "bracket prices"),)
    return prices


def _bracket_errors(
    request: OrderRequest, instrument: InstrumentSpec, reference_price: Decimal | None
) -> list[FieldError]:
    if request.stop_loss is None and request.take_profit is None:
        return []
    errors: list[FieldError] = []
    for field, value in (("stop_loss", request.stop_loss), ("take_profit", request.take_profit)):
        error = None if value is None else _price_error(field, value, instrument)
        if error is not None:
            errors.append(error)
    if errors:
        return errors
    entries = entry_prices(request, reference_price)
    low, high = min(entries), max(entries)
    buy = request.side is OrderSide.BUY
    # A buy's protective stop sits below every entry price and its target above; a sell's the
    # other way round.
    below = "stop_loss" if buy else "take_profit"
    above = "take_profit" if buy else "stop_loss"
    below_price = request.stop_loss if buy else request.take_profit
    above_price = request.take_profit if buy else request.stop_loss
    if below_price is not None and not below_price < low:
        errors.append(
            FieldError(below, f"must be below the entry price {low} for a {request.side}")
        )
    if above_price is not None and not above_price > high:
        errors.append(
            FieldError(above, f"must be above the entry price {high} for a {request.side}")
        )
    return errors


# --------------------------------------------------------------------------- matching


@dataclass(frozen=True)
class Execution:
    """One fill decided by the engine: the service gives it a fill id and books it."""

    quantity: Decimal
    price: Decimal
    fee: Decimal
    liquidity: Liquidity

    @property
    def notional(self) -> Decimal:
        with localcontext(ARITHMETIC):
            return self.quantity * self.price


@dataclass(frozen=True)
class Match:
    """An order after one market update, and what filled (None: nothing)."""

    order: Order
    execution: Execution | None = None


MarketUpdate = Tick | Bar


@in_trading_context
def match(
    order: Order,
    update: MarketUpdate,
    instrument: InstrumentSpec,
    fill_model: FillModel,
    *,
    on_arrival: bool = False,
    liquidity: Decimal | None = None,
) -> Match:
    """What `update` does to the open `order` (see the module's doc for the rules).

    `on_arrival` marks the order's first match, when it is submitted: a marketable limit order
    then takes liquidity instead of resting. IOC and FOK orders always match as arriving.
    `liquidity` caps the quantity that can fill in this update (None: no cap).
    """
    if not order.is_open:
        raise OrderNotOpen(f"a {order.status} order cannot be matched")
    immediate = on_arrival or order.time_in_force in IMMEDIATE
    order, touch = _touch(order, update, immediate)
    if touch is None:
        return Match(_unfilled(order))
    reference, kind = touch
    price = _fill_price(order, reference, kind, instrument, fill_model)
    quantity = _fill_quantity(order, instrument, liquidity)
    if quantity is None:  # FOK without enough liquidity: all or nothing
        return Match(cancel(order))
    if quantity == 0:
        return Match(_unfilled(order))
    fee = round_fee(fill_model.fee(quantity * price, maker=kind is Liquidity.MAKER))
    filled = record_fill(order, quantity)
    if filled.time_in_force is TimeInForce.IOC and filled.is_open:
        filled = cancel(filled)  # IOC: what could not fill now never will
    return Match(filled, Execution(quantity, price, fee, kind))


def _unfilled(order: Order) -> Order:
    # An IOC or FOK order that does not fill on arrival never will; others keep waiting.
    return cancel(order) if order.time_in_force in IMMEDIATE else order


_Touch = tuple[Decimal, Liquidity]


def _touch(order: Order, update: MarketUpdate, immediate: bool) -> tuple[Order, _Touch | None]:
    """The order (triggered, if its stop was reached) and the reference price and liquidity
    of a fill in this update, or None when it does not fill."""
    if order.type is OrderType.MARKET or (order.type is OrderType.STOP and order.triggered):
        return order, (_market_price(order.side, update), Liquidity.TAKER)
    if order.type is OrderType.LIMIT or order.triggered:  # a triggered stop-limit is a limit
        return order, _limit_touch(order, update, immediate)
    trigger = _stop_trigger(order, update)
    if trigger is None:
        return order, None
    order = replace(order, triggered=True)
    if order.type is OrderType.STOP:
        return order, (trigger, Liquidity.TAKER)
    # A stop-limit becomes a limit order arriving at the trigger price.
    return order, _marketable(order, trigger)


def _market_price(side: OrderSide, update: MarketUpdate) -> Decimal:
    if isinstance(update, Bar):
        return update.open
    return update.ask if side is OrderSide.BUY else update.bid


def _marketable(order: Order, price: Decimal) -> _Touch | None:
    limit = _limit(order)
    within = price <= limit if order.side is OrderSide.BUY else price >= limit
    return (price, Liquidity.TAKER) if within else None


def _limit_touch(order: Order, update: MarketUpdate, immediate: bool) -> _Touch | None:
    if immediate:  # the order arrives now: marketable against the current price, or not at all
        return _marketable(order, _market_price(order.side, update))
    limit = _limit(order)
    buy = order.side is OrderSide.BUY
    if isinstance(update, Tick):
        touched = update.ask <= limit if buy else update.bid >= limit
        return (limit, Liquidity.MAKER) if touched else None
    if (update.open <= limit) if buy else (update.open >= limit):
        return update.open, Liquidity.MAKER  # the bar opened beyond the limit: a gap
    if (update.low <= limit) if buy else (update.high >= limit):
        return limit, Liquidity.MAKER
    return None


def _stop_trigger(order: Order, update: MarketUpdate) -> Decimal | None:
    """The price at which the market reached the order's stop in this update, if it did."""
    stop = order.stop_price
    assert stop is not None  # validated: stop orders carry a stop price
    buy = order.side is OrderSide.BUY
    if isinstance(update, Tick):
        price = update.ask if buy else update.bid
        return price if (price >= stop if buy else price <= stop) else None
    if (update.open >= stop) if buy else (update.open <= stop):
        return update.open  # gapped through the stop
    if (update.high >= stop) if buy else (update.low <= stop):
        return stop
    return None


def _limit(order: Order) -> Decimal:
    assert order.limit_price is not None  # validated: limit orders carry a limit price
    return order.limit_price


def _fill_price(
    order: Order,
    reference: Decimal,
    kind: Liquidity,
    instrument: InstrumentSpec,
    fill_model: FillModel,
) -> Decimal:
    buy = order.side is OrderSide.BUY
    price = (
        fill_model.fill_price(reference, order.side.sign) if kind is Liquidity.TAKER else reference
    )
    # Off-tick prices round against the trader: a buy pays the next tick up, a sell the next down.
    price = round_to_tick(price, instrument.tick_size, ROUND_CEILING if buy else ROUND_FLOOR)
    price = max(price, instrument.tick_size)  # a sell at the lowest tick still gets a price
    if order.type in _NEEDS_LIMIT:  # slippage never pushes a limit order beyond its limit
        price = min(price, _limit(order)) if buy else max(price, _limit(order))
    return price


def _fill_quantity(
    order: Order, instrument: InstrumentSpec, liquidity: Decimal | None
) -> Decimal | None:
    """How much fills: the remainder, or what the liquidity allows in whole steps; None when a
    FOK order cannot fill completely."""
    remaining = order.remaining_quantity
    if liquidity is None or liquidity >= remaining:
        return remaining
    if order.time_in_force is TimeInForce.FOK:
        return None
    return floor_to_step(max(liquidity, ZERO), instrument.quantity_step)


# --------------------------------------------------------------------------- brackets


@dataclass(frozen=True)
class BracketChildren:
    stop_loss: Order | None
    take_profit: Order | None


def bracket_children(parent: Order) -> BracketChildren:
    """The stop-loss and take-profit orders of a parent that has stopped filling (filled, or
    canceled / expired after a partial fill): opposite side, the parent's filled quantity."""
    if parent.status not in TERMINAL_STATUSES or parent.filled_quantity <= 0:
        raise ValueError("bracket children follow a parent that has filled and stopped filling")
    side = parent.side.opposite
    quantity = parent.filled_quantity
    stop_loss = (
        None
        if parent.stop_loss is None
        else Order(side, OrderType.STOP, quantity, stop_price=parent.stop_loss)
    )
    take_profit = (
        None
        if parent.take_profit is None
        else Order(side, OrderType.LIMIT, quantity, limit_price=parent.take_profit)
    )
    return BracketChildren(stop_loss, take_profit)


@in_trading_context
def oco_after_fill(filled_child: Order, sibling: Order) -> Order:
    """The sibling of a bracket child that has just (partly) filled: canceled once the child is
    filled, else shrunk so that it covers only the position still open."""
    if sibling.status in TERMINAL_STATUSES:
        return sibling
    # What the filled child leaves unprotected: nothing once it is filled.
    still_open = (
        ZERO if filled_child.status is OrderStatus.FILLED else filled_child.remaining_quantity
    )
    if still_open <= 0:
        return cancel(sibling)
    return replace(sibling, quantity=min(sibling.quantity, sibling.filled_quantity + still_open))


@in_trading_context
def match_bracket(
    stop_loss: Order,
    take_profit: Order,
    update: MarketUpdate,
    instrument: InstrumentSpec,
    fill_model: FillModel,
) -> tuple[Match, Match]:
    """Both open children of one bracket after `update`: at most one fills and the other
    follows `oco_after_fill`. On a bar that reaches both levels, the fill model's intrabar rule
    decides which filled."""
    if stop_loss.side is not take_profit.side:
        raise ValueError("the children of one bracket are on the same side")
    stop_first = True
    if isinstance(update, Bar) and not stop_loss.triggered:
        assert stop_loss.stop_price is not None
        position_sign = -stop_loss.side.sign  # sell children protect a long
        _, reason = fill_model.exit_in_bar(
            position_sign,
            update.open,
            update.high,
            update.low,
            stop_loss.stop_price,
            _limit(take_profit),
        )
        if reason not in (EXIT_STOP_LOSS, EXIT_TAKE_PROFIT):
            return Match(stop_loss), Match(take_profit)
        stop_first = reason == EXIT_STOP_LOSS
    first, second = (stop_loss, take_profit) if stop_first else (take_profit, stop_loss)
    first_match = match(first, update, instrument, fill_model)
    if first_match.execution is not None:
        second_match = Match(oco_after_fill(first_match.order, second))
    else:
        second_match = match(second, update, instrument, fill_model)
        if second_match.execution is not None:
            first_match = Match(oco_after_fill(second_match.order, first))
    if stop_first:
        return first_match, second_match
    return second_match, first_match
