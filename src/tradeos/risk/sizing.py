"""Position sizing and portfolio risk (pure: no I/O).

Sizing. `position_size` answers "how much can I buy (or sell short) if I accept to lose
`risk_percent` of my equity when the stop-loss is hit?": the quantity is the risk budget
(`equity × risk_percent / 100`) over the risk per unit (`|entry − stop|`), rounded *down* to
the quantity step, so the money at risk never exceeds the budget. With a tick size, the entry
and the stop are first rounded to the tick away from each other (where their orders can really
sit), which only widens the risk per unit. A budget smaller than one step gives a quantity of 0.
Refused (`SizingError`): entry == stop, and any input that is not positive (`risk_percent` is in
(0, 100]).

Portfolio risk. `Holding`s are signed quantities valued at a price:

- exposure per symbol and per asset class: the long and short market values, gross and net;
- concentration: the largest symbol's gross exposure over the portfolio's gross exposure;
- gross leverage `Σ|value| / equity` and net leverage `Σ value / equity`;
- `historical_var`: the 1-day historical value at risk. Today's holdings are replayed over every
  day of the given daily close series (all of the same length, aligned on the same dates,
  oldest first): the portfolio's PnL on day t is `Σ value_i × (close_i[t] / close_i[t−1] − 1)`.
  The VaR is the loss at the (1 − confidence) percentile of those PnLs (numpy's `percentile`
  with its default linear interpolation between order statistics), floored at 0, rounded to
  cents. The statistics run in float64; the result is a `Decimal`;
- `drawdown`: the current and the maximum drawdown of an equity series, as amounts below the
  running peak and as percentages of it.

Sharpe, Sortino and the other return statistics belong to the backtest metrics.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import ROUND_CEILING, ROUND_FLOOR, ROUND_HALF_UP, Decimal
from typing import Final

import numpy as np
from numpy.typing import NDArray

from tradeos.market.providers.base import AssetClass
from tradeos.trading.orders import ZERO, floor_to_step, in_trading_context, round_to_tick

CENT: Final = Decimal("0.01")
RATIO_QUANTUM: Final = Decimal("1e-8")


class SizingError(ValueError):
    """Inputs a size or a risk figure cannot be computed from."""


@dataclass(frozen=True)
class SizeResult:
    quantity: Decimal
    money_at_risk: Decimal  # quantity × risk per unit: never above the budget
    risk_per_unit: Decimal


def _require_positive(**values: Decimal) -> None:
    for name, value in values.items():
        if not value.is_finite() or value <= 0:
            raise SizingError(f"{name} must be a positive number, got {value}")


@in_trading_context
def position_size(
    equity: Decimal,
    risk_percent: Decimal,
    entry: Decimal,
    stop: Decimal,
    quantity_step: Decimal,
    tick_size: Decimal | None = None,
) -> SizeResult:
    """The quantity that loses `risk_percent` of `equity` at most when `stop` is hit."""
    _require_positive(
        equity=equity,
        risk_percent=risk_percent,
        entry=entry,
        stop=stop,
        quantity_step=quantity_step,
    )
    if risk_percent > 100:
        raise SizingError(f"risk_percent is at most 100, got {risk_percent}")
    if entry == stop:
        raise SizingError("the stop must differ from the entry: the risk per unit would be 0")
    if tick_size is not None:
        _require_positive(tick_size=tick_size)
        long = entry > stop
        entry = round_to_tick(entry, tick_size, ROUND_CEILING if long else ROUND_FLOOR)
        stop = round_to_tick(stop, tick_size, ROUND_FLOOR if long else ROUND_CEILING)
        if stop <= 0:
            raise SizingError("the stop rounds to 0 at this tick size")
    risk_per_unit = abs(entry - stop)
    budget = equity * risk_percent / 100
    quantity = floor_to_step(budget / risk_per_unit, quantity_step)
    return SizeResult(quantity, quantity * risk_per_unit, risk_per_unit)


# --------------------------------------------------------------------------- portfolio


@dataclass(frozen=True)
class Holding:
    symbol: str
    asset_class: AssetClass
    quantity: Decimal  # signed
    price: Decimal  # the mark

    @property
    @in_trading_context
    def value(self) -> Decimal:
        return self.quantity * self.price


@dataclass(frozen=True)
class Exposure:
    long: Decimal = ZERO  # market value of the longs (>= 0)
    short: Decimal = ZERO  # market value of the shorts, as a positive amount

    @property
    @in_trading_context
    def gross(self) -> Decimal:
        return self.long + self.short

    @property
    @in_trading_context
    def net(self) -> Decimal:
        return self.long - self.short

    @in_trading_context
    def plus(self, value: Decimal) -> Exposure:
        if value >= 0:
            return Exposure(self.long + value, self.short)
        return Exposure(self.long, self.short - value)


def exposure_by_symbol(holdings: Sequence[Holding]) -> dict[str, Exposure]:
    exposures: dict[str, Exposure] = {}
    for holding in holdings:
        exposures[holding.symbol] = exposures.get(holding.symbol, Exposure()).plus(holding.value)
    return exposures


def exposure_by_asset_class(holdings: Sequence[Holding]) -> dict[AssetClass, Exposure]:
    exposures: dict[AssetClass, Exposure] = {}
    for holding in holdings:
        current = exposures.get(holding.asset_class, Exposure())
        exposures[holding.asset_class] = current.plus(holding.value)
    return exposures


@in_trading_context
def total_exposure(holdings: Sequence[Holding]) -> Exposure:
    total = Exposure()
    for holding in holdings:
        total = total.plus(holding.value)
    return total


@in_trading_context
def concentration(holdings: Sequence[Holding]) -> Decimal:
    """The largest symbol's share of the gross exposure (0 to 1, to 8 places; 0 when empty)."""
    per_symbol = exposure_by_symbol(holdings)
    gross = sum((exposure.gross for exposure in per_symbol.values()), ZERO)
    if gross == 0:
        return ZERO
    largest = max(exposure.gross for exposure in per_symbol.values())
    return (largest / gross).quantize(RATIO_QUANTUM, rounding=ROUND_HALF_UP)


@in_trading_context
def gross_leverage(holdings: Sequence[Holding], equity: Decimal) -> Decimal:
    _require_positive(equity=equity)
    return (total_exposure(holdings).gross / equity).quantize(RATIO_QUANTUM, ROUND_HALF_UP)


@in_trading_context
def net_leverage(holdings: Sequence[Holding], equity: Decimal) -> Decimal:
    _require_positive(equity=equity)
    return (total_exposure(holdings).net / equity).quantize(RATIO_QUANTUM, ROUND_HALF_UP)


def historical_var(
    holdings: Sequence[Holding],
    closes: Mapping[str, Sequence[Decimal]],
    confidence: float = 0.95,
) -> Decimal:
    """The 1-day historical VaR of `holdings` (a positive loss, in cents; 0 when the worst
    tail is still a gain)."""
    if not 0 < confidence < 1:
        raise SizingError(f"confidence is between 0 and 1, got {confidence}")
    if not holdings:
        return ZERO.quantize(CENT)
    lengths = {len(closes.get(holding.symbol, ())) for holding in holdings}
    if len(lengths) > 1:
        raise SizingError("the close series must have the same length (the same dates)")
    values = np.array([float(holding.value) for holding in holdings], dtype=np.float64)
    returns = np.vstack([_daily_returns(holding.symbol, closes) for holding in holdings])
    pnl: NDArray[np.float64] = values @ returns  # the portfolio's PnL on each historical day
    tail = float(np.percentile(pnl, (1.0 - confidence) * 100.0))
    loss = max(-tail, 0.0)
    return Decimal(repr(loss)).quantize(CENT, rounding=ROUND_HALF_UP)


def _daily_returns(symbol: str, closes: Mapping[str, Sequence[Decimal]]) -> NDArray[np.float64]:
    series = closes.get(symbol)
    if series is None:
        raise SizingError(f"no close series for {symbol}")
    prices = np.array([float(close) for close in series], dtype=np.float64)
    if len(prices) < 2 or not np.all(prices > 0):
        raise SizingError(f"{symbol}: at least two positive closes are needed")
    returns: NDArray[np.float64] = prices[1:] / prices[:-1] - 1.0
    return returns


@dataclass(frozen=True)
class Drawdown:
    current: Decimal  # amount below the running peak at the last point
    current_pct: Decimal  # that, as a percentage of the peak
    maximum: Decimal  # the largest amount below a running peak
    maximum_pct: Decimal  # the largest percentage below a running peak


@in_trading_context
def drawdown(equity: Sequence[Decimal]) -> Drawdown:
    """The current and maximum drawdowns of an equity series (oldest first). Percentages are
    of the running peak, to 8 places; a non-positive peak has no percentage (0)."""
    if not equity:
        raise SizingError("an equity series needs at least one point")
    peak = equity[0]
    current = current_pct = maximum = maximum_pct = ZERO
    for point in equity:
        peak = max(peak, point)
        current = peak - point
        current_pct = ZERO
        if peak > 0:
            current_pct = (current * 100 / peak).quantize(RATIO_QUANTUM, ROUND_HALF_UP)
        maximum = max(maximum, current)
        maximum_pct = max(maximum_pct, current_pct)
    return Drawdown(current, current_pct, maximum, maximum_pct)
