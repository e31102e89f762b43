"""Pre-trade risk rules (pure): every limit passes at its value and refuses just past it;
reducing orders always pass; the trading state halts on the daily loss and resumes the next day."""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal as D

import pytest

from tradeos.market.providers.base import AssetClass
from tradeos.risk.rules import (
    RULES,
    OrderContext,
    RiskProfile,
    RiskViolation,
    TradingState,
    TradingStateLocked,
    TradingStatus,
    check_allowed_asset_classes,
    check_allowed_symbols,
    check_buying_power,
    check_max_daily_loss,
    check_max_daily_loss_pct,
    check_max_daily_trades,
    check_max_leverage,
    check_max_open_positions,
    check_max_position_pct,
    check_max_position_quantity,
    check_max_risk_per_trade,
    check_order,
    check_stop_loss_required,
    check_trading_state,
    daily_loss_breaches,
    set_state,
    state_after_loss,
    state_at_day_start,
)
from tradeos.trading.orders import OrderSide

BUY, SELL = OrderSide.BUY, OrderSide.SELL
ACTIVE, REDUCING, HALTED = TradingState.ACTIVE, TradingState.REDUCING, TradingState.HALTED
NO_LIMITS = RiskProfile(max_risk_per_trade_pct=None, max_daily_trades=None)
BASE = OrderContext(
    side=BUY,
    quantity=D(10),
    reference_price=D(100),
    symbol="BTC-USD",
    asset_class=AssetClass.CRYPTO,
    equity=D(10_000),
    available_cash=D(10_000),
)


def ctx(**changes: object) -> OrderContext:
    return replace(BASE, **changes)  # type: ignore[arg-type]


def limits(**changes: object) -> RiskProfile:
    return replace(NO_LIMITS, **changes)  # type: ignore[arg-type]


def test_the_defaults_are_2_percent_per_trade_and_50_trades_a_day() -> None:
    profile = RiskProfile()
    assert profile.max_risk_per_trade_pct == D(2)
    assert profile.max_daily_trades == 50
    assert profile.stop_loss_required is False
    assert profile.max_daily_loss is None and profile.allowed_symbols is None


def test_limits_cannot_be_negative() -> None:
    with pytest.raises(ValueError, match="max_leverage"):
        RiskProfile(max_leverage=D(-1))
    with pytest.raises(ValueError, match="max_open_positions"):
        RiskProfile(max_open_positions=-1)
    with pytest.raises(ValueError, match="max_position_pct"):
        RiskProfile(max_position_pct=D("NaN"))


def test_a_profile_without_limits_passes_any_order() -> None:
    assert check_order(NO_LIMITS, ctx(quantity=D(100))) == []


# --------------------------------------------------------------------------- at the limit


def test_buying_power() -> None:
    rule, profile = check_buying_power, NO_LIMITS
    assert rule(profile, ctx(available_cash=D(1000))) is None  # 10 × 100: all of it
    assert rule(profile, ctx(available_cash=D(1000), order_cost=D("999.99"))) is None
    refused = rule(profile, ctx(available_cash=D(1000), order_cost=D("1000.01")))
    assert refused == RiskViolation(
        "buying_power", D(1000), D("1000.01"), "the order needs 1000.01, 1000 is available"
    )
    # Without an order cost, only the opening part of the order costs: 6 of 10 here.
    assert rule(profile, ctx(available_cash=D(600), position_quantity=D(-4))) is None
    over = rule(profile, ctx(available_cash=D("599.99"), position_quantity=D(-4)))
    assert over is not None and over.value == D(600)


def test_max_position_quantity() -> None:
    rule, profile = check_max_position_quantity, limits(max_position_quantity=D(10))
    assert rule(profile, ctx(quantity=D(10))) is None
    assert rule(profile, ctx(quantity=D("9.999"))) is None
    refused = rule(profile, ctx(quantity=D("10.001")))
    assert refused is not None
    assert (refused.rule, refused.limit, refused.value) == (
        "max_position_quantity",
        D(10),
        D("10.001"),
    )
    # The position after the order counts, long or short.
    assert rule(profile, ctx(quantity=D(5), position_quantity=D(5))) is None
    assert rule(profile, ctx(side=SELL, quantity=D("5.001"), position_quantity=D(-5)))


def test_max_position_pct() -> None:
    rule, profile = check_max_position_pct, limits(max_position_pct=D(20))
    # 20 % of 10 000 is 2000: 20 units at 100.
    assert rule(profile, ctx(quantity=D(20))) is None
    assert rule(profile, ctx(quantity=D("19.99"))) is None
    refused = rule(profile, ctx(quantity=D("20.01")))
    assert refused is not None
    assert (refused.rule, refused.limit, refused.value) == ("max_position_pct", D(20), D("20.01"))
    # Just past the limit never reads as the limit: 20.00001 % reports 20.0001.
    barely = rule(profile, ctx(quantity=D("20.00001")))
    assert barely is not None and barely.value == D("20.0001")
    broke = rule(profile, ctx(quantity=D(1), equity=D(0)))
    assert broke is not None and broke.value == "no positive equity"


def test_max_leverage() -> None:
    rule, profile = check_max_leverage, limits(max_leverage=D(2))
    # 10 000 elsewhere + 100 units at 100 = 20 000 = 2 × equity.
    assert rule(profile, ctx(quantity=D(100), gross_exposure=D(10_000))) is None
    assert rule(profile, ctx(quantity=D("99.99"), gross_exposure=D(10_000))) is None
    refused = rule(profile, ctx(quantity=D("100.01"), gross_exposure=D(10_000)))
    assert refused is not None
    assert (refused.rule, refused.limit, refused.value) == ("max_leverage", D(2), D("2.0001"))
    # The instrument's own exposure is counted once: 50 held (in the 15 000) + 50 bought.
    assert (
        rule(profile, ctx(quantity=D(50), position_quantity=D(50), gross_exposure=D(15_000)))
        is None
    )
    assert rule(
        profile, ctx(quantity=D("50.01"), position_quantity=D(50), gross_exposure=D(15_000))
    )


def test_max_risk_per_trade() -> None:
    rule, profile = check_max_risk_per_trade, limits(max_risk_per_trade_pct=D(2))
    # 2 % of 10 000 = 200 at risk; 5 per unit from 100 to the stop at 95: 40 units.
    assert rule(profile, ctx(quantity=D(40), stop_loss=D(95))) is None
    assert rule(profile, ctx(quantity=D("39.999"), stop_loss=D(95))) is None
    refused = rule(profile, ctx(quantity=D("40.001"), stop_loss=D(95)))
    assert refused is not None
    assert (refused.rule, refused.limit, refused.value) == (
        "max_risk_per_trade_pct",
        D(2),
        D("2.0001"),
    )
    # A short's stop is above; only the opening part of a crossing order is new risk.
    assert (
        rule(profile, ctx(side=SELL, quantity=D(50), position_quantity=D(10), stop_loss=D(105)))
        is None
    )
    assert rule(
        profile, ctx(side=SELL, quantity=D("50.001"), position_quantity=D(10), stop_loss=D(105))
    )
    # Without a stop-loss the risk is not measurable: the rule does not apply.
    assert rule(profile, ctx(quantity=D(1000))) is None


def test_the_default_risk_per_trade_is_2_percent() -> None:
    profile = RiskProfile()
    assert check_max_risk_per_trade(profile, ctx(quantity=D(40), stop_loss=D(95))) is None
    assert check_max_risk_per_trade(profile, ctx(quantity=D("40.01"), stop_loss=D(95)))


def test_max_open_positions() -> None:
    rule, profile = check_max_open_positions, limits(max_open_positions=3)
    assert rule(profile, ctx(open_positions=2)) is None  # this one is the third
    assert rule(profile, ctx(open_positions=1)) is None
    refused = rule(profile, ctx(open_positions=3))
    assert refused is not None
    assert (refused.rule, refused.limit, refused.value) == ("max_open_positions", D(3), D(4))
    # Adding to a position already open opens nothing.
    assert rule(profile, ctx(open_positions=3, position_quantity=D(1))) is None


def test_max_daily_trades() -> None:
    rule, profile = check_max_daily_trades, limits(max_daily_trades=50)
    assert rule(profile, ctx(trades_today=49)) is None  # the 50th
    assert rule(profile, ctx(trades_today=48)) is None
    refused = rule(profile, ctx(trades_today=50))
    assert refused is not None
    assert (refused.rule, refused.limit, refused.value) == ("max_daily_trades", D(50), D(51))
    assert check_max_daily_trades(RiskProfile(), ctx(trades_today=50)) is not None  # default


def test_max_daily_loss() -> None:
    rule, profile = check_max_daily_loss, limits(max_daily_loss=D(500))
    assert rule(profile, ctx(day_loss=D(500))) is None
    assert rule(profile, ctx(day_loss=D("499.99"))) is None
    assert rule(profile, ctx(day_loss=D(-3000))) is None  # a winning day
    refused = rule(profile, ctx(day_loss=D("500.01")))
    assert refused is not None
    assert (refused.rule, refused.limit, refused.value) == ("max_daily_loss", D(500), D("500.01"))


def test_max_daily_loss_pct() -> None:
    rule, profile = check_max_daily_loss_pct, limits(max_daily_loss_pct=D(5))
    # 5 % of the day's starting equity (10 000), not of the current equity (9 500).
    day = {"equity": D(9500), "day_start_equity": D(10_000)}
    assert rule(profile, ctx(day_loss=D(500), **day)) is None
    assert rule(profile, ctx(day_loss=D("499.99"), **day)) is None
    refused = rule(profile, ctx(day_loss=D("500.01"), **day))
    assert refused is not None
    assert (refused.rule, refused.limit, refused.value) == (
        "max_daily_loss_pct",
        D(5),
        D("5.0001"),
    )
    # Without a day-start equity, the current equity is the base.
    assert rule(profile, ctx(day_loss=D(500), equity=D(10_000))) is None
    assert rule(profile, ctx(day_loss=D("500.01"), equity=D(10_000))) is not None


def test_allowed_symbols() -> None:
    rule = check_allowed_symbols
    profile = limits(allowed_symbols=frozenset({"BTC-USD", "ETH-USD"}))
    assert rule(profile, ctx()) is None
    refused = rule(profile, ctx(symbol="DOGE-USD"))
    assert refused is not None
    assert (refused.rule, refused.limit, refused.value) == (
        "allowed_symbols",
        "BTC-USD, ETH-USD",
        "DOGE-USD",
    )
    assert rule(limits(allowed_symbols=frozenset()), ctx()) is not None


def test_allowed_asset_classes() -> None:
    rule = check_allowed_asset_classes
    profile = limits(allowed_asset_classes=frozenset({AssetClass.EQUITY, AssetClass.FOREX}))
    assert rule(profile, ctx(asset_class=AssetClass.FOREX)) is None
    refused = rule(profile, ctx())
    assert refused is not None
    assert (refused.rule, refused.limit, refused.value) == (
        "allowed_asset_classes",
        "equity, forex",
        "crypto",
    )


def test_stop_loss_required() -> None:
    profile = limits(stop_loss_required=True)
    assert check_stop_loss_required(profile, ctx(stop_loss=D(95))) is None
    refused = check_stop_loss_required(profile, ctx())
    assert refused is not None and refused.rule == "stop_loss_required"
    assert check_stop_loss_required(NO_LIMITS, ctx()) is None


@pytest.mark.parametrize("state", [REDUCING, HALTED])
def test_reducing_and_halted_accounts_accept_only_reducing_orders(state: TradingState) -> None:
    rule = check_trading_state
    assert rule(NO_LIMITS, ctx(trading_state=ACTIVE)) is None
    refused = rule(NO_LIMITS, ctx(trading_state=state))
    assert refused is not None
    assert (refused.rule, refused.limit) == ("trading_state", state.value)
    # Closing all or part of a long passes; crossing into a short does not, nor adding.
    held = {"position_quantity": D(10), "trading_state": state}
    assert rule(NO_LIMITS, ctx(side=SELL, quantity=D(10), **held)) is None
    assert rule(NO_LIMITS, ctx(side=SELL, quantity=D(4), **held)) is None
    assert rule(NO_LIMITS, ctx(side=SELL, quantity=D("10.001"), **held)) is not None
    assert rule(NO_LIMITS, ctx(side=BUY, quantity=D(1), **held)) is not None
    assert (
        rule(NO_LIMITS, ctx(side=BUY, quantity=D(3), position_quantity=D(-3), trading_state=state))
        is None
    )


# --------------------------------------------------------------------------- all together

STRICTEST = RiskProfile(
    max_position_quantity=D(0),
    max_position_pct=D(0),
    max_risk_per_trade_pct=D(0),
    max_daily_loss=D(0),
    max_daily_loss_pct=D(0),
    max_daily_trades=0,
    max_open_positions=0,
    max_leverage=D(0),
    allowed_symbols=frozenset(),
    allowed_asset_classes=frozenset(),
    stop_loss_required=True,
)


def test_a_reducing_order_passes_every_rule() -> None:
    closing = ctx(
        side=SELL,
        quantity=D(10),
        position_quantity=D(10),
        stop_loss=D(200),
        available_cash=D(0),
        day_loss=D(10**6),
        trades_today=10**4,
        open_positions=99,
        gross_exposure=D(10**9),
        trading_state=HALTED,
    )
    assert check_order(STRICTEST, closing) == []


def test_check_order_reports_every_violation_buying_power_first() -> None:
    opening = ctx(
        quantity=D(11),
        stop_loss=D(90),
        available_cash=D(1000),
        day_loss=D(1),
        trades_today=1,
        trading_state=REDUCING,
    )
    violations = check_order(STRICTEST, opening)
    assert [v.rule for v in violations] == [
        "buying_power",
        "trading_state",
        "allowed_symbols",
        "allowed_asset_classes",
        "max_position_quantity",
        "max_position_pct",
        "max_leverage",
        "max_risk_per_trade_pct",
        "max_open_positions",
        "max_daily_trades",
        "max_daily_loss",
        "max_daily_loss_pct",
    ]
    assert len(RULES) == len(violations) + 1  # only the stop-loss was given


# --------------------------------------------------------------------------- trading state


def test_the_daily_loss_limit_halts_the_account_past_its_limit() -> None:
    profile = limits(max_daily_loss=D(500))
    active = TradingStatus()
    assert state_after_loss(profile, active, D(500), D(10_000)) == active
    assert state_after_loss(profile, active, D("499.99"), D(10_000)) == active
    halted = state_after_loss(profile, active, D("500.01"), D(10_000))
    assert halted == TradingStatus(HALTED, resumes_to=ACTIVE)
    assert halted.halted_automatically
    # No limit set: nothing halts.
    assert state_after_loss(NO_LIMITS, active, D(10**6), D(10_000)) == active


def test_the_daily_loss_percentage_halts_too() -> None:
    profile = limits(max_daily_loss_pct=D(5))
    assert state_after_loss(profile, TradingStatus(), D(500), D(10_000)) == TradingStatus()
    assert state_after_loss(profile, TradingStatus(), D("500.01"), D(10_000)).state is HALTED
    both = limits(max_daily_loss=D(400), max_daily_loss_pct=D(5))
    assert [v.rule for v in daily_loss_breaches(both, D(600), D(10_000))] == [
        "max_daily_loss",
        "max_daily_loss_pct",
    ]
    assert daily_loss_breaches(both, D(-600), D(10_000)) == []


def test_an_automatic_halt_lifts_at_the_next_day_to_the_state_it_interrupted() -> None:
    profile = limits(max_daily_loss=D(500))
    reducing = TradingStatus(REDUCING)
    halted = state_after_loss(profile, reducing, D(600), D(10_000))
    assert halted == TradingStatus(HALTED, resumes_to=REDUCING)
    assert state_at_day_start(halted) == reducing
    assert state_at_day_start(state_at_day_start(halted)) == reducing


def test_a_state_the_user_set_stays() -> None:
    profile = limits(max_daily_loss=D(500))
    user_halted = set_state(TradingStatus(), HALTED)
    assert user_halted == TradingStatus(HALTED) and not user_halted.halted_automatically
    assert state_after_loss(profile, user_halted, D(600), D(10_000)) == user_halted
    assert state_at_day_start(user_halted) == user_halted
    assert set_state(user_halted, ACTIVE) == TradingStatus(ACTIVE)
    assert state_at_day_start(TradingStatus(REDUCING)) == TradingStatus(REDUCING)


def test_the_user_cannot_lift_an_automatic_halt() -> None:
    halted = state_after_loss(limits(max_daily_loss=D(500)), TradingStatus(), D(600), D(10_000))
    for state in TradingState:
        with pytest.raises(TradingStateLocked, match="next UTC day"):
            set_state(halted, state)
