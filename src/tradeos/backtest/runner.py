"""Formula backtests from candle arrays: the one glue the CLI, the API jobs and the optimizer use
(pure: no database, no HTTP).

- `CandleArrays`: one instrument's bars as numpy arrays (int64 epoch seconds, float64 prices),
  built from the importer's polars frames (`from_frames`) or from provider / stored bars
  (`from_bars`).
- `run_formula`: compile a formula, evaluate it on each instrument's own bars, and backtest it.
  One instrument runs through `engine.run_backtest`; several are aligned on the union of their
  open times (NaN prices and no signal where an instrument has no bar) and run through
  `engine.run_portfolio` on one cash balance. The formula's `stop_loss`, `take_profit`,
  `trailing_stop` and `size` series pass through to the engine.
- `optimize`: every combination of a parameter grid on one instrument, best first by a metric.
  Formulas without stop / target / size rules run as one `engine.run_grid` (numba, all cores);
  the others, and objectives `run_grid` does not compute, run `run_backtest` per combination.
  `part=(k, n)` runs one of n contiguous parts of the grid (one job each, on any worker
  process), and `merge_ranked` merges the parts' answers into the whole grid's ranking.
- `parse_grid`: the CLI's `--optimize "fast=5:50:5,slow=20"` grid.
- `downsample`: an equity (or price) curve cut to at most `max_points` points for a chart or an
  API answer, keeping the first and last points and each bucket's minimum and maximum, so peaks
  and drawdowns survive.

Errors: `InvalidFormula` (the text does not compile) and `EvaluationError` (it cannot run on
these candles or with these parameter values), both with `.errors` at line and column;
`BacktestInputError` for empty or inconsistent candle data; `OptimizationError` for a bad grid
or objective. All are `ValueError`s.

Call `warm_up()` once per worker process before its first job (numba compiles or loads its
cache there, never in a request).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final

import numpy as np
from numpy.typing import ArrayLike, NDArray

from tradeos.backtest.engine import (
    GRID_COLUMNS,
    BacktestConfig,
    BacktestResult,
    run_backtest,
    run_grid,
    run_portfolio,
)
from tradeos.backtest.engine import warm_up as _warm_up_engine
from tradeos.backtest.metrics import Metrics
from tradeos.strategies.formula import (
    Candles,
    CompiledFormula,
    EvaluationError,
    Signals,
    compile_formula,
)
from tradeos.trading.fill_model import EXIT_REASONS

if TYPE_CHECKING:
    import polars as pl

    from tradeos.market.providers.base import Bar

__all__ = [
    "LOWER_IS_BETTER",
    "MAX_COMBINATIONS",
    "METRIC_NAMES",
    "BacktestInputError",
    "BacktestRun",
    "CandleArrays",
    "OptimizationError",
    "OptimizationRow",
    "SymbolTrade",
    "align",
    "downsample",
    "grid_range",
    "merge_ranked",
    "metrics_dict",
    "optimize",
    "parse_grid",
    "part_bounds",
    "run_formula",
    "warm_up",
]

Progress = Callable[[int, str], None]

# The most combinations one `optimize` call evaluates.
MAX_COMBINATIONS: Final = 10_000
# The metric names `optimize` accepts as objectives.
METRIC_NAMES: Final = tuple(f.name for f in fields(Metrics))
# Objectives where smaller is better (sorted ascending); every other metric sorts descending.
LOWER_IS_BETTER: Final = frozenset({"max_drawdown", "max_drawdown_duration"})
# Signal bytes per grid chunk (4 rules x combinations x bars, one byte each).
_GRID_CHUNK_BYTES: Final = 64 * 1024 * 1024
_LEVEL_RULES: Final = ("stop_loss", "take_profit", "trailing_stop", "size")
_SIGNAL_RULES: Final = ("entry_long", "exit_long", "entry_short", "exit_short")


class BacktestInputError(ValueError):
    """The candle data cannot be backtested: no instrument, no bars, unordered open times,
    arrays of different lengths."""


class OptimizationError(ValueError):
    """A parameter grid or objective `optimize` cannot run: empty values, too many
    combinations, an unknown metric."""


# -- candles ----------------------------------------------------------------------------------


def _float_array(values: ArrayLike, name: str) -> NDArray[np.float64]:
    try:
        return np.ascontiguousarray(values, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise BacktestInputError(f"{name} must hold numbers") from error


@dataclass(frozen=True)
class CandleArrays:
    """One instrument's bars, oldest first: `open_time` int64 epoch seconds, prices and volume
    float64, all the same length, open times strictly increasing."""

    symbol: str
    open_time: NDArray[np.int64]
    open: NDArray[np.float64]
    high: NDArray[np.float64]
    low: NDArray[np.float64]
    close: NDArray[np.float64]
    volume: NDArray[np.float64]

    def __post_init__(self) -> None:
        times = np.asarray(self.open_time)
        if np.issubdtype(times.dtype, np.datetime64):
            times = times.astype("datetime64[s]").astype(np.int64)
        try:
            times = np.ascontiguousarray(times, dtype=np.int64)
        except (TypeError, ValueError) as error:
            raise BacktestInputError(f"{self.symbol}: open_time must be epoch seconds") from error
        object.__setattr__(self, "open_time", times)
        for name in ("open", "high", "low", "close", "volume"):
            values = _float_array(getattr(self, name), f"{self.symbol}: {name}")
            if values.shape != times.shape or values.ndim != 1:
                raise BacktestInputError(
                    f"{self.symbol}: {name} has {values.size} values for {times.size} open times"
                )
            object.__setattr__(self, name, values)
        if times.ndim != 1:
            raise BacktestInputError(f"{self.symbol}: open_time must be one-dimensional")
        if times.size > 1 and not bool(np.all(np.diff(times) > 0)):
            raise BacktestInputError(f"{self.symbol}: open times must be strictly increasing")

    def __len__(self) -> int:
        return int(self.open_time.size)

    def inputs(self) -> dict[str, NDArray[np.float64]]:
        """The formula's candle inputs."""
        return {
            "open": self.open,
            "high": self.high,
            "low": self.low,
            "close": self.close,
            "volume": self.volume,
        }

    @classmethod
    def from_frames(cls, symbol: str, frames: Iterable[pl.DataFrame]) -> CandleArrays:
        """From `csv_frames.parse_candle_frames` frames (open_time Datetime UTC, prices
        Decimal): sorted by open time; a time seen twice keeps its last bar, as an import
        does."""
        import polars as pl

        parts = [frame for frame in frames if frame.height]
        if not parts:
            return cls._empty(symbol)
        frame = (
            pl.concat(parts, how="vertical_relaxed")
            .unique(subset="open_time", keep="last", maintain_order=True)
            .sort("open_time")
        )
        return cls(
            symbol=symbol,
            open_time=frame.get_column("open_time").dt.epoch("s").to_numpy().astype(np.int64),
            **{
                name: frame.get_column(name).cast(pl.Float64).to_numpy()
                for name in ("open", "high", "low", "close", "volume")
            },
        )

    @classmethod
    def from_bars(cls, symbol: str, bars: Sequence[Bar]) -> CandleArrays:
        """From `Bar`s (Decimal prices, aware open times), oldest first."""
        if not bars:
            return cls._empty(symbol)
        count = len(bars)
        return cls(
            symbol=symbol,
            open_time=np.fromiter(
                (int(bar.open_time.timestamp()) for bar in bars), dtype=np.int64, count=count
            ),
            open=np.fromiter((float(bar.open) for bar in bars), dtype=np.float64, count=count),
            high=np.fromiter((float(bar.high) for bar in bars), dtype=np.float64, count=count),
            low=np.fromiter((float(bar.low) for bar in bars), dtype=np.float64, count=count),
            close=np.fromiter((float(bar.close) for bar in bars), dtype=np.float64, count=count),
            volume=np.fromiter((float(bar.volume) for bar in bars), dtype=np.float64, count=count),
        )

    @classmethod
    def _empty(cls, symbol: str) -> CandleArrays:
        empty = np.empty(0, dtype=np.float64)
        return cls(symbol, np.empty(0, dtype=np.int64), empty, empty, empty, empty, empty)


# -- runs -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SymbolTrade:
    """One closed trade of a run, with its instrument's symbol."""

    symbol: str
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

    def as_dict(self) -> dict[str, Any]:
        return {
            "symbol": self.symbol,
            "side": self.side,
            "entry_time": self.entry_time.isoformat(),
            "exit_time": self.exit_time.isoformat(),
            "entry_price": self.entry_price,
            "exit_price": self.exit_price,
            "quantity": self.quantity,
            "fees": self.fees,
            "pnl": self.pnl,
            "return": self.return_,
            "exit_reason": self.exit_reason,
        }


@dataclass(frozen=True)
class BacktestRun:
    """A formula's backtest. `result` is the engine's result: per bar of `open_time` (the union
    of the instruments' open times) its equity and drawdown; its trades' `instrument` index
    into `symbols`. `params` holds every parameter value used (defaults and overrides)."""

    symbols: tuple[str, ...]
    params: dict[str, float]
    config: BacktestConfig
    result: BacktestResult
    formula: str = field(repr=False, default="")

    @property
    def metrics(self) -> Metrics:
        return self.result.metrics

    @property
    def open_time(self) -> NDArray[np.int64]:
        return self.result.open_time

    @property
    def equity(self) -> NDArray[np.float64]:
        return self.result.equity

    @property
    def final_equity(self) -> float:
        return self.result.final_equity

    def trades(self) -> list[SymbolTrade]:
        """The closed trades, in the engine's order (by exit), each with its symbol."""
        rows = self.result.trades
        return [
            SymbolTrade(
                symbol=self.symbols[int(row["instrument"])],
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
            for row in rows
        ]

    def as_dict(self, *, trades: bool = True) -> dict[str, Any]:
        """A JSON-ready summary: symbols, params, metrics (NaN and infinities as null), final
        equity and, with `trades`, the trade list."""
        out: dict[str, Any] = {
            "symbols": list(self.symbols),
            "params": dict(self.params),
            "initial_cash": self.config.initial_cash,
            "final_equity": _finite(self.final_equity),
            "bars": int(self.open_time.size),
            "metrics": metrics_dict(self.metrics),
        }
        if trades:
            out["trades"] = [trade.as_dict() for trade in self.trades()]
        return out


def metrics_dict(metrics: Metrics) -> dict[str, float | int | None]:
    """`Metrics` as JSON-ready values (NaN and infinities as None)."""
    return {name: _finite(value) for name, value in metrics.as_dict().items()}


def _finite(value: float | int) -> float | int | None:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _report(progress: Progress | None, percent: int, message: str) -> None:
    if progress is not None:
        progress(percent, message)


def _check_candles(candles: Sequence[CandleArrays]) -> None:
    if not candles:
        raise BacktestInputError("no instrument to backtest")
    seen: set[str] = set()
    for instrument in candles:
        if len(instrument) == 0:
            raise BacktestInputError(f"{instrument.symbol}: no bars to backtest")
        if instrument.symbol in seen:
            raise BacktestInputError(f"{instrument.symbol} is given twice")
        seen.add(instrument.symbol)


def _evaluate(
    compiled: CompiledFormula, inputs: Candles | CandleArrays, params: Mapping[str, float] | None
) -> Signals:
    source = inputs if isinstance(inputs, Candles) else Candles(inputs.inputs())
    return compiled.evaluate(source, params)


def _level_kwargs(signals: Signals) -> dict[str, NDArray[np.float64] | None]:
    return {name: getattr(signals, name) for name in _LEVEL_RULES}


def run_formula(
    candles: Sequence[CandleArrays],
    formula: str,
    *,
    params: Mapping[str, float] | None = None,
    config: BacktestConfig | None = None,
    progress: Progress | None = None,
) -> BacktestRun:
    """Backtest `formula` on one instrument, or on several sharing one cash balance.

    Each instrument's signals come from its own bars (indicators never see another instrument's
    gaps). `params` override the formula's parameter defaults. `progress(percent, message)` is
    called as the work advances."""
    config = config or BacktestConfig()
    _check_candles(candles)
    compiled = compile_formula(formula)
    values = compiled.parameter_values(params)
    signals: list[Signals] = []
    for number, instrument in enumerate(candles):
        _report(progress, 5 + 45 * number // len(candles), f"evaluating {instrument.symbol}")
        signals.append(_evaluate(compiled, instrument, params))
    _report(progress, 50, "simulating")
    if len(candles) == 1:
        only, said = candles[0], signals[0]
        result = run_backtest(
            only.open_time, only.open, only.high, only.low, only.close,
            said.entry_long, said.exit_long, said.entry_short, said.exit_short,
            **_level_kwargs(said), config=config,
        )  # fmt: skip
    else:
        result = _run_aligned(candles, signals, config)
    _report(progress, 100, "done")
    return BacktestRun(
        symbols=tuple(instrument.symbol for instrument in candles),
        params=values,
        config=config,
        result=result,
        formula=formula,
    )


def align(candles: Sequence[CandleArrays]) -> tuple[NDArray[np.int64], list[NDArray[np.intp]]]:
    """The union of the instruments' open times, and each instrument's bar positions in it."""
    times = np.unique(np.concatenate([instrument.open_time for instrument in candles]))
    return times, [np.searchsorted(times, instrument.open_time) for instrument in candles]


def _run_aligned(
    candles: Sequence[CandleArrays], signals: Sequence[Signals], config: BacktestConfig
) -> BacktestResult:
    times, positions = align(candles)
    shape = (len(candles), times.size)

    def spread(arrays: Sequence[NDArray[Any] | None], fill: Any, dtype: Any) -> NDArray[Any] | None:
        if all(array is None for array in arrays):
            return None
        out = np.full(shape, fill, dtype=dtype)
        for row, (array, where) in enumerate(zip(arrays, positions, strict=True)):
            if array is not None:
                out[row, where] = array
        return out

    def prices(name: str) -> NDArray[np.float64]:
        out = spread([getattr(instrument, name) for instrument in candles], np.nan, np.float64)
        assert out is not None
        return out

    rules = {
        name: spread([getattr(s, name) for s in signals], False, np.bool_) for name in _SIGNAL_RULES
    }
    levels = {
        name: spread([getattr(s, name) for s in signals], np.nan, np.float64)
        for name in _LEVEL_RULES
    }
    return run_portfolio(
        times, prices("open"), prices("high"), prices("low"), prices("close"),
        rules["entry_long"], rules["exit_long"], rules["entry_short"], rules["exit_short"],
        **levels, config=config,
    )  # fmt: skip


# -- optimization -----------------------------------------------------------------------------


@dataclass(frozen=True)
class OptimizationRow:
    """One parameter combination's outcome; `rank` 1 is the best."""

    rank: int
    params: dict[str, float]
    metrics: Metrics
    final_equity: float
    # Its position in the whole grid and the value it was ranked by: what `merge_ranked`
    # needs to rank the best of several parts of one grid as one `optimize` would.
    combination: int = 0
    score: float = math.nan

    def as_dict(self) -> dict[str, Any]:
        return {
            "rank": self.rank,
            "params": dict(self.params),
            "final_equity": _finite(self.final_equity),
            "metrics": metrics_dict(self.metrics),
        }

    def as_part(self) -> dict[str, Any]:
        """`as_dict` with the position and ranking value, for `merge_ranked`."""
        score: float | str | None = self.score
        if math.isnan(self.score):
            score = None
        elif math.isinf(self.score):  # JSON has no infinity: as text, which float() reads
            score = "inf" if self.score > 0 else "-inf"
        return {**self.as_dict(), "combination": self.combination, "score": score}


def _combinations(
    compiled: CompiledFormula, grid: Mapping[str, Sequence[float]]
) -> list[dict[str, float]]:
    names = list(grid)
    known = compiled.parameters
    for name in names:
        if name not in known:
            raise OptimizationError(
                f"unknown parameter '{name}' (parameters: {', '.join(known) or 'none'})"
            )
        if len(grid[name]) == 0:
            raise OptimizationError(f"parameter '{name}' has no values to try")
    count = math.prod(len(grid[name]) for name in names)
    if count > MAX_COMBINATIONS:
        raise OptimizationError(
            f"{count:,} parameter combinations; at most {MAX_COMBINATIONS:,} can be optimized"
        )
    return [
        dict(zip(names, (float(v) for v in values), strict=True))
        for values in itertools.product(*(grid[name] for name in names))
    ]


def grid_range(start: float, stop: float, step: float) -> list[float]:
    """`start`, `start + step`, … up to `stop` inclusive (the API's `{start, stop, step}`)."""
    if not step > 0 or not math.isfinite(step):
        raise OptimizationError("a grid step must be a positive number")
    if not (math.isfinite(start) and math.isfinite(stop)) or stop < start:
        raise OptimizationError("a grid range must not end before it starts")
    # A hair of tolerance, so 0.1 steps reach their stop despite binary rounding.
    count = math.floor((stop - start) / step + 1e-9) + 1
    if count > MAX_COMBINATIONS:
        raise OptimizationError(
            f"{count:,} values; at most {MAX_COMBINATIONS:,} combinations can be optimized"
        )
    return [float(start + k * step) for k in range(count)]


def parse_grid(text: str) -> dict[str, list[float]]:
    """A grid written as `name=start:stop:step` or `name=value`, comma separated
    (`"fast=5:50:5,slow=20:200:10"`): parameter name → the values to try."""
    grid: dict[str, list[float]] = {}
    for part in text.split(","):
        name, equals, spec = (piece.strip() for piece in part.partition("="))
        if not equals or not name or not spec:
            raise OptimizationError(
                f"{part.strip()!r}: write name=start:stop:step or name=value, "
                "e.g. fast=5:50:5,slow=20:200:10"
            )
        if name in grid:
            raise OptimizationError(f"parameter '{name}' is given twice")
        try:
            numbers = [float(piece) for piece in spec.split(":")]
        except ValueError:
            numbers = []
        if len(numbers) == 1 and math.isfinite(numbers[0]):
            grid[name] = numbers
        elif len(numbers) == 3:
            grid[name] = grid_range(*numbers)
        else:
            raise OptimizationError(
                f"{name}={spec}: write start:stop:step (stop included) or one number"
            )
    return grid


def part_bounds(count: int, part: int, parts: int) -> tuple[int, int]:
    """The combinations `[start, stop)` of part `part` (0-based) when a grid of `count`
    combinations is cut into `parts` contiguous parts of nearly equal size."""
    if not 0 <= part < parts:
        raise OptimizationError(f"part {part} of {parts} does not exist")
    return count * part // parts, count * (part + 1) // parts


def merge_ranked(
    parts: Iterable[Sequence[Mapping[str, Any]]], objective: str, top: int
) -> list[dict[str, Any]]:
    """The `top` best rows of several `optimize(..., part=...)` answers (as `as_part` dicts),
    ranked 1… as one `optimize` over the whole grid ranks them: by score (smallest first for
    `LOWER_IS_BETTER`, largest first otherwise, missing last), ties in grid order."""
    sign = 1.0 if objective in LOWER_IS_BETTER else -1.0

    def key(row: Mapping[str, Any]) -> tuple[float, int]:
        # `_order`'s key: NaN (stored as null) sorts as +inf, ties keep the grid's order.
        score = float("nan") if row.get("score") is None else float(row["score"])
        value = sign * score
        return (math.inf if math.isnan(value) else value), int(row["combination"])

    rows = sorted((row for rows in parts for row in rows), key=key)[:top]
    return [
        {
            "rank": rank,
            "params": row["params"],
            "final_equity": row["final_equity"],
            "metrics": row["metrics"],
        }
        for rank, row in enumerate(rows, start=1)
    ]


def _evaluate_combination(
    compiled: CompiledFormula, source: Candles, params: Mapping[str, float]
) -> Signals:
    try:
        return compiled.evaluate(source, params)
    except EvaluationError as error:
        said = ", ".join(f"{name}={value:g}" for name, value in params.items())
        raise EvaluationError(f"with {said}: {error}", error.errors) from error


def _order(values: NDArray[np.float64], objective: str) -> NDArray[np.intp]:
    """Best first; NaN last; ties keep the grid's order."""
    key = values if objective in LOWER_IS_BETTER else -values
    key = np.where(np.isnan(key), np.inf, key)
    return np.argsort(key, kind="stable")


def optimize(
    candles: CandleArrays,
    formula: str,
    grid: Mapping[str, Sequence[float]],
    *,
    objective: str,
    top: int,
    config: BacktestConfig,
    part: tuple[int, int] | None = None,
) -> list[OptimizationRow]:
    """Backtest `formula` on one instrument for every combination of the `grid`'s parameter
    values (at most `MAX_COMBINATIONS`; parameters not in the grid keep their defaults), and
    return the `top` best by the metric `objective` (any `Metrics` field; the ones in
    `LOWER_IS_BETTER` rank smallest first, the others largest first; NaN ranks last), each
    with its params and full metrics, equal to `run_formula` with those params.

    `part=(k, n)` runs only the k-th of n contiguous parts of the grid (`part_bounds`), so
    separate processes can share a large grid; `merge_ranked` combines their answers into
    what the whole grid gives."""
    if objective not in METRIC_NAMES:
        raise OptimizationError(
            f"unknown objective '{objective}'; one of: {', '.join(METRIC_NAMES)}"
        )
    if top < 1:
        raise OptimizationError("top must be at least 1")
    _check_candles([candles])
    compiled = compile_formula(formula)
    combinations = _combinations(compiled, grid)
    first = 0
    if part is not None:
        first, stop = part_bounds(len(combinations), *part)
        combinations = combinations[first:stop]
    source = Candles(candles.inputs())
    rules = set(compiled.rules)
    if objective in GRID_COLUMNS and not rules & set(_LEVEL_RULES):
        order, values = _grid_order(candles, compiled, source, combinations, objective, config)
        chosen = [combinations[int(i)] for i in order[:top]]
        runs = [_single(candles, compiled, source, params, config) for params in chosen]
    else:
        everything = [_single(candles, compiled, source, p, config) for p in combinations]
        values = np.array([float(getattr(r.metrics, objective)) for r in everything])
        order = _order(values, objective)
        chosen = [combinations[int(i)] for i in order[:top]]
        runs = [everything[int(i)] for i in order[:top]]
    return [
        OptimizationRow(
            rank=rank,
            params=compiled.parameter_values(params),
            metrics=run.metrics,
            final_equity=run.final_equity,
            combination=first + int(index),
            score=float(values[int(index)]),
        )
        for rank, (params, run, index) in enumerate(
            zip(chosen, runs, order[:top], strict=True), start=1
        )
    ]


def _single(
    candles: CandleArrays,
    compiled: CompiledFormula,
    source: Candles,
    params: Mapping[str, float],
    config: BacktestConfig,
) -> BacktestResult:
    said = _evaluate_combination(compiled, source, params)
    return run_backtest(
        candles.open_time, candles.open, candles.high, candles.low, candles.close,
        said.entry_long, said.exit_long, said.entry_short, said.exit_short,
        **_level_kwargs(said), config=config,
    )  # fmt: skip


def _grid_order(
    candles: CandleArrays,
    compiled: CompiledFormula,
    source: Candles,
    combinations: Sequence[Mapping[str, float]],
    objective: str,
    config: BacktestConfig,
) -> tuple[NDArray[np.intp], NDArray[np.float64]]:
    """Every combination through `run_grid`, in chunks of combinations that keep the signal rows
    within `_GRID_CHUNK_BYTES`; the combinations' order by `objective`, and their values."""
    rules = [name for name in _SIGNAL_RULES if name in compiled.rules]
    n_bars = len(candles)
    chunk = max(1, _GRID_CHUNK_BYTES // max(1, len(rules) * n_bars))
    values = np.empty(len(combinations))
    for start in range(0, len(combinations), chunk):
        part = combinations[start : start + chunk]
        rows = {name: np.empty((len(part), n_bars), dtype=np.bool_) for name in rules}
        for k, params in enumerate(part):
            said = _evaluate_combination(compiled, source, params)
            for name in rules:
                rows[name][k] = getattr(said, name)
        summary = run_grid(
            candles.open_time, candles.open, candles.high, candles.low, candles.close,
            rows.get("entry_long"), rows.get("exit_long"),
            rows.get("entry_short"), rows.get("exit_short"),
            config=config,
        )  # fmt: skip
        values[start : start + len(part)] = summary.column(objective)
    return _order(values, objective), values


# -- charts -----------------------------------------------------------------------------------


def downsample(
    times: ArrayLike, values: ArrayLike, max_points: int = 2000
) -> tuple[NDArray[Any], NDArray[np.float64]]:
    """At most `max_points` of the points (`times[i]`, `values[i]`), in time order: the first,
    the last, and the minimum and maximum of each of `(max_points - 2) // 2` equal buckets of
    the points between them, so the curve's peaks and troughs (its drawdowns) survive. NaN
    values are never chosen as an extreme while a bucket has a number."""
    times_ = np.asarray(times)
    values_ = np.asarray(values, dtype=np.float64)
    if times_.shape != values_.shape or values_.ndim != 1:
        raise ValueError("times and values must be 1-D arrays of the same length")
    if max_points < 4:
        raise ValueError("max_points must be at least 4")
    n = values_.size
    if n <= max_points:
        return times_.copy(), values_.copy()
    buckets = (max_points - 2) // 2
    edges = np.linspace(1, n - 1, buckets + 1).astype(np.intp)
    high = np.where(np.isnan(values_), -np.inf, values_)
    low = np.where(np.isnan(values_), np.inf, values_)
    keep = [np.array([0, n - 1], dtype=np.intp)]
    starts, ends = edges[:-1], edges[1:]
    nonempty = ends > starts
    starts, ends = starts[nonempty], ends[nonempty]
    # Each bucket's extremes, vectorized with reduceat over the bucket starts.
    max_values = np.maximum.reduceat(high[: n - 1], starts)
    min_values = np.minimum.reduceat(low[: n - 1], starts)
    bucket_of = np.repeat(np.arange(starts.size), ends - starts)
    inside = np.arange(starts[0], ends[-1])
    is_max = high[inside] == max_values[bucket_of]
    is_min = low[inside] == min_values[bucket_of]
    # The first position reaching the extreme in each bucket.
    keep.append(_first_per_bucket(inside, bucket_of, is_max))
    keep.append(_first_per_bucket(inside, bucket_of, is_min))
    chosen = np.unique(np.concatenate(keep))
    return times_[chosen], values_[chosen]


def _first_per_bucket(
    positions: NDArray[np.intp], bucket_of: NDArray[np.intp], mask: NDArray[np.bool_]
) -> NDArray[np.intp]:
    hits = positions[mask]
    buckets = bucket_of[mask]
    _, first = np.unique(buckets, return_index=True)
    return hits[first]


# -- worker start -----------------------------------------------------------------------------

# One formula that calls every function, so warming up compiles every indicator kernel.
_WARM_UP_FORMULA: Final = """
fast = 3
m = macd(close, 3, 6, 2) + macd_signal(close, 3, 6, 2) + macd_hist(close, 3, 6, 2)
b = bb_upper(close, 3, 2) + bb_middle(close, 3, 2) + bb_lower(close, 3, 2)
k = stoch_k(3, 2) + stoch_d(3, 2, 2) + atr(3) + adx(3) + cci(3) + obv() + vwap()
s = sma(close, fast) + ema(close, 3) + wma(close, 3) + rsi(close, 3) + stdev(close, 3)
r = roc(close, 2) + highest(high, 3) + lowest(low, 3) + shift(close, 1)
x = abs(m) + min(b, k) + max(s, r)
entry_long = crossover(close, sma(close, fast)) and x > 0
exit_long = crossunder(close, sma(close, fast))
stop_loss = 0.05
"""


def warm_up() -> None:
    """Compile (or load from numba's cache) the engine and every indicator: call once per
    worker process before its first job."""
    _warm_up_engine()
    n = 64
    close = 100 + np.sin(np.arange(n) / 3.0) * 5
    bars = CandleArrays(
        "WARM-UP",
        np.arange(n, dtype=np.int64) * 60,
        close,
        close + 1,
        close - 1,
        close + 0.5,
        np.full(n, 10.0),
    )
    run_formula([bars], _WARM_UP_FORMULA)
