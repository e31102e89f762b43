"""The per-process memo of instrument lookups the candles endpoint uses (pure: a fake clock)."""

from __future__ import annotations

from tradeos.market.service import InstrumentRef, InstrumentRefs


def test_entries_expire_are_bounded_and_cleared() -> None:
    now = [0.0]
    refs = InstrumentRefs(ttl=5.0, max_entries=2, clock=lambda: now[0])
    btc, eth, sol = (
        InstrumentRef(1, "BTC-USD"),
        InstrumentRef(2, "ETH-USD"),
        InstrumentRef(3, "SOL-USD"),
    )
    refs.put("BTC-USD", btc)
    refs.put("ETH-USD", eth)
    now[0] = 4.9
    assert refs.get("BTC-USD") == btc  # and BTC is now the most recently used
    refs.put("SOL-USD", sol)  # over the bound: the least recently used goes
    assert (refs.get("ETH-USD"), refs.get("BTC-USD"), refs.get("SOL-USD")) == (None, btc, sol)
    now[0] = 5.0
    assert refs.get("BTC-USD") is None  # put at 0, expired at 5
    assert refs.get("SOL-USD") == sol
    refs.clear()
    assert refs.get("SOL-USD") is None
