"""The backtest engine vs backtesting.py and vectorbt: same trades, same final equity, and speed.

    python3 -m venv /tmp/peers
    /tmp/peers/bin/pip install backtesting==0.6.6 vectorbt==1.2.0 numba==0.68.1 numpy==2.4.6
    /tmp/peers/bin/python bench/backtest_peers.py [--bars 1000000] [--check-bars 50000]
        [--grid-bars 100000] [--combos 1000] [--rounds 30] [--grid-rounds 10] [--peer-rounds 2]
        [--skip-backtesting-py-speed]

The peers are bench-only dependencies, in their own virtualenv; TradeOS is imported from this
source tree (`src/` on `sys.path`), its numba functions compiled before any timing.

Data: a seeded geometric random walk of one-minute bars (open = previous close, high / low a
little outside the body).

Correctness (`--check-bars`): the same precomputed SMA(10)/SMA(30) crossover signals through all
three with matching semantics — a signal on bar t fills at bar t+1's open, whole units, 100 % of
equity (the fee included), commission 0.1 % per side, no slippage, open positions left open and
marked to market at the end — once long-only and once long/short with stop-and-reverse. Trades
(entry/exit bar, prices, quantity, PnL) and final equity must agree to 1e-9 relative.
backtesting.py: a strategy replaying the signals with `buy/sell(size=1 - eps)` (its largest
fraction of available margin, whole units) and `position.close()` before a reversal.
vectorbt: `Portfolio.from_signals` with signals shifted one bar, `price=open`, `size=np.inf`,
`size_granularity=1`, `fees=0.001`; long/short adds `short_entries` / `short_exits` and
`lock_cash=True` (vectorbt only sizes an all-cash short with it).

Speed, end to end from candle arrays: the SMA(10)/SMA(30) crossover signals (`sma_signals`, one
compiled pass, the same function for all three; checked against the plain numpy `crossovers(sma,
sma)`), the backtest, the full metrics and the trade list — TradeOS `run_backtest` (metrics and
the trade array included); vectorbt `from_signals` + `stats()` + `trades.records_readable`;
backtesting.py `Backtest.run()` (which computes its stats and trades table); and "TradeOS
formula", the same strategy written in the formula language (parsed, checked and evaluated:
what a TradeOS user runs) instead of `sma_signals`. The best of `--rounds` for TradeOS (its two
paths alternating, one call each per round: a call is ~15 ms, so many rounds keep one noisy
moment of a shared machine from being the result) and of `--peer-rounds` for each peer (a call
is seconds: noise averages out within it); the load average is printed. Then TradeOS's
`run_grid` on `--combos` fast/slow SMA pairs over `--grid-bars` bars, signal building
included, best of `--grid-rounds`.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numba
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from tradeos.backtest.engine import BacktestConfig, run_backtest, run_grid, warm_up

COMMISSION = 0.001
CASH = 1_000_000.0
FRACTION = 1 - sys.float_info.epsilon  # backtesting.py's "all of the margin"


def candles(n: int, seed: int = 7) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.002, n)))
    open_ = np.empty(n)
    open_[0] = 100.0
    open_[1:] = close[:-1]
    wick = np.abs(rng.normal(0, 0.001, n))
    high = np.maximum(open_, close) * (1 + wick)
    low = np.minimum(open_, close) * (1 - wick)
    times = np.arange(n, dtype=np.int64) * 60 + 1_700_000_000
    return {"time": times, "open": open_, "high": high, "low": low, "close": close}


def sma(values: np.ndarray, window: int) -> np.ndarray:
    sums = np.cumsum(values)
    out = np.full(values.size, np.nan)
    out[window - 1] = sums[window - 1]
    out[window:] = sums[window:] - sums[:-window]
    out[window - 1 :] /= window
    return out


def crossovers(fast: np.ndarray, slow: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(up, down): the fast average crossed above / below the slow one on this bar (it was at
    or below / at or above it on the bar before; a NaN bar crosses nothing)."""
    up = np.zeros(fast.size, dtype=np.bool_)
    down = np.zeros(fast.size, dtype=np.bool_)
    up[1:] = (fast[1:] > slow[1:]) & (fast[:-1] <= slow[:-1])
    down[1:] = (fast[1:] < slow[1:]) & (fast[:-1] >= slow[:-1])
    return up, down


@numba.njit(cache=True)
def _sma_crossovers(close: np.ndarray, fast: int, slow: int) -> tuple[np.ndarray, np.ndarray]:
    # `crossovers(sma(close, fast), sma(close, slow))` in one compiled pass: running sums, and
    # `fast_sum / fast > slow_sum / slow` compared as `fast_sum * slow > slow_sum * fast` (no
    # division; equal to the numpy version up to rounding in the last bits).
    n = close.size
    up = np.zeros(n, dtype=np.bool_)
    down = np.zeros(n, dtype=np.bool_)
    longest = max(fast, slow)
    fast_sum = 0.0
    slow_sum = 0.0
    was_above = False
    was_below = False
    for t in range(n):
        fast_sum += close[t]
        slow_sum += close[t]
        if t >= fast:
            fast_sum -= close[t - fast]
        if t >= slow:
            slow_sum -= close[t - slow]
        if t < longest - 1:
            continue
        scaled_fast = fast_sum * slow
        scaled_slow = slow_sum * fast
        above = scaled_fast > scaled_slow
        below = scaled_fast < scaled_slow
        # A cross needs the bar before at or beyond the other side (and to exist at all).
        up[t] = above and t > longest - 1 and not was_above
        down[t] = below and t > longest - 1 and not was_below
        was_above = above
        was_below = below
    return up, down


def sma_signals(close: np.ndarray, fast: int = 10, slow: int = 30) -> tuple[np.ndarray, np.ndarray]:
    """SMA crossover signals, compiled: the same for every engine, and cheap beside them."""
    result: tuple[np.ndarray, np.ndarray] = _sma_crossovers(close, fast, slow)
    return result


# --- TradeOS ---------------------------------------------------------------------------------


def tradeos_config() -> BacktestConfig:
    return BacktestConfig(initial_cash=CASH, commission=COMMISSION, close_at_end=False)


def tradeos_run(data: dict[str, np.ndarray], up: np.ndarray, down: np.ndarray, short: bool) -> Any:
    return run_backtest(
        data["time"], data["open"], data["high"], data["low"], data["close"],
        up, down, down if short else None, up if short else None,
        config=tradeos_config(),
    )  # fmt: skip


def tradeos_end_to_end(data: dict[str, np.ndarray]) -> Any:
    up, down = sma_signals(data["close"])
    return tradeos_run(data, up, down, short=False)


FORMULA = """fast = 10
slow = 30
entry_long = crossover(sma(close, fast), sma(close, slow))
exit_long = crossunder(sma(close, fast), sma(close, slow))
"""


def tradeos_formula_end_to_end(data: dict[str, np.ndarray]) -> Any:
    """What a TradeOS user runs: the strategy written in the formula language, parsed, checked
    and evaluated on the candles, then the same backtest."""
    from tradeos.strategies.formula import compile_formula

    signals = compile_formula(FORMULA).evaluate({"close": data["close"]})
    return tradeos_run(data, signals.entry_long, signals.exit_long, short=False)


# --- backtesting.py --------------------------------------------------------------------------


def frame(data: dict[str, np.ndarray]) -> Any:
    import pandas as pd

    index = pd.to_datetime(data["time"], unit="s")
    return pd.DataFrame(
        {"Open": data["open"], "High": data["high"], "Low": data["low"], "Close": data["close"]},
        index=index,
    )


def backtesting_py_run(
    data: dict[str, np.ndarray], up: np.ndarray, down: np.ndarray, short: bool
) -> Any:
    from backtesting import Backtest, Strategy

    class Replay(Strategy):  # type: ignore[misc]
        """TradeOS's signal semantics, bar by bar."""

        def init(self) -> None:
            pass

        def next(self) -> None:
            i = len(self.data) - 1
            entry_long, exit_long = bool(up[i]), bool(down[i])
            entry_short, exit_short = (exit_long, entry_long) if short else (False, False)
            position = self.position.size
            if position > 0:
                if entry_short:
                    self.position.close()
                    self.sell(size=FRACTION)
                elif exit_long:
                    self.position.close()
            elif position < 0:
                if entry_long:
                    self.position.close()
                    self.buy(size=FRACTION)
                elif exit_short:
                    self.position.close()
            elif entry_long:
                self.buy(size=FRACTION)
            elif entry_short:
                self.sell(size=FRACTION)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        test = Backtest(frame(data), Replay, cash=CASH, commission=COMMISSION)
        return test.run()


def backtesting_py_end_to_end(data: dict[str, np.ndarray]) -> Any:
    up, down = sma_signals(data["close"])
    return backtesting_py_run(data, up, down, short=False)


# --- vectorbt --------------------------------------------------------------------------------


def vectorbt_run(data: dict[str, np.ndarray], up: np.ndarray, down: np.ndarray, short: bool) -> Any:
    import pandas as pd
    import vectorbt as vbt

    index = pd.to_datetime(data["time"], unit="s")

    def next_bar(signal: np.ndarray) -> pd.Series:
        # vectorbt fills on the bar it is given: shift one bar and fill at that bar's open.
        shifted = np.zeros(signal.size, dtype=np.bool_)
        shifted[1:] = signal[:-1]
        return pd.Series(shifted, index=index)

    options: dict[str, Any] = {}
    if short:
        options = {
            "short_entries": next_bar(down),
            "short_exits": next_bar(up),
            "lock_cash": True,
        }
    else:
        options = {"direction": "longonly"}
    return vbt.Portfolio.from_signals(
        pd.Series(data["close"], index=index),
        next_bar(up),
        next_bar(down),
        price=pd.Series(data["open"], index=index),
        size=np.inf,
        size_granularity=1,
        fees=COMMISSION,
        init_cash=CASH,
        freq="1min",
        **options,
    )


def vectorbt_end_to_end(data: dict[str, np.ndarray]) -> Any:
    up, down = sma_signals(data["close"])
    portfolio = vectorbt_run(data, up, down, short=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        portfolio.stats()
    portfolio.trades.records_readable  # noqa: B018 (building the trade table is the point)
    return portfolio


# --- comparison ------------------------------------------------------------------------------


def tradeos_trades(result: Any) -> dict[str, np.ndarray]:
    trades = result.trades
    return {
        "entry_bar": trades["entry_bar"],
        "exit_bar": trades["exit_bar"],
        "entry_price": trades["entry_price"],
        "exit_price": trades["exit_price"],
        "quantity": trades["quantity"],
        "side": trades["side"].astype(np.int64),
        "pnl": trades["pnl"],
    }


def backtesting_py_trades(stats: Any) -> dict[str, np.ndarray]:
    trades = stats["_trades"]
    size = trades["Size"].to_numpy()
    return {
        "entry_bar": trades["EntryBar"].to_numpy(),
        "exit_bar": trades["ExitBar"].to_numpy(),
        "entry_price": trades["EntryPrice"].to_numpy(),
        "exit_price": trades["ExitPrice"].to_numpy(),
        "quantity": np.abs(size).astype(np.float64),
        "side": np.sign(size).astype(np.int64),
        "pnl": trades["PnL"].to_numpy(),
    }


def vectorbt_trades(portfolio: Any) -> dict[str, np.ndarray]:
    records = portfolio.trades.records
    closed = records[records["status"] == 1]
    return {
        "entry_bar": closed["entry_idx"],
        "exit_bar": closed["exit_idx"],
        "entry_price": closed["entry_price"],
        "exit_price": closed["exit_price"],
        "quantity": closed["size"],
        "side": np.where(closed["direction"] == 0, 1, -1),
        "pnl": closed["pnl"],
    }


def same(name: str, ours: dict[str, np.ndarray], theirs: dict[str, np.ndarray]) -> int:
    if ours["entry_bar"].size != theirs["entry_bar"].size:
        raise AssertionError(
            f"{name}: {ours['entry_bar'].size} trades vs {theirs['entry_bar'].size}"
        )
    for key, values in ours.items():
        if not np.allclose(values, theirs[key], rtol=1e-9, atol=0):
            bad = np.flatnonzero(~np.isclose(values, theirs[key], rtol=1e-9, atol=0))[0]
            raise AssertionError(
                f"{name}: trade {bad} {key} {values[bad]!r} vs {theirs[key][bad]!r}"
            )
    return int(ours["entry_bar"].size)


def check_equal(value: float, other: float, name: str) -> None:
    if abs(value - other) > 1e-9 * abs(other):
        raise AssertionError(f"{name}: final equity {value!r} vs {other!r}")


def correctness(n: int) -> list[tuple[str, int, float, float, float]]:
    data = candles(n, seed=11)
    up, down = sma_signals(data["close"])
    plain_up, plain_down = crossovers(sma(data["close"], 10), sma(data["close"], 30))
    if not (np.array_equal(up, plain_up) and np.array_equal(down, plain_down)):
        raise AssertionError("the compiled signals differ from the numpy definition")
    rows = []
    for short in (False, True):
        mode = "long/short reverse" if short else "long only"
        ours = tradeos_run(data, up, down, short)
        stats = backtesting_py_run(data, up, down, short)
        portfolio = vectorbt_run(data, up, down, short)
        trades = tradeos_trades(ours)
        # backtesting.py leaves the open trade out of its table; so does TradeOS here.
        count = same(f"backtesting.py {mode}", trades, backtesting_py_trades(stats))
        same(f"vectorbt {mode}", trades, vectorbt_trades(portfolio))
        check_equal(ours.final_equity, float(stats["Equity Final [$]"]), f"backtesting.py {mode}")
        check_equal(ours.final_equity, float(portfolio.final_value()), f"vectorbt {mode}")
        rows.append(
            (
                mode,
                count,
                ours.final_equity,
                float(stats["Equity Final [$]"]),
                float(portfolio.final_value()),
            )
        )
    return rows


def timed(function: Callable[[], Any], rounds: int) -> float:
    best = float("inf")
    for _ in range(rounds):
        started = time.perf_counter()
        function()
        best = min(best, time.perf_counter() - started)
    return best


def timed_alternating(functions: dict[str, Callable[[], Any]], rounds: int) -> dict[str, float]:
    """The best time of each function over `rounds` rounds, one call of each per round."""
    best = dict.fromkeys(functions, float("inf"))
    for _ in range(rounds):
        for name, function in functions.items():
            started = time.perf_counter()
            function()
            best[name] = min(best[name], time.perf_counter() - started)
    return best


def grid(n: int, combos: int, rounds: int) -> tuple[float, int]:
    data = candles(n, seed=3)
    pairs = [(fast, slow) for slow in range(20, 220, 2) for fast in range(2, 20)]
    pairs = [(fast, slow) for fast, slow in pairs if fast < slow][:combos]

    def run() -> Any:
        close = data["close"]
        entries = np.empty((len(pairs), n), dtype=np.bool_)
        exits = np.empty((len(pairs), n), dtype=np.bool_)
        for row, (fast, slow) in enumerate(pairs):
            entries[row], exits[row] = sma_signals(close, fast, slow)
        return run_grid(
            data["time"], data["open"], data["high"], data["low"], close, entries, exits,
            config=tradeos_config(),
        )  # fmt: skip

    result = run()
    # One grid row must agree with a full run of the same combination.
    fast, slow = pairs[-1]
    up, down = sma_signals(data["close"], fast, slow)
    single = tradeos_run(data, up, down, short=False)
    if not np.isclose(result.column("final_equity")[-1], single.final_equity, rtol=1e-12):
        raise AssertionError("grid row differs from its single run")
    return timed(run, rounds), len(pairs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bars", type=int, default=1_000_000)
    parser.add_argument("--check-bars", type=int, default=50_000)
    parser.add_argument("--grid-bars", type=int, default=100_000)
    parser.add_argument("--combos", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--grid-rounds", type=int, default=10)
    parser.add_argument("--peer-rounds", type=int, default=2)
    parser.add_argument("--skip-backtesting-py-speed", action="store_true")
    args = parser.parse_args()

    import backtesting
    import backtesting.backtesting
    import vectorbt

    # No progress bars in the printed table.
    backtesting.backtesting._tqdm = lambda sequence, **_: sequence

    print(
        f"numpy {np.__version__}, numba {numba.__version__}, vectorbt {vectorbt.__version__}, "
        f"backtesting.py {backtesting.__version__}, python {sys.version.split()[0]}"
    )
    print(f"load average before timing: {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
    started = time.perf_counter()
    warm_up()
    print(f"TradeOS warm_up(): {time.perf_counter() - started:.2f} s")

    print(f"\nSame trades and final equity on {args.check_bars:,} bars (rtol 1e-9):")
    print(
        f"{'semantics':<20} {'trades':>7} {'TradeOS':>18} {'backtesting.py':>18} {'vectorbt':>18}"
    )
    for mode, count, ours, theirs, vbt_final in correctness(args.check_bars):
        print(f"{mode:<20} {count:>7} {ours:>18.6f} {theirs:>18.6f} {vbt_final:>18.6f}")

    data = candles(args.bars)
    # Every engine once before timing: numba compilation and imports are not the engines' speed.
    tradeos_end_to_end(data)
    vectorbt_end_to_end(candles(1000))
    tradeos_formula_end_to_end(data)
    same_trades = len(tradeos_formula_end_to_end(data).trades) == len(
        tradeos_end_to_end(data).trades
    )
    assert same_trades, "the formula's signals differ from sma_signals"
    # TradeOS's two paths take ~15 ms a call: their rounds alternate, so both see the same
    # moments of a shared machine, and are many, so the best of them is not one noisy window.
    ours = timed_alternating(
        {
            "TradeOS": lambda: tradeos_end_to_end(data),
            "TradeOS formula": lambda: tradeos_formula_end_to_end(data),
        },
        args.rounds,
    )
    figures = {**ours, "vectorbt": timed(lambda: vectorbt_end_to_end(data), args.peer_rounds)}
    if not args.skip_backtesting_py_speed:
        figures["backtesting.py"] = timed(lambda: backtesting_py_end_to_end(data), args.peer_rounds)
    trades = len(tradeos_end_to_end(data).trades)
    print(
        f"\nSMA(10)/SMA(30) long-only crossover, {args.bars:,} one-minute bars, end to end "
        f"({trades} trades):"
    )
    print(f"{'engine':<16} {'seconds':>10} {'vs TradeOS':>12}")
    for name, seconds in figures.items():
        print(f"{name:<16} {seconds:>10.4f} {seconds / figures['TradeOS']:>11.1f}×")

    seconds, combos = grid(args.grid_bars, args.combos, args.grid_rounds)
    print(
        f"\nTradeOS run_grid: {combos} SMA pairs over {args.grid_bars:,} bars, signals included: "
        f"{seconds:.2f} s ({seconds / combos * 1000:.2f} ms per combination, "
        f"{numba.get_num_threads()} threads)"
    )


if __name__ == "__main__":
    main()
