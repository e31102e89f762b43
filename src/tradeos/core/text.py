"""Text fields of request models: trimmed, bounded, and never blank.

    name: Annotated[str, text(100)]   # 1..100 characters after trimming, not blank

The pattern puts "not blank" into the OpenAPI document too, so clients (and the contract tests)
know a lone space is refused. Python's strip() also removes the separators U+001C..U+001F,
which regex `\\s` does not count as space, hence the explicit range.
"""

from __future__ import annotations

from pydantic import StringConstraints

NOT_BLANK = r"[^\s\x1c-\x1f]"


def text(max_length: int, *, min_length: int = 1) -> StringConstraints:
    return StringConstraints(
        strip_whitespace=True, min_length=min_length, max_length=max_length, pattern=NOT_BLANK
    )
