"""What goes wrong in a formula, said where it went wrong (1-based line and column)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class FormulaError:
    line: int
    column: int
    message: str

    def __str__(self) -> str:
        return f"line {self.line}, column {self.column}: {self.message}"


class InvalidFormula(ValueError):
    """The formula text cannot be compiled; `errors` says why, each at its place."""

    def __init__(self, errors: list[FormulaError]) -> None:
        self.errors = errors
        super().__init__("; ".join(str(error) for error in errors))


class EvaluationError(ValueError):
    """A compiled formula cannot run on these candles or with these parameter values."""

    def __init__(self, message: str, errors: list[FormulaError] | None = None) -> None:
        self.errors = errors or []
        super().__init__(message)
