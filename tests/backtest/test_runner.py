"""`runner`: formulas backtested on candle arrays equal the engine called directly; the optimizer
ranks like single runs; the down-sampler keeps the extremes."""

from __future__ import annotations

import dataclasses
import math
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import numpy as np
import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tradeos.backtest.engine import BacktestConfig, FillTiming, run_backtest, run_portfolio
from tradeos.backtest.runner import (
    MAX_COMBINATIONS,
    BacktestInputError,
    CandleArrays,
    OptimizationError,
    downsample,
    optimize,
    run_formula,
)
from tradeos.market.providers.base import Bar
from tradeos.strategies.formula import EvaluationError, InvalidFormula, compile_formula

SMA_CROSS = """
fast = 5
slow = 20
entry_long = crossover(sma(close, fast), sma(close, slow))
exit_long = crossunder(sma(close, fast), sma(close, slow))
entry_short = crossunder(sma(close, fast), sma(close, slow))
exit_short = crossover(sma(close, fast), sma(close, slow))
"""

WITH_LEVELS = """
period = 10
entry_long = close > sma(close, period)
exit_long = close < sma(close, period)
stop_loss = 0.01
take_profit = 2 * atr(14)
trailing_stop = 0.03
size = 0.5
"""

CONFIG = BacktestConfig(commission=0.001, quantity_step=0.0)


def walk(n: int, seed: int, *, symbol: str = "AAA", step: int = 3600) -> CandleArrays:
    rng = np.random.default_rng(seed)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, n)))
    open_ = np.empty(n)
    open_[0] = 100.0
    open_[1:] = close[:-1]
    wick = np.abs(rng.normal(0, 0.003, n))
    return CandleArrays(
        symbol=symbol,
        open_time=1_700_000_000 + np.arange(n, dtype=np.int64) * step,
        open=open_,
        high=np.maximum(open_, close) * (1 + wick),
        low=np.minimum(open_, close) * (1 - wick),
        close=close,
        volume=rng.uniform(1, 10, n),
    )


def subset(candles: CandleArrays, keep: np.ndarray, symbol: str) -> CandleArrays:
    return CandleArrays(
        symbol, candles.open_time[keep], candles.open[keep], candles.high[keep],
        candles.low[keep], candles.close[keep], candles.volume[keep],
    )  # fmt: skip


def same_result(a: object, b: object) -> None:
    assert dataclasses.asdict(a.metrics) == pytest.approx(  # type: ignore[attr-defined]
        dataclasses.asdict(b.metrics),  # type: ignore[attr-defined]
        nan_ok=True,
    )
    np.testing.assert_array_equal(a.equity, b.equity)  # type: ignore[attr-defined]
    np.testing.assert_array_equal(a.trades, b.trades)  # type: ignore[attr-defined]


def test_one_instrument_equals_the_engine_called_directly() -> None:
    candles = walk(600, 1)
    run = run_formula([candles], SMA_CROSS, config=CONFIG)
    signals = compile_formula(SMA_CROSS).evaluate(candles.inputs())
    direct = run_backtest(
        candles.open_time, candles.open, candles.high, candles.low, candles.close,
        signals.entry_long, signals.exit_long, signals.entry_short, signals.exit_short,
        config=CONFIG,
    )  # fmt: skip
    same_result(run.result, direct)
    assert run.symbols == ("AAA",)
    assert run.params == {"fast": 5.0, "slow": 20.0}
    assert run.metrics.trades > 5
    trades = run.trades()
    assert len(trades) == run.metrics.trades
    assert {t.symbol for t in trades} == {"AAA"}
    assert {t.side for t in trades} == {"long", "short"}
    assert sum(t.pnl for t in trades) == pytest.approx(run.final_equity - CONFIG.initial_cash)


def test_stops_targets_and_sizes_pass_through() -> None:
    candles = walk(500, 2)
    run = run_formula([candles], WITH_LEVELS, config=CONFIG)
    signals = compile_formula(WITH_LEVELS).evaluate(candles.inputs())
    assert signals.stop_loss is not None and signals.size is not None
    direct = run_backtest(
        candles.open_time, candles.open, candles.high, candles.low, candles.close,
        signals.entry_long, signals.exit_long, signals.entry_short, signals.exit_short,
        stop_loss=signals.stop_loss, take_profit=signals.take_profit,
        trailing_stop=signals.trailing_stop, size=signals.size, config=CONFIG,
    )  # fmt: skip
    same_result(run.result, direct)
    reasons = {t.exit_reason for t in run.trades()}
    assert reasons & {"stop_loss", "take_profit", "trailing_stop"}
    # size = 0.5 of equity (percent_equity sizing): no trade spends more than about half.
    first = run.trades()[0]
    assert first.quantity * first.entry_price < 0.51 * CONFIG.initial_cash


def test_params_override_the_defaults() -> None:
    candles = walk(600, 3)
    default = run_formula([candles], SMA_CROSS, config=CONFIG)
    changed = run_formula([candles], SMA_CROSS, params={"fast": 8}, config=CONFIG)
    assert changed.params == {"fast": 8.0, "slow": 20.0}
    assert changed.final_equity != default.final_equity
    signals = compile_formula(SMA_CROSS).evaluate(candles.inputs(), {"fast": 8})
    direct = run_backtest(
        candles.open_time, candles.open, candles.high, candles.low, candles.close,
        signals.entry_long, signals.exit_long, signals.entry_short, signals.exit_short,
        config=CONFIG,
    )  # fmt: skip
    same_result(changed.result, direct)


def test_several_instruments_share_one_cash_balance_on_aligned_bars() -> None:
    first = walk(400, 4, symbol="AAA")
    # The second instrument has no bar on every third hour and starts later.
    second_all = walk(400, 5, symbol="BBB")
    keep = (np.arange(400) % 3 != 0) & (np.arange(400) >= 50)
    second = subset(second_all, keep, "BBB")
    config = dataclasses.replace(CONFIG, size=0.5)
    run = run_formula([first, second], SMA_CROSS, config=config)

    # The same thing by hand: signals from each instrument's own bars, aligned with NaN.
    formula = compile_formula(SMA_CROSS)
    times = first.open_time
    where = np.searchsorted(times, second.open_time)
    grids: dict[str, np.ndarray] = {}
    for name in ("open", "high", "low", "close"):
        grid = np.full((2, times.size), np.nan)
        grid[0] = getattr(first, name)
        grid[1, where] = getattr(second, name)
        grids[name] = grid
    rules = {}
    for rule in ("entry_long", "exit_long", "entry_short", "exit_short"):
        grid = np.zeros((2, times.size), dtype=bool)
        grid[0] = getattr(formula.evaluate(first.inputs()), rule)
        grid[1, where] = getattr(formula.evaluate(second.inputs()), rule)
        rules[rule] = grid
    direct = run_portfolio(
        times, grids["open"], grids["high"], grids["low"], grids["close"],
        rules["entry_long"], rules["exit_long"], rules["entry_short"], rules["exit_short"],
        config=config,
    )  # fmt: skip
    same_result(run.result, direct)
    assert run.symbols == ("AAA", "BBB")
    assert {t.symbol for t in run.trades()} == {"AAA", "BBB"}
    assert run.open_time.size == 400


def test_open_times_are_the_union_of_the_instruments() -> None:
    first = walk(100, 6, symbol="AAA")
    second = walk(100, 7, symbol="BBB")
    shifted = dataclasses.replace(second, open_time=second.open_time + 50 * 3600)
    run = run_formula([first, shifted], SMA_CROSS, config=CONFIG)
    assert run.open_time.size == 150
    assert run.open_time[0] == first.open_time[0]
    assert run.open_time[-1] == shifted.open_time[-1]


def test_bad_formulas_and_data_are_clear_errors() -> None:
    candles = walk(100, 8)
    with pytest.raises(InvalidFormula) as invalid:
        run_formula([candles], "fast = 10\nentry_long = close >\n")
    assert invalid.value.errors[0].line == 2
    with pytest.raises(EvaluationError, match="unknown parameter 'nope'"):
        run_formula([candles], SMA_CROSS, params={"nope": 1})
    with pytest.raises(EvaluationError):
        run_formula([candles], SMA_CROSS, params={"fast": 1})  # sma needs a period >= 2
    with pytest.raises(BacktestInputError, match="no instrument"):
        run_formula([], SMA_CROSS)
    empty = CandleArrays.from_bars("EMPTY", [])
    with pytest.raises(BacktestInputError, match="no bars"):
        run_formula([empty], SMA_CROSS)
    with pytest.raises(BacktestInputError, match="twice"):
        run_formula([candles, candles], SMA_CROSS)
    with pytest.raises(BacktestInputError, match="strictly increasing"):
        dataclasses.replace(candles, open_time=candles.open_time[::-1].copy())
    with pytest.raises(BacktestInputError, match="values for"):
        dataclasses.replace(candles, close=candles.close[:-1])


def test_candle_arrays_from_bars_and_frames_agree() -> None:
    start = datetime(2024, 1, 1, tzinfo=UTC)
    bars = [
        Bar(
            start + timedelta(hours=i),
            Decimal("10.5") + i,
            Decimal("11.25") + i,
            Decimal("10") + i,
            Decimal("11") + i,
            Decimal("100.125"),
        )
        for i in range(5)
    ]
    from_bars = CandleArrays.from_bars("X", bars)
    assert from_bars.open_time.dtype == np.int64
    assert from_bars.open_time[0] == int(start.timestamp())
    assert from_bars.close.tolist() == [11.0, 12.0, 13.0, 14.0, 15.0]
    decimal = pl.Decimal(38, 18)
    frame = pl.DataFrame(
        {
            "open_time": [b.open_time for b in bars],
            "open": [b.open for b in bars],
            "high": [b.high for b in bars],
            "low": [b.low for b in bars],
            "close": [b.close for b in bars],
            "volume": [b.volume for b in bars],
        },
        schema={"open_time": pl.Datetime("us", "UTC"), **dict.fromkeys(
            ("open", "high", "low", "close", "volume"), decimal
        )},
    )  # fmt: skip
    # Two frames, out of order, with the first bar repeated: sorted, last one wins.
    later, earlier = frame.slice(2), frame.slice(0, 2)
    changed = earlier.with_columns(pl.lit(Decimal("99"), dtype=decimal).alias("volume"))
    from_frames = CandleArrays.from_frames("X", [later, earlier, changed.slice(0, 1)])
    np.testing.assert_array_equal(from_frames.open_time, from_bars.open_time)
    np.testing.assert_array_equal(from_frames.close, from_bars.close)
    assert from_frames.volume.tolist() == [99.0, 100.125, 100.125, 100.125, 100.125]


# -- optimize ---------------------------------------------------------------------------------

GRID = {"fast": [3, 5, 8, 12], "slow": [15, 20, 30]}


def test_optimize_ranks_every_combination_like_single_runs() -> None:
    candles = walk(800, 9)
    rows = optimize(candles, SMA_CROSS, GRID, objective="sharpe", top=5, config=CONFIG)
    assert [row.rank for row in rows] == [1, 2, 3, 4, 5]
    singles = {
        (fast, slow): run_formula(
            [candles], SMA_CROSS, params={"fast": fast, "slow": slow}, config=CONFIG
        ).metrics.sharpe
        for fast in GRID["fast"]
        for slow in GRID["slow"]
    }
    best_first = sorted(singles.values(), key=lambda v: -v if not math.isnan(v) else math.inf)
    assert [row.metrics.sharpe for row in rows] == pytest.approx(best_first[:5])
    for row in rows[:3]:
        single = run_formula([candles], SMA_CROSS, params=row.params, config=CONFIG)
        assert dataclasses.asdict(row.metrics) == pytest.approx(
            dataclasses.asdict(single.metrics), nan_ok=True
        )
        assert row.final_equity == pytest.approx(single.final_equity)


@pytest.mark.parametrize("objective", ["total_return", "max_drawdown", "sortino", "trades"])
def test_optimize_objectives_and_directions(objective: str) -> None:
    candles = walk(500, 10)
    rows = optimize(candles, SMA_CROSS, GRID, objective=objective, top=12, config=CONFIG)
    assert len(rows) == 12
    values = [float(getattr(row.metrics, objective)) for row in rows]
    finite = [v for v in values if not math.isnan(v)]
    if objective == "max_drawdown":
        assert finite == sorted(finite)
    else:
        assert finite == sorted(finite, reverse=True)
    assert {(row.params["fast"], row.params["slow"]) for row in rows} == {
        (float(f), float(s)) for f in GRID["fast"] for s in GRID["slow"]
    }


def test_optimize_with_stop_rules_runs_each_combination() -> None:
    candles = walk(500, 11)
    grid = {"period": [5, 10, 20, 40]}
    rows = optimize(candles, WITH_LEVELS, grid, objective="total_return", top=2, config=CONFIG)
    assert len(rows) == 2
    returns = [
        run_formula([candles], WITH_LEVELS, params={"period": p}, config=CONFIG)
        for p in grid["period"]
    ]
    best = max(returns, key=lambda run: run.metrics.total_return)
    assert rows[0].params == best.params
    assert rows[0].metrics == best.metrics


def test_optimize_errors() -> None:
    candles = walk(200, 12)
    with pytest.raises(OptimizationError, match="unknown objective"):
        optimize(candles, SMA_CROSS, GRID, objective="luck", top=1, config=CONFIG)
    with pytest.raises(OptimizationError, match="unknown parameter"):
        optimize(candles, SMA_CROSS, {"nope": [1]}, objective="sharpe", top=1, config=CONFIG)
    with pytest.raises(OptimizationError, match="no values"):
        optimize(candles, SMA_CROSS, {"fast": []}, objective="sharpe", top=1, config=CONFIG)
    too_many = {"fast": list(range(2, 102)), "slow": list(range(200, 301))}
    with pytest.raises(OptimizationError, match=f"at most {MAX_COMBINATIONS:,}"):
        optimize(candles, SMA_CROSS, too_many, objective="sharpe", top=1, config=CONFIG)
    with pytest.raises(EvaluationError, match="fast=1"):
        optimize(candles, SMA_CROSS, {"fast": [1, 5]}, objective="sharpe", top=1, config=CONFIG)


# -- downsample -------------------------------------------------------------------------------


def test_downsample_keeps_the_ends_and_extremes_within_the_bound() -> None:
    rng = np.random.default_rng(13)
    values = np.cumsum(rng.normal(size=100_003))
    times = np.arange(values.size, dtype=np.int64) * 60
    kept_times, kept = downsample(times, values, max_points=500)
    assert kept.size <= 500
    assert kept_times[0] == times[0] and kept_times[-1] == times[-1]
    assert kept[0] == values[0] and kept[-1] == values[-1]
    assert kept.max() == values.max() and kept.min() == values.min()
    assert np.all(np.diff(kept_times) > 0)
    # Every kept point is a real point of the curve.
    np.testing.assert_array_equal(values[kept_times // 60], kept)

    # The deepest drawdown survives.
    def deepest(curve: np.ndarray) -> float:
        return float(np.min(curve / np.maximum.accumulate(curve) - 1))

    equity = 1000 + values - values.min() + 1
    _, kept_equity = downsample(times, equity, max_points=500)
    assert deepest(kept_equity) == pytest.approx(deepest(equity))


def test_downsample_leaves_short_curves_alone_and_checks_its_input() -> None:
    times = np.arange(10)
    values = np.linspace(0, 1, 10)
    kept_times, kept = downsample(times, values, max_points=2000)
    np.testing.assert_array_equal(kept_times, times)
    np.testing.assert_array_equal(kept, values)
    with_gap = values.copy()
    with_gap[3] = np.nan
    _, kept = downsample(np.arange(10), with_gap, max_points=4)
    assert kept.size <= 4 and not np.isnan(kept).any()
    with pytest.raises(ValueError, match="same length"):
        downsample(times, values[:-1])
    with pytest.raises(ValueError, match="at least 4"):
        downsample(times, values, max_points=3)


# -- worker start -----------------------------------------------------------------------------


async def test_job_workers_warm_the_engine_up_once_before_their_first_job() -> None:
    import tradeos.backtest.jobs
    from tradeos.core.jobs import queue
    from tradeos.core.jobs.definitions import WORKER_START_HOOKS, on_worker_start

    assert tradeos.backtest.jobs.warm_up_backtests in WORKER_START_HOOKS
    calls: list[str] = []

    def failing() -> None:
        calls.append("failing")
        raise RuntimeError("no compiler today")

    def counted() -> None:
        calls.append("counted")

    for hook in (failing, counted):
        on_worker_start(hook)
        on_worker_start(hook)  # registered once
    try:
        await queue._run_worker_start_hooks()
        await queue._run_worker_start_hooks()  # a second queue in the process: nothing again
    finally:
        WORKER_START_HOOKS.remove(failing)
        WORKER_START_HOOKS.remove(counted)
    assert calls == ["failing", "counted"]  # a failing hook does not stop the others


# Every indicator of the language in one strategy (the per-indicator test below reads each
# one's values; this one runs them through signals and the engine).
EVERY_INDICATOR = """
entry_long = (crossover(ema(close, 8), wma(close, 21)) and rsi(close, 14) < 75
    and macd_hist(close, 12, 26, 9) > -1 and close < bb_upper(close, 20, 2) and adx(14) > 5)
exit_long = (crossunder(sma(close, 5), sma(close, 13)) or cci(20) > 200 or stoch_k(14, 3) > 95
    or close < shift(lowest(low, 20), 1) + 0 * stdev(close, 10))
entry_short = (crossunder(close, vwap()) and roc(close, 5) < 0 and obv() < shift(obv(), 3)
    and close < bb_middle(close, 20, 2) and close > bb_lower(close, 20, 2) * 0.9)
exit_short = (close > shift(highest(high, 10), 1) or stoch_d(14, 3, 3) < 5
    or macd(close, 12, 26, 9) > macd_signal(close, 12, 26, 9) + 1)
stop_loss = 2 * atr(14)
size = 0.5
"""


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(t=st.integers(min_value=30, max_value=399), seed=st.integers(0, 2**32 - 1))
def test_a_formula_backtest_before_a_bar_ignores_every_bar_from_it_on(t: int, seed: int) -> None:
    # No look-ahead end to end, formula included: other bars from `t` on change no signal
    # before `t`, and (filling at the signal bar's close, so that a signal on bar t - 1 shows
    # in bar t - 1's equity) neither the equity before `t` nor a trade closed before it.
    market = walk(400, 11)
    other = walk(400, seed)
    changed = CandleArrays(
        market.symbol,
        market.open_time,
        *(
            np.concatenate((getattr(market, name)[:t], getattr(other, name)[t:]))
            for name in ("open", "high", "low", "close", "volume")
        ),
    )
    formula = compile_formula(EVERY_INDICATOR)
    inputs = ("open", "high", "low", "close", "volume")
    seen, changed_seen = (
        formula.evaluate({name: getattr(c, name) for name in inputs}) for c in (market, changed)
    )
    for rule in dataclasses.fields(seen):
        ours, theirs = getattr(seen, rule.name), getattr(changed_seen, rule.name)
        if ours is not None:
            np.testing.assert_array_equal(ours[:t], theirs[:t], err_msg=rule.name)

    on_close = dataclasses.replace(CONFIG, fill_at=FillTiming.CLOSE)
    before = run_formula([market], EVERY_INDICATOR, config=on_close)
    after = run_formula([changed], EVERY_INDICATOR, config=on_close)
    np.testing.assert_array_equal(before.equity[:t], after.equity[:t])
    closed = before.result.trades["exit_bar"] < t
    np.testing.assert_array_equal(
        before.result.trades[closed], after.result.trades[after.result.trades["exit_bar"] < t]
    )


# Each function of the language, with its usual arguments.
EACH_INDICATOR = [
    "sma(close, 10)", "ema(close, 10)", "wma(close, 10)", "rsi(close, 14)", "roc(close, 5)",
    "stdev(close, 10)", "highest(high, 10)", "lowest(low, 10)", "macd(close, 12, 26, 9)",
    "macd_signal(close, 12, 26, 9)", "macd_hist(close, 12, 26, 9)", "bb_upper(close, 20, 2)",
    "bb_middle(close, 20, 2)", "bb_lower(close, 20, 2)", "atr(14)", "adx(14)", "cci(20)",
    "stoch_k(14, 3)", "stoch_d(14, 3, 3)", "obv()", "vwap()", "shift(close, 1)",
    "abs(close - open)", "min(open, close)", "max(open, close)",
]  # fmt: skip


@pytest.mark.parametrize("indicator", EACH_INDICATOR)
@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(t=st.integers(min_value=60, max_value=399), seed=st.integers(0, 2**32 - 1))
def test_no_indicator_reads_a_bar_ahead(indicator: str, t: int, seed: int) -> None:
    # `value > shift(value, 1)`: whether the indicator rose on a bar flips often and depends
    # on its value on that bar, so a value before t that read bar t or later shows.
    formula = compile_formula(f"value = {indicator}\nentry_long = value > shift(value, 1)\n")
    market, other = walk(400, 13), walk(400, seed)
    names = ("open", "high", "low", "close", "volume")
    before = formula.evaluate({name: getattr(market, name) for name in names}).entry_long
    changed = {
        name: np.concatenate((getattr(market, name)[:t], getattr(other, name)[t:]))
        for name in names
    }
    after = formula.evaluate(changed).entry_long
    assert before[:t].any() and not before[:t].all()
    np.testing.assert_array_equal(before[:t], after[:t])


def test_the_look_ahead_formula_trades_both_ways() -> None:
    # The property above means something only if the formula trades.
    trades = run_formula([walk(400, 11)], EVERY_INDICATOR, config=CONFIG).result.trades
    assert (trades["side"] > 0).any() and (trades["side"] < 0).any()


def test_a_run_reports_its_progress_in_order_to_the_end() -> None:
    seen: list[tuple[int, str]] = []
    run_formula(
        [walk(300, 1, symbol="AAA"), walk(300, 2, symbol="BBB")],
        SMA_CROSS,
        config=CONFIG,
        progress=lambda percent, message: seen.append((percent, message)),
    )
    percents = [percent for percent, _ in seen]
    assert percents == sorted(percents) and percents[-1] == 100
    assert [message for _, message in seen] == [
        "evaluating AAA",
        "evaluating BBB",
        "simulating",
        "done",
    ]
