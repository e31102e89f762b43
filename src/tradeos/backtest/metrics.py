"""Performance metrics of an equity curve and its closed trades (pure: numpy only, vectorized).

General on purpose: backtests and paper trading portfolios both hand in an equity curve sampled
once per period (oldest first) and the PnLs of their closed trades. Definitions, with `E_0` the
equity before the first period (`initial_equity`, by default the first sample), `E_t` the equity
at the end of period `t = 1..n`, `r_t = E_t / E_{t-1} - 1` the period returns, `P` the number of
periods in a year (`periods_per_year`, e.g. 525,600 for one-minute bars of a 24/7 market, 252
for daily stock bars) and a risk-free rate of 0:

- total_return: `E_n / E_0 - 1`.
- cagr: `(E_n / E_0) ** (P / n) - 1`, i.e. the curve spans `n / P` years; `-1` once equity
  reached zero or below.
- volatility (annualized): sample standard deviation of `r_t` (ddof 1) times `sqrt(P)`.
- sharpe: `mean(r_t) / std(r_t) * sqrt(P)` (std with ddof 1); NaN when std is 0.
- sortino: `mean(r_t) / downside * sqrt(P)`, `downside = sqrt(mean(min(r_t, 0) ** 2))` over all
  periods; NaN when there is no losing period.
- drawdown series: `E_t / max(E_0..E_t) - 1` (zero or negative).
- max_drawdown: the deepest drawdown as a positive fraction (0.25 = the equity fell 25 % below
  its running peak).
- max_drawdown_duration: the longest stretch, in periods, from a peak until equity first got
  back to it (an unrecovered drawdown counts up to the last period).
- calmar: `cagr / max_drawdown`; NaN when there was no drawdown.
- trades: the number of closed trades. A trade wins when its PnL is > 0 and loses when < 0.
- win_rate: winners / trades. profit_factor: gross profit / gross loss (inf with no losing
  trade). expectancy: mean PnL per trade. avg_win / avg_loss: mean PnL of winners / of losers
  (avg_loss is negative). best_trade / worst_trade: the largest / smallest trade return (a
  trade's PnL over its entry notional). All NaN without the trades they need.
- exposure: the fraction of periods in which a position was held (`held`, when given).
- buy_and_hold_return: `last / first - 1` of the benchmark price series (first and last valid
  prices); for several series (rows) the mean of their returns, i.e. an equal-weight basket.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numba
import numpy as np
from numpy.typing import NDArray


@dataclass(frozen=True)
class Metrics:
    total_return: float
    cagr: float
    volatility: float
    sharpe: float
    sortino: float
    calmar: float
    max_drawdown: float
    max_drawdown_duration: int
    trades: int
    win_rate: float
    profit_factor: float
    expectancy: float
    avg_win: float
    avg_loss: float
    best_trade: float
    worst_trade: float
    exposure: float
    buy_and_hold_return: float

    def as_dict(self) -> dict[str, float | int]:
        return asdict(self)


def period_returns(equity: NDArray[np.float64], initial_equity: float) -> NDArray[np.float64]:
    """`r_t = E_t / E_{t-1} - 1`, with `E_0 = initial_equity` before the first sample."""
    previous = np.empty_like(equity)
    previous[0] = initial_equity
    previous[1:] = equity[:-1]
    with np.errstate(divide="ignore", invalid="ignore"):
        return equity / previous - 1


def drawdown_series(equity: NDArray[np.float64], initial_equity: float) -> NDArray[np.float64]:
    """`E_t / max(E_0..E_t) - 1` for every period."""
    values = np.ascontiguousarray(equity, dtype=np.float64)
    drawdown = np.empty_like(values)
    _fill_drawdown(values, initial_equity, drawdown)
    return drawdown


@numba.njit(cache=True, error_model="numpy")
def _fill_drawdown(equity: NDArray[np.float64], initial: float, out: NDArray[np.float64]) -> None:
    peak = initial
    for t in range(equity.size):
        peak = max(peak, equity[t])
        out[t] = equity[t] / peak - 1


@numba.njit(cache=True, error_model="numpy")
def _curve_statistics(
    equity: NDArray[np.float64], initial: float
) -> tuple[float, float, float, float, int]:
    # One compiled pass instead of a dozen numpy temporaries (on a million bars, ~1.5 ms instead
    # of ~30). Returns the mean, sample std and downside deviation of the period returns, the
    # deepest drawdown and the longest time under water. The variance sums returns shifted by
    # the first one, which keeps the one-pass formula accurate.
    n = equity.size
    peak = initial
    trough = initial  # the lowest equity since the peak
    since_peak = 0
    longest = 0
    deepest = 0.0
    previous = initial
    shift = equity[0] / initial - 1
    shifted = 0.0
    shifted_squares = 0.0
    downside = 0.0
    for t in range(n):
        value = equity[t]
        r = value / previous - 1
        previous = value
        shifted += r - shift
        shifted_squares += (r - shift) * (r - shift)
        if r < 0:
            downside += r * r
        if value >= peak:
            if since_peak > 0:  # back at the peak: its stretch under water is over
                deepest = _deeper(deepest, trough, peak)
            peak = value
            trough = value
            since_peak = 0
        else:
            since_peak += 1
            longest = max(longest, since_peak)
            if 0 < peak < math.inf:
                trough = min(trough, value)
            else:  # dividing by this peak may not keep the values' order: every bar counts
                deepest = min(deepest, value / peak - 1)
    if since_peak > 0:
        deepest = _deeper(deepest, trough, peak)
    mean = shift + shifted / n
    if n > 1:
        variance = (shifted_squares - shifted * shifted / n) / (n - 1)
        std = math.sqrt(variance) if variance > 0 else 0.0
    else:
        std = math.nan
    return mean, std, math.sqrt(downside / n), -deepest, longest


@numba.njit(cache=True, error_model="numpy")
def _deeper(deepest: float, trough: float, peak: float) -> float:
    # The deepest drawdown of a stretch under water, `min(value / peak - 1)` over its bars, is
    # that of its lowest equity (a correctly rounded division by the same positive, finite
    # peak keeps the order of the values): one division per stretch, the same float as one
    # per bar. Divisions set the loop's speed, and the period return needs one on every bar.
    return min(deepest, trough / peak - 1)


def max_drawdown_duration(equity: NDArray[np.float64], initial_equity: float) -> int:
    """The longest number of periods spent below a previous peak."""
    return _curve_statistics(np.ascontiguousarray(equity, dtype=np.float64), initial_equity)[4]


def _exposure(held: NDArray[np.bool_] | None) -> float:
    # Counting is one fast pass; `np.mean` of booleans sums them as floats (the same value:
    # an exact count divided once by the number of periods).
    if held is None or not held.size:
        return math.nan
    if held.dtype != np.bool_:
        return float(np.mean(held))
    return np.count_nonzero(held) / held.size


def buy_and_hold_return(prices: NDArray[np.float64]) -> float:
    """`last / first - 1` of each row's valid prices, averaged over rows."""
    rows = np.atleast_2d(np.asarray(prices, dtype=np.float64))
    returns = []
    for row in rows:
        if not (math.isnan(row[0]) or math.isnan(row[-1])):  # the common case, without a copy
            returns.append(row[-1] / row[0] - 1)
            continue
        valid = row[~np.isnan(row)]
        if valid.size:
            returns.append(valid[-1] / valid[0] - 1)
    return float(np.mean(returns)) if returns else math.nan


def _cagr(growth: float, periods_fraction: float) -> float:
    if growth <= 0:
        return -1.0
    try:
        return float(growth**periods_fraction - 1)
    except OverflowError:  # a short, steep curve annualizes beyond float range
        return math.inf


def compute_metrics(
    equity: NDArray[np.float64],
    trade_pnl: NDArray[np.float64],
    trade_returns: NDArray[np.float64],
    periods_per_year: float,
    *,
    initial_equity: float | None = None,
    held: NDArray[np.bool_] | None = None,
    benchmark: NDArray[np.float64] | None = None,
) -> Metrics:
    """All metrics of the module docstring for one equity curve and its closed trades."""
    equity = np.ascontiguousarray(equity, dtype=np.float64)
    if equity.ndim != 1 or equity.size == 0:
        raise ValueError("equity must be a non-empty 1-D array")
    if periods_per_year <= 0:
        raise ValueError("periods_per_year must be positive")
    start = float(equity[0]) if initial_equity is None else float(initial_equity)
    if start <= 0:
        raise ValueError("initial equity must be positive")
    n = equity.size
    end = float(equity[-1])

    mean, std, downside, max_dd, duration = _curve_statistics(equity, start)
    total_return = end / start - 1
    cagr = _cagr(end / start, periods_per_year / n)
    scale = math.sqrt(periods_per_year)

    pnl = np.asarray(trade_pnl, dtype=np.float64)
    wins = pnl[pnl > 0]
    losses = pnl[pnl < 0]
    gross_loss = -float(losses.sum())
    trade_ret = np.asarray(trade_returns, dtype=np.float64)
    return Metrics(
        total_return=total_return,
        cagr=cagr,
        volatility=std * scale,
        sharpe=mean / std * scale if std > 0 else math.nan,
        sortino=mean / downside * scale if downside > 0 else math.nan,
        calmar=cagr / max_dd if max_dd > 0 else math.nan,
        max_drawdown=max_dd,
        max_drawdown_duration=duration,
        trades=int(pnl.size),
        win_rate=wins.size / pnl.size if pnl.size else math.nan,
        profit_factor=(
            float(wins.sum()) / gross_loss
            if gross_loss > 0
            else math.inf
            if wins.size
            else math.nan
        ),
        expectancy=float(pnl.mean()) if pnl.size else math.nan,
        avg_win=float(wins.mean()) if wins.size else math.nan,
        avg_loss=float(losses.mean()) if losses.size else math.nan,
        best_trade=float(trade_ret.max()) if trade_ret.size else math.nan,
        worst_trade=float(trade_ret.min()) if trade_ret.size else math.nan,
        exposure=_exposure(held),
        buy_and_hold_return=buy_and_hold_return(benchmark) if benchmark is not None else math.nan,
    )
