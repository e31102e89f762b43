"""The fill model shared by backtests and paper trading (pure: no I/O).

Paper trading calls these functions with exact `Decimal` values; the backtest engine compiles the
very same functions with numba and calls them with float64. The arithmetic therefore uses only
`int` constants (never float literals), so both paths compute the same fills.

Fees. A fill pays `max(abs(notional) * fee_rate + fixed_fee, min_fee)`, where `notional` is the
fill's quantity times its price. Market orders (and stop exits) pay the taker rate; resting limit
orders may pay the maker rate (`FillModel.taker_fee_rate` / `maker_fee_rate`).

Slippage. A buy fills `slippage_bps` basis points above the reference price and a sell the same
amount below it: `price * (10000 + side * slippage_bps) / 10000`. The trader always loses.

Stop-loss and take-profit inside one bar. A bar only says open, high, low and close, not the
path in between, so `exit_price_in_bar` decides with an explicit rule:

- Gaps first. If the bar *opens* at or beyond a level, that level was jumped over while the
  market was closed: the exit fills at the open. For a stop this is worse than the stop level,
  for a target better than the target level. The stop is examined before the target.
- Otherwise a level is touched when the bar's range reaches it (long: `low <= stop`,
  `high >= target`; short: `high >= stop`, `low <= target`) and fills at the level itself.
- When both levels are touched inside the bar, `IntrabarRule` decides which came first:
  - `worst` (the default): the one worse for the trader, i.e. the stop-loss;
  - `best`: the take-profit;
  - `nearest_to_open`: the level closer to the bar's open was hit first; a tie goes to the
    stop-loss (the cautious choice).

A level given as NaN (float `nan` or `Decimal("NaN")`) means "no such level". When no level is
hit the result is `(nan, EXIT_NONE)`: callers must look at the reason code, not the price.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum
from typing import TypeVar

Num = TypeVar("Num", Decimal, float)

BUY = 1
SELL = -1

# Why a position was closed: shared codes of the engine and paper trading.
EXIT_NONE = 0
EXIT_SIGNAL = 1
EXIT_STOP_LOSS = 2
EXIT_TAKE_PROFIT = 3
EXIT_TRAILING_STOP = 4
EXIT_REVERSE = 5
EXIT_END_OF_DATA = 6

EXIT_REASONS = (
    "none",
    "signal",
    "stop_loss",
    "take_profit",
    "trailing_stop",
    "reverse",
    "end_of_data",
)


class IntrabarRule(StrEnum):
    """Which of stop-loss / take-profit is taken when one bar's range touches both."""

    WORST = "worst"
    BEST = "best"
    NEAREST_TO_OPEN = "nearest_to_open"

    @property
    def code(self) -> int:
        """The integer the numba engine and `exit_price_in_bar` understand."""
        return _RULE_CODES[self]


RULE_WORST = 0
RULE_BEST = 1
RULE_NEAREST_TO_OPEN = 2
_RULE_CODES = {
    IntrabarRule.WORST: RULE_WORST,
    IntrabarRule.BEST: RULE_BEST,
    IntrabarRule.NEAREST_TO_OPEN: RULE_NEAREST_TO_OPEN,
}


def slipped_price(price: Num, side: int, slippage_bps: Num) -> Num:
    """The price a `side` (+1 buy, -1 sell) order fills at after slippage."""
    return price * (10000 + side * slippage_bps) / 10000


def fill_fee(notional: Num, fee_rate: Num, fixed_fee: Num, min_fee: Num) -> Num:
    """The fee of one fill: a rate on the notional plus a fixed fee, never below `min_fee`."""
    fee = abs(notional) * fee_rate + fixed_fee
    if fee < min_fee:
        return min_fee
    return fee


def _no_level(level: Num) -> bool:
    # NaN is the only value unequal to itself, for float and Decimal alike (and, unlike `<`,
    # `!=` does not raise on a Decimal NaN).
    return bool(level != level)


def exit_price_in_bar(
    side: int,
    open_: Num,
    high: Num,
    low: Num,
    stop: Num,
    target: Num,
    rule_code: int,
) -> tuple[Num | float, int]:
    """Where a position of `side` (+1 long, -1 short) exits inside one bar, and why.

    Returns `(price, EXIT_STOP_LOSS | EXIT_TAKE_PROFIT)`, or `(nan, EXIT_NONE)` when neither
    level is reached. The price is before slippage.
    """
    # Written out rather than calling `_no_level`, so numba can compile this function alone.
    has_stop = stop == stop
    has_target = target == target
    if side > 0:
        if has_stop and open_ <= stop:
            return open_, EXIT_STOP_LOSS
        if has_target and open_ >= target:
            return open_, EXIT_TAKE_PROFIT
        stop_hit = has_stop and low <= stop
        target_hit = has_target and high >= target
    else:
        if has_stop and open_ >= stop:
            return open_, EXIT_STOP_LOSS
        if has_target and open_ <= target:
            return open_, EXIT_TAKE_PROFIT
        stop_hit = has_stop and high >= stop
        target_hit = has_target and low <= target
    if stop_hit and target_hit:
        if rule_code == RULE_BEST:
            return target, EXIT_TAKE_PROFIT
        if rule_code == RULE_NEAREST_TO_OPEN and abs(target - open_) < abs(open_ - stop):
            return target, EXIT_TAKE_PROFIT
        return stop, EXIT_STOP_LOSS
    if stop_hit:
        return stop, EXIT_STOP_LOSS
    if target_hit:
        return target, EXIT_TAKE_PROFIT
    return math.nan, EXIT_NONE


@dataclass(frozen=True)
class FillModel:
    """Fees, slippage and the intrabar rule of one trading account or backtest.

    Rates are fractions of the notional (0.001 = 0.1 %); fees are in the quote currency.
    """

    taker_fee_rate: Decimal = Decimal(0)
    maker_fee_rate: Decimal = Decimal(0)
    fixed_fee: Decimal = Decimal(0)
    min_fee: Decimal = Decimal(0)
    slippage_bps: Decimal = Decimal(0)
    intrabar_rule: IntrabarRule = IntrabarRule.WORST

    def __post_init__(self) -> None:
        for name in ("taker_fee_rate", "maker_fee_rate", "fixed_fee", "min_fee", "slippage_bps"):
            value = getattr(self, name)
            if _no_level(value) or value < 0:
                raise ValueError(f"{name} must be a non-negative number, got {value}")
        object.__setattr__(self, "intrabar_rule", IntrabarRule(self.intrabar_rule))

    def fill_price(self, price: Decimal, side: int) -> Decimal:
        """The price a market order of `side` fills at, given the reference `price`."""
        return slipped_price(price, side, self.slippage_bps)

    def fee(self, notional: Decimal, *, maker: bool = False) -> Decimal:
        """The fee of one fill of `notional` (taker unless `maker`)."""
        rate = self.maker_fee_rate if maker else self.taker_fee_rate
        return fill_fee(notional, rate, self.fixed_fee, self.min_fee)

    def exit_in_bar(
        self, side: int, open_: Decimal, high: Decimal, low: Decimal, stop: Decimal, target: Decimal
    ) -> tuple[Decimal | float, int]:
        """`exit_price_in_bar` with this model's intrabar rule."""
        return exit_price_in_bar(side, open_, high, low, stop, target, self.intrabar_rule.code)
