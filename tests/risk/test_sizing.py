"""Position sizing and portfolio risk (pure): sizes rounded down to the step, exposures,
concentration, leverage, historical VaR and drawdowns."""

from __future__ import annotations

from decimal import Decimal as D

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tradeos.market.providers.base import AssetClass
from tradeos.risk.sizing import (
    Drawdown,
    Exposure,
    Holding,
    SizeResult,
    SizingError,
    concentration,
    drawdown,
    exposure_by_asset_class,
    exposure_by_symbol,
    gross_leverage,
    historical_var,
    net_leverage,
    position_size,
)

CRYPTO, EQUITY = AssetClass.CRYPTO, AssetClass.EQUITY


def test_the_size_risks_the_budget_to_the_stop() -> None:
    # 1 % of 10 000 = 100 to lose; 5 per unit from 100 to 95: 20 units.
    assert position_size(D(10_000), D(1), D(100), D(95), D("0.001")) == SizeResult(
        D(20), D(100), D(5)
    )
    # A short: the stop is above the entry.
    assert position_size(D(10_000), D(1), D(100), D(104), D(1)) == SizeResult(D(25), D(100), D(4))


def test_the_size_rounds_down_to_the_step() -> None:
    # 100 / 3 = 33.33…: 33.3 with a step of 0.1, never more than the budget.
    result = position_size(D(10_000), D(1), D(100), D(97), D("0.1"))
    assert result == SizeResult(D("33.3"), D("99.9"), D(3))
    assert position_size(D(10_000), D(1), D(100), D(97), D(7)).quantity == D(28)
    # A budget smaller than one step buys nothing.
    assert position_size(D(100), D(1), D(100), D(90), D(1)) == SizeResult(D(0), D(0), D(10))


def test_a_tick_size_widens_the_risk_to_real_prices() -> None:
    # A long's entry rounds up and its stop down: 100.01 − 95.00.
    result = position_size(D(10_000), D(1), D("100.004"), D("95.006"), D("0.01"), D("0.01"))
    assert result.risk_per_unit == D("5.01")
    assert result.quantity == D("19.96")  # 100 / 5.01 = 19.96…
    assert result.money_at_risk <= 100
    short = position_size(D(10_000), D(1), D("100.004"), D("104.996"), D("0.01"), D("0.01"))
    assert short.risk_per_unit == D("5.00")  # entry 100.00 down, stop 105.00 up


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((D(10_000), D(1), D(100), D(100), D(1)), "differ"),
        ((D(0), D(1), D(100), D(95), D(1)), "equity"),
        ((D(-5), D(1), D(100), D(95), D(1)), "equity"),
        ((D(10_000), D(0), D(100), D(95), D(1)), "risk_percent"),
        ((D(10_000), D(101), D(100), D(95), D(1)), "at most 100"),
        ((D(10_000), D(1), D(0), D(95), D(1)), "entry"),
        ((D(10_000), D(1), D(100), D(-1), D(1)), "stop"),
        ((D(10_000), D(1), D(100), D(95), D(0)), "quantity_step"),
        ((D(10_000), D(1), D(100), D(95), D(1), D(0)), "tick_size"),
    ],
)
def test_sizing_refuses_what_it_cannot_size(args: tuple[D, ...], message: str) -> None:
    with pytest.raises(SizingError, match=message):
        position_size(*args)


@settings(max_examples=200, deadline=None)
@given(
    equity=st.integers(min_value=1, max_value=10**9).map(D),
    risk_bp=st.integers(min_value=1, max_value=10_000),
    entry=st.integers(min_value=1, max_value=10**7).map(lambda c: D(c) / 100),
    stop=st.integers(min_value=1, max_value=10**7).map(lambda c: D(c) / 100),
    step_exponent=st.integers(min_value=-8, max_value=2),
)
def test_the_size_never_risks_more_than_the_budget_nor_a_step_less(
    equity: D, risk_bp: int, entry: D, stop: D, step_exponent: int
) -> None:
    if entry == stop:
        return
    step = D(1).scaleb(step_exponent)
    risk = D(risk_bp) / 100
    result = position_size(equity, risk, entry, stop, step)
    budget = equity * risk / 100
    assert result.quantity % step == 0 and result.quantity >= 0
    assert result.money_at_risk <= budget
    assert (result.quantity + step) * result.risk_per_unit > budget


# --------------------------------------------------------------------------- portfolio

HOLDINGS = [
    Holding("BTC-USD", CRYPTO, D(2), D(30_000)),  # 60 000 long
    Holding("ETH-USD", CRYPTO, D(-10), D(2_000)),  # 20 000 short
    Holding("AAPL", EQUITY, D(100), D(200)),  # 20 000 long
]


def test_exposure_per_symbol_and_asset_class() -> None:
    per_symbol = exposure_by_symbol([*HOLDINGS, Holding("BTC-USD", CRYPTO, D(-1), D(30_000))])
    assert per_symbol["BTC-USD"] == Exposure(D(60_000), D(30_000))
    assert per_symbol["ETH-USD"] == Exposure(D(0), D(20_000))
    assert (per_symbol["ETH-USD"].gross, per_symbol["ETH-USD"].net) == (D(20_000), D(-20_000))
    per_class = exposure_by_asset_class(HOLDINGS)
    assert per_class == {
        CRYPTO: Exposure(D(60_000), D(20_000)),
        EQUITY: Exposure(D(20_000), D(0)),
    }
    assert (per_class[CRYPTO].gross, per_class[CRYPTO].net) == (D(80_000), D(40_000))


def test_concentration_is_the_largest_share_of_gross_exposure() -> None:
    assert concentration(HOLDINGS) == D("0.6")  # 60 000 of 100 000
    assert concentration([]) == 0
    assert concentration(HOLDINGS[:1]) == 1
    three = [Holding(s, CRYPTO, D(1), D(1)) for s in ("A", "B", "C")]
    assert concentration(three) == D("0.33333333")


def test_gross_and_net_leverage() -> None:
    assert gross_leverage(HOLDINGS, D(50_000)) == D(2)
    assert net_leverage(HOLDINGS, D(50_000)) == D("1.2")  # (60 − 20 + 20) / 50
    with pytest.raises(SizingError, match="equity"):
        gross_leverage(HOLDINGS, D(0))
    with pytest.raises(SizingError, match="equity"):
        net_leverage(HOLDINGS, D(-1))


def closes_from(returns: list[float], start: float = 100.0) -> list[D]:
    """A close series with exactly these daily returns (as exact as floats allow)."""
    closes = [D(str(start))]
    for r in returns:
        closes.append(closes[-1] * (1 + D(str(r))))
    return closes


def test_historical_var_is_the_5th_percentile_loss_linearly_interpolated() -> None:
    # 21 daily returns: the 5th percentile sits at rank (21 − 1) × 0.05 = 1, the second worst.
    returns = [-0.10, -0.04] + [0.01 * i for i in range(19)]
    holding = Holding("X", CRYPTO, D(100), D(100))  # 10 000 long
    assert historical_var([holding], {"X": closes_from(returns)}) == D("400.00")
    # 20 returns: rank 19 × 0.05 = 0.95, between the worst (−10 %) and the next (−4 %).
    returns20 = returns[:-1]
    expected = 10_000 * -(-0.10 + 0.95 * (-0.04 + 0.10))
    assert historical_var([holding], {"X": closes_from(returns20)}) == D("430.00")
    assert expected == pytest.approx(430.0)


def test_historical_var_replays_the_whole_portfolio() -> None:
    # A long and an equal short of the same moves hedge each other completely.
    series = closes_from([-0.05, 0.02, -0.01, 0.03, -0.07])
    hedged = [Holding("A", CRYPTO, D(10), D(50)), Holding("B", CRYPTO, D(-10), D(50))]
    assert historical_var(hedged, {"A": series, "B": series}) == D("0.00")
    # A short loses on the days the price rises: 20 rises of 1 % to 20 % on 1000 short lose
    # 10 to 200; rank 19 × 0.05 = 0.95 lies between the two worst: 200 − 0.95 × 10 = 190.5.
    short = [Holding("A", CRYPTO, D(-10), D(100))]
    rises = closes_from([0.01 * i for i in range(1, 21)])
    assert historical_var(short, {"A": rises}) == D("190.50")
    assert -np.percentile(-1000 * np.arange(1, 21) / 100, 5) == pytest.approx(190.5)
    # All gains: no loss at risk.
    assert historical_var([Holding("A", CRYPTO, D(10), D(100))], {"A": rises}) == D("0.00")


def test_historical_var_refuses_series_it_cannot_use() -> None:
    holding = Holding("A", CRYPTO, D(1), D(100))
    with pytest.raises(SizingError, match="no close series"):
        historical_var([holding], {})
    with pytest.raises(SizingError, match="two positive closes"):
        historical_var([holding], {"A": [D(100)]})
    with pytest.raises(SizingError, match="same length"):
        historical_var(
            [holding, Holding("B", CRYPTO, D(1), D(1))],
            {"A": [D(1), D(2), D(3)], "B": [D(1), D(2)]},
        )
    with pytest.raises(SizingError, match="confidence"):
        historical_var([holding], {"A": [D(1), D(2)]}, confidence=1.0)
    assert historical_var([], {}) == D("0.00")


def test_drawdowns_in_amount_and_percent() -> None:
    series = [D(x) for x in (100, 120, 90, 130, 104)]
    assert drawdown(series) == Drawdown(
        current=D(26), current_pct=D(20), maximum=D(30), maximum_pct=D(25)
    )
    # The largest amount and the largest percentage can come from different peaks.
    apart = drawdown([D(x) for x in (100, 50, 1000, 900, 1000)])
    assert (apart.maximum, apart.maximum_pct) == (D(100), D(50))
    assert (apart.current, apart.current_pct) == (D(0), D(0))
    rising = drawdown([D(1), D(2), D(3)])
    assert rising == Drawdown(D(0), D(0), D(0), D(0))
    with pytest.raises(SizingError):
        drawdown([])
