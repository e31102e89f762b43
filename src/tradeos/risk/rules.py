"""Pre-trade risk rules and the account's trading state (pure: no I/O).

`check_order(profile, ctx)` runs every rule of a `RiskProfile` against one order in its
`OrderContext` and returns the `RiskViolation`s (empty: the order may go). A violation names the
rule, its limit and the order's value, so the API can answer 422 with all three.

Limits are inclusive maximums, every one of them: a value *at* the limit passes, a value past it
is refused (`value <= limit` passes, `value > limit` refuses). Percentages are compared without
dividing (`amount × 100 <= limit × base`), so "exactly at the limit" is exact; the value a
violation reports is rounded away from zero to 4 places, so a refused value never reads as the
limit itself. Where a percentage needs a positive base (equity) and the base is not positive,
the rule refuses.

Reducing orders. An order that shrinks |position| without crossing zero (the opposite side, at
most the position's size) adds no risk: it passes every rule, and it is the only kind of order a
`reducing` or `halted` account accepts. A risk limit never traps a trader in a position.

The rules, in the order `check_order` runs them (buying power first); each refuses when:

- `buying_power`: the order's cost > available cash. The cost is `order_cost` (what the ledger
  would reserve), by default the opening quantity × the reference price.
- `trading_state`: the account is `reducing` or `halted` and the order is not reducing.
- `allowed_symbols` / `allowed_asset_classes`: a list is set and the order's symbol / asset
  class is not in it.
- `stop_loss_required`: the profile requires a stop-loss and the order has none.
- `max_position_quantity`: |position after the order| > limit.
- `max_position_pct`: |position after| × reference price × 100 > limit × equity.
- `max_leverage`: gross exposure after the order > limit × equity (the instrument's own
  exposure valued at the reference price).
- `max_risk_per_trade_pct` (default 2): |reference price − stop-loss| × opening quantity × 100
  > limit × equity. An order without a stop-loss has no measurable risk and passes this rule:
  `stop_loss_required` makes one compulsory.
- `max_open_positions`: the order opens a position on a flat instrument and open positions + 1
  > limit.
- `max_daily_trades` (default 50): trades today + 1 (this order) > limit.
- `max_daily_loss`: today's loss (realized + unrealized, positive = loss) > limit.
- `max_daily_loss_pct`: today's loss × 100 > limit × equity at the start of the UTC day.

Trading state. An account is `active`, `reducing` or `halted`. Reducing and halted admit the same
orders, reducing ones only (a halt must not trap a trader in a losing position); they differ in
meaning and in who lifts them: `reducing` is a trader winding down, `halted` is "no new risk",
set by the trader, an administrator or the daily loss limit. The user sets the state freely
(`set_state`), except while an automatic halt holds. `state_after_loss` halts the account
automatically when today's loss passes the daily loss limit (same boundary as the rules: at the
limit it keeps trading) and remembers the state it halted from; `state_at_day_start` lifts an
automatic halt at the next UTC day, back to that state. A state the user set stays until the
user changes it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from decimal import ROUND_UP, Decimal
from enum import StrEnum
from typing import Final

from tradeos.market.providers.base import AssetClass
from tradeos.trading.orders import ZERO, OrderSide, in_trading_context

REPORT_QUANTUM: Final = Decimal("1e-4")


class RiskError(Exception):
    """Base of the risk module's domain errors."""


class TradingStateLocked(RiskError):
    """The daily loss limit halted the account; only the next UTC day lifts the halt."""

    def __init__(self) -> None:
        super().__init__(
            "the daily loss limit halted this account: trading resumes at the next UTC day"
        )


class TradingState(StrEnum):
    ACTIVE = "active"
    REDUCING = "reducing"
    HALTED = "halted"


@dataclass(frozen=True)
class TradingStatus:
    """An account's trading state; `resumes_to` is set only by an automatic halt, and is the
    state the account returns to at the next UTC day."""

    state: TradingState = TradingState.ACTIVE
    resumes_to: TradingState | None = None

    @property
    def halted_automatically(self) -> bool:
        return self.resumes_to is not None


@dataclass(frozen=True)
class RiskProfile:
    """An account's risk limits; None switches a rule off. Percentages are of equity."""

    max_position_quantity: Decimal | None = None
    max_position_pct: Decimal | None = None
    max_risk_per_trade_pct: Decimal | None = Decimal(2)
    max_daily_loss: Decimal | None = None
    max_daily_loss_pct: Decimal | None = None
    max_daily_trades: int | None = 50
    max_open_positions: int | None = None
    max_leverage: Decimal | None = None
    allowed_symbols: frozenset[str] | None = None
    allowed_asset_classes: frozenset[AssetClass] | None = None
    stop_loss_required: bool = False

    def __post_init__(self) -> None:
        for spec in fields(self):
            value = getattr(self, spec.name)
            if isinstance(value, Decimal) and (not value.is_finite() or value < 0):
                raise ValueError(f"{spec.name} must be a non-negative number, got {value}")
            if isinstance(value, int) and not isinstance(value, bool) and value < 0:
                raise ValueError(f"{spec.name} must not be negative, got {value}")


@dataclass(frozen=True)
class OrderContext:
    """One order and what the rules need to know of its account."""

    side: OrderSide
    quantity: Decimal
    reference_price: Decimal  # the expected fill price: the ask / bid, or the limit / stop
    symbol: str
    asset_class: AssetClass
    equity: Decimal
    available_cash: Decimal
    stop_loss: Decimal | None = None
    position_quantity: Decimal = ZERO  # signed, in this instrument, before the order
    open_positions: int = 0  # instruments with a non-zero position
    day_loss: Decimal = ZERO  # today's realized + unrealized loss: positive is a loss
    day_start_equity: Decimal | None = None  # equity at 00:00 UTC; None: `equity`
    trades_today: int = 0
    gross_exposure: Decimal = ZERO  # sum of |position value| over the account, before the order
    trading_state: TradingState = TradingState.ACTIVE
    order_cost: Decimal | None = None  # what the order reserves; None: opening notional

    @property
    @in_trading_context
    def position_after(self) -> Decimal:
        return self.position_quantity + self.side.sign * self.quantity

    @property
    @in_trading_context
    def is_reducing(self) -> bool:
        """Shrinks |position| without crossing zero."""
        against = -self.side.sign * self.position_quantity  # > 0: the order faces the position
        return against > 0 and self.quantity <= against

    @property
    @in_trading_context
    def opening_quantity(self) -> Decimal:
        """The part of the order that grows |position|."""
        return max(self.quantity - max(-self.side.sign * self.position_quantity, ZERO), ZERO)


@dataclass(frozen=True)
class RiskViolation:
    rule: str
    limit: Decimal | str
    value: Decimal | str
    message: str


Rule = Callable[[RiskProfile, OrderContext], RiskViolation | None]


def _percent(amount: Decimal, base: Decimal) -> Decimal:
    # Rounded away from zero: a value past the limit never reads as the limit.
    return (amount * 100 / base).quantize(REPORT_QUANTUM, rounding=ROUND_UP)


def _pct_violation(
    rule: str, limit: Decimal, amount: Decimal, base: Decimal, what: str
) -> RiskViolation | None:
    """A violation when `amount` is more than `limit` percent of `base` (refused outright when
    `base` is not positive)."""
    if base <= 0:
        return RiskViolation(rule, limit, "no positive equity", f"{what}: equity is {base}")
    if amount * 100 <= limit * base:
        return None
    value = _percent(amount, base)
    return RiskViolation(rule, limit, value, f"{what} would be {value}% of equity, over {limit}%")


@in_trading_context
def check_buying_power(profile: RiskProfile, ctx: OrderContext) -> RiskViolation | None:
    cost = (
        ctx.order_cost if ctx.order_cost is not None else ctx.opening_quantity * ctx.reference_price
    )
    if cost <= ctx.available_cash:
        return None
    return RiskViolation(
        "buying_power",
        ctx.available_cash,
        cost,
        f"the order needs {cost}, {ctx.available_cash} is available",
    )


def check_trading_state(profile: RiskProfile, ctx: OrderContext) -> RiskViolation | None:
    if ctx.trading_state is TradingState.ACTIVE or ctx.is_reducing:
        return None
    return RiskViolation(
        "trading_state",
        ctx.trading_state.value,
        "not reducing",
        f"the account is {ctx.trading_state}: only orders that reduce a position are accepted",
    )


def check_allowed_symbols(profile: RiskProfile, ctx: OrderContext) -> RiskViolation | None:
    allowed = profile.allowed_symbols
    if allowed is None or ctx.symbol in allowed or ctx.is_reducing:
        return None
    return RiskViolation(
        "allowed_symbols",
        ", ".join(sorted(allowed)),
        ctx.symbol,
        f"{ctx.symbol} is not among the symbols this account may trade",
    )


def check_allowed_asset_classes(profile: RiskProfile, ctx: OrderContext) -> RiskViolation | None:
    allowed = profile.allowed_asset_classes
    if allowed is None or ctx.asset_class in allowed or ctx.is_reducing:
        return None
    return RiskViolation(
        "allowed_asset_classes",
        ", ".join(sorted(allowed)),
        ctx.asset_class.value,
        f"{ctx.asset_class} instruments are not among those this account may trade",
    )


def check_stop_loss_required(profile: RiskProfile, ctx: OrderContext) -> RiskViolation | None:
    if not profile.stop_loss_required or ctx.stop_loss is not None or ctx.is_reducing:
        return None
    return RiskViolation(
        "stop_loss_required", "required", "none", "this account requires a stop-loss on entries"
    )


@in_trading_context
def check_max_position_quantity(profile: RiskProfile, ctx: OrderContext) -> RiskViolation | None:
    limit = profile.max_position_quantity
    size = abs(ctx.position_after)
    if limit is None or ctx.is_reducing or size <= limit:
        return None
    return RiskViolation(
        "max_position_quantity",
        limit,
        size,
        f"the position would be {size}, over the maximum {limit}",
    )


@in_trading_context
def check_max_position_pct(profile: RiskProfile, ctx: OrderContext) -> RiskViolation | None:
    limit = profile.max_position_pct
    if limit is None or ctx.is_reducing:
        return None
    value = abs(ctx.position_after) * ctx.reference_price
    return _pct_violation("max_position_pct", limit, value, ctx.equity, "the position")


@in_trading_context
def check_max_leverage(profile: RiskProfile, ctx: OrderContext) -> RiskViolation | None:
    limit = profile.max_leverage
    if limit is None or ctx.is_reducing:
        return None
    instrument_before = abs(ctx.position_quantity) * ctx.reference_price
    instrument_after = abs(ctx.position_after) * ctx.reference_price
    gross = ctx.gross_exposure - instrument_before + instrument_after
    if ctx.equity <= 0:
        return RiskViolation(
            "max_leverage", limit, "no positive equity", f"leverage: equity is {ctx.equity}"
        )
    if gross <= limit * ctx.equity:
        return None
    value = (gross / ctx.equity).quantize(REPORT_QUANTUM, rounding=ROUND_UP)
    return RiskViolation(
        "max_leverage", limit, value, f"gross leverage would be {value}x, over {limit}x"
    )


@in_trading_context
def check_max_risk_per_trade(profile: RiskProfile, ctx: OrderContext) -> RiskViolation | None:
    limit = profile.max_risk_per_trade_pct
    if limit is None or ctx.stop_loss is None or ctx.is_reducing:
        return None
    at_risk = abs(ctx.reference_price - ctx.stop_loss) * ctx.opening_quantity
    return _pct_violation(
        "max_risk_per_trade_pct", limit, at_risk, ctx.equity, "the money at risk to the stop-loss"
    )


def check_max_open_positions(profile: RiskProfile, ctx: OrderContext) -> RiskViolation | None:
    limit = profile.max_open_positions
    if limit is None or ctx.position_quantity != 0:  # only an order on a flat instrument opens one
        return None
    count = ctx.open_positions + 1
    if count <= limit:
        return None
    return RiskViolation(
        "max_open_positions",
        Decimal(limit),
        Decimal(count),
        f"this would be open position number {count}, over the maximum {limit}",
    )


def check_max_daily_trades(profile: RiskProfile, ctx: OrderContext) -> RiskViolation | None:
    limit = profile.max_daily_trades
    count = ctx.trades_today + 1
    if limit is None or ctx.is_reducing or count <= limit:
        return None
    return RiskViolation(
        "max_daily_trades",
        Decimal(limit),
        Decimal(count),
        f"this would be trade number {count} today, over the maximum {limit}",
    )


def check_max_daily_loss(profile: RiskProfile, ctx: OrderContext) -> RiskViolation | None:
    if ctx.is_reducing:
        return None
    return _daily_loss_amount(profile, ctx.day_loss)


def check_max_daily_loss_pct(profile: RiskProfile, ctx: OrderContext) -> RiskViolation | None:
    if ctx.is_reducing:
        return None
    base = ctx.day_start_equity if ctx.day_start_equity is not None else ctx.equity
    return _daily_loss_pct(profile, ctx.day_loss, base)


def _daily_loss_amount(profile: RiskProfile, day_loss: Decimal) -> RiskViolation | None:
    limit = profile.max_daily_loss
    if limit is None or day_loss <= limit:
        return None
    return RiskViolation(
        "max_daily_loss", limit, day_loss, f"today's loss {day_loss} is over the limit {limit}"
    )


@in_trading_context
def _daily_loss_pct(
    profile: RiskProfile, day_loss: Decimal, equity_at_day_start: Decimal
) -> RiskViolation | None:
    limit = profile.max_daily_loss_pct
    if limit is None or day_loss <= 0:  # no loss today: nothing to measure against the limit
        return None
    return _pct_violation(
        "max_daily_loss_pct", limit, day_loss, equity_at_day_start, "today's loss"
    )


RULES: Final[Sequence[Rule]] = (
    check_buying_power,
    check_trading_state,
    check_allowed_symbols,
    check_allowed_asset_classes,
    check_stop_loss_required,
    check_max_position_quantity,
    check_max_position_pct,
    check_max_leverage,
    check_max_risk_per_trade,
    check_max_open_positions,
    check_max_daily_trades,
    check_max_daily_loss,
    check_max_daily_loss_pct,
)


@in_trading_context
def check_order(profile: RiskProfile, ctx: OrderContext) -> list[RiskViolation]:
    """Every violation of `ctx`'s order against `profile`, buying power first."""
    return [violation for rule in RULES if (violation := rule(profile, ctx)) is not None]


# --------------------------------------------------------------------------- trading state


def daily_loss_breaches(
    profile: RiskProfile, day_loss: Decimal, equity_at_day_start: Decimal
) -> list[RiskViolation]:
    """The daily loss limits (amount, percentage) that `day_loss` is past."""
    found = (
        _daily_loss_amount(profile, day_loss),
        _daily_loss_pct(profile, day_loss, equity_at_day_start),
    )
    return [violation for violation in found if violation is not None]


def state_after_loss(
    profile: RiskProfile, status: TradingStatus, day_loss: Decimal, equity_at_day_start: Decimal
) -> TradingStatus:
    """The status after today's loss moved to `day_loss`: halted automatically once it is past
    a daily loss limit (remembering the state to resume); otherwise unchanged."""
    if status.state is TradingState.HALTED:
        return status
    if daily_loss_breaches(profile, day_loss, equity_at_day_start):
        return TradingStatus(TradingState.HALTED, resumes_to=status.state)
    return status


def state_at_day_start(status: TradingStatus) -> TradingStatus:
    """The status at 00:00 UTC: an automatic halt is lifted, a state the user set stays."""
    if status.resumes_to is not None:
        return TradingStatus(status.resumes_to)
    return status


def set_state(status: TradingStatus, state: TradingState) -> TradingStatus:
    """The user sets the trading state; refused while an automatic halt holds."""
    if status.halted_automatically:
        raise TradingStateLocked
    return TradingStatus(state)
