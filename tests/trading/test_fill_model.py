"""The fill model shared by paper trading (Decimal) and backtests (float64, compiled by numba)."""

from __future__ import annotations

import math
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import numba
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tradeos.trading.fill_model import (
    BUY,
    EXIT_NONE,
    EXIT_STOP_LOSS,
    EXIT_TAKE_PROFIT,
    SELL,
    FillModel,
    IntrabarRule,
    exit_price_in_bar,
    fill_fee,
    slipped_price,
)

# Compiled exactly as the backtest engine compiles them.
_slipped_price_jit: Any = numba.njit(cache=True)(slipped_price)
_fill_fee_jit: Any = numba.njit(cache=True)(fill_fee)
_exit_price_in_bar_jit: Any = numba.njit(cache=True)(exit_price_in_bar)

D = Decimal
NAN = math.nan
WORST = IntrabarRule.WORST.code
BEST = IntrabarRule.BEST.code
NEAREST = IntrabarRule.NEAREST_TO_OPEN.code


def test_slippage_always_costs_the_trader() -> None:
    assert slipped_price(D("100"), BUY, D("5")) == D("100.05")
    assert slipped_price(D("100"), SELL, D("5")) == D("99.95")
    assert slipped_price(D("100"), BUY, D("0")) == D("100")
    assert _slipped_price_jit(100.0, BUY, 5.0) == pytest.approx(100.05, rel=1e-15)
    assert _slipped_price_jit(100.0, SELL, 5.0) == pytest.approx(99.95, rel=1e-15)


def test_the_fee_is_a_rate_plus_a_fixed_fee_never_below_the_minimum() -> None:
    assert fill_fee(D("1000"), D("0.001"), D("0.5"), D("0")) == D("1.5")
    assert fill_fee(D("-1000"), D("0.001"), D("0"), D("0")) == D("1")  # a sell's notional
    assert fill_fee(D("100"), D("0.001"), D("0"), D("2")) == D("2")
    assert _fill_fee_jit(1000.0, 0.001, 0.5, 0.0) == pytest.approx(1.5)
    assert _fill_fee_jit(100.0, 0.001, 0.0, 2.0) == 2.0


prices = st.decimals(min_value="0.01", max_value="100000", places=2)
bps = st.decimals(min_value="0", max_value="500", places=1)
rates = st.decimals(min_value="0", max_value="0.01", places=5)


@settings(max_examples=300, deadline=None)
@given(price=prices, side=st.sampled_from([BUY, SELL]), slippage=bps)
def test_decimal_and_compiled_float_slippage_agree(
    price: Decimal, side: int, slippage: Decimal
) -> None:
    exact = slipped_price(price, side, slippage)
    assert isinstance(exact, Decimal)
    assert _slipped_price_jit(float(price), side, float(slippage)) == pytest.approx(
        float(exact), rel=1e-12
    )


@settings(max_examples=300, deadline=None)
@given(notional=prices, rate=rates, fixed=prices, minimum=prices)
def test_decimal_and_compiled_float_fees_agree(
    notional: Decimal, rate: Decimal, fixed: Decimal, minimum: Decimal
) -> None:
    exact = fill_fee(notional, rate, fixed, minimum)
    fast = _fill_fee_jit(float(notional), float(rate), float(fixed), float(minimum))
    assert fast == pytest.approx(float(exact), rel=1e-12)


@st.composite
def bars_and_levels(draw: st.DrawFn) -> tuple[int, list[Decimal], Decimal, Decimal, int]:
    low = draw(st.decimals(min_value="50", max_value="150", places=2))
    high = low + draw(st.decimals(min_value="0", max_value="20", places=2))
    open_ = draw(st.decimals(min_value=low, max_value=high, places=2))
    side = draw(st.sampled_from([BUY, SELL]))
    stop = draw(
        st.one_of(st.just(D("NaN")), st.decimals(min_value="40", max_value="170", places=2))
    )
    target = draw(
        st.one_of(st.just(D("NaN")), st.decimals(min_value="40", max_value="170", places=2))
    )
    rule = draw(st.sampled_from([WORST, BEST, NEAREST]))
    return side, [open_, high, low], stop, target, rule


@settings(max_examples=500, deadline=None)
@given(case=bars_and_levels())
def test_decimal_and_compiled_float_exits_agree(
    case: tuple[int, list[Decimal], Decimal, Decimal, int],
) -> None:
    side, (open_, high, low), stop, target, rule = case
    exact_price, exact_reason = exit_price_in_bar(side, open_, high, low, stop, target, rule)
    price, reason = _exit_price_in_bar_jit(
        side, float(open_), float(high), float(low), float(stop), float(target), rule
    )
    assert reason == exact_reason
    if reason == EXIT_NONE:
        assert math.isnan(price)
    else:
        assert isinstance(exact_price, Decimal)
        assert price == float(exact_price)


ExitInBar = Callable[..., tuple[float, int]]

# Hand-made bars: open 100, high 110, low 90.
BAR = (100.0, 110.0, 90.0)


@pytest.mark.parametrize("exit_in_bar", [exit_price_in_bar, _exit_price_in_bar_jit])
def test_one_level_inside_the_bar_fills_at_the_level(exit_in_bar: ExitInBar) -> None:
    run = exit_in_bar
    assert run(BUY, *BAR, 95.0, NAN, WORST) == (95.0, EXIT_STOP_LOSS)
    assert run(BUY, *BAR, NAN, 105.0, WORST) == (105.0, EXIT_TAKE_PROFIT)
    assert run(SELL, *BAR, 105.0, NAN, WORST) == (105.0, EXIT_STOP_LOSS)
    assert run(SELL, *BAR, NAN, 95.0, WORST) == (95.0, EXIT_TAKE_PROFIT)
    price, reason = run(BUY, *BAR, 80.0, 120.0, WORST)
    assert reason == EXIT_NONE
    assert math.isnan(price)
    assert run(BUY, *BAR, NAN, NAN, WORST)[1] == EXIT_NONE


@pytest.mark.parametrize("exit_in_bar", [exit_price_in_bar, _exit_price_in_bar_jit])
def test_both_levels_in_one_bar_follow_the_intrabar_rule(exit_in_bar: ExitInBar) -> None:
    run = exit_in_bar
    # Long: stop 2 below the open, target 8 above.
    assert run(BUY, *BAR, 98.0, 108.0, WORST) == (98.0, EXIT_STOP_LOSS)
    assert run(BUY, *BAR, 98.0, 108.0, BEST) == (108.0, EXIT_TAKE_PROFIT)
    assert run(BUY, *BAR, 98.0, 108.0, NEAREST) == (98.0, EXIT_STOP_LOSS)
    # The target nearer the open: hit first.
    assert run(BUY, *BAR, 92.0, 103.0, NEAREST) == (103.0, EXIT_TAKE_PROFIT)
    assert run(BUY, *BAR, 92.0, 103.0, WORST) == (92.0, EXIT_STOP_LOSS)
    # Equally far: the stop (the cautious choice).
    assert run(BUY, *BAR, 95.0, 105.0, NEAREST) == (95.0, EXIT_STOP_LOSS)
    # Short: stop above, target below.
    assert run(SELL, *BAR, 102.0, 91.0, WORST) == (102.0, EXIT_STOP_LOSS)
    assert run(SELL, *BAR, 102.0, 91.0, BEST) == (91.0, EXIT_TAKE_PROFIT)
    assert run(SELL, *BAR, 109.0, 97.0, NEAREST) == (97.0, EXIT_TAKE_PROFIT)


@pytest.mark.parametrize("exit_in_bar", [exit_price_in_bar, _exit_price_in_bar_jit])
@pytest.mark.parametrize("rule", [WORST, BEST, NEAREST])
def test_a_gap_beyond_a_level_fills_at_the_open(exit_in_bar: ExitInBar, rule: int) -> None:
    run = exit_in_bar
    # A long whose stop (102) is above the open: worse than the stop, whatever the rule.
    assert run(BUY, *BAR, 102.0, 130.0, rule) == (100.0, EXIT_STOP_LOSS)
    # A long whose target (97) is below the open: better than the target.
    assert run(BUY, *BAR, NAN, 97.0, rule) == (100.0, EXIT_TAKE_PROFIT)
    # A short whose stop (99) is below the open, and one whose target (101) is above it.
    assert run(SELL, *BAR, 99.0, 80.0, rule) == (100.0, EXIT_STOP_LOSS)
    assert run(SELL, *BAR, NAN, 101.0, rule) == (100.0, EXIT_TAKE_PROFIT)


def test_the_fill_model_applies_its_rates_and_rule_on_decimals() -> None:
    model = FillModel(
        taker_fee_rate=D("0.001"),
        maker_fee_rate=D("0.0002"),
        fixed_fee=D("0.10"),
        min_fee=D("0.50"),
        slippage_bps=D("10"),
        intrabar_rule=IntrabarRule.BEST,
    )
    assert model.fill_price(D("200"), BUY) == D("200.2")
    assert model.fill_price(D("200"), SELL) == D("199.8")
    assert model.fee(D("1000")) == D("1.10")
    assert model.fee(D("1000"), maker=True) == D("0.50")  # 0.30 lifted to the minimum
    assert model.exit_in_bar(BUY, D(100), D(110), D(90), D(98), D(108)) == (
        D(108),
        EXIT_TAKE_PROFIT,
    )
    assert FillModel().intrabar_rule is IntrabarRule.WORST
    rule = "nearest_to_open"
    assert FillModel(intrabar_rule=rule).intrabar_rule is IntrabarRule.NEAREST_TO_OPEN  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "field", ["taker_fee_rate", "maker_fee_rate", "fixed_fee", "min_fee", "slippage_bps"]
)
def test_the_fill_model_refuses_negative_values(field: str) -> None:
    with pytest.raises(ValueError, match=field):
        FillModel(**{field: D("-0.01")})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=field):
        FillModel(**{field: D("NaN")})  # type: ignore[arg-type]
