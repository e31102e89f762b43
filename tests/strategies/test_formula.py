"""The formula language: the example strategy end to end, what is refused and where, the
bounds, parameters, types, and fuzzing that no text escapes a clean validation result."""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Sequence

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tradeos.strategies import indicators as ind
from tradeos.strategies.formula import (
    Candles,
    EvaluationError,
    InvalidFormula,
    compile_formula,
    level_distance,
    validate,
)
from tradeos.strategies.formula.functions import FUNCTIONS, Array, FloatArray

EXAMPLE = """fast = 10
slow = 20
entry_long  = crossover(sma(close, fast), sma(close, slow))
exit_long   = crossunder(sma(close, fast), sma(close, slow))
entry_short = crossunder(sma(close, fast), sma(close, slow))
exit_short  = crossover(sma(close, fast), sma(close, slow))
"""


def textbook_sma(values: np.ndarray, period: int) -> np.ndarray:
    out = np.full(values.shape[0], np.nan)
    for i in range(period - 1, values.shape[0]):
        out[i] = sum(values[i - period + 1 : i + 1]) / period
    return out


def zigzag_close() -> np.ndarray:
    # Flat, a rise, a fall, a rise: the fast average crosses the slow one a known few times.
    return np.concatenate(
        (
            np.full(30, 100.0),
            np.linspace(100, 130, 30),
            np.linspace(130, 90, 40),
            np.linspace(90, 120, 30),
        )
    )


def test_the_example_strategy_signals_on_the_crossings() -> None:
    close = zigzag_close()
    signals = compile_formula(EXAMPLE).evaluate({"close": close})
    fast, slow = textbook_sma(close, 10), textbook_sma(close, 20)
    above = fast > slow
    crosses_up = [i for i in range(1, close.size) if above[i] and fast[i - 1] <= slow[i - 1]]
    crosses_down = [
        i for i in range(1, close.size) if fast[i] < slow[i] and fast[i - 1] >= slow[i - 1]
    ]
    assert len(crosses_up) == 2
    assert len(crosses_down) == 1
    assert np.flatnonzero(signals.entry_long).tolist() == crosses_up
    assert np.flatnonzero(signals.exit_short).tolist() == crosses_up
    assert np.flatnonzero(signals.exit_long).tolist() == crosses_down
    assert np.flatnonzero(signals.entry_short).tolist() == crosses_down
    # The first rise starts at bar 30; the fast average overtakes the slow one on that bar.
    assert crosses_up[0] == 31
    assert signals.stop_loss is None
    assert signals.size is None
    assert signals.entry_long.dtype == np.bool_


def test_the_example_validates_with_its_parameters_and_rules() -> None:
    result = validate(EXAMPLE)
    assert result.errors == []
    assert result.parameters == {"fast": 10, "slow": 20}
    assert result.rules == ["entry_long", "exit_long", "entry_short", "exit_short"]
    assert result.series == []


def test_parameters_are_overridden_per_evaluation() -> None:
    close = zigzag_close()
    formula = compile_formula(EXAMPLE)
    default = formula.evaluate({"close": close})
    faster = formula.evaluate({"close": close}, {"fast": 3, "slow": 5})
    expected = ind.crossover(ind.sma(close, 3), ind.sma(close, 5))
    np.testing.assert_array_equal(faster.entry_long, expected)
    assert not np.array_equal(faster.entry_long, default.entry_long)
    assert formula.parameters == {"fast": 10, "slow": 20}


def test_overrides_are_checked() -> None:
    formula = compile_formula(EXAMPLE)
    close = {"close": zigzag_close()}
    with pytest.raises(EvaluationError, match="unknown parameter 'fats'"):
        formula.evaluate(close, {"fats": 5})
    with pytest.raises(EvaluationError, match=r"line 3, column 54: sma\(\) period must be a whole"):
        formula.evaluate(close, {"slow": 20.5})
    with pytest.raises(EvaluationError, match="from 2 to 10000, got 20000"):
        formula.evaluate(close, {"slow": 20000})
    with pytest.raises(EvaluationError, match="must be a number"):
        formula.evaluate(close, {"slow": True})
    with pytest.raises(EvaluationError, match="finite"):
        formula.evaluate(close, {"slow": float("nan")})


def test_a_grid_over_the_same_candles_reuses_indicators_and_matches_fresh_results() -> None:
    rng = np.random.default_rng(3)
    close = 100 + np.cumsum(rng.normal(0, 1, 20_000))
    formula = compile_formula(EXAMPLE)
    candles = Candles({"close": close})
    results = {
        (fast, slow): formula.evaluate(candles, {"fast": fast, "slow": slow})
        for fast in range(5, 15)
        for slow in range(20, 60)
    }
    fresh = formula.evaluate({"close": close}, {"fast": 7, "slow": 41})
    np.testing.assert_array_equal(results[7, 41].entry_long, fresh.entry_long)
    np.testing.assert_array_equal(results[7, 41].exit_long, fresh.exit_long)


def test_levels_size_and_named_series() -> None:
    text = """
period = 14
band = 2 * atr(period)
entry_long = close > open and rsi(close, period) < 70
stop_loss = band
take_profit = 0.05
trailing_stop = highest(high, 5) - lowest(low, 5)
size = 1 / max(band, 0.01)
"""
    rng = np.random.default_rng(5)
    close = 100 + np.cumsum(rng.normal(0, 1, 500))
    candles = {
        "open": close + rng.normal(0, 0.5, 500),
        "high": close + 2,
        "low": close - 2,
        "close": close,
    }
    result = validate(text)
    assert result.errors == []
    assert result.series == ["band"]
    assert result.parameters == {"period": 14}
    signals = compile_formula(text).evaluate(candles)
    atr = ind.atr(candles["high"], candles["low"], close, 14)
    np.testing.assert_allclose(signals.stop_loss, 2 * atr, equal_nan=True)
    assert signals.take_profit is not None
    assert (signals.take_profit == 0.05).all()
    assert signals.size is not None
    np.testing.assert_allclose(signals.size[20:], 1 / np.maximum(2 * atr[20:], 0.01))
    expected_entry = (close > candles["open"]) & (ind.rsi(close, 14) < 70)
    np.testing.assert_array_equal(signals.entry_long, expected_entry)
    assert not signals.entry_long[:14].any()  # NaN warm-up compares false
    assert not signals.exit_long.any()
    with pytest.raises(ValueError, match="read-only"):
        signals.entry_long[0] = True


def test_the_stop_rule_reads_fractions_below_one_and_distances_from_one() -> None:
    assert level_distance(0.02, 200.0) == pytest.approx(4.0)
    assert level_distance(2.5, 200.0) == 2.5
    assert level_distance(1.0, 200.0) == 1.0
    assert level_distance(0.0, 200.0) is None
    assert level_distance(-1.0, 200.0) is None
    assert level_distance(float("nan"), 200.0) is None


def test_candle_defaults_and_multi_output_indicators() -> None:
    text = """
entry_long = (macd(close, 12, 26, 9) > macd_signal(close, 12, 26, 9)
              and close < bb_lower(close, 20, 2))
exit_long = stoch_k(14, 3) > stoch_d(high, low, close, 14, 3, 3) or cci(20) > adx(14)
size = (vwap() + obv() + macd_hist(close, 12, 26, 9)
        + bb_middle(close, 20, 2) + bb_upper(close, 20, 2))
"""
    rng = np.random.default_rng(9)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, 300)))
    high, low = close * 1.01, close * 0.99
    volume = rng.lognormal(5, 0.3, 300)
    signals = compile_formula(text).evaluate(
        {"high": high, "low": low, "close": close, "volume": volume}
    )
    line, signal, hist = ind.macd(close, 12, 26, 9)
    upper, middle, lower = ind.bollinger(close, 20, 2)
    np.testing.assert_array_equal(signals.entry_long, (line > signal) & (close < lower))
    k, d = ind.stochastic(high, low, close, 14, 3, 3)
    expected_exit = (k > d) | (ind.cci(high, low, close, 20) > ind.adx(high, low, close, 14))
    np.testing.assert_array_equal(signals.exit_long, expected_exit)
    expected_size = (
        ind.vwap(high, low, close, volume) + ind.obv(close, volume) + hist + middle + upper
    )
    np.testing.assert_allclose(signals.size, expected_size, equal_nan=True)


def test_conditions_shift_and_elementwise_functions() -> None:
    text = """
up = close > shift(close, 1)
entry_long = up and not shift(up, 1)
entry_short = abs(close - open) > 2 and min(close, open) < max(open, 1) - 0 * 1
"""
    close = np.array([1.0, 2.0, 3.0, 2.0, 4.0, 5.0])
    open_ = np.array([1.0, 5.0, 0.5, 2.0, 1.0, 5.0])
    signals = compile_formula(text).evaluate({"open": open_, "close": close})
    assert signals.entry_long.tolist() == [False, True, False, False, True, False]
    assert signals.entry_short.tolist() == [False, True, True, False, False, False]


def test_division_by_zero_is_nan_or_inf_without_warnings() -> None:
    text = (
        "ratio = (close - open) / (close - close)\nentry_long = ratio > 0\nsize = 0 / 0 + ratio % 0"
    )
    close = np.array([1.0, 2.0, 3.0])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        signals = compile_formula(text).evaluate(
            {"open": np.array([1.0, 1.0, 4.0]), "close": close}
        )
    assert signals.entry_long.tolist() == [False, True, False]
    assert signals.size is not None
    assert np.isnan(signals.size).all()


REFUSED = [
    ("entry_long = close.shift > 1", 1, 14, "'close.shift' — attribute access is not allowed"),
    ("entry_long = close[1] > 1", 1, 14, "indexing is not allowed; use shift(series, bars)"),
    ("import os\nentry_long = close > 1", 1, 1, "import statements are not allowed"),
    ("from os import path", 1, 1, "import statements are not allowed"),
    ("for i in close:\n    x = 1", 1, 1, "for loops are not allowed"),
    ("while 1:\n    x = 1", 1, 1, "while loops are not allowed"),
    ("def f():\n    return 1", 1, 1, "function definitions are not allowed"),
    ("entry_long = (lambda: 1)() > 0", 1, 14, "cannot be called"),
    ("x = lambda: 1", 1, 5, "lambda is not allowed"),
    ("x = [c for c in close]", 1, 5, "comprehensions are not allowed"),
    ("x = 'close'", 1, 5, "text strings are not allowed"),
    ("x = f'{close}'", 1, 5, "text strings are not allowed"),
    ("entry_long = sma(close, period=3) > 1", 1, 32, "keyword arguments are not allowed"),
    ("entry_long = sma(*close) > 1", 1, 18, "unpacking is not allowed"),
    ("x = [1, 2]", 1, 5, "lists are not allowed"),
    ("x = {1: 2}", 1, 5, "dictionaries are not allowed"),
    ("x = (1, 2)", 1, 5, "tuples are not allowed"),
    ("x = 1 if close else 2", 1, 5, "'if ... else' expressions are not allowed"),
    ("entry_long = (y := close > 1)", 1, 15, "':=' is not allowed"),
    ("x = close // 2", 1, 5, "'//' is not allowed; use '/'"),
    ("entry_long = (close > 1) & (close < 2)", 1, 14, "'&' is not allowed; use 'and'"),
    ("x = True", 1, 5, "'True' is not allowed"),
    ("x = None", 1, 5, "'None' is not allowed"),
    ("x = 1j", 1, 5, "is not allowed in a formula"),
    ("x += 1", 1, 1, "'+=' style assignments are not allowed"),
    ("a = b = 1", 1, 1, "assign to one name at a time"),
    ("close + 1", 1, 1, "each line must be an assignment"),
    ("entry_long = smaa(close, 3) > 1", 1, 14, "unknown function 'smaa' — did you mean 'sma'?"),
    ("entry_long = rsi(close) > 1", 1, 14, "rsi() takes 2 arguments (series, period), got 1"),
    ("entry_long = atr(high, 14) > 1", 1, 14, "atr() takes 4 arguments (high, low, close, period)"),
    ("entry_long = clse > 1", 1, 14, "unknown name 'clse' — did you mean 'close'?"),
    ("entry_long = sma > 1", 1, 14, "'sma' is a function: call it, e.g. sma(close, 14)"),
    ("entry_long = close(1) > 1", 1, 14, "'close' is not a function"),
    ("x = exit_long\nexit_long = close > 1", 1, 5, "exit_long is used before it is defined"),
    ("close = 1", 1, 1, "'close' is a candle input and cannot be assigned"),
    ("ema = 1", 1, 1, "'ema' is a function name and cannot be assigned"),
    ("x = 1\nx = 2", 2, 1, "'x' is already defined on line 1"),
    ("entry_long = close + 1", 1, 1, "entry_long must be a condition"),
    ("entry_long = close > 1\nstop_loss = close > 1", 2, 1, "stop_loss must be a number"),
    ("entry_long = (close > 1) + 1 > 0", 1, 14, "'+' needs numbers on both sides"),
    ("entry_long = close and open", 1, 14, "'and' needs conditions"),
    ("entry_long = not close", 1, 14, "'not' needs a condition"),
    ("entry_long = (close > 1) > (open > 1)", 1, 14, "comparisons need numbers"),
    ("entry_long = sma(close > 1, 3) > 1", 1, 14, "sma() needs numbers"),
    ("entry_long = sma(close, close) > 1", 1, 25, "period must be a fixed number or parameter"),
    (
        "entry_long = sma(close, 2.5) > 1",
        1,
        25,
        "sma() period must be a whole number from 2 to 10000",
    ),
    ("entry_long = sma(close, 1) > 1", 1, 25, "from 2 to 10000, got 1"),
    ("entry_long = sma(close, 10001) > 1", 1, 25, "got 10001"),
    ("entry_long = bb_upper(close, 20, 0) > 1", 1, 34, "deviations must be a number above 0"),
    ("entry_long = close ** 5000 > 1", 1, 23, "the exponent must be a number from -1000 to 1000"),
    ("x = 1e400\nentry_long = close > x", 1, 5, "this number is too large"),
    ("x = 1\n  y = 2", 2, 2, "this cannot be read"),
    ("entry_long = close >", 1, 21, "this cannot be read"),
    ("exit_long = close > 1", 1, 1, "needs an entry_long or entry_short rule"),
    ("x = 1 \x00", 1, 7, "invalid character U+0000"),
    ("x = 1\nentry_long = close > \ud800", 2, 22, "invalid character U+D800"),
]


@pytest.mark.parametrize(("text", "line", "column", "message"), REFUSED)
def test_each_forbidden_construct_is_refused_at_its_place(
    text: str, line: int, column: int, message: str
) -> None:
    errors = validate(text).errors
    assert errors, text
    assert (errors[0].line, errors[0].column) == (line, column), errors
    assert message in errors[0].message, errors
    with pytest.raises(InvalidFormula) as raised:
        compile_formula(text)
    assert raised.value.errors == errors


def test_columns_count_characters_not_bytes() -> None:
    errors = validate("prix_été = 1\nentry_long = prix_été > smaa(close, 3)").errors
    assert [(e.line, e.column) for e in errors] == [(2, 25)]
    assert str(errors[0]) == "line 2, column 25: unknown function 'smaa' — did you mean 'sma'?"


def test_several_errors_are_reported_at_once() -> None:
    text = "a = close.x\nb = smaa(close, 3)\nentry_long = rsi(close) > 1\nexit_long = close[1] > 2"
    errors = validate(text).errors
    assert [(e.line, e.column) for e in errors] == [(1, 5), (2, 5), (3, 14), (4, 13)]


def test_a_broken_line_does_not_cascade() -> None:
    errors = validate("a = smaa(close, 3)\nentry_long = a > 1").errors
    assert len(errors) == 1


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("x = " + "1 + " * 6000 + "1", "characters (at most 20000)"),
        ("x = " + "(" * 5000 + "1" + ")" * 5000, "nested too deeply"),
        ("x = " + "-" * 15000 + "1", "more than 500 operators"),
        ("x = " + "not " * 4000 + "a", "more than 500 operators"),
        ("x = " + " ** ".join(["2"] * 3000), "more than 500 operators"),
        ("x = " + "sma(" * 110 + "close" + ", 2)" * 110, "nested too deeply"),
        ("\n".join(f"x{i} = {i}" for i in range(201)), "too many statements"),
        ("\n".join(f"x{i} = " + "+".join(["close"] * 40) for i in range(70)), "too large"),
        ("x = " + "+".join(["close"] * 120), "nested too deeply"),
        ("x = " + "9" * 5000, "this cannot be read"),
        ("x = 2 ** 10 ** 10\nentry_long = close > x", "exponent"),
    ],
)
def test_bounds_refuse_pathological_text(text: str, message: str) -> None:
    errors = validate(text).errors
    assert errors
    assert message in errors[0].message, errors


def test_series_longer_than_the_bound_are_refused_before_any_work() -> None:
    formula = compile_formula(EXAMPLE)
    too_long = np.broadcast_to(np.float64(1.0), (5_000_001,))  # no memory behind it
    with pytest.raises(EvaluationError, match="too many bars: 5,000,001"):
        formula.evaluate({"close": too_long})


def test_too_much_work_is_refused() -> None:
    formula = compile_formula("entry_long = cci(10000) > 0")
    bars = np.ones(100_000)
    with pytest.raises(EvaluationError, match="too much work for 100,000 bars"):
        formula.evaluate({"high": bars, "low": bars, "close": bars})


def test_inputs_are_checked() -> None:
    formula = compile_formula("entry_long = close > open")
    with pytest.raises(EvaluationError, match="needs the candle input 'open'"):
        formula.evaluate({"close": np.ones(3)})
    with pytest.raises(EvaluationError, match="same number of bars"):
        formula.evaluate({"close": np.ones(3), "open": np.ones(4)})
    with pytest.raises(EvaluationError, match="unknown candle input 'Close'"):
        formula.evaluate({"Close": np.ones(3), "open": np.ones(3)})
    with pytest.raises(EvaluationError, match="one-dimensional"):
        formula.evaluate({"close": np.ones((3, 2)), "open": np.ones((3, 2))})


def test_parameters_may_be_negative_and_derived_constants_work_as_periods() -> None:
    text = (
        "base = 5\nshift_by = -0.5\nlong_period = base * 2\n"
        "entry_long = sma(close, long_period) > close + shift_by"
    )
    result = validate(text)
    assert result.errors == []
    assert result.parameters == {"base": 5, "shift_by": -0.5}
    assert result.series == ["long_period"]
    close = np.arange(30.0)
    signals = compile_formula(text).evaluate({"close": close})
    np.testing.assert_array_equal(signals.entry_long, ind.sma(close, 10) > close - 0.5)
    with pytest.raises(EvaluationError, match=r"got 10\.5"):
        compile_formula(text).evaluate({"close": close}, {"base": 5.25})


FORMULA_WORDS = st.sampled_from(
    [
        "close",
        "open",
        "high",
        "low",
        "volume",
        "sma",
        "rsi",
        "macd",
        "crossover",
        "shift",
        "entry_long",
        "exit_long",
        "stop_loss",
        "size",
        "fast",
        "x",
        "not",
        "and",
        "or",
        "import",
        "lambda",
        "(",
        ")",
        "[",
        "]",
        ",",
        ".",
        "=",
        "==",
        "<",
        ">",
        "+",
        "-",
        "*",
        "/",
        "**",
        "%",
        "10",
        "0.5",
        "1e999",
        "-",
        "\n",
        " ",
        "'",
        "#",
        ":",
        "@",
        "~",
        "&",
    ]
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(max_size=300))
def test_any_text_gives_a_clean_validation_result(text: str) -> None:
    result = validate(text)
    assert isinstance(result.errors, list)
    for error in result.errors:
        assert error.line >= 1
        assert error.column >= 1
        assert error.message


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(FORMULA_WORDS, max_size=40))
def test_formula_like_text_validates_and_valid_text_evaluates(words: list[str]) -> None:
    text = " ".join(words)
    result = validate(text)
    if result.errors:
        with pytest.raises(InvalidFormula):
            compile_formula(text)
        return
    close = np.linspace(1.0, 2.0, 50)
    candles = {"open": close, "high": close + 1, "low": close - 1, "close": close, "volume": close}
    signals = compile_formula(text).evaluate(candles)
    assert signals.entry_long.shape == (50,)


def test_each_indicator_is_computed_once_per_evaluation_and_reused_across_a_grid(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    computed: list[tuple[float, ...]] = []
    sma = FUNCTIONS["sma"]

    def counting(series: Sequence[FloatArray], constants: Sequence[float]) -> Array:
        computed.append(tuple(constants))
        return sma.compute(series, constants)

    # Two SMAs of one series are computed in one pass (`Function.together`): counted per SMA.
    assert sma.together is not None
    together = sma.together

    def counting_two(
        series: Sequence[FloatArray], constants: Sequence[float], other: Sequence[float]
    ) -> tuple[Array, Array]:
        computed.extend([tuple(constants), tuple(other)])
        return together(series, constants, other)

    counted = dataclasses.replace(sma, compute=counting, together=counting_two)
    monkeypatch.setitem(FUNCTIONS, "sma", counted)
    formula = compile_formula(EXAMPLE)
    candles = Candles({"close": zigzag_close()})
    formula.evaluate(candles)
    assert sorted(computed) == [(10.0,), (20.0,)]  # eight sma() calls, two distinct
    formula.evaluate(candles)
    assert len(computed) == 2  # the same candles: nothing computed again
    formula.evaluate(candles, {"fast": 5})
    assert computed[2:] == [(5.0,)]
    formula.evaluate({"close": zigzag_close()})  # other candles: computed afresh
    assert len(computed) == 5


PERIODS = st.integers(min_value=1, max_value=30)
NUMBER_LEAVES = st.sampled_from(["close", "open", "high", "low", "volume", "1", "0.5", "0", "p"])


def _number_expressions(inner: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    return st.one_of(
        st.tuples(inner, st.sampled_from(["+", "-", "*", "/", "%", "**"]), inner).map(
            lambda t: f"({t[0]} {t[1]} {t[2]})"
        ),
        inner.map(lambda e: f"-{e}"),
        st.tuples(
            st.sampled_from(["sma", "ema", "wma", "rsi", "roc", "stdev", "highest", "lowest"]),
            inner,
            PERIODS,
        ).map(lambda t: f"{t[0]}({t[1]}, {t[2]})"),
        st.tuples(st.sampled_from(["atr", "adx", "cci"]), PERIODS).map(lambda t: f"{t[0]}({t[1]})"),
        st.tuples(
            st.sampled_from(["macd", "macd_signal", "macd_hist"]), inner, PERIODS, PERIODS, PERIODS
        ).map(lambda t: f"{t[0]}({t[1]}, {t[2]}, {t[3]}, {t[4]})"),
        st.tuples(st.sampled_from(["bb_upper", "bb_middle", "bb_lower"]), inner, PERIODS).map(
            lambda t: f"{t[0]}({t[1]}, {t[2]}, 2)"
        ),
        st.tuples(PERIODS, PERIODS, PERIODS).map(lambda t: f"stoch_d({t[0]}, {t[1]}, {t[2]})"),
        st.sampled_from(["obv()", "vwap()", "stoch_k(5, 3)"]),
        st.tuples(st.sampled_from(["min", "max"]), inner, inner).map(
            lambda t: f"{t[0]}({t[1]}, {t[2]})"
        ),
        st.tuples(inner, PERIODS).map(lambda t: f"abs(shift({t[0]}, {t[1]}))"),
    )


NUMBERS = st.recursive(NUMBER_LEAVES, _number_expressions, max_leaves=8)
COMPARISONS = st.one_of(
    st.tuples(NUMBERS, st.sampled_from(["<", "<=", ">", ">=", "==", "!="]), NUMBERS).map(
        lambda t: f"{t[0]} {t[1]} {t[2]}"
    ),
    st.tuples(st.sampled_from(["crossover", "crossunder"]), NUMBERS, NUMBERS).map(
        lambda t: f"{t[0]}({t[1]}, {t[2]})"
    ),
)
CONDITIONS = st.recursive(
    COMPARISONS,
    lambda inner: st.one_of(
        st.tuples(inner, st.sampled_from(["and", "or"]), inner).map(
            lambda t: f"({t[0]} {t[1]} {t[2]})"
        ),
        inner.map(lambda c: f"not ({c})"),
        st.tuples(inner, PERIODS).map(lambda t: f"shift({t[0]}, {t[1]})"),
    ),
    max_leaves=4,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(NUMBERS, CONDITIONS, CONDITIONS, NUMBERS, st.integers(0, 3))
def test_generated_formulas_either_are_refused_or_evaluate_cleanly(
    value: str, entry: str, exit_: str, stop: str, gaps: int
) -> None:
    text = f"p = 3\nx = {value}\nentry_long = {entry}\nexit_long = {exit_}\nstop_loss = {stop}\n"
    result = validate(text)
    if result.errors:
        # Only out-of-range periods are expected here: everything else is well-formed.
        assert all("must be" in error.message for error in result.errors), result.errors
        return
    rng = np.random.default_rng(gaps)
    close = 100 + np.cumsum(rng.normal(0, 1, 120))
    close[rng.integers(0, 120, gaps)] = np.nan
    candles = {
        "open": close + 0.5,
        "high": close + 1,
        "low": close - 1,
        "close": close,
        "volume": rng.lognormal(3, 1, 120),
    }
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        signals = compile_formula(text).evaluate(candles)
    assert signals.entry_long.dtype == np.bool_
    assert signals.exit_long.shape == (120,)
    assert signals.stop_loss is not None
    assert signals.stop_loss.dtype == np.float64


@pytest.mark.parametrize("gap", [False, True])
def test_calls_computed_together_give_what_each_call_gives_alone(gap: bool) -> None:
    # Three SMAs of close (a pair and one alone), a pair of high, a crossover with its
    # crossunder, and a crossunder without its crossover.
    text = """fast_line = sma(close, 5)
mid_line = sma(close, 12)
slow_line = sma(close, 40)
entry_long = crossover(fast_line, mid_line) and slow_line > 0
exit_long = crossunder(fast_line, mid_line) or crossunder(mid_line, slow_line)
entry_short = crossover(sma(high, 3), sma(high, 9))
"""
    close = 100 + 10 * np.sin(np.arange(400) / 7)
    high = close + 1  # without a gap: SMAs of high go through the paired pass
    if gap:  # the paired SMAs of close fall back to one at a time
        close[200] = np.nan
    signals = compile_formula(text).evaluate({"close": close, "high": high})
    fast, mid, slow = ind.sma(close, 5), ind.sma(close, 12), ind.sma(close, 40)
    np.testing.assert_array_equal(signals.entry_long, ind.crossover(fast, mid) & (slow > 0))
    np.testing.assert_array_equal(
        signals.exit_long, ind.crossunder(fast, mid) | ind.crossunder(mid, slow)
    )
    np.testing.assert_array_equal(
        signals.entry_short, ind.crossover(ind.sma(high, 3), ind.sma(high, 9))
    )
    assert signals.entry_long.any() and signals.exit_long.any() and signals.entry_short.any()
