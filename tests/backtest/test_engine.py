"""The backtest engine on hand-computed scenarios, several instruments, grids and look-ahead."""

from __future__ import annotations

import math
import os
from datetime import UTC, datetime
from decimal import Decimal as D
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tradeos.backtest.engine import (
    GRID_COLUMNS,
    BacktestConfig,
    BacktestResult,
    FillTiming,
    Sizing,
    run_backtest,
    run_grid,
    run_portfolio,
    warm_up,
)
from tradeos.trading.fill_model import EXIT_REASONS, FillModel, IntrabarRule

NAN = math.nan


def candles(
    opens: list[float],
    highs: list[float] | None = None,
    lows: list[float] | None = None,
    closes: list[float] | None = None,
) -> dict[str, np.ndarray]:
    """Bars one minute apart; high / low / close default to the open."""
    o = np.array(opens, dtype=np.float64)
    c = np.array(closes, dtype=np.float64) if closes is not None else o.copy()
    h = np.array(highs, dtype=np.float64) if highs is not None else np.maximum(o, c)
    low = np.array(lows, dtype=np.float64) if lows is not None else np.minimum(o, c)
    return {
        "open_time": np.arange(o.size, dtype=np.int64) * 60,
        "open_": o,
        "high": h,
        "low": low,
        "close": c,
    }


def flags(n: int, *bars: int) -> np.ndarray:
    out = np.zeros(n, dtype=np.bool_)
    out[list(bars)] = True
    return out


def levels(n: int, at: dict[int, float]) -> np.ndarray:
    out = np.full(n, NAN)
    for bar, value in at.items():
        out[bar] = value
    return out


def reasons(result: BacktestResult) -> list[str]:
    return [EXIT_REASONS[code] for code in result.trades["exit_reason"]]


def run(bars: dict[str, np.ndarray], **kwargs: Any) -> BacktestResult:
    config = kwargs.pop("config", BacktestConfig(initial_cash=1000.0))
    return run_backtest(**bars, **kwargs, config=config)


# --- fill timing ---------------------------------------------------------------------------

SIX = candles([10, 10, 20, 22, 25, 30])


def test_next_open_fills_a_signal_at_the_next_bars_open() -> None:
    result = run(SIX, entry_long=flags(6, 1), exit_long=flags(6, 3))
    (trade,) = result.trades
    assert (trade["entry_bar"], trade["exit_bar"]) == (2, 4)
    assert (trade["entry_time"], trade["exit_time"]) == (120, 240)
    assert (trade["entry_price"], trade["exit_price"], trade["quantity"]) == (20, 25, 50)
    assert trade["pnl"] == 250
    assert trade["return"] == pytest.approx(0.25)
    assert reasons(result) == ["signal"]
    assert result.equity.tolist() == [1000, 1000, 1000, 1100, 1250, 1250]
    assert result.held.tolist() == [False, False, True, True, True, False]


def test_close_fills_a_signal_at_its_own_bars_close() -> None:
    config = BacktestConfig(initial_cash=1000.0, fill_at=FillTiming.CLOSE)
    result = run(SIX, entry_long=flags(6, 1), exit_long=flags(6, 3), config=config)
    (trade,) = result.trades
    assert (trade["entry_bar"], trade["exit_bar"]) == (1, 3)
    assert (trade["entry_price"], trade["exit_price"], trade["quantity"]) == (10, 22, 100)
    assert result.equity.tolist() == [1000, 1000, 2000, 2200, 2200, 2200]


def test_a_signal_on_the_last_bar_never_fills() -> None:
    result = run(SIX, entry_long=flags(6, 5))
    assert result.trades.size == 0
    assert result.final_equity == 1000


# --- fees and slippage ---------------------------------------------------------------------


def test_fees_and_slippage_are_paid_on_both_fills() -> None:
    bars = candles([100, 100, 110])
    config = BacktestConfig(
        initial_cash=10_000.0, commission=0.001, fixed_fee=1.0, slippage_bps=10.0
    )
    result = run(bars, entry_long=flags(3, 0), exit_long=flags(3, 1), config=config)
    (trade,) = result.trades
    entry = 100 * 10010 / 10000  # 100.1: a buy pays the slippage
    exit_ = 110 * 9990 / 10000  # 109.89: a sell gives it up
    quantity = math.floor((10_000 - 1) / (entry + entry * 0.001))  # 99: the fee fits too
    entry_fee = quantity * entry * 0.001 + 1
    exit_fee = quantity * exit_ * 0.001 + 1
    assert trade["entry_price"] == pytest.approx(entry)
    assert trade["exit_price"] == pytest.approx(exit_)
    assert trade["quantity"] == quantity == 99
    assert trade["fees"] == pytest.approx(entry_fee + exit_fee)
    assert trade["pnl"] == pytest.approx(quantity * (exit_ - entry) - entry_fee - exit_fee)
    assert trade["pnl"] == pytest.approx(946.42099)
    assert result.final_equity == pytest.approx(10_000 + 946.42099)
    # The bar of the entry is marked at its close (100), the fee already paid.
    assert result.equity[1] == pytest.approx(10_000 - quantity * entry - entry_fee + quantity * 100)


def test_fills_match_the_decimal_fill_model_of_paper_trading() -> None:
    bars = candles([100, 101.37, 97.11, 99])
    config = BacktestConfig(initial_cash=10_000.0, commission=0.00075, fixed_fee=0.3,
                            slippage_bps=3.5)  # fmt: skip
    model = FillModel(taker_fee_rate=D("0.00075"), fixed_fee=D("0.3"), slippage_bps=D("3.5"))
    result = run(bars, entry_long=flags(4, 0), exit_long=flags(4, 1), config=config)
    (trade,) = result.trades
    entry = model.fill_price(D("101.37"), 1)
    exit_ = model.fill_price(D("97.11"), -1)
    quantity = D(int(trade["quantity"]))
    fees = model.fee(quantity * entry) + model.fee(quantity * exit_)
    assert trade["entry_price"] == pytest.approx(float(entry), rel=1e-15)
    assert trade["exit_price"] == pytest.approx(float(exit_), rel=1e-15)
    assert trade["fees"] == pytest.approx(float(fees), rel=1e-12)
    assert trade["pnl"] == pytest.approx(float(quantity * (exit_ - entry) - fees), rel=1e-12)


def test_the_minimum_fee_applies_per_fill() -> None:
    bars = candles([100, 100, 110])
    config = BacktestConfig(initial_cash=10_000.0, min_fee=20.0, sizing=Sizing.FIXED, size=10)
    result = run(bars, entry_long=flags(3, 0), exit_long=flags(3, 1), config=config)
    assert result.trades["fees"][0] == 40
    assert result.trades["pnl"][0] == 10 * 10 - 40


# --- stops ---------------------------------------------------------------------------------


def stop_bars(bar2: tuple[float, float, float, float], bar1_low: float = 99) -> dict[str, Any]:
    """Signal on bar 0, long entry at bar 1's open of 100 (10 units of 1000), bar 2 as given."""
    o2, h2, l2, c2 = bar2
    return candles([100, 100, o2, 100], [100, 101, h2, 100], [100, bar1_low, l2, 100],
                   [100, 100, c2, 100])  # fmt: skip


def test_a_stop_loss_given_as_a_fraction_exits_at_its_level() -> None:
    bars = stop_bars((98, 99, 94, 96))
    result = run(bars, entry_long=flags(4, 0), stop_loss=levels(4, {0: 0.05}))
    (trade,) = result.trades
    assert reasons(result) == ["stop_loss"]
    assert (trade["exit_bar"], trade["exit_price"], trade["pnl"]) == (2, 95, -50)


def test_a_take_profit_given_as_a_distance_exits_at_its_level() -> None:
    bars = stop_bars((101, 106, 100, 104))
    result = run(bars, entry_long=flags(4, 0), take_profit=levels(4, {0: 5.0}))
    assert reasons(result) == ["take_profit"]
    assert (result.trades["exit_price"][0], result.trades["pnl"][0]) == (105, 50)


def test_a_trailing_stop_follows_the_best_price_of_earlier_bars() -> None:
    bars = candles(
        [100, 100, 110, 115, 100],
        [100, 101, 120, 116, 100],
        [100, 99, 105, 100, 100],
        [100, 100, 118, 101, 100],
    )
    result = run(
        bars,
        entry_long=flags(5, 0),
        stop_loss=levels(5, {0: 0.05}),
        trailing_stop=levels(5, {0: 0.1}),
    )
    # Bar 2 checks 101 - 10.1 = 90.9 (not hit), then its high lifts the best price to 120;
    # bar 3 checks 120 - 12 = 108, tighter than the stop-loss at 95, and its low reaches it.
    (trade,) = result.trades
    assert reasons(result) == ["trailing_stop"]
    assert (trade["exit_bar"], trade["exit_price"]) == (3, 108)


def test_stop_exits_pay_slippage_too() -> None:
    bars = stop_bars((98, 99, 94, 96))
    config = BacktestConfig(initial_cash=1000.0, slippage_bps=10.0, sizing=Sizing.FIXED, size=5)
    result = run(bars, entry_long=flags(4, 0), stop_loss=levels(4, {0: 0.05}), config=config)
    (trade,) = result.trades
    entry = 100 * 10010 / 10000
    assert trade["entry_price"] == pytest.approx(entry)
    assert trade["exit_price"] == pytest.approx(entry * 0.95 * 9990 / 10000)


def test_a_short_trailing_stop_follows_the_lowest_low() -> None:
    bars = candles(
        [100, 100, 90, 85, 100],
        [100, 101, 95, 100, 100],
        [100, 99, 80, 84, 100],
        [100, 100, 82, 99, 100],
    )
    result = run(bars, entry_short=flags(5, 0), trailing_stop=levels(5, {0: 5.0}))
    # Bar 2 checks 99 + 5 = 104 (not hit), its low brings the best price to 80; bar 3 checks
    # 85 and its high (100) reaches it.
    (trade,) = result.trades
    assert reasons(result) == ["trailing_stop"]
    assert (trade["exit_bar"], trade["exit_price"], trade["side"]) == (3, 85, -1)


def test_a_short_stop_sits_above_the_entry() -> None:
    bars = stop_bars((101, 106, 100, 104))
    result = run(bars, entry_short=flags(4, 0), stop_loss=levels(4, {0: 0.05}))
    (trade,) = result.trades
    assert trade["side"] == -1
    assert reasons(result) == ["stop_loss"]
    assert (trade["exit_price"], trade["pnl"]) == (105, -50)


def test_a_gap_through_the_stop_fills_at_the_open() -> None:
    bars = stop_bars((90, 91, 88, 90))
    result = run(bars, entry_long=flags(4, 0), stop_loss=levels(4, {0: 0.05}))
    assert reasons(result) == ["stop_loss"]
    assert result.trades["exit_price"][0] == 90


@pytest.mark.parametrize(
    ("rule", "price", "reason"),
    [
        (IntrabarRule.WORST, 95, "stop_loss"),
        (IntrabarRule.BEST, 105, "take_profit"),
        (IntrabarRule.NEAREST_TO_OPEN, 105, "take_profit"),
    ],
)
def test_stop_and_target_in_one_bar_follow_the_intrabar_rule(
    rule: IntrabarRule, price: float, reason: str
) -> None:
    bars = stop_bars((103, 106, 94, 100))  # opens nearer the target
    config = BacktestConfig(initial_cash=1000.0, intrabar_rule=rule)
    result = run(
        bars,
        entry_long=flags(4, 0),
        stop_loss=levels(4, {0: 0.05}),
        take_profit=levels(4, {0: 0.05}),
        config=config,
    )
    assert reasons(result) == [reason]
    assert result.trades["exit_price"][0] == price


def test_with_next_open_fills_the_entry_bars_own_range_can_stop_the_position() -> None:
    bars = stop_bars((100, 100, 100, 100), bar1_low=94)
    result = run(bars, entry_long=flags(4, 0), stop_loss=levels(4, {0: 0.05}))
    (trade,) = result.trades
    assert (trade["entry_bar"], trade["exit_bar"], trade["exit_price"]) == (1, 1, 95)
    assert result.held.tolist() == [False, True, False, False]


def test_with_close_fills_the_entry_bars_range_is_not_checked() -> None:
    # Entered at bar 0's close: bar 0's low (90) came before the entry; bar 1's low (94) exits.
    bars = candles([100, 100, 100], [100, 101, 100], [90, 94, 100], [100, 100, 100])
    config = BacktestConfig(initial_cash=1000.0, fill_at=FillTiming.CLOSE)
    result = run(bars, entry_long=flags(3, 0), stop_loss=levels(3, {0: 0.05}), config=config)
    (trade,) = result.trades
    assert (trade["entry_bar"], trade["exit_bar"], trade["exit_price"]) == (0, 1, 95)


# --- signals: reverse, shorting off, end of data -------------------------------------------

REVERSAL = candles([10, 10, 20, 20, 15, 16])


def test_an_opposite_entry_stops_and_reverses_at_the_same_fill() -> None:
    result = run(REVERSAL, entry_long=flags(6, 0), entry_short=flags(6, 2))
    long, short = result.trades
    assert reasons(result) == ["reverse", "end_of_data"]
    assert (long["side"], long["entry_bar"], long["exit_bar"], long["pnl"]) == (1, 1, 3, 1000)
    # The short is sized on the equity after the long closed: 2000 / 20.
    assert (short["side"], short["entry_bar"], short["entry_price"]) == (-1, 3, 20)
    assert (short["quantity"], short["exit_bar"], short["exit_price"]) == (100, 5, 16)
    assert short["pnl"] == 400
    assert result.equity.tolist() == [1000, 1000, 2000, 2000, 2500, 2400]
    assert result.drawdown == pytest.approx([0, 0, 0, 0, 0, 2400 / 2500 - 1])
    assert result.metrics.max_drawdown == pytest.approx(0.04)


def test_without_shorting_an_opposite_entry_only_closes() -> None:
    config = BacktestConfig(initial_cash=1000.0, allow_short=False)
    result = run(REVERSAL, entry_long=flags(6, 0), entry_short=flags(6, 2), config=config)
    assert reasons(result) == ["signal"]
    assert result.final_equity == 2000
    alone = run(REVERSAL, entry_short=flags(6, 0), config=config)
    assert alone.trades.size == 0


def test_conflicting_signals_do_nothing() -> None:
    both = run(REVERSAL, entry_long=flags(6, 0), entry_short=flags(6, 0))
    assert both.trades.size == 0
    entry_and_exit = run(REVERSAL, entry_long=flags(6, 0), exit_long=flags(6, 0))
    assert entry_and_exit.trades.size == 0
    again = run(REVERSAL, entry_long=flags(6, 0, 2))  # already long: no pyramiding
    assert again.trades["quantity"].tolist() == [100]


def test_open_positions_are_closed_at_the_last_close_or_marked_to_market() -> None:
    closed = run(REVERSAL, entry_long=flags(6, 0))
    assert reasons(closed) == ["end_of_data"]
    assert closed.trades["exit_price"][0] == 16
    assert closed.final_equity == 1600
    config = BacktestConfig(initial_cash=1000.0, close_at_end=False, commission=0.01)
    kept = run(REVERSAL, entry_long=flags(6, 0), config=config)
    assert kept.trades.size == 0
    quantity = math.floor(1000 / (10 + 10 * 0.01))
    cash = 1000 - quantity * 10 * 1.01
    assert kept.final_equity == pytest.approx(cash + quantity * 16)


# --- sizing --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sizing", "size", "step", "quantity"),
    [
        (Sizing.FIXED, 3.0, 1.0, 3),
        (Sizing.FIXED, 500.0, 1.0, 100),  # more than the cash buys: shrunk
        (Sizing.PERCENT_EQUITY, 0.5, 1.0, 50),
        (Sizing.PERCENT_CASH, 0.25, 1.0, 25),
        (Sizing.PERCENT_EQUITY, 1.0, 0.0, 1000 / 30),  # fractional
        (Sizing.PERCENT_EQUITY, 0.333, 0.5, 11),  # 11.1 rounded down to the step
    ],
)
def test_sizing_modes(sizing: Sizing, size: float, step: float, quantity: float) -> None:
    price = 30.0 if step != 1.0 else 10.0
    bars = candles([price] * 3)
    config = BacktestConfig(initial_cash=1000.0, sizing=sizing, size=size, quantity_step=step)
    result = run(bars, entry_long=flags(3, 0), config=config)
    assert result.trades["quantity"][0] == pytest.approx(quantity)


def test_risk_sizing_loses_the_given_share_of_equity_at_the_stop() -> None:
    bars = candles([10, 10, 10])
    config = BacktestConfig(initial_cash=1000.0, sizing=Sizing.RISK, size=0.01)
    result = run(bars, entry_long=flags(3, 0), stop_loss=levels(3, {0: 2.0}), config=config)
    assert result.trades["quantity"][0] == 5  # 1 % of 1000 over a stop 2 away
    fraction = run(bars, entry_long=flags(3, 0), stop_loss=levels(3, {0: 0.1}), config=config)
    assert fraction.trades["quantity"][0] == 10  # a stop 10 % (1.0) away
    no_stop = run(bars, entry_long=flags(3, 0), config=config)
    assert no_stop.trades.size == 0


def test_a_size_per_bar_overrides_the_configured_size() -> None:
    bars = candles([10, 10, 10, 10, 10])
    size = levels(5, {2: 0.25})
    result = run(bars, entry_long=flags(5, 0, 2), exit_long=flags(5, 1), size=size)
    assert result.trades["quantity"].tolist() == [100, 25]


# --- several instruments, one cash balance -------------------------------------------------


def portfolio(opens: list[list[float]]) -> dict[str, np.ndarray]:
    o = np.array(opens, dtype=np.float64)
    return {
        "open_time": np.arange(o.shape[1], dtype=np.int64) * 60,
        "open_": o,
        "high": o,
        "low": o,
        "close": o,
    }


def test_an_entry_shrinks_to_the_cash_another_instrument_left() -> None:
    bars = portfolio([[10, 10, 10], [20, 20, 20]])
    entries = np.ones((2, 3), dtype=np.bool_)
    config = BacktestConfig(initial_cash=1000.0, size=0.8)
    result = run_portfolio(**bars, entry_long=entries, config=config)
    # Row 0 first: 80 % of 1000; row 1 wanted 800 too but only 200 was free.
    assert result.trades["instrument"].tolist() == [0, 1]
    assert result.trades["quantity"].tolist() == [80, 10]


def test_an_entry_is_refused_when_not_one_unit_fits() -> None:
    bars = portfolio([[10, 10, 10], [300, 300, 300]])
    entries = np.ones((2, 3), dtype=np.bool_)
    config = BacktestConfig(initial_cash=1000.0, size=0.8)
    result = run_portfolio(**bars, entry_long=entries, config=config)
    assert result.trades["instrument"].tolist() == [0]
    alone = run_portfolio(**bars, entry_long=np.array([[False] * 3, [True] * 3]), config=config)
    assert alone.trades["quantity"].tolist() == [2]  # 800 buys 2 at 300


def test_percent_cash_sizes_on_what_the_earlier_entries_left() -> None:
    bars = portfolio([[10, 10, 10], [10, 10, 10]])
    config = BacktestConfig(initial_cash=1000.0, sizing=Sizing.PERCENT_CASH, size=0.5)
    result = run_portfolio(**bars, entry_long=np.ones((2, 3), dtype=np.bool_), config=config)
    assert result.trades["quantity"].tolist() == [50, 25]


def test_exits_fill_before_entries_so_their_cash_is_free() -> None:
    # Row 1 holds everything from bar 1; on bar 2 it exits while row 0 enters: at bar 3's open
    # row 1's exit fills first (though it is the later row) and row 0 gets the cash.
    bars = portfolio([[10, 10, 10, 10, 10], [10, 10, 10, 10, 10]])
    entry = np.array([[False, False, True, False, False], [True, False, False, False, False]])
    exit_ = np.array([[False] * 5, [False, False, True, False, False]])
    result = run_portfolio(**bars, entry_long=entry, exit_long=exit_, config=BacktestConfig(1000.0))
    rows = sorted(result.trades.tolist(), key=lambda row: row[0])
    assert [(row[0], row[2], row[3], row[8]) for row in rows] == [
        (0, 3, 4, 100.0),  # instrument, entry bar, exit bar, quantity
        (1, 1, 3, 100.0),
    ]


def test_an_instrument_without_a_bar_fills_at_its_next_bar_and_keeps_its_last_price() -> None:
    bars = portfolio([[10, 10, 12, 12], [20, NAN, 30, 30]])
    entry = np.array([[False] * 4, [True, False, False, False]])
    config = BacktestConfig(initial_cash=1000.0, close_at_end=False)
    result = run_portfolio(**bars, entry_long=entry, config=config)
    assert result.trades.size == 0
    assert result.equity.tolist() == [1000, 1000, 1000, 1000]  # entered at bar 2's 30
    held = run_portfolio(**bars, entry_long=entry, config=BacktestConfig(initial_cash=1000.0))
    assert held.trades["entry_bar"].tolist() == [2]
    assert held.trades["entry_price"].tolist() == [30]
    # Marked at the last close seen while it had no bar.
    bars2 = portfolio([[10, 10, 10, 10], [20, 20, NAN, 25]])
    entry2 = np.array([[False] * 4, [True, False, False, False]])
    marked = run_portfolio(**bars2, entry_long=entry2, config=config)
    assert marked.equity.tolist() == [1000, 1000, 1000, 1250]


def test_buy_and_hold_averages_the_instruments() -> None:
    bars = portfolio([[10, 10, 20], [20, 20, 10]])
    result = run_portfolio(**bars, config=BacktestConfig(initial_cash=1000.0))
    assert result.metrics.buy_and_hold_return == pytest.approx((1.0 - 0.5) / 2)


# --- results, grid, validation -------------------------------------------------------------


def test_trade_objects_are_built_on_demand() -> None:
    bars = candles([10, 10, 20, 20, 15, 16])
    bars["open_time"] = bars["open_time"] + 1_700_000_000
    result = run(bars, entry_long=flags(6, 0), entry_short=flags(6, 2))
    first, second = result.trade_list()
    assert first.side == "long"
    assert first.exit_reason == "reverse"
    assert first.entry_time == datetime.fromtimestamp(1_700_000_060, UTC)
    assert second.side == "short"
    assert second.exit_reason == "end_of_data"
    assert second.pnl == 400


def test_datetime64_open_times_are_read_as_seconds() -> None:
    bars = candles([10, 10, 20])
    bars["open_time"] = np.array(
        ["2026-01-01T00:00", "2026-01-01T00:01", "2026-01-01T00:02"], dtype="datetime64[ns]"
    )
    result = run(bars, entry_long=flags(3, 0))
    assert result.open_time[1] - result.open_time[0] == 60
    assert result.trades["entry_time"][0] == datetime(2026, 1, 1, 0, 1, tzinfo=UTC).timestamp()


def random_walk(n: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, n)))
    open_ = np.concatenate(([100.0], close[:-1]))
    wick = np.abs(rng.normal(0, 0.005, n))
    return {
        "open_time": np.arange(n, dtype=np.int64) * 3600,
        "open_": open_,
        "high": np.maximum(open_, close) * (1 + wick),
        "low": np.minimum(open_, close) * (1 - wick),
        "close": close,
    }


def test_each_grid_row_equals_a_full_backtest_of_its_signals() -> None:
    n = 2000
    bars = random_walk(n, 5)
    rng = np.random.default_rng(6)
    entries = rng.random((6, n)) < 0.02
    exits = rng.random((6, n)) < 0.02
    shorts = rng.random(n) < 0.01  # shared by every row
    config = BacktestConfig(initial_cash=10_000.0, commission=0.001)
    grid = run_grid(**bars, entry_long=entries, exit_long=exits, entry_short=shorts, config=config)
    assert grid.summary.shape == (6, len(GRID_COLUMNS))
    for row in range(6):
        single = run_backtest(
            **bars, entry_long=entries[row], exit_long=exits[row], entry_short=shorts, config=config
        )
        summary = dict(zip(GRID_COLUMNS, grid.summary[row], strict=True))
        metrics = single.metrics
        assert summary["final_equity"] == single.final_equity
        assert summary["trades"] == metrics.trades
        assert summary["total_return"] == pytest.approx(metrics.total_return, rel=1e-12)
        assert summary["max_drawdown"] == pytest.approx(metrics.max_drawdown, rel=1e-12)
        assert summary["sharpe"] == pytest.approx(metrics.sharpe, rel=1e-9)
        assert summary["win_rate"] == pytest.approx(metrics.win_rate, rel=1e-12)
        assert summary["exposure"] == pytest.approx(metrics.exposure, rel=1e-12)
    best = grid.best("final_equity")
    assert grid.column("final_equity")[best] == grid.column("final_equity").max()


@pytest.mark.parametrize(
    "options",
    [
        {"initial_cash": 0.0},
        {"commission": -0.001},
        {"size": 0.0},
        {"quantity_step": -1.0},
        {"periods_per_year": 0.0},
        {"sizing": "everything"},
    ],
)
def test_bad_configs_are_refused(options: dict[str, Any]) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 (each option has its own message)
        BacktestConfig(**options)


def test_mismatched_arrays_are_refused() -> None:
    bars = candles([10, 10, 20])
    with pytest.raises(ValueError, match="shape"):
        run(bars, entry_long=flags(4, 0))
    with pytest.raises(ValueError, match="open_time"):
        run({**bars, "open_time": np.arange(2)})
    two = portfolio([[1, 2], [3, 4]])
    with pytest.raises(ValueError, match="1-D"):
        run_backtest(two["open_time"], two["open_"], two["high"], two["low"], two["close"])


def test_warm_up_compiles_without_error() -> None:
    warm_up()


# --- no look-ahead -------------------------------------------------------------------------


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 2**32 - 1),
    cut=st.integers(1, 119),
    fill_at=st.sampled_from(list(FillTiming)),
    sizing=st.sampled_from(list(Sizing)),
    rule=st.sampled_from(list(IntrabarRule)),
    jump=st.sampled_from([0.5, 2.0]),
)
def test_bars_after_a_time_change_nothing_before_it(
    seed: int, cut: int, fill_at: FillTiming, sizing: Sizing, rule: IntrabarRule, jump: float
) -> None:
    n = 120
    rng = np.random.default_rng(seed)
    bars = random_walk(n, seed)
    inputs: dict[str, Any] = {
        "entry_long": rng.random(n) < 0.1,
        "exit_long": rng.random(n) < 0.1,
        "entry_short": rng.random(n) < 0.1,
        "exit_short": rng.random(n) < 0.1,
        "stop_loss": np.where(rng.random(n) < 0.5, 0.01, 1.5),
        "take_profit": np.where(rng.random(n) < 0.5, 0.02, NAN),
        "trailing_stop": np.where(rng.random(n) < 0.5, 0.015, NAN),
    }
    config = BacktestConfig(
        initial_cash=10_000.0,
        commission=0.001,
        slippage_bps=2.0,
        fill_at=fill_at,
        sizing=sizing,
        size=0.01 if sizing is Sizing.RISK else 0.5 if sizing is not Sizing.FIXED else 20.0,
        intrabar_rule=rule,
    )
    before = run_backtest(**bars, **inputs, config=config)

    # A different future from bar `cut` on, far away (halved or doubled prices), so any peek
    # at it would change a fill: prices and signals.
    changed = random_walk(n, seed + 1)
    future = {key: np.concatenate((bars[key][:cut], changed[key][cut:])) for key in bars}
    future["open_time"] = bars["open_time"]
    scale = jump * bars["close"][cut - 1] / changed["open_"][cut]
    for key in ("open_", "high", "low", "close"):
        future[key][cut:] = changed[key][cut:] * scale
    altered = dict(inputs)
    for key in ("entry_long", "exit_long", "entry_short", "exit_short"):
        altered[key] = np.concatenate((inputs[key][:cut], rng.random(n - cut) < 0.3))
    after = run_backtest(**future, **altered, config=config)

    assert np.array_equal(before.equity[:cut], after.equity[:cut])
    assert np.array_equal(before.held[:cut], after.held[:cut])
    done_before = before.trades[before.trades["exit_bar"] < cut]
    done_after = after.trades[after.trades["exit_bar"] < cut]
    assert done_before.tolist() == done_after.tolist()


def test_after_warm_up_freed_large_arrays_are_reused_without_page_faults() -> None:
    # warm_up() makes glibc keep freed large arrays instead of giving them back to the kernel
    # (engine._reuse_freed_memory): allocating them again must not fault fresh pages in. Three
    # 8 MB arrays are more than glibc's default adaptive trim threshold (16 MB) gives back.
    resource = pytest.importorskip("resource")
    try:
        glibc = bool(os.confstr("CS_GNU_LIBC_VERSION"))
    except (ValueError, AttributeError):
        glibc = False
    if not glibc or any(name.startswith(("MALLOC_", "GLIBC_TUNABLES")) for name in os.environ):
        pytest.skip("glibc malloc with its default settings only")
    warm_up()

    def allocate() -> int:
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        arrays = [np.ones(1_000_000) for _ in range(3)]
        faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
        del arrays
        return int(faults)

    allocate()
    pages = 3 * 8_000_000 // 4096
    assert allocate() < pages // 50
