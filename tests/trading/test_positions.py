"""Positions (pure): average cost, realized and unrealized PnL, crossing through zero, fees kept
apart, fills applied once, and round trips."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal as D
from itertools import count

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tradeos.trading.errors import InvalidFill
from tradeos.trading.orders import OrderSide
from tradeos.trading.positions import (
    Direction,
    Fill,
    Position,
    PositionState,
    Trade,
    apply,
    apply_fill_once,
    market_value,
    round_trips,
    unrealized_pnl,
)

BUY, SELL = OrderSide.BUY, OrderSide.SELL
T0 = datetime(2026, 3, 2, tzinfo=UTC)
_ids = count()


def fill(
    side: OrderSide,
    quantity: str | D,
    price: str | D,
    fee: str | D = "0",
    *,
    symbol: str = "BTC-USD",
    minutes: int = 0,
    strategy: str | None = None,
) -> Fill:
    return Fill(
        fill_id=f"f{next(_ids)}",
        symbol=symbol,
        side=side,
        quantity=D(quantity),
        price=D(price),
        time=T0 + timedelta(minutes=minutes),
        fee=D(fee),
        strategy=strategy,
    )


def run(*fills: Fill, start: Position | None = None) -> Position:
    position = start or Position("BTC-USD")
    for one in fills:
        position, _, _ = apply(position, one)
    return position


def test_opening_and_adding_moves_the_average_quantity_weighted() -> None:
    position, realized, closed = apply(Position("BTC-USD"), fill(BUY, "1", "100"))
    assert (position.quantity, position.average_price, realized, closed) == (
        D(1),
        D(100),
        D(0),
        D(0),
    )
    position, realized, closed = apply(position, fill(BUY, "3", "104"))
    assert (position.quantity, position.average_price, position.cost) == (D(4), D(103), D(412))
    assert (realized, closed) == (D(0), D(0))
    assert position.realized_pnl == 0


def test_reducing_realizes_at_the_average_and_keeps_it() -> None:
    position = run(fill(BUY, "1", "100"), fill(BUY, "3", "104"))  # 4 at 103
    position, realized, closed = apply(position, fill(SELL, "2", "110"))
    assert (realized, closed) == (D(14), D(2))  # (110 − 103) × 2
    assert (position.quantity, position.average_price, position.realized_pnl) == (
        D(2),
        D(103),
        D(14),
    )
    position, realized, closed = apply(position, fill(SELL, "2", "101"))
    assert (realized, closed) == (D(-4), D(2))
    assert position.is_flat and position.cost == 0 and position.average_price == 0
    assert position.realized_pnl == D(10)


def test_a_short_gains_when_the_price_falls() -> None:
    position = run(fill(SELL, "2", "100"), fill(SELL, "2", "110"))
    assert (position.quantity, position.average_price, position.cost) == (D(-4), D(105), D(-420))
    position, realized, closed = apply(position, fill(BUY, "1", "95"))
    assert (realized, closed) == (D(10), D(1))  # (95 − 105) × 1 × −1
    position, realized, _ = apply(position, fill(BUY, "3", "108"))
    assert realized == D(-9)
    assert position.is_flat and position.realized_pnl == D(1)


def test_crossing_zero_closes_and_opens_the_rest_at_the_fill_price() -> None:
    position = run(fill(BUY, "2", "100"))
    position, realized, closed = apply(position, fill(SELL, "5", "110"))
    assert (realized, closed) == (D(20), D(2))
    assert (position.quantity, position.average_price, position.cost) == (D(-3), D(110), D(-330))
    position, realized, closed = apply(position, fill(BUY, "4", "100"))
    assert (realized, closed) == (D(30), D(3))
    assert (position.quantity, position.average_price) == (D(1), D(100))
    assert position.realized_pnl == D(50)


def test_fees_are_counted_apart_from_the_average() -> None:
    position = run(fill(BUY, "1", "100", "0.25"), fill(BUY, "1", "102", "0.5"))
    assert position.average_price == D(101)
    assert position.fees_paid == D("0.75")
    position, realized, _ = apply(position, fill(SELL, "2", "103", "1"))
    assert realized == D(4)  # gross: fees are not in it
    assert position.fees_paid == D("1.75")


def test_a_repeating_average_loses_nothing_over_a_round_trip() -> None:
    position = run(fill(BUY, "1", "100"), fill(BUY, "2", "101"))  # 302 / 3
    assert position.average_price == D("100.666666666666666667")
    position, first, _ = apply(position, fill(SELL, "1", "102"))
    assert first == D("1.333333333333333333")
    position, second, _ = apply(position, fill(SELL, "2", "102"))
    assert second == D("2.666666666666666667")
    assert position.realized_pnl == D(4)  # 3 × 102 − 302, exactly
    assert position.cost == 0


def test_big_values_stay_exact_beyond_the_default_28_digits() -> None:
    # 32 significant digits: the default decimal context would round this product.
    quantity, price = D("123456789.123456789"), D("98765.432109876")
    exact = D("12193263124676.049260646786148164")
    position = run(fill(BUY, quantity, price))
    assert position.cost == exact
    assert market_value(position, price) == exact
    flipped = run(fill(SELL, quantity, price))
    assert flipped.quantity == quantity.copy_negate()
    assert flipped.cost == exact.copy_negate()  # (unary minus would round here too)


def test_unrealized_pnl_and_market_value() -> None:
    long = run(fill(BUY, "2", "100"))
    assert (unrealized_pnl(long, D(105)), market_value(long, D(105))) == (D(10), D(210))
    short = run(fill(SELL, "2", "100"))
    assert (unrealized_pnl(short, D(105)), market_value(short, D(105))) == (D(-10), D(-210))
    flat = Position("BTC-USD")
    assert (unrealized_pnl(flat, D(105)), market_value(flat, D(105))) == (D(0), D(0))


def test_a_fill_must_belong_to_the_position_and_be_positive() -> None:
    with pytest.raises(InvalidFill, match="ETH-USD"):
        apply(Position("BTC-USD"), fill(BUY, "1", "100", symbol="ETH-USD"))
    for bad in (fill(BUY, "0", "100"), fill(BUY, "1", "0"), fill(BUY, "1", "100", "-1")):
        with pytest.raises(InvalidFill):
            apply(Position("BTC-USD"), bad)


def test_a_fill_seen_twice_is_applied_once() -> None:
    state = PositionState(Position("BTC-USD"))
    first = fill(BUY, "2", "100", "0.1")
    state, effect = apply_fill_once(state, first)
    assert effect.applied and state.position.quantity == D(2)
    assert state.applied_fill_ids == {first.fill_id}
    again, effect = apply_fill_once(state, first)
    assert again == state and not effect.applied
    assert (effect.realized_pnl, effect.closed_quantity) == (D(0), D(0))
    closing = fill(SELL, "2", "110")
    state, effect = apply_fill_once(state, closing)
    assert (effect.realized_pnl, effect.closed_quantity, effect.applied) == (D(20), D(2), True)
    state_again, effect = apply_fill_once(state, closing)
    assert state_again == state and state.position.realized_pnl == D(20)


# --------------------------------------------------------------------------- round trips


def test_a_long_round_trip() -> None:
    trades = round_trips(
        [
            fill(BUY, "1", "100", "0.1", minutes=0, strategy="breakout"),
            fill(BUY, "1", "110", "0.1", minutes=5),
            fill(SELL, "2", "120", "0.2", minutes=65),
        ]
    )
    assert trades == [
        Trade(
            symbol="BTC-USD",
            direction=Direction.LONG,
            quantity=D(2),
            entry_price=D(105),
            exit_price=D(120),
            pnl=D(30),
            fees=D("0.4"),
            opened_at=T0,
            closed_at=T0 + timedelta(minutes=65),
            strategy="breakout",
        )
    ]
    trade = trades[0]
    assert trade.net_pnl == D("29.6")
    assert trade.return_pct == D("14.09523810")  # 29.6 / 210 × 100
    assert trade.duration == timedelta(minutes=65)


def test_a_short_round_trip_with_partial_exits() -> None:
    trades = round_trips(
        [
            fill(SELL, "3", "100", minutes=0),
            fill(BUY, "1", "90", minutes=1),
            fill(BUY, "2", "96", minutes=2),
        ]
    )
    assert len(trades) == 1
    trade = trades[0]
    assert (trade.direction, trade.quantity, trade.entry_price, trade.exit_price) == (
        Direction.SHORT,
        D(3),
        D(100),
        D(94),
    )
    assert trade.pnl == D(18) and trade.return_pct == D(6)


def test_crossing_closes_one_trade_and_opens_the_next_sharing_the_fee() -> None:
    trades = round_trips(
        [
            fill(BUY, "1", "100", "1", minutes=0),
            fill(SELL, "4", "110", "2", minutes=10),  # closes 1, opens a short of 3
            fill(BUY, "3", "105", "1", minutes=20),
        ]
    )
    assert [(t.direction, t.quantity, t.pnl, t.fees) for t in trades] == [
        (Direction.LONG, D(1), D(10), D("1.5")),  # 1 + a quarter of 2
        (Direction.SHORT, D(3), D(15), D("2.5")),  # three quarters of 2 + 1
    ]
    assert trades[0].closed_at == trades[1].opened_at == T0 + timedelta(minutes=10)


def test_open_trades_are_left_out_and_symbols_are_kept_apart() -> None:
    trades = round_trips(
        [
            fill(BUY, "1", "100", symbol="BTC-USD", minutes=0),
            fill(BUY, "10", "5", symbol="ETH-USD", minutes=1),
            fill(SELL, "10", "6", symbol="ETH-USD", minutes=2),
            fill(SELL, "0.5", "90", symbol="BTC-USD", minutes=3),  # still half open
        ]
    )
    assert [(t.symbol, t.pnl) for t in trades] == [("ETH-USD", D(10))]


# --------------------------------------------------------------------------- properties

prices = st.integers(min_value=1, max_value=100_000).map(lambda cents: D(cents) / 100)
quantities = st.integers(min_value=1, max_value=5_000).map(lambda steps: D(steps) / 1000)
fees = st.integers(min_value=0, max_value=500).map(lambda c: D(c) / 100)
fill_args = st.tuples(st.sampled_from([BUY, SELL]), quantities, prices, fees)


@settings(max_examples=200, deadline=None)
@given(st.lists(fill_args, max_size=40), prices)
def test_the_position_accounts_for_every_fill_exactly(
    steps: list[tuple[OrderSide, D, D, D]], mark: D
) -> None:
    fills = [fill(side, q, p, f, minutes=n) for n, (side, q, p, f) in enumerate(steps)]
    position = run(*fills)
    # The quantity is the sum of the signed fills, the fees their sum.
    assert position.quantity == sum((f.signed_quantity for f in fills), D(0))
    assert position.fees_paid == sum((f.fee for f in fills), D(0))
    # What was paid and received, plus what is held at the mark, is all PnL: exactly.
    cash = -sum((f.signed_quantity * f.price for f in fills), D(0))
    assert cash + market_value(position, mark) == position.realized_pnl + unrealized_pnl(
        position, mark
    )
    # Closing everything realizes exactly what the round trips report.
    if not position.is_flat:
        side = SELL if position.quantity > 0 else BUY
        fills.append(fill(side, abs(position.quantity), mark, "0.01", minutes=len(fills)))
        position = run(*fills)
    trades = round_trips(fills)
    assert sum((t.pnl for t in trades), D(0)) == position.realized_pnl
    assert sum((t.fees for t in trades), D(0)) == position.fees_paid
    assert all(t.opened_at <= t.closed_at for t in trades)


@settings(max_examples=100, deadline=None)
@given(st.lists(fill_args, min_size=1, max_size=20), st.data())
def test_replaying_any_fill_changes_nothing(
    steps: list[tuple[OrderSide, D, D, D]], data: st.DataObject
) -> None:
    fills = [fill(side, q, p, f) for side, q, p, f in steps]
    state = PositionState(Position("BTC-USD"))
    for one in fills:
        state, _ = apply_fill_once(state, one)
    replayed = data.draw(st.sampled_from(fills))
    again, effect = apply_fill_once(state, replayed)
    assert again == state and not effect.applied
