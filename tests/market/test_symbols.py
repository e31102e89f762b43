"""Instrument symbols (pure): the accepted spellings and their one canonical form."""

from __future__ import annotations

import pytest

from tradeos.market import symbols

KNOWN = {"BTC-USD", "EUR-USD", "AAPL", "SPY", "BRK.B"}


@pytest.mark.parametrize(
    "text", ["BTCUSD", "BTC/USD", "btc-usd", "btc_usd", " BTC-USD ", "btc:usd"]
)
def test_spellings_of_a_pair_resolve_to_the_canonical_symbol(text: str) -> None:
    assert symbols.resolve(text, KNOWN) == "BTC-USD"


@pytest.mark.parametrize(
    ("text", "canonical"),
    [("eur/usd", "EUR-USD"), ("EURUSD", "EUR-USD"), ("aapl", "AAPL"), ("brk.b", "BRK.B")],
)
def test_forex_pairs_and_equity_tickers(text: str, canonical: str) -> None:
    assert symbols.resolve(text, KNOWN) == canonical


@pytest.mark.parametrize(
    ("text", "normal"),
    [("btc/usd", "BTC-USD"), ("btc_usd", "BTC-USD"), ("aapl", "AAPL"), ("BTCUSD", "BTCUSD")],
)
def test_normalize_without_knowing_the_instruments(text: str, normal: str) -> None:
    # Without the instruments, BTCUSD cannot be split: resolve() does that against them.
    assert symbols.normalize(text) == normal


@pytest.mark.parametrize(
    "text", ["", "   ", "-", "BTC--USD-EUR", "BTC USD!", "ÄPFEL", "A" * 21, "BTC-USD-EUR"]
)
def test_text_that_cannot_be_a_symbol_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="not an instrument symbol"):
        symbols.normalize(text)
    assert symbols.resolve(text, KNOWN) is None


def test_a_well_formed_symbol_that_is_not_known_resolves_to_nothing() -> None:
    assert symbols.resolve("DOGE-USD", KNOWN) is None
    assert symbols.resolve("DOGEUSD", KNOWN) is None
