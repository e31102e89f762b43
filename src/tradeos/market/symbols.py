"""Instrument symbols: one canonical spelling, many accepted (pure: no I/O).

Canonical symbols are upper case, base and quote joined by a dash (`BTC-USD`, `EUR-USD`), or
a bare ticker for equities and indices (`AAPL`, `SPY`). Lookups also accept `BTCUSD`,
`BTC/USD`, `btc_usd` and `btc-usd`.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from typing import Final

_SEPARATORS: Final = re.compile(r"[/_:\s]+")
_SHAPE: Final = re.compile(r"^[A-Z0-9][A-Z0-9.]{0,19}(-[A-Z0-9][A-Z0-9.]{0,19})?$")


def normalize(text: str) -> str:
    """`text` in canonical spelling as far as it can be told without knowing the instruments:
    upper case, separators as one dash. ValueError when it cannot be a symbol."""
    cleaned = _SEPARATORS.sub("-", text.strip()).upper().strip("-")
    if not _SHAPE.match(cleaned):
        raise ValueError(f"{text[:40]!r} is not an instrument symbol (e.g. BTC-USD, AAPL)")
    return cleaned


def resolve(text: str, known: Collection[str]) -> str | None:
    """The known canonical symbol `text` names, or None. `BTCUSD` finds `BTC-USD` by trying
    each split point."""
    try:
        symbol = normalize(text)
    except ValueError:
        return None
    if symbol in known:
        return symbol
    if "-" not in symbol:
        for split in range(1, len(symbol)):
            candidate = f"{symbol[:split]}-{symbol[split:]}"
            if candidate in known:
                return candidate
    return None
