"""Technical indicators over candle arrays (pure: numpy and numba, no I/O).

Every indicator follows TA-Lib's published definition (same seeding, same smoothing, same
warm-up), so a strategy gives the same numbers in TradeOS as in any TA-Lib based tool:

- ``sma``: mean of the last ``period`` values. Warm-up ``period - 1`` bars.
- ``ema``: smoothing factor ``2 / (period + 1)``, seeded with the SMA of the first ``period``
  values. Warm-up ``period - 1`` bars.
- ``wma``: linearly weighted, the newest value weighs ``period``, the oldest 1.
- ``rsi``: Wilder's RSI; average gain and loss seeded with the plain mean of the first
  ``period`` changes, then smoothed ``avg = (avg * (period - 1) + change) / period``.
  Warm-up ``period`` bars; 0 when price did not move at all.
- ``macd``: EMA(fast) − EMA(slow), both seeded at the bar where the slow EMA starts (TA-Lib's
  rule: the fast EMA is seeded with the SMA of the ``fast`` values ending there); the signal
  line is the EMA(signal) of the MACD line; histogram = line − signal. All three start at bar
  ``slow + signal - 2``, as in TA-Lib.
- ``bollinger``: middle = SMA(period); upper/lower = middle ± deviations × population standard
  deviation over the same bars.
- ``atr``: Wilder-smoothed true range, seeded with the mean true range of bars 1..period.
  Warm-up ``period`` bars.
- ``adx``: Wilder's ADX: +DM/−DM and true range summed over ``period - 1`` bars, then
  Wilder-smoothed; the first ADX is the mean of ``period`` DX values. Warm-up
  ``2 * period - 1`` bars.
- ``stochastic``: fast %K = 100 × (close − lowest low) / (highest high − lowest low) over
  ``k_period`` bars (0 when the range is 0); %K = SMA(fast %K, k_smoothing);
  %D = SMA(%K, d_period). TA-Lib's ``STOCH`` slowk / slowd.
- ``cci``: (typical price − its SMA) / (0.015 × mean absolute deviation), typical price
  ``(high + low + close) / 3``; 0 when the deviation is 0.
- ``obv``: starts at the first bar's volume, adds the volume on an up close, subtracts it on
  a down close.
- ``roc``: ``(value / value period bars ago − 1) × 100``; 0 when the old value is 0.
- ``stdev``: population standard deviation (TA-Lib ``STDDEV`` with 1 deviation), computed
  with numerically stable window updates (as TA-Lib 0.6+ does, in its own way): both agree
  with an exact two-pass computation to about 1e-9 relative or better.
- ``highest`` / ``lowest``: extreme of the last ``period`` values.
- ``vwap`` (not in TA-Lib): cumulative (typical price × volume) / cumulative volume, from the
  first bar given (TradeOS does not reset it per session); NaN while the volume so far is 0.

Warm-up bars are NaN. A value that is not a finite number (NaN, or ±inf from a division by
zero in a formula) is a gap: the bar's result is NaN and the indicator starts over after it,
warming up again from the next finite value. For a series that only starts with NaN (one
indicator fed into another) this is exactly how TA-Lib treats it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, TypeVar, cast

import numba
import numpy as np
import numpy.typing as npt

Series = npt.NDArray[np.float64]
Matrix = npt.NDArray[np.float64]
Positions = npt.NDArray[np.int64]
BoolSeries = npt.NDArray[np.bool_]

Compiled = TypeVar("Compiled", bound=Callable[..., Any])


def _compiled(function: Compiled) -> Compiled:
    """`function` compiled to machine code by numba (cached on disk between processes)."""
    return cast(Compiled, numba.njit(cache=True)(function))


# The longest window an indicator accepts: bounds the work of a single bar.
MAX_PERIOD = 10_000

# TA-Lib treats values this close to zero as zero (its TA_IS_ZERO).
_EPSILON = 1e-14

__all__ = [
    "adx",
    "atr",
    "bollinger",
    "cci",
    "crossings",
    "crossover",
    "crossunder",
    "ema",
    "gap_scans",
    "highest",
    "lowest",
    "macd",
    "obv",
    "roc",
    "rsi",
    "shift",
    "sma",
    "sma_pair",
    "stdev",
    "stochastic",
    "vwap",
    "wma",
]


# --- kernels: each works on one run of finite values and returns an array of the same length


@_compiled
def _sma_kernel(x: Series, period: int) -> Series:  # pragma: no cover - compiled
    n = x.shape[0]
    out = np.empty(n)  # only the warm-up is NaN: filling all of it first is a wasted pass
    out[: min(period - 1, n)] = np.nan
    if n < period:
        return out
    total = 0.0
    for i in range(period - 1):
        total += x[i]
    for i in range(period - 1, n):
        total += x[i]
        out[i] = total / period
        total -= x[i - period + 1]
    return out


@_compiled
def _sma_pair_kernel(
    x: Series, short: int, long: int
) -> tuple[Series, Series]:  # pragma: no cover - compiled
    # Two SMAs (short <= long <= len(x)) in one pass. Each running sum waits on its previous
    # addition, so one SMA leaves the processor idle most of the time: two independent sums
    # side by side cost little more than one. Each sum takes exactly the steps of
    # `_sma_kernel`, so the results are the same floats. (Two arrays, not one 2-row matrix:
    # each result holds only its own memory.)
    n = x.shape[0]
    fast_out = np.empty(n)
    slow_out = np.empty(n)
    fast_out[: short - 1] = np.nan
    slow_out[: long - 1] = np.nan
    fast = 0.0
    for i in range(short - 1):
        fast += x[i]
    slow = 0.0
    for i in range(long - 1):
        slow += x[i]
    for i in range(short - 1, long - 1):  # the short SMA's values while the long one warms up
        fast += x[i]
        fast_out[i] = fast / short
        fast -= x[i - short + 1]
    for i in range(long - 1, n):
        fast += x[i]
        fast_out[i] = fast / short
        fast -= x[i - short + 1]
        slow += x[i]
        slow_out[i] = slow / long
        slow -= x[i - long + 1]
    return fast_out, slow_out


@_compiled
def _ema_kernel(x: Series, period: int, first: int) -> Series:  # pragma: no cover - compiled
    # `first` is the bar of the first output; the seed is the SMA of the `period` values ending
    # there (bar period - 1 for a plain EMA, later inside MACD).
    n = x.shape[0]
    out = np.full(n, np.nan)
    if first >= n or first < period - 1:
        return out
    k = 2.0 / (period + 1)
    total = 0.0
    for i in range(first - period + 1, first + 1):
        total += x[i]
    value = total / period
    out[first] = value
    for i in range(first + 1, n):
        value = (x[i] - value) * k + value
        out[i] = value
    return out


@_compiled
def _wma_kernel(x: Series, period: int) -> Series:  # pragma: no cover - compiled
    n = x.shape[0]
    out = np.full(n, np.nan)
    if n < period:
        return out
    divider = period * (period + 1) / 2.0
    plain_sum = 0.0
    weighted_sum = 0.0
    for i in range(period - 1):
        plain_sum += x[i]
        weighted_sum += x[i] * (i + 1)
    trailing = 0.0
    for i in range(period - 1, n):
        plain_sum += x[i]
        plain_sum -= trailing
        weighted_sum += x[i] * period
        trailing = x[i - period + 1]
        out[i] = weighted_sum / divider
        weighted_sum -= plain_sum
    return out


@_compiled
def _rsi_kernel(x: Series, period: int) -> Series:  # pragma: no cover - compiled
    n = x.shape[0]
    out = np.full(n, np.nan)
    if n <= period:
        return out
    gain = 0.0
    loss = 0.0
    for i in range(1, period + 1):
        change = x[i] - x[i - 1]
        if change < 0:
            loss -= change
        else:
            gain += change
    gain /= period
    loss /= period
    out[period] = _rsi_value(gain, loss)
    for i in range(period + 1, n):
        change = x[i] - x[i - 1]
        gain *= period - 1
        loss *= period - 1
        if change < 0:
            loss -= change
        else:
            gain += change
        gain /= period
        loss /= period
        out[i] = _rsi_value(gain, loss)
    return out


@_compiled
def _rsi_value(gain: float, loss: float) -> float:  # pragma: no cover - compiled
    total = gain + loss
    if -_EPSILON < total < _EPSILON:
        return 0.0
    return 100.0 * (gain / total)


@_compiled
def _stdev_kernel(x: Series, period: int) -> Series:  # pragma: no cover - compiled
    # Population standard deviation. Running sums of x and x² lose most digits when the
    # deviation is small next to the price, so the window's mean and squared deviations are
    # updated as values enter and leave (Welford). They are recomputed exactly every 32
    # periods, so rounding cannot build up, and when the deviation collapses below a
    # millionth of its peak, since then the update's rounding would dominate it. At most one
    # recomputation (period operations) per period bars: the work stays linear.
    n = x.shape[0]
    out = np.full(n, np.nan)
    mean = 0.0
    squares = 0.0
    peak = 0.0
    since = 0
    for i in range(period - 1, n):
        since += 1
        # Short windows are cheap to recompute on every bar, and exact that way.
        if period <= 32 or i == period - 1 or since >= 32 * period:
            recompute = True
        else:
            entering = x[i]
            leaving = x[i - period]
            previous = mean
            mean += (entering - leaving) / period
            squares += (entering - leaving) * (entering - mean + leaving - previous)
            recompute = since >= period and squares < 1e-6 * peak
        if recompute:
            total = 0.0
            for j in range(i - period + 1, i + 1):
                total += x[j]
            mean = total / period
            squares = 0.0
            for j in range(i - period + 1, i + 1):
                squares += (x[j] - mean) * (x[j] - mean)
            peak = squares
            since = 0
        peak = max(peak, squares)
        variance = squares / period
        # TA-Lib reports 0 below its epsilon (rounding can even make it negative).
        out[i] = np.sqrt(variance) if variance >= _EPSILON else 0.0
    return out


@_compiled
def _extreme_kernel(x: Series, period: int, highest: bool) -> Series:  # pragma: no cover
    # A monotonic queue of bar indices: linear time whatever the period.
    n = x.shape[0]
    out = np.full(n, np.nan)
    queue = np.empty(n, dtype=np.int64)
    head = 0
    tail = 0
    for i in range(n):
        value = x[i]
        while tail > head and (
            (highest and x[queue[tail - 1]] <= value)
            or (not highest and x[queue[tail - 1]] >= value)
        ):
            tail -= 1
        queue[tail] = i
        tail += 1
        if queue[head] <= i - period:
            head += 1
        if i >= period - 1:
            out[i] = x[queue[head]]
    return out


@_compiled
def _roc_kernel(x: Series, period: int) -> Series:  # pragma: no cover - compiled
    n = x.shape[0]
    out = np.full(n, np.nan)
    for i in range(period, n):
        old = x[i - period]
        out[i] = ((x[i] / old) - 1.0) * 100.0 if old != 0.0 else 0.0
    return out


@_compiled
def _true_range(high: float, low: float, prev_close: float) -> float:  # pragma: no cover
    greatest = high - low
    up = abs(prev_close - high)
    if up > greatest:
        greatest = up
    down = abs(prev_close - low)
    if down > greatest:
        greatest = down
    return greatest


@_compiled
def _atr_kernel(
    high: Series, low: Series, close: Series, period: int
) -> Series:  # pragma: no cover
    n = close.shape[0]
    out = np.full(n, np.nan)
    if n <= period:
        return out
    total = 0.0
    for i in range(1, period + 1):
        total += _true_range(high[i], low[i], close[i - 1])
    value = total / period
    out[period] = value
    for i in range(period + 1, n):
        value *= period - 1
        value += _true_range(high[i], low[i], close[i - 1])
        value /= period
        out[i] = value
    return out


@_compiled
def _directional_move(
    high: Series, low: Series, i: int
) -> tuple[float, float]:  # pragma: no cover - compiled
    up = high[i] - high[i - 1]
    down = low[i - 1] - low[i]
    if down > 0 and up < down:
        return 0.0, down
    if up > 0 and up > down:
        return up, 0.0
    return 0.0, 0.0


@_compiled
def _dx(plus_dm: float, minus_dm: float, tr: float) -> float:  # pragma: no cover - compiled
    # NaN means: no DX on this bar (no range at all), the ADX carries over.
    if -_EPSILON < tr < _EPSILON:
        return np.nan
    minus_di = 100.0 * (minus_dm / tr)
    plus_di = 100.0 * (plus_dm / tr)
    total = minus_di + plus_di
    if -_EPSILON < total < _EPSILON:
        return np.nan
    return 100.0 * (abs(minus_di - plus_di) / total)


@_compiled
def _adx_kernel(
    high: Series, low: Series, close: Series, period: int
) -> Series:  # pragma: no cover
    n = close.shape[0]
    out = np.full(n, np.nan)
    if n <= 2 * period - 1:
        return out
    plus_dm = 0.0
    minus_dm = 0.0
    tr = 0.0
    for i in range(1, period):
        up, down = _directional_move(high, low, i)
        plus_dm += up
        minus_dm += down
        tr += _true_range(high[i], low[i], close[i - 1])
    dx_total = 0.0
    for i in range(period, 2 * period):
        up, down = _directional_move(high, low, i)
        plus_dm = plus_dm - plus_dm / period + up
        minus_dm = minus_dm - minus_dm / period + down
        tr = tr - tr / period + _true_range(high[i], low[i], close[i - 1])
        dx = _dx(plus_dm, minus_dm, tr)
        if not np.isnan(dx):
            dx_total += dx
    value = dx_total / period
    out[2 * period - 1] = value
    for i in range(2 * period, n):
        up, down = _directional_move(high, low, i)
        plus_dm = plus_dm - plus_dm / period + up
        minus_dm = minus_dm - minus_dm / period + down
        tr = tr - tr / period + _true_range(high[i], low[i], close[i - 1])
        dx = _dx(plus_dm, minus_dm, tr)
        if not np.isnan(dx):
            value = (value * (period - 1) + dx) / period
        out[i] = value
    return out


@_compiled
def _cci_kernel(
    high: Series, low: Series, close: Series, period: int
) -> Series:  # pragma: no cover
    n = close.shape[0]
    out = np.full(n, np.nan)
    typical = (high + low + close) / 3.0
    for i in range(period - 1, n):
        total = 0.0
        for j in range(i - period + 1, i + 1):
            total += typical[j]
        mean = total / period
        deviation = 0.0
        for j in range(i - period + 1, i + 1):
            deviation += abs(typical[j] - mean)
        distance = typical[i] - mean
        if distance != 0.0 and deviation != 0.0:
            out[i] = distance / (0.015 * (deviation / period))
        else:
            out[i] = 0.0
    return out


@_compiled
def _obv_kernel(close: Series, volume: Series) -> Series:  # pragma: no cover - compiled
    n = close.shape[0]
    out = np.full(n, np.nan)
    if n == 0:
        return out
    value = volume[0]
    out[0] = value
    for i in range(1, n):
        if close[i] > close[i - 1]:
            value += volume[i]
        elif close[i] < close[i - 1]:
            value -= volume[i]
        out[i] = value
    return out


@_compiled
def _vwap_kernel(
    high: Series, low: Series, close: Series, volume: Series
) -> Series:  # pragma: no cover - compiled
    n = close.shape[0]
    out = np.empty(n)
    traded = 0.0
    total_volume = 0.0
    for i in range(n):
        traded += (high[i] + low[i] + close[i]) / 3.0 * volume[i]
        total_volume += volume[i]
        out[i] = traded / total_volume if total_volume != 0.0 else np.nan
    return out


@_compiled
def _macd_kernel(x: Series, fast: int, slow: int, signal: int) -> Matrix:  # pragma: no cover
    n = x.shape[0]
    out = np.full((3, n), np.nan)
    lookback = slow + signal - 2
    if n <= lookback:
        return out
    # TA-Lib seeds both averages on the bar where the slow one starts.
    line = _ema_kernel(x, fast, slow - 1) - _ema_kernel(x, slow, slow - 1)
    signal_line = _ema_kernel(line[slow - 1 :], signal, signal - 1)
    for i in range(lookback, n):
        out[0, i] = line[i]
        out[1, i] = signal_line[i - slow + 1]
        out[2, i] = line[i] - signal_line[i - slow + 1]
    return out


@_compiled
def _bands_kernel(x: Series, period: int, deviations: float) -> Matrix:  # pragma: no cover
    out = np.full((3, x.shape[0]), np.nan)
    middle = _sma_kernel(x, period)
    width = deviations * _stdev_kernel(x, period)
    out[0] = middle + width
    out[1] = middle
    out[2] = middle - width
    return out


@_compiled
def _smoothed(x: Series, start: int, period: int) -> Series:  # pragma: no cover - compiled
    # SMA of x from bar `start` on; TA-Lib's average over one bar is the value itself.
    out = np.full(x.shape[0], np.nan)
    if start >= x.shape[0]:
        return out
    if period == 1:
        out[start:] = x[start:]
    else:
        out[start:] = _sma_kernel(x[start:].copy(), period)
    return out


@_compiled
def _stochastic_kernel(
    high: Series, low: Series, close: Series, k_period: int, k_smoothing: int, d_period: int
) -> Matrix:  # pragma: no cover - compiled
    n = close.shape[0]
    out = np.full((2, n), np.nan)
    highest_high = _extreme_kernel(high, k_period, True)
    lowest_low = _extreme_kernel(low, k_period, False)
    fast_k = np.full(n, np.nan)
    for i in range(k_period - 1, n):
        scale = (highest_high[i] - lowest_low[i]) / 100.0
        fast_k[i] = (close[i] - lowest_low[i]) / scale if scale != 0.0 else 0.0
    out[0] = _smoothed(fast_k, k_period - 1, k_smoothing)
    out[1] = _smoothed(out[0].copy(), k_period + k_smoothing - 2, d_period)
    return out


# --- gaps: each kernel runs on each stretch of finite values, all inside compiled code
# (a Python call per stretch would let a gappy series cost seconds). A series without a gap
# (the common case) goes to its kernel as it is: no scan for edges, no copy.

_SMA, _EMA, _WMA, _RSI, _ROC, _STDEV, _HIGHEST, _LOWEST, _MACD, _BANDS = range(10)
_ATR, _ADX, _CCI, _STOCHASTIC, _OBV, _VWAP = range(10, 16)


@_compiled
def _series_kernel(
    code: int, x: Series, p1: int, p2: int, p3: int, factor: float
) -> Matrix:  # pragma: no cover - compiled
    # One stretch of finite values; a one-line indicator comes back as a (1, n) view.
    n = x.shape[0]
    if code == _SMA:
        return _sma_kernel(x, p1).reshape((1, n))
    if code == _EMA:
        return _ema_kernel(x, p1, p1 - 1).reshape((1, n))
    if code == _WMA:
        return _wma_kernel(x, p1).reshape((1, n))
    if code == _RSI:
        return _rsi_kernel(x, p1).reshape((1, n))
    if code == _ROC:
        return _roc_kernel(x, p1).reshape((1, n))
    if code == _STDEV:
        return _stdev_kernel(x, p1).reshape((1, n))
    if code == _HIGHEST:
        return _extreme_kernel(x, p1, True).reshape((1, n))
    if code == _LOWEST:
        return _extreme_kernel(x, p1, False).reshape((1, n))
    if code == _MACD:
        return _macd_kernel(x, p1, p2, p3)
    return _bands_kernel(x, p1, factor)


@_compiled
def _series_runs(
    code: int,
    x: Series,
    p1: int,
    p2: int,
    p3: int,
    factor: float,
    starts: Positions,
    stops: Positions,
    out: Matrix,
) -> None:  # pragma: no cover - compiled
    for run in range(starts.shape[0]):
        a = starts[run]
        b = stops[run]
        out[:, a:b] = _series_kernel(code, x[a:b].copy(), p1, p2, p3, factor)


@_compiled
def _candle_kernel(
    code: int,
    high: Series,
    low: Series,
    close: Series,
    volume: Series,
    p1: int,
    p2: int,
    p3: int,
) -> Matrix:  # pragma: no cover - compiled
    n = close.shape[0]
    if code == _ATR:
        return _atr_kernel(high, low, close, p1).reshape((1, n))
    if code == _ADX:
        return _adx_kernel(high, low, close, p1).reshape((1, n))
    if code == _CCI:
        return _cci_kernel(high, low, close, p1).reshape((1, n))
    if code == _STOCHASTIC:
        return _stochastic_kernel(high, low, close, p1, p2, p3)
    if code == _OBV:
        return _obv_kernel(close, volume).reshape((1, n))
    return _vwap_kernel(high, low, close, volume).reshape((1, n))


@_compiled
def _candle_runs(
    code: int,
    high: Series,
    low: Series,
    close: Series,
    volume: Series,
    p1: int,
    p2: int,
    p3: int,
    starts: Positions,
    stops: Positions,
    out: Matrix,
) -> None:  # pragma: no cover - compiled
    for run in range(starts.shape[0]):
        a = starts[run]
        b = stops[run]
        out[:, a:b] = _candle_kernel(
            code,
            high[a:b].copy(),
            low[a:b].copy(),
            close[a:b].copy(),
            volume[a:b].copy(),
            p1,
            p2,
            p3,
        )


@_compiled
def _all_finite(x: Series) -> bool:  # pragma: no cover - compiled
    # No early exit: the loop vectorizes, and a gap-free series (the common case) is read
    # to its end anyway.
    gaps = 0
    for i in range(x.shape[0]):
        gaps += not np.isfinite(x[i])
    return gaps == 0


# Gap scans remembered within one formula evaluation (`gap_scans()`), keyed by the input
# arrays' ids; the arrays are held too, so an id cannot be reused while it is remembered.
_Stretches = tuple[Positions, Positions] | None  # None: no gap at all
_scans: ContextVar[dict[tuple[int, ...], tuple[tuple[Series, ...], _Stretches]] | None] = (
    ContextVar("indicator_gap_scans", default=None)
)


@contextmanager
def gap_scans() -> Iterator[None]:
    """Within this block, each distinct input (or tuple of candle inputs) is scanned for gaps
    once, however many indicators read it. For callers that do not change the arrays inside
    the block (one formula evaluation)."""
    token = _scans.set({})
    try:
        yield
    finally:
        _scans.reset(token)


def _stretches(arrays: tuple[Series, ...]) -> _Stretches:
    """Start and stop of each stretch where every array is finite, or None when all of them
    are finite everywhere."""
    memo = _scans.get()
    key = tuple(id(values) for values in arrays)
    if memo is not None and key in memo:
        return memo[key][1]
    if all(_all_finite(values) for values in arrays):
        found: _Stretches = None
    else:
        finite = np.isfinite(arrays[0])
        for values in arrays[1:]:
            finite &= np.isfinite(values)
        edges = np.flatnonzero(np.diff(np.concatenate(([0], finite.view(np.int8), [0]))))
        found = edges[::2].astype(np.int64), edges[1::2].astype(np.int64)
    if memo is not None:
        memo[key] = (arrays, found)
    return found


def _finite_runs(arrays: tuple[Series, ...], lookback: int) -> tuple[Positions, Positions]:
    """Start and stop of each stretch where every array is finite and longer than `lookback`
    (a shorter stretch is all warm-up)."""
    found = _stretches(arrays)
    if found is None:
        n = arrays[0].shape[0]
        whole = n > lookback
        return np.array([0] if whole else [], np.int64), np.array([n] if whole else [], np.int64)
    starts, stops = found
    keep = stops - starts > lookback
    return starts[keep], stops[keep]


def _as_arrays(*inputs: Series) -> tuple[Series, ...]:
    # No copy for what is already a contiguous float64 array (every array a formula passes).
    arrays = tuple(np.ascontiguousarray(values, dtype=np.float64) for values in inputs)
    n = arrays[0].shape
    if len(n) != 1 or any(values.shape != n for values in arrays):
        raise ValueError("indicator inputs must be one-dimensional arrays of the same length")
    return arrays


def _on_series(
    code: int, values: Series, lookback: int, p1: int, p2: int = 0, p3: int = 0, factor: float = 0
) -> Matrix:
    (x,) = arrays = _as_arrays(values)
    if _stretches(arrays) is None and x.shape[0] > lookback:
        whole: Matrix = _series_kernel(code, x, p1, p2, p3, factor)
        return whole
    rows = 3 if code in (_MACD, _BANDS) else 1
    out = np.full((rows, x.shape[0]), np.nan)
    starts, stops = _finite_runs(arrays, lookback)
    _series_runs(code, x, p1, p2, p3, factor, starts, stops, out)
    return out


def _on_candles(
    code: int, used: tuple[Series, ...], lookback: int, p1: int = 0, p2: int = 0, p3: int = 0
) -> Matrix:
    arrays = _as_arrays(*used)
    if code == _OBV:  # close, volume
        high = low = close = arrays[0]
        volume = arrays[1]
    else:
        high, low, close = arrays[:3]
        volume = arrays[3] if len(arrays) == 4 else arrays[2]
    if _stretches(arrays) is None and close.shape[0] > lookback:
        whole: Matrix = _candle_kernel(code, high, low, close, volume, p1, p2, p3)
        return whole
    rows = 2 if code == _STOCHASTIC else 1
    out = np.full((rows, close.shape[0]), np.nan)
    starts, stops = _finite_runs(arrays, lookback)
    _candle_runs(code, high, low, close, volume, p1, p2, p3, starts, stops, out)
    return out


def _first(rows: Matrix) -> Series:
    first: Series = rows[0]
    return first


def _period(period: int, minimum: int = 2) -> int:
    if isinstance(period, bool) or int(period) != period or period < minimum:
        raise ValueError(f"period must be a whole number of at least {minimum}, got {period}")
    if period > MAX_PERIOD:
        raise ValueError(f"period must be at most {MAX_PERIOD}, got {period}")
    return int(period)


# --- public indicators


def sma(values: Series, period: int) -> Series:
    p = _period(period)
    return _first(_on_series(_SMA, values, p - 1, p))


def sma_pair(values: Series, period: int, other_period: int) -> tuple[Series, Series]:
    """`sma(values, period)` and `sma(values, other_period)`, the same floats, computed side by
    side in one pass (about 40 % faster than two calls on a series without gaps)."""
    p, q = _period(period), _period(other_period)
    (x,) = arrays = _as_arrays(values)
    if _stretches(arrays) is not None or x.shape[0] < max(p, q):
        return sma(x, p), sma(x, q)
    if p <= q:
        short, long = _sma_pair_kernel(x, p, q)
        return short, long
    short, long = _sma_pair_kernel(x, q, p)
    return long, short


def ema(values: Series, period: int) -> Series:
    p = _period(period)
    return _first(_on_series(_EMA, values, p - 1, p))


def wma(values: Series, period: int) -> Series:
    p = _period(period)
    return _first(_on_series(_WMA, values, p - 1, p))


def rsi(values: Series, period: int) -> Series:
    p = _period(period)
    return _first(_on_series(_RSI, values, p, p))


def macd(values: Series, fast: int, slow: int, signal: int) -> tuple[Series, Series, Series]:
    """(MACD line, signal line, histogram)."""
    fast, slow, signal = _period(fast), _period(slow), _period(signal, minimum=1)
    if slow < fast:  # TA-Lib swaps them, so does TradeOS
        fast, slow = slow, fast
    line, signal_line, histogram = _on_series(_MACD, values, slow + signal - 2, fast, slow, signal)
    return line, signal_line, histogram


def bollinger(values: Series, period: int, deviations: float) -> tuple[Series, Series, Series]:
    """(upper, middle, lower) bands."""
    p = _period(period)
    upper, middle, lower = _on_series(_BANDS, values, p - 1, p, factor=float(deviations))
    return upper, middle, lower


def stochastic(
    high: Series, low: Series, close: Series, k_period: int, k_smoothing: int, d_period: int
) -> tuple[Series, Series]:
    """(%K, %D): TA-Lib's STOCH slow %K and %D, both smoothed with an SMA."""
    kp = _period(k_period, minimum=1)
    ks = _period(k_smoothing, minimum=1)
    dp = _period(d_period, minimum=1)
    k, d = _on_candles(_STOCHASTIC, (high, low, close), kp + ks - 2, kp, ks, dp)
    return k, d


def atr(high: Series, low: Series, close: Series, period: int) -> Series:
    p = _period(period, minimum=1)
    return _first(_on_candles(_ATR, (high, low, close), p, p))


def adx(high: Series, low: Series, close: Series, period: int) -> Series:
    p = _period(period)
    return _first(_on_candles(_ADX, (high, low, close), 2 * p - 1, p))


def cci(high: Series, low: Series, close: Series, period: int) -> Series:
    p = _period(period)
    return _first(_on_candles(_CCI, (high, low, close), p - 1, p))


def obv(close: Series, volume: Series) -> Series:
    return _first(_on_candles(_OBV, (close, volume), 0))


def vwap(high: Series, low: Series, close: Series, volume: Series) -> Series:
    return _first(_on_candles(_VWAP, (high, low, close, volume), 0))


def roc(values: Series, period: int) -> Series:
    p = _period(period, minimum=1)
    return _first(_on_series(_ROC, values, p, p))


def stdev(values: Series, period: int) -> Series:
    p = _period(period)
    return _first(_on_series(_STDEV, values, p - 1, p))


def highest(values: Series, period: int) -> Series:
    p = _period(period, minimum=1)
    return _first(_on_series(_HIGHEST, values, p - 1, p))


def lowest(values: Series, period: int) -> Series:
    p = _period(period, minimum=1)
    return _first(_on_series(_LOWEST, values, p - 1, p))


@_compiled
def _cross_kernel(a: Series, b: Series, upward: bool) -> BoolSeries:  # pragma: no cover
    # Branch-free (`&`, not `and`) so the loop vectorizes; a NaN compares false.
    n = a.shape[0]
    out = np.zeros(n, dtype=np.bool_)
    if upward:
        for t in range(1, n):
            out[t] = (a[t] > b[t]) & (a[t - 1] <= b[t - 1])
    else:
        for t in range(1, n):
            out[t] = (a[t] < b[t]) & (a[t - 1] >= b[t - 1])
    return out


def _float_series_pair(a: Series, b: Series) -> bool:
    """Two float64 series of one length: what the compiled crossings take. Anything else (a
    fixed number, integers) goes to the numpy definitions of `crossover` and `crossunder`."""
    if not (isinstance(a, np.ndarray) and isinstance(b, np.ndarray)):
        return False
    return a.dtype == b.dtype == np.float64 and a.ndim == 1 and a.shape == b.shape


def _cross(a: Series, b: Series, upward: bool) -> BoolSeries | None:
    """The compiled crossing, or None where the numpy definition applies."""
    if not _float_series_pair(a, b):
        return None
    result: BoolSeries = _cross_kernel(np.ascontiguousarray(a), np.ascontiguousarray(b), upward)
    return result


@_compiled
def _crossings_kernel(a: Series, b: Series) -> tuple[BoolSeries, BoolSeries]:  # pragma: no cover
    # `_cross_kernel` both ways in one pass: the two series are read once.
    n = a.shape[0]
    up = np.zeros(n, dtype=np.bool_)
    down = np.zeros(n, dtype=np.bool_)
    for t in range(1, n):
        up[t] = (a[t] > b[t]) & (a[t - 1] <= b[t - 1])
        down[t] = (a[t] < b[t]) & (a[t - 1] >= b[t - 1])
    return up, down


def crossings(a: Series, b: Series) -> tuple[BoolSeries, BoolSeries]:
    """`crossover(a, b)` and `crossunder(a, b)` together (one pass over float64 series)."""
    if not _float_series_pair(a, b):
        return crossover(a, b), crossunder(a, b)
    both: tuple[BoolSeries, BoolSeries] = _crossings_kernel(
        np.ascontiguousarray(a), np.ascontiguousarray(b)
    )
    return both


def crossover(a: Series, b: Series) -> BoolSeries:
    """True on the bar where `a` moves from at or below `b` to above it."""
    compiled = _cross(a, b, True)
    if compiled is not None:
        return compiled
    above = np.asarray(a > b)
    at_or_below = np.asarray(a <= b)
    result = np.zeros(above.shape[0], dtype=np.bool_)
    result[1:] = above[1:] & at_or_below[:-1]
    return result


def crossunder(a: Series, b: Series) -> BoolSeries:
    """True on the bar where `a` moves from at or above `b` to below it."""
    compiled = _cross(a, b, False)
    if compiled is not None:
        return compiled
    below = np.asarray(a < b)
    at_or_above = np.asarray(a >= b)
    result = np.zeros(below.shape[0], dtype=np.bool_)
    result[1:] = below[1:] & at_or_above[:-1]
    return result


def shift(values: Series, bars: int) -> Series:
    """The value `bars` bars ago (NaN before the first bar)."""
    bars = _period(bars, minimum=0)
    out = np.full(values.shape[0], np.nan)
    if bars == 0:
        out[:] = values
    elif bars < values.shape[0]:
        out[bars:] = values[:-bars]
    return out
