"""The TradeOS formula language: trading rules written as text, checked, then run on candles.

A formula is a few lines of ``name = expression``::

    fast = 10
    slow = 20
    entry_long  = crossover(sma(close, fast), sma(close, slow))
    exit_long   = crossunder(sma(close, fast), sma(close, slow))
    entry_short = crossunder(sma(close, fast), sma(close, slow))
    exit_short  = crossover(sma(close, fast), sma(close, slow))

It is never run as Python: the text is parsed, only the constructs below exist, and it is
compiled to vectorized numpy over the candle arrays. Any user of a public service may submit
one.

Lines
    Each line (statement) is ``name = expression``. A line may continue inside brackets.
    ``#`` starts a comment. A name is defined once, before it is used, and may not be a candle
    input or a function name.

Parameters
    A line whose value is a plain number (``fast = 10``, ``risk = -0.5``) defines a
    parameter: a default that a backtest may override or optimize. Overriding a name that is
    not a parameter is an error. Rule names (below) are never parameters.

Inputs
    ``open``, ``high``, ``low``, ``close``, ``volume``: one value per bar.

Rules
    ``entry_long``, ``exit_long``, ``entry_short``, ``exit_short`` are conditions (true or
    false on each bar); at least one of ``entry_long`` / ``entry_short`` is required, a
    missing rule is false on every bar.
    ``stop_loss``, ``take_profit``, ``trailing_stop`` are numbers, fixed or per bar. A value
    ``v`` with ``0 < v < 1`` is a fraction of the entry price (``stop_loss = 0.02``: 2 %
    below a long entry, above a short one); a value ``v >= 1`` is a distance in price units
    (``stop_loss = 2 * atr(14)``); a value that is NaN or ``<= 0`` sets no level on that bar.
    Mind instruments priced below 1: write their distances as fractions.
    `level_distance(value, entry_price)` applies this rule for the engines.
    ``size`` is the quantity to trade on an entry, fixed or per bar; the backtest and trading
    engines decide its unit and what a NaN or non-positive size means.
    Any other name defines a named series (or a fixed value) usable by later lines.

Expressions
    Numbers (``10``, ``0.5``, ``1e-3``), names, ``+ - * / ** %``, a sign (``-x``),
    comparisons ``< <= > >= == !=`` (``a < b < c`` means ``a < b and b < c``), ``and``,
    ``or``, ``not``, parentheses, and calls of the functions below with positional
    arguments. Nothing else: no attribute access (``close.shift``), indexing
    (``close[1]``; write ``shift(close, 1)``), strings, keyword arguments, lists, lambdas,
    comprehensions, ``if`` expressions, imports, loops or definitions.

Types
    Values are numbers or conditions. Comparisons, ``crossover`` and ``crossunder`` give
    conditions; ``and``, ``or``, ``not`` take conditions; arithmetic, comparisons and
    indicators take numbers. Mixing them (``close + (close > open)``) is an error. A
    comparison with NaN (an indicator's warm-up) is false. Division by zero gives inf or NaN
    as in IEEE arithmetic, never an error.

Functions (``series`` is any number series or fixed number; periods are fixed whole numbers
from the minimum shown to 10,000: literals, parameters or arithmetic on them, checked again
with each set of parameter values)
    ``sma(series, period)``, ``ema``, ``wma``, ``rsi``, ``stdev`` (population) — period ≥ 2;
    ``roc(series, period)``, ``highest(series, period)``, ``lowest(series, period)`` —
    period ≥ 1;
    ``macd(series, fast, slow, signal)`` the MACD line (fast ≥ 2, slow ≥ 2, signal ≥ 1; a
    fast period above the slow one is swapped, as TA-Lib does), ``macd_signal(...)`` its
    signal line, ``macd_hist(...)`` the histogram (same arguments);
    ``bb_upper(series, period, deviations)``, ``bb_middle(...)``, ``bb_lower(...)`` the
    Bollinger bands (same arguments; ``deviations`` is a number above 0, at most 100);
    ``atr(period)`` (period ≥ 1), ``adx(period)``, ``cci(period)``,
    ``stoch_k(k_period, k_smoothing)`` (TA-Lib's slow %K, available from bar
    ``k_period + k_smoothing - 2``; TA-Lib itself also waits for %D),
    ``stoch_d(k_period, k_smoothing, d_period)``, ``obv()``, ``vwap()`` use the candles'
    own prices; they may also be given them first: ``atr(high, low, close, 14)``,
    ``obv(close, volume)``, ``vwap(high, low, close, volume)``;
    ``crossover(a, b)`` true on the bar ``a`` rises above ``b`` (it was at or below it on the
    bar before), ``crossunder(a, b)`` the reverse;
    ``shift(series, bars)`` the value ``bars`` bars ago (NaN, or false for a condition,
    before the first bar);
    ``abs(x)``, ``min(a, b)``, ``max(a, b)`` bar by bar (NaN if either is NaN).
    Indicators follow TA-Lib's definitions (see `tradeos.strategies.indicators`); their
    warm-up bars are NaN.

Using it
    ``validate(text)`` returns a `ValidationResult` (parameters, rules, named series and every
    error with its 1-based line and column) and never raises; after an error the other fields
    hold what was read so far. ``compile_formula(text)`` raises `InvalidFormula` (with the
    same errors) or returns a `CompiledFormula`, whose ``evaluate(inputs, params)`` takes the
    candle arrays (a mapping of input name to array, only the five input names) or a
    `Candles` built from them once, and parameter overrides; it returns `Signals`, whose
    arrays are read-only. Evaluating a grid of parameters over one `Candles` computes each
    indicator (function and argument values) once for the whole grid. Bad overrides, bad
    inputs, or periods made invalid by an override raise `EvaluationError`.

Bounds
    At most 20,000 characters, 200 statements, 5,000 parts (names, numbers, operations,
    calls), nesting 100 deep, 500 operators per statement, a fixed exponent (``x ** 2``)
    within ±1,000; at most 5,000,000 bars per evaluation, and bars × distinct series
    operations (a CCI counts its period) at most 200,000,000.
"""

from tradeos.strategies.formula.compiler import (
    Candles,
    CompiledFormula,
    Signals,
    ValidationResult,
    compile_formula,
    validate,
)
from tradeos.strategies.formula.errors import EvaluationError, FormulaError, InvalidFormula
from tradeos.strategies.formula.levels import level_distance

__all__ = [
    "Candles",
    "CompiledFormula",
    "EvaluationError",
    "FormulaError",
    "InvalidFormula",
    "Signals",
    "ValidationResult",
    "compile_formula",
    "level_distance",
    "validate",
]
