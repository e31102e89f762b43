"""Requests and responses of the strategy endpoints."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PlainValidator,
    StringConstraints,
    WithJsonSchema,
    field_validator,
)

from tradeos.core.fields import NoNul, PlainDecimal, text
from tradeos.strategies.formula.limits import MAX_LITERAL, MAX_STATEMENTS
from tradeos.strategies.models import (
    DESCRIPTION_MAX_LENGTH,
    MAX_TAGS,
    NAME_MAX_LENGTH,
    TAG_MAX_LENGTH,
    StrategyCategory,
)

PARAMETER_NAME_MAX_LENGTH = 100


def _number(value: object) -> int | float:
    # JSON numbers only: not true/false, not "5"; a whole number stays one.
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError("must be a number")
    if not abs(value) <= MAX_LITERAL:  # also NaN
        raise ValueError(f"must be a finite number from {-MAX_LITERAL:g} to {MAX_LITERAL:g}")
    return value


# A parameter value, as the formula accepts one.
ParameterValue = Annotated[
    int | float,
    PlainValidator(_number),
    WithJsonSchema({"type": "number", "minimum": -MAX_LITERAL, "maximum": MAX_LITERAL}),
]
ParameterName = Annotated[
    str, StringConstraints(min_length=1, max_length=PARAMETER_NAME_MAX_LENGTH)
]
ParameterValues = Annotated[
    dict[ParameterName, ParameterValue],
    Field(
        max_length=MAX_STATEMENTS,
        description="Parameter name → number; only names the formula declares as parameters.",
    ),
]

Name = Annotated[str, text(NAME_MAX_LENGTH), NoNul]
Description = Annotated[str, StringConstraints(max_length=DESCRIPTION_MAX_LENGTH), NoNul]
Formula = Annotated[str, StringConstraints(min_length=1), NoNul]


def _tag(value: str) -> str:
    # Lower-casing may lengthen a few characters (İ), so the length is checked afterwards too.
    tag = value.strip().lower()
    if not 1 <= len(tag) <= TAG_MAX_LENGTH:
        raise ValueError(f"a tag is 1 to {TAG_MAX_LENGTH} characters")
    return tag


Tag = Annotated[str, text(TAG_MAX_LENGTH), NoNul, AfterValidator(_tag)]
Tags = Annotated[
    list[Tag],
    Field(
        max_length=MAX_TAGS,
        description=f"At most {MAX_TAGS}; stored lower-cased, without duplicates, sorted.",
    ),
]


def _unique_tags(tags: list[str]) -> list[str]:
    return sorted(set(tags))


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


# -- validation ------------------------------------------------------------------------------


class FormulaCheck(_Request):
    formula: Annotated[str, NoNul] = Field(description="The formula text to check.")
    params: ParameterValues | None = Field(
        default=None, description="Parameter overrides to check with the formula."
    )


class FormulaErrorOut(BaseModel):
    line: int = Field(description="1-based line of the problem.")
    column: int = Field(description="1-based column of the problem.")
    message: str


class ParameterErrorOut(BaseModel):
    parameter: str
    message: str


class FormulaCheckOut(BaseModel):
    valid: bool = Field(description="No errors in the formula nor in the parameter overrides.")
    parameters: dict[str, int | float] = Field(
        description="The declared parameters, with the valid overrides applied."
    )
    rules: list[str]
    series: list[str]
    errors: list[FormulaErrorOut]
    param_errors: list[ParameterErrorOut] = Field(
        description="Overrides naming no parameter of the formula (checked only when the "
        "formula itself has no errors)."
    )


# -- strategies ------------------------------------------------------------------------------


class StrategyIn(_Request):
    """A whole strategy (POST, PUT): fields left out take their defaults."""

    name: Name
    description: Description = ""
    formula: Formula
    default_params: ParameterValues = Field(default_factory=dict)
    category: StrategyCategory = StrategyCategory.OTHER
    tags: Tags = Field(default_factory=list)
    is_public: bool = Field(
        default=False,
        description="Listed for every user; needs a plan with strategy publishing.",
    )

    _tags = field_validator("tags")(_unique_tags)


class StrategyPatch(_Request):
    """Only the fields sent change; none of them may be null."""

    name: Name = None  # type: ignore[assignment]
    description: Description = None  # type: ignore[assignment]
    formula: Formula = None  # type: ignore[assignment]
    default_params: ParameterValues = None  # type: ignore[assignment]
    category: StrategyCategory = None  # type: ignore[assignment]
    tags: Tags = None  # type: ignore[assignment]
    is_public: bool = None  # type: ignore[assignment]

    _tags = field_validator("tags")(_unique_tags)


class StrategyOut(BaseModel):
    id: int
    owner_id: int
    name: str
    description: str
    formula: str
    parameters: dict[str, int | float] = Field(
        description="The formula's declared parameters with the saved default_params applied."
    )
    default_params: dict[str, int | float] = Field(description="The saved overrides.")
    rules: list[str]
    category: StrategyCategory
    tags: list[str]
    is_public: bool
    rating_average: float | None = Field(description="Average review rating; null until rated.")
    rating_count: int
    subscriber_count: int
    performance: PlainDecimal | None = Field(
        description='Total return of the latest stored backtest as a fraction ("0.12" is '
        "+12 %); null until one is stored."
    )
    created_at: datetime
    updated_at: datetime
