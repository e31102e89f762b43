"""Metric definitions on curves and trades small enough to compute by hand."""

from __future__ import annotations

import math
import statistics

import numpy as np
import pytest

from tradeos.backtest.metrics import (
    buy_and_hold_return,
    compute_metrics,
    drawdown_series,
    max_drawdown_duration,
    period_returns,
)

NO_TRADES = np.array([], dtype=np.float64)


def curve(*values: float) -> np.ndarray:
    return np.array(values, dtype=np.float64)


def test_returns_drawdowns_and_ratios_of_a_known_curve() -> None:
    equity = curve(110, 99, 121)
    metrics = compute_metrics(equity, NO_TRADES, NO_TRADES, 252, initial_equity=100)
    returns = [0.1, -0.1, 121 / 99 - 1]
    assert period_returns(equity, 100) == pytest.approx(returns)
    mean = statistics.fmean(returns)
    std = statistics.stdev(returns)
    downside = math.sqrt(0.01 / 3)
    assert metrics.total_return == pytest.approx(0.21)
    assert metrics.volatility == pytest.approx(std * math.sqrt(252))
    assert metrics.sharpe == pytest.approx(mean / std * math.sqrt(252))
    assert metrics.sortino == pytest.approx(mean / downside * math.sqrt(252))
    assert drawdown_series(equity, 100) == pytest.approx([0, -0.1, 0])
    assert metrics.max_drawdown == pytest.approx(0.1)
    assert metrics.max_drawdown_duration == 1
    assert metrics.cagr == pytest.approx(1.21 ** (252 / 3) - 1)
    assert metrics.calmar == pytest.approx(metrics.cagr / 0.1)


def test_cagr_annualizes_over_the_periods_of_a_year() -> None:
    equity = 100 * 2 ** (np.arange(1, 731) / 365)  # doubles every 365 periods, for two years
    metrics = compute_metrics(equity, NO_TRADES, NO_TRADES, 365, initial_equity=100)
    assert metrics.total_return == pytest.approx(3.0)
    assert metrics.cagr == pytest.approx(1.0)
    # A steady climb never draws down: no Calmar, no Sortino.
    assert metrics.max_drawdown == 0
    assert math.isnan(metrics.calmar)
    assert math.isnan(metrics.sortino)
    ruined = compute_metrics(curve(50, 0), NO_TRADES, NO_TRADES, 365, initial_equity=100)
    assert ruined.cagr == -1
    assert ruined.max_drawdown == 1


def test_the_longest_drawdown_counts_until_recovery_or_the_end() -> None:
    # Peak 120 at period 1, under water in periods 2-4, back at 120 in period 5.
    assert max_drawdown_duration(curve(120, 110, 100, 115, 120, 90, 95), 100) == 3
    assert max_drawdown_duration(curve(120, 110, 100, 115, 119, 130), 100) == 4
    # Still under the peak at the end: counts to the last period.
    assert max_drawdown_duration(curve(100, 90, 95, 99, 98, 97), 100) == 5
    # Below the initial equity from the start.
    assert max_drawdown_duration(curve(90, 95), 100) == 2
    assert max_drawdown_duration(curve(100, 101), 100) == 0


def test_a_flat_curve_has_no_sharpe() -> None:
    metrics = compute_metrics(curve(100, 100, 100), NO_TRADES, NO_TRADES, 252)
    assert metrics.total_return == 0
    assert metrics.volatility == 0
    assert math.isnan(metrics.sharpe)
    assert metrics.max_drawdown_duration == 0


def test_trade_statistics() -> None:
    pnl = curve(10, -5, 20, 0, -15)
    returns = curve(0.1, -0.05, 0.2, 0.0, -0.15)
    metrics = compute_metrics(curve(100, 110), pnl, returns, 252)
    assert metrics.trades == 5
    assert metrics.win_rate == pytest.approx(2 / 5)
    assert metrics.profit_factor == pytest.approx(30 / 20)
    assert metrics.expectancy == pytest.approx(2)
    assert metrics.avg_win == pytest.approx(15)
    assert metrics.avg_loss == pytest.approx(-10)
    assert metrics.best_trade == pytest.approx(0.2)
    assert metrics.worst_trade == pytest.approx(-0.15)


def test_trade_statistics_without_losers_or_without_trades() -> None:
    winners = compute_metrics(curve(100, 110), curve(5, 5), curve(0.05, 0.05), 252)
    assert winners.profit_factor == math.inf
    assert math.isnan(winners.avg_loss)
    none = compute_metrics(curve(100, 110), NO_TRADES, NO_TRADES, 252)
    assert none.trades == 0
    for name in ("win_rate", "profit_factor", "expectancy", "avg_win", "best_trade"):
        assert math.isnan(getattr(none, name)), name


def test_exposure_and_buy_and_hold() -> None:
    held = np.array([False, True, True, False])
    prices = curve(10, 12, 11, 15)
    metrics = compute_metrics(curve(1, 1, 1, 1), NO_TRADES, NO_TRADES, 252, held=held,
                              benchmark=prices)  # fmt: skip
    assert metrics.exposure == 0.5
    assert metrics.buy_and_hold_return == pytest.approx(0.5)
    # Several series, with bars missing at either end: the mean of their returns.
    rows = np.array([[math.nan, 10, 20, math.nan], [4, 4, 4, 2]])
    assert buy_and_hold_return(rows) == pytest.approx((1.0 - 0.5) / 2)
    assert math.isnan(buy_and_hold_return(np.full(3, math.nan)))


def test_the_drawdown_series_matches_the_max_drawdown() -> None:
    equity = curve(105, 95, 100, 110)
    metrics = compute_metrics(equity, NO_TRADES, NO_TRADES, 12, initial_equity=100)
    drawdown = drawdown_series(equity, 100)
    assert drawdown == pytest.approx([0, 95 / 105 - 1, 100 / 105 - 1, 0])
    assert -drawdown.min() == metrics.max_drawdown
    assert metrics.max_drawdown == pytest.approx(1 - 95 / 105)
    assert metrics.as_dict()["max_drawdown_duration"] == 2


def test_bad_inputs_are_refused() -> None:
    with pytest.raises(ValueError, match="non-empty"):
        compute_metrics(curve(), NO_TRADES, NO_TRADES, 252)
    with pytest.raises(ValueError, match="periods_per_year"):
        compute_metrics(curve(1), NO_TRADES, NO_TRADES, 0)
    with pytest.raises(ValueError, match="initial equity"):
        compute_metrics(curve(1), NO_TRADES, NO_TRADES, 252, initial_equity=0)


@pytest.mark.parametrize("seed", range(20))
def test_max_drawdown_is_exactly_the_deepest_bar_of_the_drawdown_series(seed: int) -> None:
    # compute_metrics divides once per stretch under water (at its lowest equity), not once
    # per bar: the result must be the same float as the per-bar definition, whichever stretch
    # is deepest, whether the curve ends under water, and through flat, zero and negative
    # equity or infinite ones.
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 300))
    equity = 100 * np.exp(np.cumsum(rng.normal(0, 0.02, n)))
    equity[rng.random(n) < 0.2] = np.nan  # replaced below by repeats: flat stretches
    for t in range(n):
        if math.isnan(equity[t]):
            equity[t] = equity[t - 1] if t else 100.0
    if seed % 4 == 1:
        equity[rng.integers(0, n)] = 0.0
        equity[rng.integers(0, n)] = -5.0
    if seed % 4 == 2 and n > 2:
        peak_bar = int(rng.integers(0, n - 2))
        equity[peak_bar] = math.inf
        equity[int(rng.integers(peak_bar + 1, n))] = -math.inf
    initial = float(rng.choice([100.0, 90.0, 120.0]))
    with np.errstate(invalid="ignore"):
        per_bar = drawdown_series(equity, initial)
    expected = -float(np.nanmin(np.minimum(per_bar, 0.0))) if n else 0.0
    metrics = compute_metrics(equity, NO_TRADES, NO_TRADES, 252, initial_equity=initial)
    assert metrics.max_drawdown == expected


def test_exposure_counts_held_bars_like_their_mean() -> None:
    rng = np.random.default_rng(3)
    held = rng.random(10_001) < 0.37
    metrics = compute_metrics(np.full(held.size, 100.0), NO_TRADES, NO_TRADES, 252, held=held)
    assert metrics.exposure == float(np.mean(held))
