"""The backtest engine: candle and signal arrays in, trades, equity and metrics out (pure).

The simulation is one numba loop over bars; it fills orders with the fill model shared with
paper trading (`tradeos.trading.fill_model`, compiled here with numba), so a strategy behaves
the same in both. No Python runs per bar or per trade: trades come back as a numpy structured
array, and `BacktestResult.trade_list()` builds Python objects only when asked.

Inputs
  Candles: float64 `open`, `high`, `low`, `close` and int64 `open_time` in epoch **seconds**
  (`datetime64` arrays are converted). One instrument: 1-D arrays (`run_backtest`). Several
  instruments sharing one cash balance: 2-D arrays, instruments × bars, aligned on the same
  open times, NaN where an instrument has no bar (`run_portfolio`).
  Signals (bool, same shape): `entry_long`, `exit_long`, `entry_short`, `exit_short`, computed
  from data up to and including their bar's close.
  Levels (float, same shape, NaN = none), read on the signal bar of an entry and fixed at the
  entry: `stop_loss`, `take_profit`, `trailing_stop`. A value < 1 is a fraction of the entry
  fill price (0.02 = 2 % below a long entry), a value >= 1 a price distance. The trailing stop
  follows the best price since entry (highest high of a long, lowest low of a short): a value
  < 1 is a fraction of that best price, >= 1 a distance from it.
  `size` (float, same shape, NaN = `BacktestConfig.size`): the size of an entry, read on its
  signal bar, in the unit of the sizing mode.

Fill timing (`BacktestConfig.fill_at`)
  `next_open` (default): a signal on bar t fills at the open of the instrument's next bar (the
  next one it has a bar for). The entry happens at that bar's open, so the rest of that bar —
  its high and low — comes after the entry: stops and targets ARE checked against the entry
  bar's range. `close`: a signal fills at its own bar's close; a position entered there is
  first checked against the next bar's range. Stop, target and trailing exits are never
  checked against a bar's range before the entry inside that bar.

Signals
  Flat: `entry_long` opens a long, `entry_short` a short (only with `allow_short`). Long:
  `exit_long` closes it; `entry_short` closes it and opens a short at the same fill
  (stop-and-reverse; the closing trade's exit reason is `reverse`), or, with shorting off, only
  closes it. Short: the mirror image. An entry while already in that direction is ignored (no
  pyramiding). Conflicts are ignored: `entry_long` with `entry_short` on one bar is no entry,
  and an entry with the exit of the same direction on one bar does nothing.

Stops (each bar, for every open position, before that bar's signals fill under `close`
  timing; after the open's fills under `next_open`)
  The effective stop of a long is the higher of its stop-loss and trailing-stop levels (the
  lower, for a short). `exit_price_in_bar` applies the gap rule (a bar opening beyond a level
  fills at the open) and the `IntrabarRule` when stop and target are both inside the bar. The
  trailing level used in a bar comes from the best price of the *previous* bars (and the entry
  price); the bar's own high / low move it only afterwards, because the bar does not tell
  whether its high came before or after its low. A position stopped out inside a bar is flat
  when that bar's signals are read, so under `close` timing an entry signal on the same bar
  opens a new position at its close.

Fills
  Every fill (signal, stop, target, end of data) pays slippage (`slippage_bps`, against the
  trader) and the fee `max(notional * commission + fixed_fee, min_fee)`.

Sizing (`BacktestConfig.sizing`, value `size`), on the fill price after slippage
  `fixed`: `size` units. `percent_equity`: spend up to `size` × equity (1.0 = 100 %), the fee
  included. `percent_cash`: spend up to `size` × free cash, the fee included. `risk`: lose
  `size` × equity if the stop-loss (or, without one, the initial trailing stop) is hit, i.e.
  quantity = risk / stop distance; an entry without any stop is refused in this mode.
  Quantities are rounded down to `quantity_step` (1.0 = whole units, the default; 0 =
  fractional). There is no leverage: an entry never makes the gross exposure (the sum of
  |quantity| × price over all positions) plus its fee exceed equity. An entry that does not fit
  shrinks to what fits, and is refused (skipped) when less than one step fits.

Several instruments, one cash balance
  Equity is the cash plus every position marked at its latest price (a short's proceeds are in
  the cash, its market value is subtracted). Free cash = equity − gross exposure. At each fill
  moment (the bar's open, or its close) all exits fill first, in instrument order (row 0
  first), which frees cash; then all entries, in instrument order, each sized on the equity and
  free cash left after the ones before it. Latest prices are the bar's open at the open and its
  close at the close (an instrument without a bar keeps its previous close).

End of data
  With `close_at_end` (default) every open position is closed at the last bar's close of its
  instrument (exit reason `end_of_data`, slippage and fee paid), and the last equity sample is
  after that. Otherwise open positions stay open, are marked to market in the equity, and are
  not in the trade list. Orders signalled on the last bar never fill.

Results: `BacktestResult`: equity per bar (at its close), drawdown per bar (computed on first
use), whether a position was held during each bar, the trades (a structured array of
`TRADE_DTYPE`: times in epoch seconds, `exit_reason` an index into `EXIT_REASONS`) and the
metrics (see `metrics.py` for their definitions; periods per year come from the bar spacing of
a 24/7 market unless `BacktestConfig.periods_per_year` says otherwise; buy and hold is the mean
of the instruments' first-to-last close returns).

Parameter grids: `run_grid` takes one row of signals per parameter combination (2-D, combinations ×
bars, for one instrument; a 1-D signal is shared by all rows) and runs the combinations in
parallel on all cores (numba `prange`), returning summary metrics per combination (`GRID_COLUMNS`,
same definitions as `metrics.py`); run the chosen ones again with `run_backtest` for their
trades. A grid run takes no stops or per-bar sizes. Rows of signals cost one byte per bar: feed
large grids in chunks of combinations. Run grids in job worker processes, one at a time per
process: depending on numba's threading layer, two threads running parallel code at once abort
the process (workqueue), or a fork after a parallel run can hang (GNU OpenMP, picked here).

Call `warm_up()` once at worker start: compiling (or loading from numba's cache) takes a noticeable
fraction of a second per process, which a request must never pay. It also makes glibc keep freed
large arrays for the next run instead of faulting them in again (`_reuse_freed_memory`).
"""

from __future__ import annotations

import ctypes
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from functools import cached_property
from typing import Any, TypeVar, cast

import numba
import numpy as np
from numpy.typing import ArrayLike, NDArray

from tradeos.backtest.metrics import Metrics, compute_metrics, drawdown_series
from tradeos.trading.fill_model import (
    EXIT_END_OF_DATA,
    EXIT_NONE,
    EXIT_REASONS,
    EXIT_REVERSE,
    EXIT_SIGNAL,
    EXIT_STOP_LOSS,
    EXIT_TRAILING_STOP,
    IntrabarRule,
    exit_price_in_bar,
    fill_fee,
    slipped_price,
)

_F = TypeVar("_F", bound=Callable[..., Any])


def _jit(**options: Any) -> Callable[[_F], _F]:
    """`numba.njit(cache=True)`, typed so mypy keeps checking calls against the Python
    signature."""
    return cast(Callable[[_F], _F], numba.njit(cache=True, **options))


# The shared fill model, compiled for float64.
_slipped_price = _jit()(slipped_price)
_fill_fee = _jit()(fill_fee)
_exit_price_in_bar = _jit()(exit_price_in_bar)

SECONDS_PER_YEAR = 365 * 86400


class FillTiming(StrEnum):
    NEXT_OPEN = "next_open"
    CLOSE = "close"


class Sizing(StrEnum):
    FIXED = "fixed"
    PERCENT_EQUITY = "percent_equity"
    PERCENT_CASH = "percent_cash"
    RISK = "risk"


_SIZING_CODES = {Sizing.FIXED: 0, Sizing.PERCENT_EQUITY: 1, Sizing.PERCENT_CASH: 2, Sizing.RISK: 3}
_SIZE_FIXED, _SIZE_PERCENT_EQUITY, _SIZE_PERCENT_CASH, _SIZE_RISK = 0, 1, 2, 3


@dataclass(frozen=True)
class BacktestConfig:
    """How a backtest fills and sizes orders (see the module docstring)."""

    initial_cash: float = 10_000.0
    commission: float = 0.0  # fraction of the notional, paid on every fill (each side)
    fixed_fee: float = 0.0  # per fill
    min_fee: float = 0.0  # per fill
    slippage_bps: float = 0.0
    fill_at: FillTiming = FillTiming.NEXT_OPEN
    sizing: Sizing = Sizing.PERCENT_EQUITY
    size: float = 1.0
    quantity_step: float = 1.0  # 1 = whole units, 0 = fractional
    allow_short: bool = True
    intrabar_rule: IntrabarRule = IntrabarRule.WORST
    close_at_end: bool = True
    periods_per_year: float | None = None  # None: from the bar spacing, 365-day year

    def __post_init__(self) -> None:
        object.__setattr__(self, "fill_at", FillTiming(self.fill_at))
        object.__setattr__(self, "sizing", Sizing(self.sizing))
        object.__setattr__(self, "intrabar_rule", IntrabarRule(self.intrabar_rule))
        if not self.initial_cash > 0:
            raise ValueError("initial_cash must be positive")
        for name in ("commission", "fixed_fee", "min_fee", "slippage_bps", "quantity_step"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name} must be non-negative")
        if not self.size > 0:
            raise ValueError("size must be positive")
        if self.periods_per_year is not None and not self.periods_per_year > 0:
            raise ValueError("periods_per_year must be positive")

    def _params(self) -> NDArray[np.float64]:
        # One float64 vector keeps the compiled signature short and stable.
        return np.array(
            [
                self.initial_cash,
                self.commission,
                self.fixed_fee,
                self.min_fee,
                self.slippage_bps,
                1.0 if self.fill_at is FillTiming.CLOSE else 0.0,
                _SIZING_CODES[self.sizing],
                self.size,
                self.quantity_step,
                1.0 if self.allow_short else 0.0,
                self.intrabar_rule.code,
                1.0 if self.close_at_end else 0.0,
            ],
            dtype=np.float64,
        )


# Positions of `BacktestConfig._params`.
_P_CASH, _P_RATE, _P_FIXED, _P_MIN, _P_SLIP, _P_ON_CLOSE = 0, 1, 2, 3, 4, 5
_P_SIZING, _P_SIZE, _P_STEP, _P_SHORT, _P_RULE, _P_CLOSE_END = 6, 7, 8, 9, 10, 11

# Columns of the per-instrument position state.
_QTY, _ENTRY_PRICE, _ENTRY_FEE, _ENTRY_BAR, _STOP, _TARGET, _TRAIL, _BEST, _LAST = range(9)
_N_STATE = 9

# Columns of the trade rows the loop writes.
_T_INST, _T_SIDE, _T_ENTRY_BAR, _T_EXIT_BAR, _T_QTY = 0, 1, 2, 3, 4
_T_ENTRY_PRICE, _T_EXIT_PRICE, _T_ENTRY_FEE, _T_EXIT_FEE, _T_REASON = 5, 6, 7, 8, 9
_N_TRADE = 10

# Columns of the per-instrument orders: what is wanted, the levels and size of the signal
# bar, the price a fill would take now, and whether the instrument has the current bar.
_O_ACTION, _O_STOP, _O_TARGET, _O_TRAIL, _O_SIZE, _O_REFERENCE, _O_HAS_BAR = range(7)
_N_ORDER = 7

# What a signal asks of an instrument.
_DO_NOTHING, _DO_CLOSE, _DO_LONG, _DO_SHORT = 0, 1, 2, 3


@_jit()
def _distance(value: float, reference: float) -> float:
    # Below 1: a fraction of the reference price; from 1 on: a price distance.
    return reference * value if value < 1 else value


@_jit()
def _affordable_quantity(
    budget: float, price: float, rate: float, fixed: float, minimum: float
) -> float:
    # The largest quantity whose notional plus fee fits in `budget`.
    quantity = (budget - fixed) / (price + price * rate)
    if quantity * price * rate + fixed < minimum:
        quantity = (budget - minimum) / price
    return max(quantity, 0.0)


@_jit()
def _round_down(quantity: float, step: float) -> float:
    if step > 0:
        return math.floor(quantity / step) * step
    return quantity


@_jit(inline="always")  # inlined: each array argument of a call costs reference counting
def _equity_and_free(state: Any, cash: float) -> tuple[float, float]:
    equity = cash
    short_value = 0.0
    for i in range(state.shape[0]):
        quantity = state[i, _QTY]
        if quantity != 0.0:
            equity += quantity * state[i, _LAST]
            if quantity < 0:
                short_value -= quantity * state[i, _LAST]
    # Free cash = equity - gross exposure; longs are already paid out of the cash.
    return equity, cash - 2.0 * short_value


@_jit(inline="always")  # inlined: each array argument of a call costs reference counting
def _close_position(
    state: Any,
    i: int,
    reference: float,
    bar: int,
    reason: int,
    cash: float,
    trades: Any,
    n_trades: int,
    params: Any,
) -> float:
    quantity: float = state[i, _QTY]
    side = 1 if quantity > 0 else -1
    price: float = _slipped_price(reference, -side, params[_P_SLIP])
    notional = abs(quantity) * price
    fee: float = _fill_fee(notional, params[_P_RATE], params[_P_FIXED], params[_P_MIN])
    row = trades[n_trades]
    row[_T_INST] = i
    row[_T_SIDE] = side
    row[_T_ENTRY_BAR] = state[i, _ENTRY_BAR]
    row[_T_EXIT_BAR] = bar
    row[_T_QTY] = abs(quantity)
    row[_T_ENTRY_PRICE] = state[i, _ENTRY_PRICE]
    row[_T_EXIT_PRICE] = price
    row[_T_ENTRY_FEE] = state[i, _ENTRY_FEE]
    row[_T_EXIT_FEE] = fee
    row[_T_REASON] = reason
    state[i, _QTY] = 0.0
    return cash + side * notional - fee


@_jit(inline="always")  # inlined: each array argument of a call costs reference counting
def _open_position(
    state: Any, orders: Any, params: Any, i: int, side: int, bar: int, cash: float
) -> float:
    """Open a position as `orders[i]` asks, if it can be afforded; returns the cash after."""
    reference = orders[i, _O_REFERENCE]
    price: float = _slipped_price(reference, side, params[_P_SLIP])
    rate, fixed, minimum = params[_P_RATE], params[_P_FIXED], params[_P_MIN]
    stop_value = orders[i, _O_STOP]
    trail_value = orders[i, _O_TRAIL]
    amount: float = orders[i, _O_SIZE]
    if amount != amount:
        amount = params[_P_SIZE]
    equity, free = _equity_and_free(state, cash)
    sizing = int(params[_P_SIZING])
    if sizing == _SIZE_FIXED:
        quantity = amount
    elif sizing == _SIZE_PERCENT_EQUITY:
        quantity = _affordable_quantity(amount * equity, price, rate, fixed, minimum)
    elif sizing == _SIZE_PERCENT_CASH:
        quantity = _affordable_quantity(amount * free, price, rate, fixed, minimum)
    else:
        if stop_value == stop_value:
            risk_per_unit = _distance(stop_value, price)
        elif trail_value == trail_value:
            risk_per_unit = _distance(trail_value, price)
        else:
            return cash  # risk sizing needs a stop
        quantity = amount * equity / risk_per_unit if risk_per_unit > 0 else 0.0
    quantity = min(quantity, _affordable_quantity(free, price, rate, fixed, minimum))
    quantity = _round_down(quantity, params[_P_STEP])
    if not quantity > 0:
        return cash
    notional = quantity * price
    fee: float = _fill_fee(notional, rate, fixed, minimum)
    state[i, _QTY] = side * quantity
    state[i, _ENTRY_PRICE] = price
    state[i, _ENTRY_FEE] = fee
    state[i, _ENTRY_BAR] = bar
    state[i, _BEST] = price
    state[i, _TRAIL] = trail_value
    state[i, _STOP] = math.nan
    state[i, _TARGET] = math.nan
    if stop_value == stop_value:
        state[i, _STOP] = price - side * _distance(stop_value, price)
    target_value = orders[i, _O_TARGET]
    if target_value == target_value:
        state[i, _TARGET] = price + side * _distance(target_value, price)
    return cash - side * notional - fee


@_jit()
def _watching(quantity: float, stop: float, target: float, trail: float) -> bool:
    # An open position with a level to watch in each bar's range.
    return quantity != 0.0 and not (math.isnan(stop) and math.isnan(target) and math.isnan(trail))


@_jit()
def _check_stops(
    state: Any,
    i: int,
    bar: int,
    open_: float,
    high: float,
    low: float,
    cash: float,
    trades: Any,
    n_trades: int,
    params: Any,
) -> tuple[float, int]:
    """Exit on stop-loss, take-profit or trailing stop inside this bar, if one is reached."""
    side = 1 if state[i, _QTY] > 0 else -1
    stop = state[i, _STOP]
    trailing = False
    trail_value = state[i, _TRAIL]
    if trail_value == trail_value:
        best = state[i, _BEST]
        trail_level = best - side * _distance(trail_value, best)
        if stop != stop or side * (trail_level - stop) > 0:
            stop = trail_level
            trailing = True
    price, reason = _exit_price_in_bar(
        side, open_, high, low, stop, state[i, _TARGET], int(params[_P_RULE])
    )
    if reason != EXIT_NONE:
        if reason == EXIT_STOP_LOSS and trailing:
            reason = EXIT_TRAILING_STOP
        cash = _close_position(state, i, price, bar, reason, cash, trades, n_trades, params)
        return cash, n_trades + 1
    # The best price moves only after the bar: the bar does not say whether its high came
    # before or after its low.
    if side > 0:
        state[i, _BEST] = max(state[i, _BEST], high)
    else:
        state[i, _BEST] = min(state[i, _BEST], low)
    return cash, n_trades


@_jit()
def _wanted_action(
    quantity: float,
    entry_long: bool,
    exit_long: bool,
    entry_short: bool,
    exit_short: bool,
    allow_short: bool,
) -> int:
    if entry_long and entry_short:  # contradictory: no entry at all
        entry_long = False
        entry_short = False
    if quantity > 0:
        if entry_short:
            return _DO_SHORT if allow_short else _DO_CLOSE
        if exit_long and not entry_long:
            return _DO_CLOSE
    elif quantity < 0:
        if entry_long:
            return _DO_LONG
        if exit_short and not entry_short:
            return _DO_CLOSE
    else:
        if entry_long and not exit_long:
            return _DO_LONG
        if entry_short and not exit_short and allow_short:
            return _DO_SHORT
    return _DO_NOTHING


@_jit(inline="always")  # inlined: each array argument of a call costs reference counting
def _fill_orders(
    state: Any, orders: Any, trades: Any, params: Any, bar: int, cash: float, n_trades: int
) -> tuple[float, int, bool]:
    """Fill the wanted orders at one moment: every exit first, then every entry. Returns the
    cash, the number of trades and whether a position was opened."""
    n_inst = state.shape[0]
    for i in range(n_inst):
        wanted = orders[i, _O_ACTION]
        if orders[i, _O_HAS_BAR] == 0.0 or wanted == _DO_NOTHING or state[i, _QTY] == 0.0:
            continue
        side = 1 if state[i, _QTY] > 0 else -1
        if wanted == _DO_CLOSE:
            reason = EXIT_SIGNAL
        elif (wanted == _DO_LONG and side < 0) or (wanted == _DO_SHORT and side > 0):
            reason = EXIT_REVERSE
        else:
            continue
        cash = _close_position(
            state, i, orders[i, _O_REFERENCE], bar, reason, cash, trades, n_trades, params
        )
        n_trades += 1
    opened = False
    for i in range(n_inst):
        wanted = orders[i, _O_ACTION]
        if orders[i, _O_HAS_BAR] == 0.0 or state[i, _QTY] != 0.0 or wanted < _DO_LONG:
            continue
        cash = _open_position(state, orders, params, i, 1 if wanted == _DO_LONG else -1, bar, cash)
        opened = opened or state[i, _QTY] != 0.0
    return cash, n_trades, opened


@_jit()
def _count_entries(signals: Any, n_inst: int, n_bars: int) -> int:
    if signals.shape[0] == 1 and signals.shape[1] == 1:
        return n_inst * n_bars if signals[0, 0] else 0
    count = 0
    for i in range(signals.shape[0]):
        for t in range(signals.shape[1]):
            if signals[i, t]:
                count += 1
    return count


@_jit(error_model="numpy")
def _simulate(
    open_: Any,
    high: Any,
    low: Any,
    close: Any,
    entry_long: Any,
    exit_long: Any,
    entry_short: Any,
    exit_short: Any,
    stop_loss: Any,
    take_profit: Any,
    trailing_stop: Any,
    size: Any,
    params: Any,
    equity: Any,
    held: Any,
) -> Any:
    """The bar loop. Fills `equity` and `held` per bar; returns the trade rows."""
    n_inst, n_bars = close.shape
    on_close = params[_P_ON_CLOSE] != 0.0
    allow_short = params[_P_SHORT] != 0.0
    cash = params[_P_CASH]
    state = np.zeros((n_inst, _N_STATE))
    state[:, _LAST] = np.nan
    # Every trade starts with an entry, and entries only follow entry signals. (Sized once:
    # growing an array inside the loop costs reference counting on every bar.)
    trades = np.empty(
        (
            _count_entries(entry_long, n_inst, n_bars)
            + _count_entries(entry_short, n_inst, n_bars),
            _N_TRADE,
        )
    )
    n_trades = 0
    # What each instrument wants filled, with the levels of its signal bar (one array: every
    # array argument of a numba call costs reference counting).
    orders = np.zeros((n_inst, _N_ORDER))
    last_bar = np.full(n_inst, -1, dtype=np.int64)
    pending = False  # some instrument has an order waiting to fill

    resume = 0  # bars before it were handled by the quiet-bar loop
    # Optional inputs arrive as 1×1 arrays meaning "the same for every bar": index them with
    # these multipliers. (Written inline: a numba call with array arguments costs more than
    # the whole rest of a bar.)
    el_i, el_t = int(entry_long.shape[0] > 1), int(entry_long.shape[1] > 1)
    xl_i, xl_t = int(exit_long.shape[0] > 1), int(exit_long.shape[1] > 1)
    es_i, es_t = int(entry_short.shape[0] > 1), int(entry_short.shape[1] > 1)
    xs_i, xs_t = int(exit_short.shape[0] > 1), int(exit_short.shape[1] > 1)
    sl_i, sl_t = int(stop_loss.shape[0] > 1), int(stop_loss.shape[1] > 1)
    tp_i, tp_t = int(take_profit.shape[0] > 1), int(take_profit.shape[1] > 1)
    ts_i, ts_t = int(trailing_stop.shape[0] > 1), int(trailing_stop.shape[1] > 1)
    sz_i, sz_t = int(size.shape[0] > 1), int(size.shape[1] > 1)
    for t in range(n_bars):
        if t < resume:
            continue
        if (
            n_inst == 1
            and not pending
            and not _watching(state[0, _QTY], state[0, _STOP], state[0, _TARGET], state[0, _TRAIL])
        ):
            # Quiet bars (no order waiting, no stop to watch, no signal) only mark equity: a
            # tight loop makes long backtests of one instrument several times faster.
            quantity = state[0, _QTY]
            resume = t
            while (
                resume < n_bars - 1
                and close[0, resume] == close[0, resume]
                and not entry_long[0, resume * el_t]
                and not exit_long[0, resume * xl_t]
                and not entry_short[0, resume * es_t]
                and not exit_short[0, resume * xs_t]
            ):
                held[resume] = quantity != 0.0
                equity[resume] = cash + quantity * close[0, resume]
                resume += 1
            if resume > t:
                state[0, _LAST] = close[0, resume - 1]
                last_bar[0] = resume - 1
                continue
        held[t] = False
        for i in range(n_inst):
            orders[i, _O_HAS_BAR] = 1.0 if close[i, t] == close[i, t] else 0.0
            if state[i, _QTY] != 0.0:
                held[t] = True

        if not on_close:
            # The open: orders signalled on an earlier bar fill, then the bar's range runs.
            for i in range(n_inst):
                if orders[i, _O_HAS_BAR] != 0.0:
                    orders[i, _O_REFERENCE] = open_[i, t]
                    state[i, _LAST] = open_[i, t]
            if pending:
                cash, n_trades, opened = _fill_orders(
                    state, orders, trades, params, t, cash, n_trades
                )
                held[t] = held[t] or opened
                pending = False
                for i in range(n_inst):
                    if orders[i, _O_HAS_BAR] != 0.0:
                        orders[i, _O_ACTION] = _DO_NOTHING
                    elif orders[i, _O_ACTION] != _DO_NOTHING:
                        pending = True  # waits for the instrument's next bar
            for i in range(n_inst):
                if orders[i, _O_HAS_BAR] != 0.0 and _watching(
                    state[i, _QTY], state[i, _STOP], state[i, _TARGET], state[i, _TRAIL]
                ):
                    cash, n_trades = _check_stops(
                            state, i, t, open_[i, t], high[i, t], low[i, t], cash, trades,
                            n_trades, params,
                        )  # fmt: skip
        else:
            for i in range(n_inst):
                if orders[i, _O_HAS_BAR] != 0.0 and _watching(
                    state[i, _QTY], state[i, _STOP], state[i, _TARGET], state[i, _TRAIL]
                ):
                    cash, n_trades = _check_stops(
                        state, i, t, open_[i, t], high[i, t], low[i, t], cash, trades, n_trades,
                        params,
                    )  # fmt: skip

        for i in range(n_inst):
            if orders[i, _O_HAS_BAR] != 0.0:
                state[i, _LAST] = close[i, t]
                orders[i, _O_REFERENCE] = close[i, t]
                last_bar[i] = t
                wanted = _wanted_action(
                    state[i, _QTY],
                    entry_long[i * el_i, t * el_t],
                    exit_long[i * xl_i, t * xl_t],
                    entry_short[i * es_i, t * es_t],
                    exit_short[i * xs_i, t * xs_t],
                    allow_short,
                )
                orders[i, _O_ACTION] = wanted
                if wanted != _DO_NOTHING:
                    pending = True
                if wanted >= _DO_LONG:  # an entry: the levels of its signal bar
                    orders[i, _O_STOP] = stop_loss[i * sl_i, t * sl_t]
                    orders[i, _O_TARGET] = take_profit[i * tp_i, t * tp_t]
                    orders[i, _O_TRAIL] = trailing_stop[i * ts_i, t * ts_t]
                    orders[i, _O_SIZE] = size[i * sz_i, t * sz_t]
        if on_close and pending:
            cash, n_trades, opened = _fill_orders(state, orders, trades, params, t, cash, n_trades)
            held[t] = held[t] or opened
            orders[:, _O_ACTION] = _DO_NOTHING
            pending = False

        if t == n_bars - 1 and params[_P_CLOSE_END] != 0.0:
            for i in range(n_inst):
                if state[i, _QTY] != 0.0:
                    cash = _close_position(
                        state, i, state[i, _LAST], last_bar[i], EXIT_END_OF_DATA, cash, trades,
                        n_trades, params,
                    )  # fmt: skip
                    n_trades += 1
        value = cash
        for i in range(n_inst):
            if state[i, _QTY] != 0.0:
                value += state[i, _QTY] * state[i, _LAST]
        equity[t] = value
    return trades[:n_trades].copy()


TRADE_DTYPE = np.dtype(
    [
        ("instrument", np.int64),
        ("side", np.int8),
        ("entry_bar", np.int64),
        ("exit_bar", np.int64),
        ("entry_time", np.int64),
        ("exit_time", np.int64),
        ("entry_price", np.float64),
        ("exit_price", np.float64),
        ("quantity", np.float64),
        ("fees", np.float64),
        ("pnl", np.float64),
        ("return", np.float64),
        ("exit_reason", np.int8),
    ]
)


@dataclass(frozen=True)
class Trade:
    """One closed trade, as a Python object (see `BacktestResult.trade_list`)."""

    instrument: int
    side: str  # "long" | "short"
    entry_time: datetime
    exit_time: datetime
    entry_price: float
    exit_price: float
    quantity: float
    fees: float
    pnl: float
    return_: float  # pnl over the entry notional
    exit_reason: str


@dataclass(frozen=True)
class BacktestResult:
    """What a backtest produced. `trades` is a structured array of `TRADE_DTYPE` (times in epoch
    seconds, `exit_reason` an index into `EXIT_REASONS`); `equity` and `drawdown` have one value
    per bar, at its close; `held[t]` says whether a position was open at some point of bar t."""

    open_time: NDArray[np.int64]
    equity: NDArray[np.float64]
    held: NDArray[np.bool_]
    trades: NDArray[Any]
    metrics: Metrics
    initial_cash: float

    @property
    def final_equity(self) -> float:
        return float(self.equity[-1])

    @cached_property
    def drawdown(self) -> NDArray[np.float64]:
        """`equity / running peak - 1` per bar (computed on first use)."""
        return drawdown_series(self.equity, self.initial_cash)

    def trade_list(self) -> list[Trade]:
        return [
            Trade(
                instrument=int(row["instrument"]),
                side="long" if row["side"] > 0 else "short",
                entry_time=datetime.fromtimestamp(int(row["entry_time"]), UTC),
                exit_time=datetime.fromtimestamp(int(row["exit_time"]), UTC),
                entry_price=float(row["entry_price"]),
                exit_price=float(row["exit_price"]),
                quantity=float(row["quantity"]),
                fees=float(row["fees"]),
                pnl=float(row["pnl"]),
                return_=float(row["return"]),
                exit_reason=EXIT_REASONS[int(row["exit_reason"])],
            )
            for row in self.trades
        ]


def _prices(values: ArrayLike, shape: tuple[int, ...] | None = None) -> NDArray[np.float64]:
    array = np.ascontiguousarray(values, dtype=np.float64)
    if array.ndim == 1:
        array = array.reshape(1, -1)
    if array.ndim != 2 or (shape is not None and array.shape != shape):
        raise ValueError(f"expected an array of shape {shape}, got {array.shape}")
    return array


def _optional(
    values: ArrayLike | None, shape: tuple[int, int], dtype: type, empty: object
) -> NDArray[Any]:
    if values is None:
        return np.full((1, 1), empty, dtype=dtype)
    array: NDArray[Any] = np.ascontiguousarray(values, dtype=dtype)
    if array.ndim == 1:
        array = array.reshape(1, -1)
    if array.shape != shape:
        raise ValueError(f"expected an array of shape {shape}, got {array.shape}")
    return array


def _seconds(open_time: ArrayLike) -> NDArray[np.int64]:
    times = np.asarray(open_time)
    if np.issubdtype(times.dtype, np.datetime64):
        times = times.astype("datetime64[s]").view(np.int64)
    return np.ascontiguousarray(times, dtype=np.int64)


def periods_per_year(open_time: NDArray[np.int64]) -> float:
    """Bars per 365-day year, from the typical spacing of the first bars."""
    if open_time.size < 2:
        return 365.0
    spacing = float(np.median(np.diff(open_time[:10_001])))
    if spacing <= 0:
        raise ValueError("open times must increase")
    return SECONDS_PER_YEAR / spacing


def _trade_table(rows: NDArray[np.float64], open_time: NDArray[np.int64]) -> NDArray[Any]:
    trades = np.empty(rows.shape[0], dtype=TRADE_DTYPE)
    entry_bar = rows[:, _T_ENTRY_BAR].astype(np.int64)
    exit_bar = rows[:, _T_EXIT_BAR].astype(np.int64)
    side = rows[:, _T_SIDE]
    quantity = rows[:, _T_QTY]
    entry_price = rows[:, _T_ENTRY_PRICE]
    fees = rows[:, _T_ENTRY_FEE] + rows[:, _T_EXIT_FEE]
    pnl = side * quantity * (rows[:, _T_EXIT_PRICE] - entry_price) - fees
    trades["instrument"] = rows[:, _T_INST]
    trades["side"] = side
    trades["entry_bar"] = entry_bar
    trades["exit_bar"] = exit_bar
    trades["entry_time"] = open_time[entry_bar]
    trades["exit_time"] = open_time[exit_bar]
    trades["entry_price"] = entry_price
    trades["exit_price"] = rows[:, _T_EXIT_PRICE]
    trades["quantity"] = quantity
    trades["fees"] = fees
    trades["pnl"] = pnl
    trades["return"] = pnl / (quantity * entry_price)
    trades["exit_reason"] = rows[:, _T_REASON]
    return trades


def run_portfolio(
    open_time: ArrayLike,
    open_: ArrayLike,
    high: ArrayLike,
    low: ArrayLike,
    close: ArrayLike,
    entry_long: ArrayLike | None = None,
    exit_long: ArrayLike | None = None,
    entry_short: ArrayLike | None = None,
    exit_short: ArrayLike | None = None,
    *,
    stop_loss: ArrayLike | None = None,
    take_profit: ArrayLike | None = None,
    trailing_stop: ArrayLike | None = None,
    size: ArrayLike | None = None,
    config: BacktestConfig | None = None,
) -> BacktestResult:
    """Backtest several instruments (rows of 2-D arrays, instruments × bars) on one cash
    balance. 1-D arrays are one instrument."""
    config = config or BacktestConfig()
    close_ = _prices(close)
    shape = (close_.shape[0], close_.shape[1])
    if shape[1] == 0:
        raise ValueError("no bars")
    times = _seconds(open_time)
    if times.shape != (shape[1],):
        raise ValueError("open_time must have one value per bar")
    equity = np.empty(shape[1])
    held = np.empty(shape[1], dtype=np.bool_)
    rows = _simulate(
        _prices(open_, shape),
        _prices(high, shape),
        _prices(low, shape),
        close_,
        _optional(entry_long, shape, np.bool_, False),
        _optional(exit_long, shape, np.bool_, False),
        _optional(entry_short, shape, np.bool_, False),
        _optional(exit_short, shape, np.bool_, False),
        _optional(stop_loss, shape, np.float64, np.nan),
        _optional(take_profit, shape, np.float64, np.nan),
        _optional(trailing_stop, shape, np.float64, np.nan),
        _optional(size, shape, np.float64, np.nan),
        config._params(),
        equity,
        held,
    )
    trades = _trade_table(rows, times)
    per_year = config.periods_per_year or periods_per_year(times)
    metrics = compute_metrics(
        equity,
        trades["pnl"],
        trades["return"],
        per_year,
        initial_equity=config.initial_cash,
        held=held,
        benchmark=close_,
    )
    return BacktestResult(
        open_time=times,
        equity=equity,
        held=held,
        trades=trades,
        metrics=metrics,
        initial_cash=config.initial_cash,
    )


def run_backtest(
    open_time: ArrayLike,
    open_: ArrayLike,
    high: ArrayLike,
    low: ArrayLike,
    close: ArrayLike,
    entry_long: ArrayLike | None = None,
    exit_long: ArrayLike | None = None,
    entry_short: ArrayLike | None = None,
    exit_short: ArrayLike | None = None,
    *,
    stop_loss: ArrayLike | None = None,
    take_profit: ArrayLike | None = None,
    trailing_stop: ArrayLike | None = None,
    size: ArrayLike | None = None,
    config: BacktestConfig | None = None,
) -> BacktestResult:
    """Backtest one instrument (1-D arrays, one value per bar)."""
    if np.ndim(close) != 1:
        raise ValueError("run_backtest takes 1-D arrays; use run_portfolio for several")
    return run_portfolio(
        open_time, open_, high, low, close, entry_long, exit_long, entry_short, exit_short,
        stop_loss=stop_loss, take_profit=take_profit, trailing_stop=trailing_stop, size=size,
        config=config,
    )  # fmt: skip


# Columns of `run_grid`'s summary.
GRID_COLUMNS = (
    "final_equity",
    "total_return",
    "max_drawdown",
    "sharpe",
    "trades",
    "win_rate",
    "exposure",
)


@_jit()
def _summary(equity: Any, held: Any, rows: Any, initial: float, per_year: float, out: Any) -> None:
    # The same definitions as metrics.compute_metrics, for a grid row.
    n = equity.size
    peak = initial
    deepest = 0.0
    previous = initial
    total = 0.0
    total_sq = 0.0
    exposed = 0
    for t in range(n):
        value = equity[t]
        peak = max(peak, value)
        deepest = min(deepest, value / peak - 1)
        r = value / previous - 1
        previous = value
        total += r
        total_sq += r * r
        if held[t]:
            exposed += 1
    mean = total / n
    variance = (total_sq - n * mean * mean) / (n - 1) if n > 1 else math.nan
    std = math.sqrt(variance) if variance > 0 else 0.0
    wins = 0
    for k in range(rows.shape[0]):
        pnl = rows[k, _T_SIDE] * rows[k, _T_QTY] * (
            rows[k, _T_EXIT_PRICE] - rows[k, _T_ENTRY_PRICE]
        ) - (rows[k, _T_ENTRY_FEE] + rows[k, _T_EXIT_FEE])
        if pnl > 0:
            wins += 1
    out[0] = equity[n - 1]
    out[1] = equity[n - 1] / initial - 1
    out[2] = -deepest
    out[3] = mean / std * math.sqrt(per_year) if std > 0 else math.nan
    out[4] = rows.shape[0]
    out[5] = wins / rows.shape[0] if rows.shape[0] > 0 else math.nan
    out[6] = exposed / n


@_jit(parallel=True)
def _grid(
    open_: Any,
    high: Any,
    low: Any,
    close: Any,
    entry_long: Any,
    exit_long: Any,
    entry_short: Any,
    exit_short: Any,
    params: Any,
    per_year: float,
    out: Any,
) -> None:
    n_combos = out.shape[0]
    n_bars = close.shape[1]
    nothing = np.full((1, 1), np.nan)
    for c in numba.prange(n_combos):
        equity = np.empty(n_bars)
        held = np.empty(n_bars, dtype=np.bool_)
        rows = _simulate(
            open_, high, low, close,
            entry_long[c : c + 1] if entry_long.shape[0] > 1 else entry_long,
            exit_long[c : c + 1] if exit_long.shape[0] > 1 else exit_long,
            entry_short[c : c + 1] if entry_short.shape[0] > 1 else entry_short,
            exit_short[c : c + 1] if exit_short.shape[0] > 1 else exit_short,
            nothing, nothing, nothing, nothing, params, equity, held,
        )  # fmt: skip
        _summary(equity, held, rows, params[_P_CASH], per_year, out[c])


@dataclass(frozen=True)
class GridResult:
    """Summary metrics per parameter combination (rows in the order of the signal rows)."""

    summary: NDArray[np.float64]  # combinations × GRID_COLUMNS

    def column(self, name: str) -> NDArray[np.float64]:
        return self.summary[:, GRID_COLUMNS.index(name)]

    def best(self, by: str = "sharpe") -> int:
        """The row of the best combination by `by` (NaN rows never win)."""
        values = self.column(by)
        if by == "max_drawdown":
            values = -values
        return int(np.nanargmax(values)) if not np.all(np.isnan(values)) else -1


def run_grid(
    open_time: ArrayLike,
    open_: ArrayLike,
    high: ArrayLike,
    low: ArrayLike,
    close: ArrayLike,
    entry_long: ArrayLike | None = None,
    exit_long: ArrayLike | None = None,
    entry_short: ArrayLike | None = None,
    exit_short: ArrayLike | None = None,
    *,
    config: BacktestConfig | None = None,
) -> GridResult:
    """Backtest one instrument once per row of the 2-D signal arrays (combinations × bars),
    in parallel. A 1-D signal array is shared by every combination. Stops and per-bar sizes are
    not part of a grid run; the config applies to every combination."""
    config = config or BacktestConfig()
    close_ = _prices(close)
    if close_.shape[0] != 1:
        raise ValueError("run_grid takes one instrument (1-D candle arrays)")
    n_bars = close_.shape[1]
    times = _seconds(open_time)
    if times.shape != (n_bars,):
        raise ValueError("open_time must have one value per bar")
    signals: list[NDArray[np.bool_]] = []
    n_combos = 1
    for values in (entry_long, exit_long, entry_short, exit_short):
        if values is None:
            signals.append(np.zeros((1, 1), dtype=np.bool_))
            continue
        array = np.ascontiguousarray(values, dtype=np.bool_)
        if array.ndim == 1:
            array = array.reshape(1, -1)
        if array.ndim != 2 or array.shape[1] != n_bars:
            raise ValueError("signal rows must have one value per bar")
        if array.shape[0] > 1:
            if n_combos not in (1, array.shape[0]):
                raise ValueError("all 2-D signal arrays must have the same number of rows")
            n_combos = array.shape[0]
        signals.append(array)
    per_year = config.periods_per_year or periods_per_year(times)
    out = np.empty((n_combos, len(GRID_COLUMNS)))
    entries_long, exits_long, entries_short, exits_short = signals
    _grid(
        _prices(open_, close_.shape),
        _prices(high, close_.shape),
        _prices(low, close_.shape),
        close_,
        entries_long,
        exits_long,
        entries_short,
        exits_short,
        config._params(),
        per_year,
        out,
    )
    return GridResult(out)


# glibc `mallopt` parameters (malloc.h).
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
# The values glibc's own adaptive rule ends at (its 64-bit maximum mmap threshold, and twice
# that as the trim threshold), fixed here instead of depending on the process's history.
_MMAP_THRESHOLD = 32 * 1024 * 1024
_TRIM_THRESHOLD = 2 * _MMAP_THRESHOLD


def _reuse_freed_memory() -> bool:
    """Let glibc keep freed large arrays for reuse instead of returning them to the kernel
    (process-wide; a no-op off glibc, or when the environment already sets either threshold).
    Returns whether the settings were applied.

    Why: a backtest on a million bars allocates and frees several 8 MB arrays (indicator
    outputs, equity). By default glibc adapts: after the first 8 MB block is freed it serves
    such blocks from the heap, but it still gives the heap's free top back to the kernel as
    soon as that exceeds 16 MB. Whether a run's freed arrays end up at the top (and are
    given back) depends on where earlier, unrelated allocations happened to land — imports,
    `warm_up` itself — so in some processes every run faults all its big arrays in again
    (~4,000 zero-filled pages: ~10 ms of a ~20 ms formula backtest at 1M bars) and in
    others none. With both thresholds fixed, blocks up to 32 MB come from the heap and up to
    64 MB of free heap top is kept for the next run: at most 64 MB more resident memory per
    malloc arena, the same bound glibc reaches on its own after one 32 MB array.
    """
    tunables = os.environ.get("GLIBC_TUNABLES", "")
    if "MALLOC_MMAP_THRESHOLD_" in os.environ or "MALLOC_TRIM_THRESHOLD_" in os.environ:
        return False  # the operator tuned malloc: theirs wins
    if "glibc.malloc.mmap_threshold" in tunables or "glibc.malloc.trim_threshold" in tunables:
        return False
    try:
        if not os.confstr("CS_GNU_LIBC_VERSION"):
            return False
        mallopt = ctypes.CDLL(None).mallopt
    except (ValueError, OSError, AttributeError):  # not glibc (macOS, musl, Windows)
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    return bool(mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD)) and bool(
        mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD)
    )


def warm_up() -> None:
    """Compile (or load from numba's cache) every engine function, and keep freed large
    arrays for reuse (`_reuse_freed_memory`): call once at worker start."""
    _reuse_freed_memory()
    n = 8
    times = np.arange(n, dtype=np.int64) * 60
    prices = np.linspace(100.0, 107.0, n)
    entries = np.zeros(n, dtype=np.bool_)
    entries[1] = True
    exits = np.zeros(n, dtype=np.bool_)
    exits[4] = True
    levels = np.full(n, 0.5)
    run_backtest(
        times, prices, prices + 1, prices - 1, prices, entries, exits, exits, entries,
        stop_loss=levels, take_profit=levels, trailing_stop=levels, size=levels,
    )  # fmt: skip
    result = run_backtest(times, prices, prices + 1, prices - 1, prices, entries, exits)
    drawdown_series(result.equity, result.initial_cash)  # the drawdown pass, used on demand
    run_grid(times, prices, prices + 1, prices - 1, prices, np.stack([entries, exits]), exits)
    run_grid(times, prices, prices + 1, prices - 1, prices, entries, exits)
