"""Orders (pure): the transition table, request validation, matching against ticks and bars,
partial fills for IOC / FOK, day-order expiry and brackets."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal as D

import pytest

from tradeos.market.providers.base import AssetClass, Bar, InstrumentSpec, Tick
from tradeos.trading.errors import InvalidFill, InvalidTransition, OrderInvalid, OrderNotOpen
from tradeos.trading.fill_model import FillModel, IntrabarRule
from tradeos.trading.orders import (
    TRANSITIONS,
    Liquidity,
    Order,
    OrderRequest,
    OrderSide,
    OrderStatus,
    OrderType,
    TimeInForce,
    accept,
    bracket_children,
    cancel,
    expire_if_due,
    expires_at,
    match,
    match_bracket,
    oco_after_fill,
    order_errors,
    record_fill,
    transition,
    validate_order,
)

BUY, SELL = OrderSide.BUY, OrderSide.SELL
MARKET, LIMIT, STOP, STOP_LIMIT = (
    OrderType.MARKET,
    OrderType.LIMIT,
    OrderType.STOP,
    OrderType.STOP_LIMIT,
)
BTC = InstrumentSpec(
    symbol="BTC-USD",
    name="Bitcoin",
    asset_class=AssetClass.CRYPTO,
    base="BTC",
    quote="USD",
    tick_size=D("0.01"),
    quantity_step=D("0.0001"),
)
NO_COSTS = FillModel()
COSTS = FillModel(
    taker_fee_rate=D("0.001"), maker_fee_rate=D("0.0005"), slippage_bps=D(10)
)  # 0.1 % taker, 0.05 % maker, 10 bps slippage
T0 = datetime(2026, 3, 2, 13, 0, tzinfo=UTC)


def tick(bid: str, ask: str) -> Tick:
    return Tick(symbol="BTC-USD", time=T0, last=D(bid), bid=D(bid), ask=D(ask))


def bar(open_: str, high: str, low: str, close: str) -> Bar:
    return Bar(T0, D(open_), D(high), D(low), D(close), D(1))


def open_order(side: OrderSide, kind: OrderType, quantity: str = "1", **kwargs: object) -> Order:
    return accept(Order(side, kind, D(quantity), **kwargs))  # type: ignore[arg-type]


# --------------------------------------------------------------------------- transitions

ALLOWED = sorted((a, b) for a, targets in TRANSITIONS.items() for b in targets)
DISALLOWED = sorted(
    (a, b) for a, b in itertools.product(OrderStatus, OrderStatus) if b not in TRANSITIONS[a]
)


def test_the_table_is_the_documented_one() -> None:
    assert set(ALLOWED) == {
        (OrderStatus.NEW, OrderStatus.ACCEPTED),
        (OrderStatus.NEW, OrderStatus.REJECTED),
        (OrderStatus.NEW, OrderStatus.CANCELED),
        (OrderStatus.ACCEPTED, OrderStatus.PARTIALLY_FILLED),
        (OrderStatus.ACCEPTED, OrderStatus.FILLED),
        (OrderStatus.ACCEPTED, OrderStatus.CANCELED),
        (OrderStatus.ACCEPTED, OrderStatus.EXPIRED),
        (OrderStatus.PARTIALLY_FILLED, OrderStatus.PARTIALLY_FILLED),
        (OrderStatus.PARTIALLY_FILLED, OrderStatus.FILLED),
        (OrderStatus.PARTIALLY_FILLED, OrderStatus.CANCELED),
        (OrderStatus.PARTIALLY_FILLED, OrderStatus.EXPIRED),
    }
    assert len(ALLOWED) + len(DISALLOWED) == len(OrderStatus) ** 2


@pytest.mark.parametrize(("current", "target"), ALLOWED)
def test_every_allowed_transition_works(current: OrderStatus, target: OrderStatus) -> None:
    assert transition(current, target) is target
    order = Order(BUY, MARKET, D(1), status=current)
    assert order.moved_to(target).status is target


@pytest.mark.parametrize(("current", "target"), DISALLOWED)
def test_every_other_transition_raises(current: OrderStatus, target: OrderStatus) -> None:
    with pytest.raises(InvalidTransition) as raised:
        transition(current, target)
    assert (raised.value.current, raised.value.target) == (current, target)
    with pytest.raises(InvalidTransition):
        Order(BUY, MARKET, D(1), status=current).moved_to(target)


def test_fills_move_an_order_to_partially_filled_then_filled() -> None:
    order = open_order(BUY, LIMIT, "1", limit_price=D(100))
    order = record_fill(order, D("0.4"))
    assert (order.status, order.filled_quantity, order.remaining_quantity) == (
        OrderStatus.PARTIALLY_FILLED,
        D("0.4"),
        D("0.6"),
    )
    order = record_fill(order, D("0.2"))
    assert order.status is OrderStatus.PARTIALLY_FILLED
    order = record_fill(order, D("0.4"))
    assert (order.status, order.remaining_quantity) == (OrderStatus.FILLED, D(0))
    with pytest.raises(OrderNotOpen):
        record_fill(order, D("0.1"))


def test_a_fill_must_be_positive_and_within_the_remainder() -> None:
    order = open_order(BUY, LIMIT, "1", limit_price=D(100))
    with pytest.raises(InvalidFill, match="exceeds"):
        record_fill(order, D("1.0001"))
    with pytest.raises(InvalidFill, match="positive"):
        record_fill(order, D(0))
    with pytest.raises(OrderNotOpen):
        record_fill(Order(BUY, MARKET, D(1)), D(1))  # new: not accepted yet


# --------------------------------------------------------------------------- day orders


def test_day_orders_expire_at_the_end_of_their_utc_day() -> None:
    assert expires_at(T0) == datetime(2026, 3, 3, tzinfo=UTC)
    assert expires_at(datetime(2026, 3, 2, tzinfo=UTC)) == datetime(2026, 3, 3, tzinfo=UTC)
    assert expires_at(datetime(2026, 3, 2, 23, 59, 59, tzinfo=UTC)) == datetime(
        2026, 3, 3, tzinfo=UTC
    )
    # 01:00 at UTC+3 is 22:00 UTC the day before.
    plus_three = timezone(timedelta(hours=3))
    assert expires_at(datetime(2026, 3, 2, 1, 0, tzinfo=plus_three)) == datetime(
        2026, 3, 2, tzinfo=UTC
    )
    with pytest.raises(ValueError, match="naive"):
        expires_at(datetime(2026, 3, 2, 13, 0))


def test_only_open_day_orders_past_their_day_expire() -> None:
    day = open_order(BUY, LIMIT, limit_price=D(100), time_in_force=TimeInForce.DAY)
    midnight = datetime(2026, 3, 3, tzinfo=UTC)
    assert expire_if_due(day, T0, midnight - timedelta(microseconds=1)) == day
    assert expire_if_due(day, T0, midnight).status is OrderStatus.EXPIRED
    partial = record_fill(day, D("0.5"))
    assert expire_if_due(partial, T0, midnight).status is OrderStatus.EXPIRED
    gtc = open_order(BUY, LIMIT, limit_price=D(100))
    assert expire_if_due(gtc, T0, midnight + timedelta(days=30)) == gtc
    filled = record_fill(day, D(1))
    assert expire_if_due(filled, T0, midnight) == filled


# --------------------------------------------------------------------------- validation


def errors_of(request: OrderRequest, reference: str | None = None) -> dict[str, str]:
    found = order_errors(request, BTC, None if reference is None else D(reference))
    return {error.field: error.message for error in found}


def test_a_valid_request_becomes_a_new_order() -> None:
    request = OrderRequest(
        BUY,
        STOP_LIMIT,
        quantity=D("0.25"),
        stop_price=D("100.00"),
        limit_price=D("101.50"),
        time_in_force=TimeInForce.DAY,
        stop_loss=D("95"),
        take_profit=D("110.01"),
    )
    order = validate_order(request, BTC)
    assert order == Order(
        BUY,
        STOP_LIMIT,
        D("0.25"),
        time_in_force=TimeInForce.DAY,
        limit_price=D("101.50"),
        stop_price=D("100.00"),
        stop_loss=D("95"),
        take_profit=D("110.01"),
    )
    assert order.status is OrderStatus.NEW


@pytest.mark.parametrize(
    ("request_", "field", "message"),
    [
        (OrderRequest(BUY, MARKET), "quantity", "give a quantity"),
        (OrderRequest(BUY, MARKET, quantity=D(0)), "quantity", "greater than 0"),
        (OrderRequest(BUY, MARKET, quantity=D("-1")), "quantity", "greater than 0"),
        (OrderRequest(BUY, MARKET, quantity=D("NaN")), "quantity", "finite"),
        (OrderRequest(BUY, MARKET, quantity=D("0.00015")), "quantity", "multiple of the quantity"),
        (
            OrderRequest(BUY, MARKET, quantity=D(1), notional=D(100)),
            "notional",
            "not both",
        ),
        (
            OrderRequest(BUY, LIMIT, notional=D(100), limit_price=D(100)),
            "notional",
            "only market orders",
        ),
        (OrderRequest(BUY, MARKET, notional=D(0)), "notional", "greater than 0"),
        (OrderRequest(BUY, MARKET, notional=D("0.009")), "notional", "less than one quantity step"),
        (OrderRequest(BUY, LIMIT, quantity=D(1)), "limit_price", "needs a limit_price"),
        (OrderRequest(BUY, STOP_LIMIT, quantity=D(1), stop_price=D(100)), "limit_price", "needs"),
        (
            OrderRequest(BUY, MARKET, quantity=D(1), limit_price=D(100)),
            "limit_price",
            "takes no limit_price",
        ),
        (
            OrderRequest(BUY, STOP, quantity=D(1), stop_price=D(100), limit_price=D(100)),
            "limit_price",
            "takes no",
        ),
        (OrderRequest(BUY, LIMIT, quantity=D(1), limit_price=D(0)), "limit_price", "greater than"),
        (
            OrderRequest(BUY, LIMIT, quantity=D(1), limit_price=D("100.005")),
            "limit_price",
            "multiple of the tick size 0.01",
        ),
        (OrderRequest(BUY, STOP, quantity=D(1)), "stop_price", "needs a stop_price"),
        (OrderRequest(BUY, STOP_LIMIT, quantity=D(1), limit_price=D(100)), "stop_price", "needs"),
        (
            OrderRequest(BUY, LIMIT, quantity=D(1), limit_price=D(100), stop_price=D(99)),
            "stop_price",
            "takes no stop_price",
        ),
        (OrderRequest(BUY, STOP, quantity=D(1), stop_price=D("-5")), "stop_price", "greater than"),
        (
            OrderRequest(BUY, STOP, quantity=D(1), stop_price=D("100.001")),
            "stop_price",
            "multiple of the tick",
        ),
        (
            OrderRequest(
                BUY, STOP, quantity=D(1), stop_price=D(100), time_in_force=TimeInForce.IOC
            ),
            "time_in_force",
            "IOC is for market and limit orders only",
        ),
        (
            OrderRequest(
                SELL,
                STOP_LIMIT,
                quantity=D(1),
                stop_price=D(100),
                limit_price=D(99),
                time_in_force=TimeInForce.FOK,
            ),
            "time_in_force",
            "FOK is for market and limit orders only",
        ),
    ],
)
def test_each_invalid_field_is_named(request_: OrderRequest, field: str, message: str) -> None:
    found = errors_of(request_, reference="100")
    assert list(found) == [field]
    assert message in found[field]
    with pytest.raises(OrderInvalid) as raised:
        validate_order(request_, BTC, D(100))
    assert [error.field for error in raised.value.errors] == [field]


def test_every_broken_field_is_reported_at_once() -> None:
    request = OrderRequest(
        BUY,
        STOP,
        quantity=D("0.00001"),
        stop_price=D("1.001"),
        limit_price=D(1),
        time_in_force=TimeInForce.FOK,
    )
    assert set(errors_of(request)) == {"quantity", "stop_price", "limit_price", "time_in_force"}


@pytest.mark.parametrize("tif", list(TimeInForce))
@pytest.mark.parametrize("kind", [MARKET, LIMIT])
def test_market_and_limit_orders_take_every_time_in_force(
    kind: OrderType, tif: TimeInForce
) -> None:
    limit = D(100) if kind is LIMIT else None
    request = OrderRequest(BUY, kind, quantity=D(1), limit_price=limit, time_in_force=tif)
    assert errors_of(request, reference="100") == {}


def test_a_notional_becomes_whole_steps_rounded_down() -> None:
    # 1000 / 30000 = 0.0333…: 333 steps of 0.0001.
    order = validate_order(OrderRequest(BUY, MARKET, notional=D(1000)), BTC, D(30000))
    assert order.quantity == D("0.0333")
    # Exactly one step's worth is enough; a cent less is not.
    assert validate_order(OrderRequest(SELL, MARKET, notional=D(3)), BTC, D(30000)).quantity == D(
        "0.0001"
    )
    assert "notional" in errors_of(OrderRequest(SELL, MARKET, notional=D("2.99")), "30000")
    with pytest.raises(ValueError, match="reference price"):
        order_errors(OrderRequest(BUY, MARKET, notional=D(1000)), BTC)


@pytest.mark.parametrize(
    ("side", "stop_loss", "take_profit", "refused"),
    [
        (BUY, "99.99", "100.01", set()),
        (BUY, "100", "101", {"stop_loss"}),  # at the entry: not below it
        (BUY, "101", "102", {"stop_loss"}),
        (BUY, "99", "100", {"take_profit"}),
        (BUY, "101", "99", {"stop_loss", "take_profit"}),
        (SELL, "100.01", "99.99", set()),
        (SELL, "99", "98", {"stop_loss"}),
        (SELL, "101", "100", {"take_profit"}),
    ],
)
def test_bracket_prices_sit_on_the_correct_side_of_the_entry(
    side: OrderSide, stop_loss: str, take_profit: str, refused: set[str]
) -> None:
    for kind, prices in (
        (LIMIT, {"limit_price": D(100)}),
        (STOP, {"stop_price": D(100)}),
        (MARKET, {}),
    ):
        request = OrderRequest(
            side,
            kind,
            quantity=D(1),
            stop_loss=D(stop_loss),
            take_profit=D(take_profit),
            **prices,  # type: ignore[arg-type]
        )
        assert set(errors_of(request, reference="100")) == refused, kind


def test_a_stop_limit_bracket_clears_both_entry_prices() -> None:
    # A buy stop-limit may fill anywhere from its stop (100) to its limit (102).
    base = OrderRequest(BUY, STOP_LIMIT, quantity=D(1), stop_price=D(100), limit_price=D(102))
    ok = OrderRequest(**{**base.__dict__, "stop_loss": D("99.99"), "take_profit": D("102.01")})
    assert errors_of(ok) == {}
    low_target = OrderRequest(**{**base.__dict__, "take_profit": D(101)})
    assert set(errors_of(low_target)) == {"take_profit"}
    high_stop = OrderRequest(**{**base.__dict__, "stop_loss": D("100.50")})
    assert set(errors_of(high_stop)) == {"stop_loss"}


def test_bracket_prices_are_positive_multiples_of_the_tick() -> None:
    request = OrderRequest(
        BUY, LIMIT, quantity=D(1), limit_price=D(100), stop_loss=D("95.001"), take_profit=D(-1)
    )
    found = errors_of(request)
    assert "multiple of the tick" in found["stop_loss"]
    assert "greater than 0" in found["take_profit"]
    with pytest.raises(ValueError, match="reference price"):
        order_errors(OrderRequest(BUY, MARKET, quantity=D(1), stop_loss=D(90)), BTC)


# --------------------------------------------------------------------------- matching


def test_market_orders_take_the_ask_or_the_bid() -> None:
    buy = match(open_order(BUY, MARKET, "0.5"), tick("99.90", "100.00"), BTC, NO_COSTS)
    assert buy.execution is not None
    assert (buy.execution.price, buy.execution.quantity) == (D("100.00"), D("0.5"))
    assert buy.execution.liquidity is Liquidity.TAKER
    assert buy.order.status is OrderStatus.FILLED
    sell = match(open_order(SELL, MARKET, "0.5"), tick("99.90", "100.00"), BTC, NO_COSTS)
    assert sell.execution is not None and sell.execution.price == D("99.90")


def test_taker_fills_are_slipped_and_rounded_against_the_trader() -> None:
    # 100.03 × 1.001 = 100.13003 -> 100.14; 100.03 × 0.999 = 99.92997 -> 99.92
    buy = match(open_order(BUY, MARKET, "0.5"), tick("100.03", "100.03"), BTC, COSTS)
    sell = match(open_order(SELL, MARKET, "0.5"), tick("100.03", "100.03"), BTC, COSTS)
    assert buy.execution is not None and sell.execution is not None
    assert buy.execution.price == D("100.14")
    assert sell.execution.price == D("99.92")
    assert buy.execution.fee == D("0.05007000")  # 0.5 × 100.14 × 0.1 %
    assert sell.execution.fee == D("0.04996000")
    assert buy.execution.notional == D("50.070")


def test_a_sell_at_the_lowest_tick_is_not_slipped_to_nothing() -> None:
    # 0.01 × 0.999 rounds down to 0.00: no price at all, so the lowest tick it is.
    sold = match(open_order(SELL, MARKET, "1"), tick("0.01", "0.02"), BTC, COSTS)
    assert sold.execution is not None and sold.execution.price == D("0.01")


def test_fees_keep_8_places_rounded_half_up() -> None:
    model = FillModel(taker_fee_rate=D("0.001"))
    # 0.0001 × 100.25 × 0.001 = 0.000010025: half up gives …03 (half even would give …02).
    filled = match(open_order(BUY, MARKET, "0.0001"), tick("100.25", "100.25"), BTC, model)
    assert filled.execution is not None and filled.execution.fee == D("0.00001003")
    minimum = FillModel(taker_fee_rate=D("0.001"), min_fee=D("1"), fixed_fee=D("0.1"))
    filled = match(open_order(BUY, MARKET, "0.0001"), tick("100.25", "100.25"), BTC, minimum)
    assert filled.execution is not None and filled.execution.fee == D(1)


def test_a_marketable_limit_order_takes_on_arrival_but_never_beyond_its_limit() -> None:
    order = open_order(BUY, LIMIT, "1", limit_price=D("100.05"))
    filled = match(order, tick("99.90", "100.00"), BTC, COSTS, on_arrival=True)
    assert filled.execution is not None
    # Slipped 100.10 would be beyond the limit: the limit caps it.
    assert filled.execution.price == D("100.05")
    assert filled.execution.liquidity is Liquidity.TAKER
    assert filled.execution.fee == D("0.10005000")  # taker rate
    cheap = match(order, tick("99.00", "99.50"), BTC, COSTS, on_arrival=True)
    assert cheap.execution is not None and cheap.execution.price == D("99.60")  # 99.5995 up
    sell = open_order(SELL, LIMIT, "1", limit_price=D("100.00"))
    filled = match(sell, tick("100.00", "100.10"), BTC, NO_COSTS, on_arrival=True)
    assert filled.execution is not None and filled.execution.price == D("100.00")


def test_a_limit_order_that_is_not_marketable_rests() -> None:
    order = open_order(BUY, LIMIT, "1", limit_price=D("99.99"))
    rested = match(order, tick("99.90", "100.00"), BTC, COSTS, on_arrival=True)
    assert rested == type(rested)(order)
    assert rested.order.status is OrderStatus.ACCEPTED


def test_a_resting_limit_order_makes_at_its_limit_when_touched() -> None:
    buy = open_order(BUY, LIMIT, "2", limit_price=D("99.50"))
    assert match(buy, tick("99.50", "99.51"), BTC, COSTS).execution is None
    touched = match(buy, tick("99.49", "99.50"), BTC, COSTS)
    assert touched.execution is not None
    assert touched.execution.price == D("99.50")  # no slippage
    assert touched.execution.liquidity is Liquidity.MAKER
    assert touched.execution.fee == D("0.09950000")  # 2 × 99.50 × 0.05 %
    # Even when the ask has dropped through the limit: a resting order fills at its limit.
    through = match(buy, tick("98.00", "98.10"), BTC, COSTS)
    assert through.execution is not None and through.execution.price == D("99.50")
    sell = open_order(SELL, LIMIT, "2", limit_price=D("101"))
    assert match(sell, tick("100.99", "101.05"), BTC, COSTS).execution is None
    touched = match(sell, tick("101.00", "101.05"), BTC, COSTS)
    assert touched.execution is not None and touched.execution.price == D(101)


def test_a_resting_limit_order_on_a_bar() -> None:
    buy = open_order(BUY, LIMIT, "1", limit_price=D(100))
    assert match(buy, bar("102", "103", "100.01", "101"), BTC, COSTS).execution is None
    touched = match(buy, bar("102", "103", "100", "101"), BTC, COSTS)
    assert touched.execution is not None and touched.execution.price == D(100)
    gapped = match(buy, bar("98", "99", "97", "98.5"), BTC, COSTS)  # opened below the limit
    assert gapped.execution is not None and gapped.execution.price == D(98)
    assert gapped.execution.liquidity is Liquidity.MAKER
    sell = open_order(SELL, LIMIT, "1", limit_price=D(100))
    assert match(sell, bar("98", "99.99", "97", "99"), BTC, COSTS).execution is None
    touched = match(sell, bar("98", "100", "97", "99"), BTC, COSTS)
    assert touched.execution is not None and touched.execution.price == D(100)
    gapped = match(sell, bar("103", "104", "101", "102"), BTC, COSTS)
    assert gapped.execution is not None and gapped.execution.price == D(103)


def test_a_market_order_on_a_bar_takes_the_open() -> None:
    filled = match(open_order(BUY, MARKET), bar("100", "105", "95", "101"), BTC, COSTS)
    assert filled.execution is not None and filled.execution.price == D("100.10")


def test_a_buy_stop_triggers_when_the_ask_reaches_the_stop() -> None:
    stop = open_order(BUY, STOP, "1", stop_price=D(100))
    below = match(stop, tick("99.90", "99.99"), BTC, NO_COSTS)
    assert below.execution is None and not below.order.triggered
    at = match(stop, tick("99.95", "100.00"), BTC, NO_COSTS)
    assert at.execution is not None and at.execution.price == D(100)
    assert at.order.triggered and at.order.status is OrderStatus.FILLED
    beyond = match(stop, tick("101.00", "101.05"), BTC, COSTS)  # jumped past the stop
    assert beyond.execution is not None
    assert beyond.execution.price == D("101.16")  # 101.05 × 1.001 = 101.15105, up
    assert beyond.execution.liquidity is Liquidity.TAKER


def test_a_sell_stop_triggers_when_the_bid_reaches_the_stop() -> None:
    stop = open_order(SELL, STOP, "1", stop_price=D(100))
    assert match(stop, tick("100.01", "100.02"), BTC, NO_COSTS).execution is None
    at = match(stop, tick("100.00", "100.02"), BTC, NO_COSTS)
    assert at.execution is not None and at.execution.price == D(100)
    gap = match(stop, tick("97.00", "97.10"), BTC, COSTS)
    assert gap.execution is not None and gap.execution.price == D("96.90")  # 96.903 down


def test_stops_on_a_bar_fill_at_the_stop_or_at_a_gapped_open() -> None:
    buy = open_order(BUY, STOP, "1", stop_price=D(100))
    assert match(buy, bar("98", "99.99", "97", "99"), BTC, NO_COSTS).execution is None
    touched = match(buy, bar("98", "100", "97", "99"), BTC, COSTS)
    assert touched.execution is not None and touched.execution.price == D("100.10")
    gapped = match(buy, bar("105", "106", "104", "105"), BTC, NO_COSTS)
    assert gapped.execution is not None and gapped.execution.price == D(105)
    sell = open_order(SELL, STOP, "1", stop_price=D(100))
    assert match(sell, bar("102", "103", "100.01", "101"), BTC, NO_COSTS).execution is None
    touched = match(sell, bar("102", "103", "100", "101"), BTC, NO_COSTS)
    assert touched.execution is not None and touched.execution.price == D(100)
    gapped = match(sell, bar("95", "96", "94", "95"), BTC, NO_COSTS)
    assert gapped.execution is not None and gapped.execution.price == D(95)


def test_a_triggered_stop_limit_takes_within_its_limit() -> None:
    order = open_order(BUY, STOP_LIMIT, "1", stop_price=D(100), limit_price=D("100.05"))
    untouched = match(order, tick("99.90", "99.99"), BTC, COSTS)
    assert untouched.execution is None and not untouched.order.triggered
    filled = match(order, tick("99.95", "100.00"), BTC, COSTS)
    assert filled.execution is not None
    assert filled.execution.price == D("100.05")  # slipped 100.10, capped at the limit
    assert filled.execution.liquidity is Liquidity.TAKER


def test_a_stop_limit_triggered_beyond_its_limit_rests_as_a_limit_order() -> None:
    order = open_order(SELL, STOP_LIMIT, "1", stop_price=D(100), limit_price=D("99.50"))
    triggered = match(order, tick("99.00", "99.10"), BTC, COSTS)  # bid jumped below the limit
    assert triggered.execution is None
    assert triggered.order.triggered and triggered.order.status is OrderStatus.ACCEPTED
    # It now rests as a sell limit at 99.50: the bid coming back up fills it as a maker.
    assert match(triggered.order, tick("99.49", "99.60"), BTC, COSTS).execution is None
    made = match(triggered.order, tick("99.50", "99.60"), BTC, COSTS)
    assert made.execution is not None
    assert (made.execution.price, made.execution.liquidity) == (D("99.50"), Liquidity.MAKER)


def test_a_stop_limit_on_a_bar() -> None:
    order = open_order(BUY, STOP_LIMIT, "1", stop_price=D(100), limit_price=D(101))
    filled = match(order, bar("99", "102", "98", "101"), BTC, NO_COSTS)
    assert filled.execution is not None and filled.execution.price == D(100)
    gapped = match(order, bar("103", "104", "102", "103"), BTC, NO_COSTS)
    assert gapped.execution is None and gapped.order.triggered


def test_without_a_liquidity_cap_the_whole_remainder_fills() -> None:
    order = record_fill(open_order(BUY, MARKET, "3"), D(1))
    filled = match(order, tick("100", "100"), BTC, NO_COSTS)
    assert filled.execution is not None and filled.execution.quantity == D(2)
    assert filled.order.status is OrderStatus.FILLED


def test_ioc_fills_what_it_can_and_cancels_the_rest() -> None:
    order = open_order(BUY, LIMIT, "1", limit_price=D(100), time_in_force=TimeInForce.IOC)
    partial = match(order, tick("99", "100"), BTC, NO_COSTS, liquidity=D("0.40005"))
    assert partial.execution is not None
    assert partial.execution.quantity == D("0.4")  # whole steps of 0.0001
    assert partial.order.filled_quantity == D("0.4")
    assert partial.order.status is OrderStatus.CANCELED
    full = match(order, tick("99", "100"), BTC, NO_COSTS, liquidity=D(5))
    assert full.execution is not None and full.order.status is OrderStatus.FILLED
    nothing = match(order, tick("100.5", "101"), BTC, NO_COSTS)  # not marketable
    assert nothing.execution is None and nothing.order.status is OrderStatus.CANCELED
    dry = match(order, tick("99", "100"), BTC, NO_COSTS, liquidity=D("0.00001"))
    assert dry.execution is None and dry.order.status is OrderStatus.CANCELED


def test_fok_fills_everything_or_nothing() -> None:
    order = open_order(SELL, MARKET, "1", time_in_force=TimeInForce.FOK)
    short = match(order, tick("100", "101"), BTC, NO_COSTS, liquidity=D("0.9999"))
    assert short.execution is None and short.order.status is OrderStatus.CANCELED
    exact = match(order, tick("100", "101"), BTC, NO_COSTS, liquidity=D(1))
    assert exact.execution is not None and exact.execution.quantity == D(1)
    assert exact.order.status is OrderStatus.FILLED
    limit = open_order(SELL, LIMIT, "1", limit_price=D(102), time_in_force=TimeInForce.FOK)
    unmarketable = match(limit, tick("100", "101"), BTC, NO_COSTS)
    assert unmarketable.execution is None and unmarketable.order.status is OrderStatus.CANCELED


def test_a_gtc_order_keeps_what_the_liquidity_could_not_fill() -> None:
    order = open_order(BUY, MARKET, "1")
    partial = match(order, tick("99", "100"), BTC, NO_COSTS, liquidity=D("0.25"))
    assert partial.execution is not None and partial.execution.quantity == D("0.25")
    assert partial.order.status is OrderStatus.PARTIALLY_FILLED
    rest = match(partial.order, tick("99", "100"), BTC, NO_COSTS)
    assert rest.execution is not None and rest.execution.quantity == D("0.75")
    assert rest.order.status is OrderStatus.FILLED
    none = match(order, tick("99", "100"), BTC, NO_COSTS, liquidity=D(0))
    assert none.execution is None and none.order == order


def test_only_open_orders_match() -> None:
    for order in (
        Order(BUY, MARKET, D(1)),
        cancel(open_order(BUY, MARKET)),
        record_fill(open_order(BUY, MARKET), D(1)),
    ):
        with pytest.raises(OrderNotOpen):
            match(order, tick("100", "100"), BTC, NO_COSTS)


# --------------------------------------------------------------------------- brackets


def filled_parent(side: OrderSide = BUY, quantity: str = "2") -> Order:
    parent = open_order(side, MARKET, quantity, stop_loss=D(95), take_profit=D(110))
    if side is SELL:
        parent = open_order(side, MARKET, quantity, stop_loss=D(110), take_profit=D(95))
    return record_fill(parent, D(quantity))


def test_a_filled_parent_gives_its_two_children() -> None:
    children = bracket_children(filled_parent())
    assert children.stop_loss == Order(SELL, STOP, D(2), stop_price=D(95))
    assert children.take_profit == Order(SELL, LIMIT, D(2), limit_price=D(110))
    short = bracket_children(filled_parent(SELL))
    assert short.stop_loss == Order(BUY, STOP, D(2), stop_price=D(110))
    assert short.take_profit == Order(BUY, LIMIT, D(2), limit_price=D(95))
    # An IOC parent canceled after a partial fill protects what filled.
    partial = cancel(record_fill(open_order(BUY, MARKET, "2", stop_loss=D(95)), D("0.5")))
    assert bracket_children(partial) == type(children)(
        Order(SELL, STOP, D("0.5"), stop_price=D(95)), None
    )


def test_children_wait_for_the_parent_to_fill() -> None:
    with pytest.raises(ValueError, match="filled"):
        bracket_children(open_order(BUY, MARKET, stop_loss=D(95)))
    with pytest.raises(ValueError, match="filled"):
        bracket_children(cancel(open_order(BUY, MARKET, stop_loss=D(95))))


def children() -> tuple[Order, Order]:
    both = bracket_children(filled_parent())
    assert both.stop_loss is not None and both.take_profit is not None
    return accept(both.stop_loss), accept(both.take_profit)


def test_one_child_filling_cancels_the_other() -> None:
    stop_loss, take_profit = children()
    filled = record_fill(take_profit, D(2))
    assert oco_after_fill(filled, stop_loss).status is OrderStatus.CANCELED
    # A partial fill leaves the sibling covering only what is still open.
    partly = record_fill(take_profit, D("0.5"))
    shrunk = oco_after_fill(partly, stop_loss)
    assert (shrunk.status, shrunk.quantity) == (OrderStatus.ACCEPTED, D("1.5"))
    # A child canceled after a partial fill leaves its sibling protecting the rest.
    assert oco_after_fill(cancel(partly), stop_loss).quantity == D("1.5")
    # A sibling already done stays as it is.
    done = cancel(stop_loss)
    assert oco_after_fill(filled, done) == done


def test_a_tick_fills_at_most_one_child() -> None:
    stop_loss, take_profit = children()
    stop_match, target_match = match_bracket(
        stop_loss, take_profit, tick("94.90", "95.00"), BTC, NO_COSTS
    )
    assert stop_match.execution is not None and stop_match.execution.price == D("94.90")
    assert target_match.execution is None
    assert target_match.order.status is OrderStatus.CANCELED
    stop_match, target_match = match_bracket(
        stop_loss, take_profit, tick("110.00", "110.10"), BTC, NO_COSTS
    )
    assert target_match.execution is not None and target_match.execution.price == D(110)
    assert stop_match.order.status is OrderStatus.CANCELED
    quiet = match_bracket(stop_loss, take_profit, tick("100", "100.1"), BTC, NO_COSTS)
    assert quiet == (type(quiet[0])(stop_loss), type(quiet[0])(take_profit))


@pytest.mark.parametrize(
    ("rule", "winner", "price"),
    [
        (IntrabarRule.WORST, "stop_loss", D(95)),
        (IntrabarRule.BEST, "take_profit", D(110)),
        (IntrabarRule.NEAREST_TO_OPEN, "take_profit", D(110)),  # opened at 108
    ],
)
def test_a_bar_reaching_both_levels_follows_the_intrabar_rule(
    rule: IntrabarRule, winner: str, price: D
) -> None:
    stop_loss, take_profit = children()
    model = FillModel(intrabar_rule=rule)
    stop_match, target_match = match_bracket(
        stop_loss, take_profit, bar("108", "111", "94", "100"), BTC, model
    )
    won, lost = (stop_match, target_match) if winner == "stop_loss" else (target_match, stop_match)
    assert won.execution is not None and won.execution.price == price
    assert won.order.status is OrderStatus.FILLED
    assert lost.execution is None and lost.order.status is OrderStatus.CANCELED


def test_a_bar_gapping_through_the_stop_fills_it_at_the_open() -> None:
    stop_loss, take_profit = children()
    stop_match, target_match = match_bracket(
        stop_loss, take_profit, bar("90", "112", "89", "100"), BTC, NO_COSTS
    )
    assert stop_match.execution is not None and stop_match.execution.price == D(90)
    assert target_match.order.status is OrderStatus.CANCELED
    quiet = match_bracket(stop_loss, take_profit, bar("100", "105", "96", "101"), BTC, NO_COSTS)
    assert all(m.execution is None and m.order.status is OrderStatus.ACCEPTED for m in quiet)
