"""Field types that every domain needs: text and moments in time in requests, exact decimals
in responses.

    name: Annotated[str, text(100)]    # 1..100 characters after trimming, not blank, no NUL
    since: Moment | None = None        # an ISO 8601 date-time with a zone, kept in UTC
    price: PlainDecimal                # sent as "0.00000001", never "1E-8"

They refuse, with a 422 naming the field, what would otherwise fail later as a 500: a NUL
character (PostgreSQL text cannot hold one), a number where a date-time belongs (Pydantic would
read it as seconds since 1970), or a moment that has no UTC equivalent (year 9999 at -01:00).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BeforeValidator,
    Field,
    GetCoreSchemaHandler,
    GetJsonSchemaHandler,
    PlainSerializer,
    StringConstraints,
)
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import core_schema

# Not blank. Python's strip() also removes the separators U+001C..U+001F and U+0085 (next
# line), which a JSON Schema (ECMAScript) `\s` does not count as space, hence the explicit
# ones; the pattern also reaches the OpenAPI document, so clients (and the contract tests) know
# a lone space is refused.
NOT_BLANK = r"[^\s\x1c-\x1f\x85]"
_ISO_DATE_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}")


def no_nul(value: str) -> str:
    if "\x00" in value:
        raise ValueError("must not contain the NUL character")
    return value


class _NoNul:
    """Refuses a NUL character, and says so in the JSON Schema (`not: {pattern: "\\u0000"}`)."""

    def __get_pydantic_core_schema__(
        self, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        return core_schema.no_info_after_validator_function(no_nul, handler(source))

    def __get_pydantic_json_schema__(
        self, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        json_schema = handler(schema)
        json_schema["not"] = {"pattern": "\u0000"}
        return json_schema


NoNul = _NoNul()


def text(max_length: int, *, min_length: int = 1) -> StringConstraints:
    """Trimmed text of `min_length`..`max_length` characters that is not blank. Use with NoNul:
    `Annotated[str, text(100), NoNul]` (or the `Text` alias of the common case)."""
    return StringConstraints(
        strip_whitespace=True, min_length=min_length, max_length=max_length, pattern=NOT_BLANK
    )


def _iso_only(value: object) -> object:
    if isinstance(value, str) and not _ISO_DATE_TIME.match(value):
        raise ValueError(
            "must be an ISO 8601 date-time with a time zone, e.g. 2026-01-31T09:30:00Z"
        )
    if isinstance(value, int | float):
        raise ValueError("must be an ISO 8601 date-time with a time zone, not a number")
    return value


def _in_utc(value: datetime) -> datetime:
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise ValueError("is outside the range of dates TradeOS can store") from None


Moment = Annotated[
    AwareDatetime,
    BeforeValidator(_iso_only),
    AfterValidator(_in_utc),
    Field(json_schema_extra={"format": "date-time"}),
]


def decimal_text(value: Decimal) -> str:
    """A decimal as the API writes it: a string in plain notation. `str()` alone would write
    `1E-8` for a satoshi and `1E+2` for a normalized hundred, which many clients misread."""
    text = str(value)
    return text if "E" not in text else format(value, "f")


# An exact decimal in a response: money, prices, quantities, percentages.
PlainDecimal = Annotated[Decimal, PlainSerializer(decimal_text, return_type=str, when_used="json")]
