"""The functions a formula may call: their arguments, their result and how they compute."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt

from tradeos.strategies import indicators as ind
from tradeos.strategies.formula.limits import MAX_DEVIATIONS, MAX_PERIOD

Kind = Literal["number", "bool"]
Array = npt.NDArray[np.float64] | npt.NDArray[np.bool_]
FloatArray = npt.NDArray[np.float64]
Pair = tuple[Array, Array]

INPUTS = ("open", "high", "low", "close", "volume")


@dataclass(frozen=True)
class Constant:
    """An argument that must not vary from bar to bar (a period, a multiplier)."""

    name: str
    minimum: float
    maximum: float
    whole: bool = True

    def describe(self) -> str:
        if self.whole:
            return f"a whole number from {self.minimum:g} to {self.maximum:g}"
        if self.minimum == 0:
            return f"a number above 0 and at most {self.maximum:g}"
        return f"a number from {self.minimum:g} to {self.maximum:g}"

    def accepts(self, value: float) -> bool:
        if not np.isfinite(value) or value > self.maximum:
            return False
        if self.whole:
            return value >= self.minimum and value == int(value)
        # A multiplier of 0 (the minimum) is meaningless: it must be above it.
        return value > 0 if self.minimum == 0 else value >= self.minimum


def _period(name: str = "period", minimum: int = 2) -> Constant:
    return Constant(name, minimum, MAX_PERIOD)


@dataclass(frozen=True)
class Function:
    name: str
    series: tuple[str, ...]
    constants: tuple[Constant, ...]
    # Series arguments that may be left out: the candles' own inputs of those names are used.
    candle_defaults: bool
    # Kind of each series argument: "number", or "any" (the result then has that kind).
    takes: Literal["number", "any"]
    result: Kind | None  # None: same kind as the argument
    compute: Callable[[Sequence[FloatArray], Sequence[float]], Array]
    # Work per bar, as a multiple of one arithmetic operation.
    cost: Callable[[Sequence[float]], float] = lambda constants: 1.0
    # A function whose call on the same series one compiled pass computes with this one's
    # (this function itself: two SMAs of one series; crossunder for crossover), and that pass:
    # `together(series, constants, partner_constants)` gives what `compute` gives for this
    # call and the partner's `compute` for its call, sooner.
    partner: str | None = None
    together: Callable[[Sequence[FloatArray], Sequence[float], Sequence[float]], Pair] | None = None

    def signature(self) -> str:
        return ", ".join((*self.series, *(c.name for c in self.constants)))

    def arities(self) -> tuple[int, ...]:
        full = len(self.series) + len(self.constants)
        return (len(self.constants), full) if self.candle_defaults else (full,)


def _int(value: float) -> int:
    return int(value)


def _series(
    name: str,
    compute: Callable[[FloatArray, int], FloatArray],
    minimum: int = 2,
) -> Function:
    return Function(
        name,
        ("series",),
        (_period(minimum=minimum),),
        False,
        "number",
        "number",
        lambda s, c: compute(s[0], _int(c[0])),
    )


def _candles(
    name: str,
    compute: Callable[[FloatArray, FloatArray, FloatArray, int], FloatArray],
    minimum: int = 2,
    cost: Callable[[Sequence[float]], float] = lambda constants: 1.0,
) -> Function:
    return Function(
        name,
        ("high", "low", "close"),
        (_period(minimum=minimum),),
        True,
        "number",
        "number",
        lambda s, c: compute(s[0], s[1], s[2], _int(c[0])),
        cost=cost,
    )


def _crossing(
    name: str,
    compute: Callable[[FloatArray, FloatArray], Array],
    partner: str,
    both: Callable[[FloatArray, FloatArray], Pair],
) -> Function:
    # crossover / crossunder: one pass computes a call and its partner on the same series.
    return Function(
        name,
        ("a", "b"),
        (),
        False,
        "number",
        "bool",
        lambda s, c: compute(*s),
        partner=partner,
        together=lambda s, c, other: both(*s),
    )


_MACD = (_period("fast"), _period("slow"), _period("signal", minimum=1))
_BANDS = (_period(), Constant("deviations", 0.0, MAX_DEVIATIONS, whole=False))
_STOCH_K = (_period("k_period", minimum=1), _period("k_smoothing", minimum=1))
_STOCH_D = (*_STOCH_K, _period("d_period", minimum=1))


def _macd(output: int) -> Callable[[Sequence[FloatArray], Sequence[float]], Array]:
    def compute(s: Sequence[FloatArray], c: Sequence[float]) -> Array:
        return ind.macd(s[0], _int(c[0]), _int(c[1]), _int(c[2]))[output]

    return compute


def _bands(output: int) -> Callable[[Sequence[FloatArray], Sequence[float]], Array]:
    def compute(s: Sequence[FloatArray], c: Sequence[float]) -> Array:
        return ind.bollinger(s[0], _int(c[0]), c[1])[output]

    return compute


def _elementwise(
    name: str, arity: int, compute: Callable[[Sequence[FloatArray]], FloatArray]
) -> Function:
    names = ("value",) if arity == 1 else ("a", "b")
    return Function(name, names, (), False, "number", "number", lambda s, c: compute(s))


FUNCTIONS: dict[str, Function] = {
    f.name: f
    for f in (
        dataclasses.replace(
            _series("sma", ind.sma),
            partner="sma",
            together=lambda s, c, other: ind.sma_pair(s[0], _int(c[0]), _int(other[0])),
        ),
        _series("ema", ind.ema),
        _series("wma", ind.wma),
        _series("rsi", ind.rsi),
        _series("roc", ind.roc, minimum=1),
        _series("stdev", ind.stdev),
        _series("highest", ind.highest, minimum=1),
        _series("lowest", ind.lowest, minimum=1),
        Function("macd", ("series",), _MACD, False, "number", "number", _macd(0)),
        Function("macd_signal", ("series",), _MACD, False, "number", "number", _macd(1)),
        Function("macd_hist", ("series",), _MACD, False, "number", "number", _macd(2)),
        Function("bb_upper", ("series",), _BANDS, False, "number", "number", _bands(0)),
        Function("bb_middle", ("series",), _BANDS, False, "number", "number", _bands(1)),
        Function("bb_lower", ("series",), _BANDS, False, "number", "number", _bands(2)),
        _candles("atr", ind.atr, minimum=1),
        _candles("adx", ind.adx),
        # CCI measures a deviation over the whole window on each bar: work grows with period.
        _candles("cci", ind.cci, cost=lambda constants: constants[0]),
        Function(
            "stoch_k",
            ("high", "low", "close"),
            _STOCH_K,
            True,
            "number",
            "number",
            lambda s, c: ind.stochastic(s[0], s[1], s[2], _int(c[0]), _int(c[1]), 1)[0],
        ),
        Function(
            "stoch_d",
            ("high", "low", "close"),
            _STOCH_D,
            True,
            "number",
            "number",
            lambda s, c: ind.stochastic(s[0], s[1], s[2], _int(c[0]), _int(c[1]), _int(c[2]))[1],
        ),
        Function(
            "obv", ("close", "volume"), (), True, "number", "number", lambda s, c: ind.obv(*s)
        ),
        Function(
            "vwap",
            ("high", "low", "close", "volume"),
            (),
            True,
            "number",
            "number",
            lambda s, c: ind.vwap(*s),
        ),
        _crossing("crossover", ind.crossover, "crossunder", ind.crossings),
        _crossing("crossunder", ind.crossunder, "crossover", lambda a, b: ind.crossings(b, a)),
        Function(
            "shift",
            ("series",),
            (_period("bars", minimum=1),),
            False,
            "any",
            None,
            lambda s, c: _shift(s[0], _int(c[0])),
        ),
        _elementwise("abs", 1, lambda s: np.abs(s[0])),
        _elementwise("min", 2, lambda s: np.minimum(s[0], s[1])),
        _elementwise("max", 2, lambda s: np.maximum(s[0], s[1])),
    )
}


def _shift(values: Array, bars: int) -> Array:
    # A condition shifted back is False before the first bar; a number is NaN.
    if values.dtype == np.bool_:
        out = np.zeros(values.shape[0], dtype=np.bool_)
        if bars < values.shape[0]:
            out[bars:] = values[:-bars]
        return out
    return ind.shift(values.astype(np.float64, copy=False), bars)
