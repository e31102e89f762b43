"""Formula text → a checked program (pure: no eval, no exec, no compile of user text).

The text is read with Python's `ast` parser, because the formula syntax is a small subset of
Python expressions; only a whitelist of node types is turned into the program, everything
else is an error at its line and column. The input is bounded before the parser sees it
(length, bracket nesting, operators per statement), so no text can make it recurse too deep.
"""

from __future__ import annotations

import ast
import difflib
import io
import keyword
import re
import tokenize
from dataclasses import dataclass, field

from tradeos.strategies.formula.errors import FormulaError
from tradeos.strategies.formula.functions import FUNCTIONS, INPUTS, Constant, Function, Kind
from tradeos.strategies.formula.limits import (
    MAX_DEPTH,
    MAX_ERRORS,
    MAX_EXPONENT,
    MAX_LITERAL,
    MAX_NODES,
    MAX_OPERATORS,
    MAX_SOURCE_CHARS,
    MAX_STATEMENTS,
)

ENTRY_RULES = ("entry_long", "entry_short")
SIGNAL_RULES = ("entry_long", "exit_long", "entry_short", "exit_short")
LEVEL_RULES = ("stop_loss", "take_profit", "trailing_stop", "size")
RULES = SIGNAL_RULES + LEVEL_RULES


# --- the program


@dataclass(frozen=True, eq=False)
class Node:
    line: int
    column: int
    kind: Kind
    # True when the value is the same on every bar (numbers, parameters and arithmetic on them).
    constant: bool


@dataclass(frozen=True, eq=False)
class Number(Node):
    value: float


@dataclass(frozen=True, eq=False)
class Parameter(Node):
    name: str


@dataclass(frozen=True, eq=False)
class Input(Node):
    name: str


@dataclass(frozen=True, eq=False)
class Reference(Node):
    name: str


@dataclass(frozen=True, eq=False)
class Negate(Node):
    operand: Node


@dataclass(frozen=True, eq=False)
class Arithmetic(Node):
    operator: str  # + - * / ** %
    left: Node
    right: Node


@dataclass(frozen=True, eq=False)
class Comparison(Node):
    operator: str  # < <= > >= == !=
    left: Node
    right: Node


@dataclass(frozen=True, eq=False)
class Logic(Node):
    operator: str  # and / or
    operands: tuple[Node, ...]


@dataclass(frozen=True, eq=False)
class Not(Node):
    operand: Node


@dataclass(frozen=True, eq=False)
class Call(Node):
    function: Function
    series: tuple[Node, ...]
    constants: tuple[Node, ...]


@dataclass(frozen=True)
class ConstantCheck:
    """A value that must satisfy `rule` once the parameters are known."""

    node: Node
    rule: Constant
    what: str  # e.g. "sma() period"


@dataclass(frozen=True)
class Definition:
    name: str
    value: Node


@dataclass
class Program:
    parameters: dict[str, float | int] = field(default_factory=dict)
    definitions: list[Definition] = field(default_factory=list)
    rules: list[str] = field(default_factory=list)
    series: list[str] = field(default_factory=list)
    checks: list[ConstantCheck] = field(default_factory=list)


# --- reading


_ARITHMETIC = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/", ast.Pow: "**", ast.Mod: "%"}
_COMPARISONS = {
    ast.Lt: "<",
    ast.LtE: "<=",
    ast.Gt: ">",
    ast.GtE: ">=",
    ast.Eq: "==",
    ast.NotEq: "!=",
}
_OPERATOR_HINTS = {
    ast.FloorDiv: "'//' is not allowed; use '/'",
    ast.MatMult: "'@' is not allowed",
    ast.BitAnd: "'&' is not allowed; use 'and'",
    ast.BitOr: "'|' is not allowed; use 'or'",
    ast.BitXor: "'^' is not allowed; use '**' for a power",
    ast.LShift: "'<<' is not allowed",
    ast.RShift: "'>>' is not allowed",
}
_NOT_ALLOWED = {
    ast.Attribute: "attribute access is not allowed",
    ast.Subscript: "indexing is not allowed; use shift(series, bars) for earlier bars",
    ast.Lambda: "lambda is not allowed",
    ast.IfExp: "'if ... else' expressions are not allowed",
    ast.ListComp: "comprehensions are not allowed",
    ast.SetComp: "comprehensions are not allowed",
    ast.DictComp: "comprehensions are not allowed",
    ast.GeneratorExp: "comprehensions are not allowed",
    ast.List: "lists are not allowed",
    ast.Tuple: "tuples are not allowed",
    ast.Set: "sets are not allowed",
    ast.Dict: "dictionaries are not allowed",
    ast.JoinedStr: "text strings are not allowed",
    ast.NamedExpr: "':=' is not allowed; assign on a line of its own",
    ast.Starred: "'*' unpacking is not allowed",
    ast.Await: "'await' is not allowed",
    ast.Yield: "'yield' is not allowed",
    ast.YieldFrom: "'yield' is not allowed",
}
_STATEMENT_WORDS = {
    ast.Import: "import statements",
    ast.ImportFrom: "import statements",
    ast.For: "for loops",
    ast.AsyncFor: "for loops",
    ast.While: "while loops",
    ast.If: "if statements",
    ast.With: "with statements",
    ast.AsyncWith: "with statements",
    ast.FunctionDef: "function definitions",
    ast.AsyncFunctionDef: "function definitions",
    ast.ClassDef: "class definitions",
    ast.Return: "return statements",
    ast.Delete: "del statements",
    ast.Global: "global statements",
    ast.Nonlocal: "nonlocal statements",
    ast.Try: "try statements",
    ast.Raise: "raise statements",
    ast.Assert: "assert statements",
    ast.Pass: "pass statements",
    ast.Break: "break statements",
    ast.Continue: "continue statements",
    ast.AugAssign: "'+=' style assignments",
    ast.AnnAssign: "type annotations",
}


def parse(text: str) -> tuple[Program, list[FormulaError]]:
    """The program of `text` and every error found (the program is usable only without errors)."""
    errors = _check_before_parsing(text)
    if errors:
        return Program(), errors
    try:
        tree = ast.parse(text, mode="exec")
    except SyntaxError as error:
        return Program(), [_syntax_error(text, error)]
    except (MemoryError, RecursionError):
        return Program(), [FormulaError(1, 1, "the formula is too deeply nested to read")]
    except ValueError as error:  # e.g. an integer of more than 4,300 digits
        return Program(), [FormulaError(1, 1, f"this cannot be read: {error}")]
    errors = _check_size(tree)
    if errors:
        return Program(), errors
    reader = _Reader(text, tree)
    program = reader.read()
    return program, reader.errors[:MAX_ERRORS]


def _check_before_parsing(text: str) -> list[FormulaError]:
    if len(text) > MAX_SOURCE_CHARS:
        return [
            FormulaError(
                1,
                1,
                f"the formula is too long: {len(text)} characters (at most {MAX_SOURCE_CHARS})",
            )
        ]
    for position, character in enumerate(text):
        # NUL and lone surrogates (not valid Unicode text) would stop the parser itself.
        if character == "\x00" or "\ud800" <= character <= "\udfff":
            line = text.count("\n", 0, position) + 1
            column = position - (text.rfind("\n", 0, position) + 1) + 1
            return [FormulaError(line, column, f"invalid character U+{ord(character):04X}")]
    depth = 0
    operators = 0
    try:
        for token in tokenize.generate_tokens(io.StringIO(text).readline):
            line, column = token.start[0], token.start[1] + 1
            if token.type == tokenize.NEWLINE:
                operators = 0
            elif token.type == tokenize.OP:
                if token.string in ("(", "[", "{"):
                    depth += 1
                    if depth > MAX_DEPTH:
                        return [_too_deep(line, column)]
                elif token.string in (")", "]", "}"):
                    depth = max(depth - 1, 0)
                elif token.string not in (",", "="):
                    operators += 1
            elif token.type == tokenize.NAME and keyword.iskeyword(token.string):
                # not, and, or, but also lambda, if/else...: each may nest the parse deeper.
                operators += 1
            if operators > MAX_OPERATORS:
                return [
                    FormulaError(
                        line,
                        column,
                        f"this statement is too long: more than {MAX_OPERATORS} operators",
                    )
                ]
    except (tokenize.TokenError, SyntaxError):
        pass  # the parser reports it, with a better message
    return []


def _too_deep(line: int, column: int) -> FormulaError:
    return FormulaError(line, column, f"expressions are nested too deeply (at most {MAX_DEPTH})")


def _syntax_error(text: str, error: SyntaxError) -> FormulaError:
    line = error.lineno or 1
    column = error.offset or 1
    message = error.msg or "invalid syntax"
    if "indent" in message:
        message = "a line must not start with spaces (unless it continues a bracket)"
    return FormulaError(line, max(column, 1), f"this cannot be read: {message}")


def _check_size(tree: ast.Module) -> list[FormulaError]:
    if len(tree.body) > MAX_STATEMENTS:
        line = tree.body[MAX_STATEMENTS].lineno
        return [FormulaError(line, 1, f"too many statements (at most {MAX_STATEMENTS})")]
    count = 0
    # Iterative walk: the depth is checked before anything recurses over the tree.
    stack: list[tuple[ast.AST, int]] = [(tree, 0)]
    while stack:
        node, depth = stack.pop()
        # Parts a trader wrote: names, numbers, operations, calls (not the parser's markers).
        count += isinstance(node, ast.stmt | ast.expr | ast.keyword)
        if count > MAX_NODES:
            return [FormulaError(1, 1, f"the formula is too large (at most {MAX_NODES} parts)")]
        if depth > MAX_DEPTH:
            return [_too_deep(getattr(node, "lineno", 1), getattr(node, "col_offset", 0) + 1)]
        stack.extend((child, depth + 1) for child in ast.iter_child_nodes(node))
    return []


class _Reader:
    def __init__(self, text: str, tree: ast.Module) -> None:
        self.text = text
        # The parser's own line breaks (str.splitlines also breaks at form feeds and others).
        self.lines = re.split(r"\r\n|\r|\n", text)
        self.tree = tree
        self.errors: list[FormulaError] = []
        self.program = Program()
        self.kinds: dict[str, tuple[Kind, bool]] = {}  # defined name -> (kind, constant)
        self.defined_on: dict[str, int] = {}
        self.assigned_later: dict[str, int] = {}
        self.broken: set[str] = set()

    # -- errors

    def error(self, node: ast.AST, message: str) -> None:
        self.errors.append(FormulaError(*self.at(node), message))

    def at(self, node: ast.AST) -> tuple[int, int]:
        """1-based line and column of `node`."""
        line: int = getattr(node, "lineno", 1)
        offset: int = getattr(node, "col_offset", 0)
        # ast columns count UTF-8 bytes; a trader counts characters.
        source = self.lines[line - 1] if 0 < line <= len(self.lines) else ""
        column = len(source.encode("utf-8")[:offset].decode("utf-8", errors="replace")) + 1
        return line, column

    def quote(self, node: ast.AST) -> str:
        segment = ast.get_source_segment(self.text, node) or ""
        segment = " ".join(segment.split())
        return segment if len(segment) <= 40 else segment[:37] + "..."

    # -- statements

    def read(self) -> Program:
        for statement in self.tree.body:
            if isinstance(statement, ast.Assign):
                for target in statement.targets:
                    if isinstance(target, ast.Name):
                        self.assigned_later.setdefault(target.id, statement.lineno)
        for statement in self.tree.body:
            self.statement(statement)
        if not self.errors and not any(rule in self.program.rules for rule in ENTRY_RULES):
            line = len(self.lines) or 1
            self.errors.append(
                FormulaError(line, 1, "the formula needs an entry_long or entry_short rule")
            )
        return self.program

    def statement(self, statement: ast.stmt) -> None:
        if not isinstance(statement, ast.Assign):
            if isinstance(statement, ast.Expr):
                self.error(statement, "each line must be an assignment: name = expression")
                self.expression(statement.value)  # report what is wrong inside it, too
            else:
                word = _STATEMENT_WORDS.get(type(statement), "such statements")
                self.error(statement, f"{word} are not allowed; each line is 'name = expression'")
            return
        if len(statement.targets) != 1 or not isinstance(statement.targets[0], ast.Name):
            self.error(statement, "assign to one name at a time: name = expression")
            return
        target = statement.targets[0]
        name = target.id
        if not self.assignable(target):
            self.expression(statement.value)
            return
        literal = _literal(statement.value)
        if literal is not None and name not in RULES:
            self.parameter(target, statement.value, literal)
            return
        value = self.expression(statement.value)
        if value is None:
            # Known but broken: later lines using it report nothing more about it.
            self.defined_on[name] = statement.lineno
            self.broken.add(name)
            return
        self.define(target, value)

    def assignable(self, target: ast.Name) -> bool:
        name = target.id
        if name in INPUTS:
            self.error(target, f"'{name}' is a candle input and cannot be assigned")
        elif name in FUNCTIONS:
            self.error(target, f"'{name}' is a function name and cannot be assigned")
        elif name in self.defined_on:
            self.error(target, f"'{name}' is already defined on line {self.defined_on[name]}")
        else:
            return True
        return False

    def parameter(self, target: ast.Name, value: ast.expr, literal: float | int) -> None:
        number = self.number_value(value, literal)
        if number is None:
            self.defined_on[target.id] = target.lineno
            self.broken.add(target.id)
            return
        self.program.parameters[target.id] = literal
        self.defined_on[target.id] = target.lineno
        self.kinds[target.id] = ("number", True)

    def define(self, target: ast.Name, value: Node) -> None:
        name = target.id
        if name in SIGNAL_RULES and value.kind != "bool":
            self.error(target, f"{name} must be a condition (true/false), not a number")
        elif name in LEVEL_RULES and value.kind != "number":
            self.error(target, f"{name} must be a number, not a condition")
        self.program.definitions.append(Definition(name, value))
        (self.program.rules if name in RULES else self.program.series).append(name)
        self.defined_on[name] = target.lineno
        self.kinds[name] = (value.kind, value.constant)

    # -- expressions

    def expression(self, node: ast.expr) -> Node | None:
        if isinstance(node, ast.Name):
            return self._Name(node)
        if isinstance(node, ast.UnaryOp):
            return self._UnaryOp(node)
        if isinstance(node, ast.BinOp):
            return self._BinOp(node)
        if isinstance(node, ast.Compare):
            return self._Compare(node)
        if isinstance(node, ast.BoolOp):
            return self._BoolOp(node)
        if isinstance(node, ast.Call):
            return self._Call(node)
        if isinstance(node, ast.Constant):
            return self.constant(node)
        message = _NOT_ALLOWED.get(type(node), "this is not allowed in a formula")
        self.error(node, f"'{self.quote(node)}' — {message}")
        return None

    def constant(self, node: ast.Constant) -> Node | None:
        value = node.value
        if isinstance(value, bool) or value is None:
            self.error(node, f"'{value}' is not allowed; write a comparison for a condition")
            return None
        if isinstance(value, int | float):
            number = self.number_value(node, value)
            if number is None:
                return None
            return Number(*self.at(node), "number", True, number)
        if isinstance(value, str | bytes):
            self.error(node, "text strings are not allowed")
        else:
            self.error(node, f"'{self.quote(node)}' is not allowed in a formula")
        return None

    def number_value(self, node: ast.AST, value: float | int) -> float | None:
        try:
            number = float(value)
        except OverflowError:
            number = float("inf")
        if not abs(number) <= MAX_LITERAL:
            self.error(node, f"this number is too large (at most {MAX_LITERAL:g})")
            return None
        return number

    def _Name(self, node: ast.Name) -> Node | None:
        name = node.id
        where = self.at(node)
        if name in INPUTS:
            return Input(*where, "number", False, name)
        if name in self.program.parameters:
            return Parameter(*where, "number", True, name)
        if name in self.kinds:
            kind, constant = self.kinds[name]
            return Reference(*where, kind, constant, name)
        if name in self.broken:
            return None
        if name in FUNCTIONS:
            self.error(node, f"'{name}' is a function: call it, e.g. {name}({_example(name)})")
        elif name in self.assigned_later:
            self.error(node, f"{name} is used before it is defined")
        else:
            known = [*INPUTS, *self.kinds, *self.program.parameters]
            self.error(node, f"unknown name '{name}'{_did_you_mean(name, known)}")
        return None

    def _UnaryOp(self, node: ast.UnaryOp) -> Node | None:
        operand = self.expression(node.operand)
        if operand is None:
            return None
        where = self.at(node)
        if isinstance(node.op, ast.Not):
            if operand.kind != "bool":
                self.error(node, "'not' needs a condition (true/false), not a number")
                return None
            return Not(*where, "bool", operand.constant, operand)
        if isinstance(node.op, ast.Invert):
            self.error(node, "'~' is not allowed; use 'not'")
            return None
        if operand.kind != "number":
            self.error(node, "a sign (+ or -) needs a number, not a condition")
            return None
        if isinstance(node.op, ast.UAdd):
            return operand
        return Negate(*where, "number", operand.constant, operand)

    def _BinOp(self, node: ast.BinOp) -> Node | None:
        symbol = _ARITHMETIC.get(type(node.op))
        if symbol is None:
            self.error(node, _OPERATOR_HINTS.get(type(node.op), "this operator is not allowed"))
            self.expression(node.left)
            self.expression(node.right)
            return None
        left = self.expression(node.left)
        right = self.expression(node.right)
        if left is None or right is None:
            return None
        if left.kind != "number" or right.kind != "number":
            self.error(node, f"'{symbol}' needs numbers on both sides, not conditions")
            return None
        if symbol == "**" and right.constant:
            rule = Constant("exponent", -MAX_EXPONENT, MAX_EXPONENT, whole=False)
            self.program.checks.append(ConstantCheck(right, rule, "the exponent"))
        constant = left.constant and right.constant
        return Arithmetic(*self.at(node), "number", constant, symbol, left, right)

    def _Compare(self, node: ast.Compare) -> Node | None:
        operands = [self.expression(node.left)]
        operands += [self.expression(comparator) for comparator in node.comparators]
        symbols = [_COMPARISONS.get(type(op)) for op in node.ops]
        if None in symbols:
            self.error(node, "only < <= > >= == != comparisons are allowed")
            return None
        checked = [operand for operand in operands if operand is not None]
        if len(checked) != len(operands):
            return None
        if any(operand.kind != "number" for operand in checked):
            self.error(node, "comparisons need numbers on both sides, not conditions")
            return None
        where = self.at(node)
        # `a < b < c` means `a < b and b < c`, as in mathematics.
        parts: list[Node] = [
            Comparison(*where, "bool", left.constant and right.constant, str(symbol), left, right)
            for symbol, left, right in zip(symbols, checked, checked[1:], strict=False)
        ]
        if len(parts) == 1:
            return parts[0]
        return Logic(*where, "bool", all(p.constant for p in parts), "and", tuple(parts))

    def _BoolOp(self, node: ast.BoolOp) -> Node | None:
        word = "and" if isinstance(node.op, ast.And) else "or"
        operands = [self.expression(value) for value in node.values]
        checked = [operand for operand in operands if operand is not None]
        if len(checked) != len(operands):
            return None
        if any(operand.kind != "bool" for operand in checked):
            self.error(node, f"'{word}' needs conditions (true/false) on both sides, not numbers")
            return None
        constant = all(operand.constant for operand in checked)
        return Logic(*self.at(node), "bool", constant, word, tuple(checked))

    def _Call(self, node: ast.Call) -> Node | None:
        if not isinstance(node.func, ast.Name):
            self.error(node, f"'{self.quote(node.func)}' cannot be called; only functions can")
            return None
        name = node.func.id
        function = FUNCTIONS.get(name)
        if function is None:
            if name in INPUTS or name in self.kinds or name in self.program.parameters:
                self.error(node, f"'{name}' is not a function")
            else:
                suggestion = _did_you_mean(name, list(FUNCTIONS))
                self.error(node, f"unknown function '{name}'{suggestion}")
            return None
        if node.keywords:
            self.error(
                node.keywords[0].value,
                f"keyword arguments are not allowed: write {name}({_example(name)})",
            )
            return None
        arguments = [self.expression(argument) for argument in node.args]
        checked = [argument for argument in arguments if argument is not None]
        if len(checked) != len(arguments):
            return None
        if len(checked) not in function.arities():
            self.error(node, _arity_message(function, len(checked)))
            return None
        return self.call(node, function, checked)

    def call(self, node: ast.Call, function: Function, arguments: list[Node]) -> Node | None:
        where = self.at(node)
        given_series = len(arguments) - len(function.constants)
        if given_series == 0 and function.series:
            series: list[Node] = [Input(*where, "number", False, name) for name in function.series]
        else:
            series = arguments[:given_series]
        constants = arguments[given_series:]
        kinds = {argument.kind for argument in series}
        if function.takes == "number" and kinds - {"number"}:
            self.error(node, f"{function.name}() needs numbers, not conditions (true/false)")
            return None
        for index, (argument, rule) in enumerate(zip(constants, function.constants, strict=True)):
            if not argument.constant or argument.kind != "number":
                self.error(
                    node.args[given_series + index],
                    f"{function.name}() {rule.name} must be a fixed number or parameter, "
                    "not a series",
                )
                return None
            self.program.checks.append(
                ConstantCheck(argument, rule, f"{function.name}() {rule.name}")
            )
        kind: Kind = function.result or (series[0].kind if series else "number")
        return Call(*where, kind, False, function, tuple(series), tuple(constants))


def _literal(value: ast.expr) -> float | int | None:
    """The number of `10`, `0.5` or `-0.5`: such assignments are parameters."""
    sign = 1
    if isinstance(value, ast.UnaryOp) and isinstance(value.op, ast.USub | ast.UAdd):
        sign = -1 if isinstance(value.op, ast.USub) else 1
        value = value.operand
    number = value.value if isinstance(value, ast.Constant) else None
    if isinstance(number, int | float) and not isinstance(number, bool):
        return -number if sign < 0 else number
    return None


def _did_you_mean(name: str, known: list[str]) -> str:
    matches = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
    return f" — did you mean '{matches[0]}'?" if matches else ""


def _example(name: str) -> str:
    function = FUNCTIONS[name]
    examples = {"period": "14", "fast": "12", "slow": "26", "signal": "9", "deviations": "2"}
    examples |= {"k_period": "14", "k_smoothing": "3", "d_period": "3", "bars": "1"}
    series = [] if function.candle_defaults else ["close"] * len(function.series)
    return ", ".join(series + [examples.get(c.name, "1") for c in function.constants])


def _arity_message(function: Function, given: int) -> str:
    full = len(function.series) + len(function.constants)
    noun = "argument" if full == 1 else "arguments"
    message = f"{function.name}() takes {full} {noun} ({function.signature()})"
    if function.candle_defaults:
        short = ", ".join(c.name for c in function.constants)
        message += f" or {len(function.constants)} ({short}) to use the candles' own prices"
    return f"{message}, got {given}"
