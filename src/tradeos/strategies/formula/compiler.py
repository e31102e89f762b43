"""A checked program → vectorized numpy over candle arrays (pure: no I/O).

One evaluation computes each distinct sub-expression once (`sma(close, fast)` written four
times is one SMA). Indicator results are also kept on the `Candles` they were computed from,
keyed by the indicator and its argument values, so a parameter grid over the same candles
computes `sma(close, 10)` once for all combinations that use it.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterator, Mapping
from dataclasses import dataclass
from typing import cast

import numpy as np
import numpy.typing as npt

from tradeos.strategies import indicators as ind
from tradeos.strategies.formula.errors import EvaluationError, FormulaError, InvalidFormula
from tradeos.strategies.formula.functions import INPUTS, Array, FloatArray
from tradeos.strategies.formula.limits import CACHE_BYTES, MAX_BARS, MAX_CELLS, MAX_LITERAL
from tradeos.strategies.formula.parser import (
    LEVEL_RULES,
    SIGNAL_RULES,
    Arithmetic,
    Call,
    Comparison,
    Input,
    Logic,
    Negate,
    Node,
    Not,
    Number,
    Parameter,
    Program,
    Reference,
    parse,
)

BoolArray = npt.NDArray[np.bool_]
Scalar = np.float64 | np.bool_
Value = Scalar | Array
Key = Hashable
# A call's key: ("call", function name, keys of its series arguments, constant arguments).
_CallKey = tuple[str, str, tuple[Key, ...], tuple[float, ...]]


@dataclass(frozen=True)
class ValidationResult:
    parameters: dict[str, float | int]
    rules: list[str]
    series: list[str]
    errors: list[FormulaError]

    @property
    def valid(self) -> bool:
        return not self.errors


@dataclass(frozen=True)
class Signals:
    """What a formula says on each bar. Arrays are read-only and may be shared."""

    entry_long: BoolArray
    exit_long: BoolArray
    entry_short: BoolArray
    exit_short: BoolArray
    stop_loss: FloatArray | None
    take_profit: FloatArray | None
    trailing_stop: FloatArray | None
    size: FloatArray | None


class _FrozenInputs(Mapping[str, FloatArray]):
    """The candle inputs as read-only float64 copies, each made when a formula first reads it
    (a formula reading only `close` does not pay for copying the other four)."""

    def __init__(self, raw: dict[str, npt.ArrayLike]) -> None:
        self._raw = raw
        self._frozen: dict[str, FloatArray] = {}

    def __getitem__(self, name: str) -> FloatArray:
        found = self._frozen.get(name)
        if found is None:
            found = _frozen_copy(name, self._raw[name])
            self._frozen[name] = found
        return found

    def __iter__(self) -> Iterator[str]:
        return iter(self._raw)

    def __len__(self) -> int:
        return len(self._raw)

    def __contains__(self, name: object) -> bool:
        return name in self._raw


def _frozen_copy(name: str, values: npt.ArrayLike) -> FloatArray:
    try:
        array = np.array(values, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise EvaluationError(f"candle input '{name}' must hold numbers") from error
    array.setflags(write=False)
    return array


class Candles:
    """Candle arrays checked and frozen once, for many evaluations (a parameter grid).

    Holds read-only float64 copies of the inputs and the indicator results computed on them.
    A numeric array is copied when a formula first reads it: do not change it before then.
    """

    def __init__(self, inputs: Mapping[str, npt.ArrayLike]) -> None:
        unknown = sorted(set(inputs) - set(INPUTS))
        if unknown:
            raise EvaluationError(
                f"unknown candle input '{unknown[0]}'; the inputs are {', '.join(INPUTS)}"
            )
        raw: dict[str, npt.ArrayLike] = {}
        length: int | None = None
        for name, values in inputs.items():
            shape = np.shape(values)
            if len(shape) != 1:
                raise EvaluationError(f"candle input '{name}' must be a one-dimensional array")
            if shape[0] > MAX_BARS:
                raise EvaluationError(
                    f"too many bars: {shape[0]:,} (a formula runs on at most {MAX_BARS:,})"
                )
            if length is not None and shape[0] != length:
                raise EvaluationError("all candle inputs must have the same number of bars")
            length = shape[0]
            numeric = isinstance(values, np.ndarray) and values.dtype.kind in "biuf"
            # Numeric arrays are copied when first read; anything else is checked now.
            raw[name] = values if numeric else _frozen_copy(name, values)
        self.arrays: Mapping[str, FloatArray] = _FrozenInputs(raw)
        self.length = length or 0
        self._cache: OrderedDict[Key, Array] = OrderedDict()
        self._cache_bytes = 0

    def remembered(self, key: Key) -> Array | None:
        found = self._cache.get(key)
        if found is not None:
            self._cache.move_to_end(key)
        return found

    def remember(self, key: Key, values: Array) -> None:
        if values.nbytes > CACHE_BYTES // 4:
            return
        values.setflags(write=False)
        replaced = self._cache.pop(key, None)
        if replaced is not None:  # counted once, however often it is remembered
            self._cache_bytes -= replaced.nbytes
        self._cache[key] = values
        self._cache_bytes += values.nbytes
        while self._cache_bytes > CACHE_BYTES:
            _, dropped = self._cache.popitem(last=False)
            self._cache_bytes -= dropped.nbytes


class CompiledFormula:
    def __init__(self, text: str, program: Program) -> None:
        self.text = text
        self._program = program
        self._definitions = {d.name: d.value for d in program.definitions}
        self.inputs = sorted(_inputs_used(program), key=INPUTS.index)

    @property
    def parameters(self) -> dict[str, float | int]:
        return dict(self._program.parameters)

    @property
    def rules(self) -> list[str]:
        return list(self._program.rules)

    @property
    def series(self) -> list[str]:
        return list(self._program.series)

    def evaluate(
        self,
        inputs: Mapping[str, npt.ArrayLike] | Candles,
        params: Mapping[str, float | int] | None = None,
    ) -> Signals:
        """The signals on each bar of `inputs`, with `params` overriding parameter defaults."""
        values = self.parameter_values(params)
        errors = check_constants(self._program, values)
        if errors:
            raise EvaluationError("; ".join(str(e) for e in errors), errors)
        candles = inputs if isinstance(inputs, Candles) else Candles(inputs)
        missing = [name for name in self.inputs if name not in candles.arrays]
        if missing:
            raise EvaluationError(f"the formula needs the candle input '{missing[0]}'")
        # Every indicator input is scanned for gaps once per evaluation, not once per call.
        with np.errstate(all="ignore"), ind.gap_scans():
            run = _Run(self._program, values, candles)
            run.plan()
            return run.signals()

    def parameter_values(self, params: Mapping[str, float | int] | None) -> dict[str, float]:
        values = {name: float(value) for name, value in self._program.parameters.items()}
        for name, value in (params or {}).items():
            if name not in values:
                known = ", ".join(values) or "none"
                raise EvaluationError(f"unknown parameter '{name}' (parameters: {known})")
            if isinstance(value, bool) or not isinstance(value, int | float | np.number):
                raise EvaluationError(f"parameter '{name}' must be a number")
            number = float(value)
            if not abs(number) <= MAX_LITERAL:
                raise EvaluationError(f"parameter '{name}' must be a finite number")
            values[name] = number
        return values


def validate(text: str) -> ValidationResult:
    """Every problem of `text`, each at its line and column; never raises."""
    program, errors = parse(text)
    if not errors:
        errors = check_constants(program, {k: float(v) for k, v in program.parameters.items()})
    return ValidationResult(
        dict(program.parameters), list(program.rules), list(program.series), errors
    )


def compile_formula(text: str) -> CompiledFormula:
    """`text` ready to evaluate; `InvalidFormula` lists every problem otherwise."""
    program, errors = parse(text)
    if not errors:
        errors = check_constants(program, {k: float(v) for k, v in program.parameters.items()})
    if errors:
        raise InvalidFormula(errors)
    return CompiledFormula(text, program)


def check_constants(program: Program, params: Mapping[str, float]) -> list[FormulaError]:
    """Periods, multipliers and exponents checked with these parameter values."""
    definitions = {d.name: d.value for d in program.definitions}
    errors = []
    with np.errstate(all="ignore"):
        for check in program.checks:
            value = float(_constant(check.node, params, definitions))
            if not check.rule.accepts(value):
                shown = f"{value:g}" if np.isfinite(value) else "not a finite number"
                errors.append(
                    FormulaError(
                        check.node.line,
                        check.node.column,
                        f"{check.what} must be {check.rule.describe()}, got {shown}",
                    )
                )
    return errors


def _constant(node: Node, params: Mapping[str, float], definitions: Mapping[str, Node]) -> Scalar:
    """The value of a node that is the same on every bar."""
    if isinstance(node, Number):
        return np.float64(node.value)
    if isinstance(node, Parameter):
        return np.float64(params[node.name])
    if isinstance(node, Reference):
        return _constant(definitions[node.name], params, definitions)
    if isinstance(node, Negate):
        negated = _combine(node, [_constant(node.operand, params, definitions)])
        assert isinstance(negated, np.float64)
        return negated
    operands: list[Node]
    if isinstance(node, Arithmetic | Comparison):
        operands = [node.left, node.right]
    elif isinstance(node, Logic):
        operands = list(node.operands)
    elif isinstance(node, Not):
        operands = [node.operand]
    else:
        raise TypeError(f"not a constant: {node!r}")
    combined = _combine(node, [_constant(o, params, definitions) for o in operands])
    assert isinstance(combined, np.float64 | np.bool_)
    return combined


def _combine(node: Node, values: list[Value]) -> Value:
    """One operator applied to already computed operand values (scalars or arrays)."""
    if isinstance(node, Arithmetic):
        left, right = values
        match node.operator:
            case "+":
                return np.add(left, right)
            case "-":
                return np.subtract(left, right)
            case "*":
                return np.multiply(left, right)
            case "/":
                return np.true_divide(left, right)
            case "%":
                return np.mod(left, right)
            case _:
                return np.power(left, right)
    if isinstance(node, Comparison):
        left, right = values
        match node.operator:
            case "<":
                return np.less(left, right)
            case "<=":
                return np.less_equal(left, right)
            case ">":
                return np.greater(left, right)
            case ">=":
                return np.greater_equal(left, right)
            case "==":
                return np.equal(left, right)
            case _:
                return np.not_equal(left, right)
    if isinstance(node, Logic):
        combine = np.logical_and if node.operator == "and" else np.logical_or
        result = values[0]
        for value in values[1:]:
            result = combine(result, value)
        return result
    if isinstance(node, Not):
        return np.logical_not(values[0])
    if isinstance(node, Negate):
        return np.negative(values[0])
    raise TypeError(f"no operator: {node!r}")


class _Run:
    """One evaluation: keys every sub-expression, checks the work, then computes."""

    def __init__(self, program: Program, params: Mapping[str, float], candles: Candles) -> None:
        self.program = program
        self.params = params
        self.candles = candles
        self.definitions = {d.name: d.value for d in program.definitions}
        self.keys: dict[int, Key] = {}
        self.costs: dict[Key, float] = {}
        self.values: dict[Key, Value] = {}
        self.calls: dict[Key, Call] = {}

    def plan(self) -> None:
        for definition in self.program.definitions:
            self.key(definition.value)
        cells = self.candles.length * sum(self.costs.values())
        if cells > MAX_CELLS:
            raise EvaluationError(
                f"this formula is too much work for {self.candles.length:,} bars; "
                "use fewer bars, shorter periods or fewer different indicators"
            )

    def key(self, node: Node) -> Key:
        known = self.keys.get(id(node))
        if known is not None:
            return known
        key: Key
        cost = 1.0
        if node.constant:
            key, cost = ("constant", node.kind, float(self._scalar(node))), 0.0
        elif isinstance(node, Input):
            key, cost = ("input", node.name), 0.0
        elif isinstance(node, Reference):
            key, cost = self.key(self.definitions[node.name]), 0.0
        elif isinstance(node, Call):
            constants = tuple(float(self._scalar(c)) for c in node.constants)
            series = tuple(self.key(s) for s in node.series)
            key = ("call", node.function.name, series, constants)
            cost = max(1.0, node.function.cost(constants))
            self.calls[key] = node  # for the calls computed together (_shared_passes)
        elif isinstance(node, Arithmetic | Comparison):
            key = (node.operator, self.key(node.left), self.key(node.right))
        elif isinstance(node, Logic):
            key = (node.operator, *(self.key(o) for o in node.operands))
        elif isinstance(node, Not):
            key = ("not", self.key(node.operand))
        elif isinstance(node, Negate):
            key = ("negate", self.key(node.operand))
        else:
            raise TypeError(f"unexpected node {node!r}")
        self.keys[id(node)] = key
        if cost:
            self.costs[key] = cost
        return key

    def _scalar(self, node: Node) -> Scalar:
        return _constant(node, self.params, self.definitions)

    def value(self, node: Node) -> Value:
        key = self.keys[id(node)]
        if key in self.values:
            return self.values[key]
        value = self._compute(node, key)
        self.values[key] = value
        return value

    def _compute(self, node: Node, key: Key) -> Value:
        if node.constant:
            return self._scalar(node)
        if isinstance(node, Input):
            return self.candles.arrays[node.name]
        if isinstance(node, Reference):
            return self.value(self.definitions[node.name])
        if isinstance(node, Call):
            return self._call(node, key)
        if isinstance(node, Arithmetic | Comparison):
            return _combine(node, [self.value(node.left), self.value(node.right)])
        if isinstance(node, Logic):
            return _combine(node, [self.value(o) for o in node.operands])
        if isinstance(node, Not):
            return _combine(node, [self.value(node.operand)])
        if isinstance(node, Negate):
            return _combine(node, [self.value(node.operand)])
        raise TypeError(f"unexpected node {node!r}")

    def _call(self, node: Call, key: Key) -> Array:
        remembered = self.candles.remembered(key)
        if remembered is not None:
            return remembered
        # Only shift() takes conditions too; every other function was checked for numbers.
        series = cast(list[FloatArray], [self._as_series(self.value(s)) for s in node.series])
        constants = [float(self._scalar(c)) for c in node.constants]
        result = node.function.compute(series, constants)
        self.candles.remember(key, result)
        return result

    def _shared_passes(self) -> None:
        """Pairs of calls that one compiled pass computes together (`Function.partner`),
        computed so before the rest: two SMAs of one series (by period, two at a time), a
        crossover with the crossunder of the same two series. The values are those each call
        gives alone; the pass costs less than two."""
        groups: dict[tuple[str, tuple[Key, ...]], list[_CallKey]] = {}
        for key, node in self.calls.items():
            partner = node.function.partner
            if partner is None or self.candles.remembered(key) is not None:
                continue
            call = cast(_CallKey, key)
            # A function and its partner on the same series arguments share a group.
            groups.setdefault((min(call[1], partner), call[2]), []).append(call)
        for calls in groups.values():
            calls.sort(key=lambda call: (call[1], call[3]))  # by name, then constants
            while calls:
                first = calls.pop(0)
                node = self.calls[first]
                second = next((c for c in calls if c[1] == node.function.partner), None)
                if second is None:
                    continue  # computed alone when it is read
                calls.remove(second)
                together = cast(Callable[..., tuple[Array, Array]], node.function.together)
                series = [self._as_series(self.value(s)) for s in node.series]
                results = together(series, first[3], second[3])
                for key, result in zip((first, second), results, strict=True):
                    self.candles.remember(key, result)
                    self.values[key] = result

    def _as_series(self, value: Value) -> Array:
        if isinstance(value, np.ndarray):
            return value
        # A fixed number where a series is expected: the same value on every bar.
        return cast(Array, np.full(self.candles.length, value))

    def signals(self) -> Signals:
        self._shared_passes()
        for definition in self.program.definitions:
            self.value(definition.value)
        results: dict[str, Array | None] = {}
        for name in SIGNAL_RULES:
            results[name] = self._rule(name, np.bool_) if name in self.program.rules else None
        for name in LEVEL_RULES:
            results[name] = self._rule(name, np.float64) if name in self.program.rules else None
        no_signal = np.zeros(self.candles.length, dtype=np.bool_)
        no_signal.setflags(write=False)
        return Signals(
            entry_long=_bools(results["entry_long"], no_signal),
            exit_long=_bools(results["exit_long"], no_signal),
            entry_short=_bools(results["entry_short"], no_signal),
            exit_short=_bools(results["exit_short"], no_signal),
            stop_loss=_floats(results["stop_loss"]),
            take_profit=_floats(results["take_profit"]),
            trailing_stop=_floats(results["trailing_stop"]),
            size=_floats(results["size"]),
        )

    def _rule(self, name: str, dtype: type[np.bool_] | type[np.float64]) -> Array:
        value = self.value(self.definitions[name])
        if isinstance(value, np.ndarray) and value.dtype == dtype:
            array = value
        else:
            array = cast(Array, np.full(self.candles.length, value, dtype=dtype))
        array.setflags(write=False)
        return array


def _bools(value: Array | None, default: BoolArray) -> BoolArray:
    if value is None:
        return default
    assert value.dtype == np.bool_
    return value.astype(np.bool_, copy=False)


def _floats(value: Array | None) -> FloatArray | None:
    if value is None:
        return None
    return value.astype(np.float64, copy=False)


def _inputs_used(program: Program) -> set[str]:
    used: set[str] = set()
    stack: list[Node] = [d.value for d in program.definitions]
    while stack:
        node = stack.pop()
        if isinstance(node, Input):
            used.add(node.name)
        elif isinstance(node, Call):
            stack.extend((*node.series, *node.constants))
        elif isinstance(node, Arithmetic | Comparison):
            stack.extend((node.left, node.right))
        elif isinstance(node, Logic):
            stack.extend(node.operands)
        elif isinstance(node, Not | Negate):
            stack.append(node.operand)
    return used
