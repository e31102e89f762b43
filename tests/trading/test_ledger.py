"""The ledger (pure): reservations, releases, settlement, short collateral; and one paper account
driven through random orders, fills, cancels and price moves, whose books must always balance."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal as D

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tradeos.market.providers.base import AssetClass, InstrumentSpec, Tick
from tradeos.trading.errors import InsufficientFunds, LedgerError, ShortSaleNotAllowed
from tradeos.trading.fill_model import FillModel
from tradeos.trading.ledger import (
    Balance,
    fill_cash_delta,
    opening_quantity,
    order_reservation,
    reservation_release,
    settle_fill,
    short_collateral,
)
from tradeos.trading.orders import (
    Order,
    OrderRequest,
    OrderSide,
    OrderType,
    TimeInForce,
    accept,
    cancel,
    match,
    reject,
    validate_order,
)
from tradeos.trading.positions import (
    Fill,
    Position,
    PositionState,
    apply,
    apply_fill_once,
    market_value,
    unrealized_pnl,
)

BUY, SELL = OrderSide.BUY, OrderSide.SELL
COSTS = FillModel(taker_fee_rate=D("0.001"), maker_fee_rate=D("0.0005"), slippage_bps=D(10))


# --------------------------------------------------------------------------- balance


def test_a_balance_cannot_be_built_broken() -> None:
    assert Balance(D(100), D(30)).available == D(70)
    assert Balance(D(100), D(100)).available == 0
    with pytest.raises(LedgerError, match="negative"):
        Balance(D(100), D(-1))
    with pytest.raises(LedgerError, match="exceeds"):
        Balance(D(100), D("100.01"))
    with pytest.raises(LedgerError, match="finite"):
        Balance(D("NaN"))


def test_reserving_up_to_what_is_available() -> None:
    balance = Balance(D(100))
    balance = balance.reserve(D(60))
    assert (balance.total, balance.reserved, balance.available) == (D(100), D(60), D(40))
    assert balance.reserve(D(40)).available == 0  # all of it: allowed
    with pytest.raises(InsufficientFunds) as refused:
        balance.reserve(D("40.00000001"))
    assert (refused.value.needed, refused.value.available) == (D("40.00000001"), D(40))
    with pytest.raises(LedgerError):
        balance.reserve(D(-1))


def test_releasing_at_most_what_is_reserved() -> None:
    balance = Balance(D(100), D(60))
    assert balance.release(D(25)) == Balance(D(100), D(35))
    assert balance.release(D(60)) == Balance(D(100), D(0))
    with pytest.raises(LedgerError, match="only 60 is reserved"):
        balance.release(D("60.01"))
    with pytest.raises(LedgerError):
        balance.release(D(-1))


def test_settling_a_buy_and_a_sell() -> None:
    balance = Balance(D(1000), D("200.4002"))  # a buy of 2 at 100 reserved
    paid = balance.settle(D("200.4002"), fill_cash_delta(BUY, D(2), D("100.10"), D("0.2002")))
    assert paid == Balance(D("799.5998"), D(0))
    received = paid.settle(D(0), fill_cash_delta(SELL, D(2), D(110), D("0.22")))
    assert received == Balance(D("1019.3798"), D(0))


def test_a_fill_costing_more_than_its_reservation_takes_the_rest_from_available() -> None:
    balance = Balance(D(300), D(100))
    settled = balance.settle(D(100), D(-250))
    assert settled == Balance(D(50), D(0))
    # Exactly everything available: allowed; a cent more: refused, nothing changes.
    assert balance.settle(D(100), D(-300)) == Balance(D(0), D(0))
    with pytest.raises(InsufficientFunds) as refused:
        balance.settle(D(100), D("-300.01"))
    assert (refused.value.needed, refused.value.available) == (D("200.01"), D(200))
    with pytest.raises(LedgerError, match="cannot release"):
        balance.settle(D(101), D(0))


def test_deposits_and_withdrawals() -> None:
    balance = Balance(D(100), D(40)).deposit(D(50))
    assert balance == Balance(D(150), D(40))
    assert balance.withdraw(D(110)) == Balance(D(40), D(40))
    with pytest.raises(InsufficientFunds):
        balance.withdraw(D("110.01"))
    with pytest.raises(LedgerError):
        balance.deposit(D(-5))


# --------------------------------------------------------------------------- reservations


def test_a_buy_reserves_its_slipped_notional_and_the_higher_fee() -> None:
    # 2 × 100 × 1.001 = 200.2; fee at the higher rate (0.1 %) = 0.2002.
    assert order_reservation(BUY, D(2), D(100), COSTS) == D("200.4002")
    no_costs = FillModel()
    assert order_reservation(BUY, D(2), D(100), no_costs) == D(200)
    minimum = FillModel(taker_fee_rate=D("0.001"), min_fee=D(5), fixed_fee=D(1))
    assert order_reservation(BUY, D(2), D(100), minimum) == D(205)
    # Rounded up to 8 places: 0.000001 × 0.333 × 1.001 = 0.000000333333
    assert order_reservation(BUY, D("0.000001"), D("0.333"), COSTS) == D("0.00000034")


def test_only_the_part_of_an_order_that_grows_the_position_reserves() -> None:
    assert opening_quantity(SELL, D(3), D(5)) == 0  # closes part of a long
    assert opening_quantity(SELL, D(8), D(5)) == D(3)  # crosses: 3 go short
    assert opening_quantity(BUY, D(3), D(-2)) == D(1)
    assert opening_quantity(BUY, D(3), D(4)) == D(3)
    assert order_reservation(SELL, D(5), D(100), COSTS, position_quantity=D(5)) == 0
    assert order_reservation(BUY, D(2), D(100), COSTS, position_quantity=D(-2)) == 0
    assert order_reservation(BUY, D(4), D(100), COSTS, position_quantity=D(-2)) == D("200.4002")


def test_a_short_sale_needs_the_accounts_permission() -> None:
    with pytest.raises(ShortSaleNotAllowed) as refused:
        order_reservation(SELL, D(8), D(100), COSTS, position_quantity=D(5))
    assert refused.value.short_quantity == D(3)
    # Permitted, its margin is reserved like a buy of the same size.
    assert order_reservation(
        SELL, D(8), D(100), COSTS, position_quantity=D(6), allow_short=True
    ) == order_reservation(BUY, D(2), D(100), COSTS)


def test_fills_release_their_share_and_the_last_fill_the_rest() -> None:
    assert reservation_release(D(100), D(3), D(1)) == D("33.33333333")  # rounded down
    assert reservation_release(D("66.66666667"), D(2), D(2)) == D("66.66666667")
    assert reservation_release(D(0), D(2), D(1)) == 0
    with pytest.raises(LedgerError):
        reservation_release(D(100), D(2), D(3))
    with pytest.raises(LedgerError):
        reservation_release(D(100), D(2), D(0))


def test_an_open_short_keeps_its_proceeds_and_its_margin_reserved() -> None:
    assert short_collateral(Position("X", D(2), D(200))) == 0
    assert short_collateral(Position("X")) == 0
    assert short_collateral(Position("X", D(-2), D(-200))) == D(400)


def test_a_short_from_sale_to_cover() -> None:
    balance = Balance(D(1000))
    reserved = order_reservation(SELL, D(2), D(100), FillModel(), allow_short=True)
    balance = balance.reserve(reserved)
    assert balance == Balance(D(1000), D(200))
    short, _, _ = apply(Position("X"), Fill("s", "X", SELL, D(2), D(100), datetime.now(UTC)))
    balance = settle_fill(
        balance,
        released=reserved,
        side=SELL,
        quantity=D(2),
        price=D(100),
        fee=D(1),
        collateral_after=short_collateral(short),
    )
    # Proceeds in (+200 − 1), 400 reserved: the proceeds and as much of the trader's cash.
    assert balance == Balance(D(1199), D(400))
    flat, _, _ = apply(short, Fill("c", "X", BUY, D(2), D(90), datetime.now(UTC)))
    balance = settle_fill(
        balance,
        released=D(0),
        side=BUY,
        quantity=D(2),
        price=D(90),
        fee=D(1),
        collateral_before=short_collateral(short),
        collateral_after=short_collateral(flat),
    )
    assert balance == Balance(D(1018), D(0))  # 1000 + 20 of profit − 2 of fees


def test_a_cover_beyond_the_collateral_and_the_cash_is_refused() -> None:
    balance = Balance(D(400), D(400))  # a short of 2 at 100, nothing else available
    with pytest.raises(InsufficientFunds):
        settle_fill(
            balance,
            released=D(0),
            side=BUY,
            quantity=D(2),
            price=D("200.01"),
            fee=D(0),
            collateral_before=D(400),
        )
    at_the_limit = settle_fill(
        balance, released=D(0), side=BUY, quantity=D(2), price=D(200), fee=D(0),
        collateral_before=D(400),
    )  # fmt: skip
    assert at_the_limit == Balance(D(0), D(0))


# --------------------------------------------------------------------------- the account

INSTRUMENT = InstrumentSpec(
    symbol="SIM-USD",
    name="Sim",
    asset_class=AssetClass.CRYPTO,
    base="SIM",
    quote="USD",
    tick_size=D("0.01"),
    quantity_step=D("0.001"),
)
START = D(10_000)
ACCOUNT_MODEL = FillModel(
    taker_fee_rate=D("0.001"),
    maker_fee_rate=D("0.0005"),
    fixed_fee=D("0.01"),
    min_fee=D("0.05"),
    slippage_bps=D(5),
)


@dataclass
class Resting:
    order: Order
    reserved: D  # what is still reserved for it


@dataclass
class Account:
    """A miniature paper engine built only from the pure modules, the way the service uses
    them: reserve on acceptance, match, settle each fill once, release on cancel."""

    allow_short: bool
    balance: Balance = field(default_factory=lambda: Balance(START))
    state: PositionState = field(default_factory=lambda: PositionState(Position("SIM-USD")))
    orders: list[Resting] = field(default_factory=list)
    fills: list[Fill] = field(default_factory=list)
    cash_moves: list[D] = field(default_factory=list)
    mid: D = D(100)
    spread: D = D("0.02")

    @property
    def tick(self) -> Tick:
        half = self.spread / 2
        return Tick("SIM-USD", datetime.now(UTC), self.mid, self.mid - half, self.mid + half)

    def place(
        self, side: OrderSide, kind: OrderType, quantity: D, offset: D, tif: TimeInForce
    ) -> None:
        prices: dict[str, D] = {}
        # Limits rest below a buyer's market and above a seller's; stops the other way round.
        if kind is OrderType.LIMIT:
            prices["limit_price"] = max(self.mid - side.sign * offset, D("0.01"))
        elif kind is OrderType.STOP:
            prices["stop_price"] = max(self.mid + side.sign * offset, D("0.01"))
        if tif in (TimeInForce.IOC, TimeInForce.FOK) and kind is OrderType.STOP:
            tif = TimeInForce.GTC
        quote = self.tick
        reference = quote.ask if side is BUY else quote.bid
        request = OrderRequest(side, kind, quantity=quantity, time_in_force=tif, **prices)
        order = validate_order(request, INSTRUMENT, reference)
        price = order.limit_price or order.stop_price or reference
        try:
            reserved = order_reservation(
                side,
                quantity,
                price,
                ACCOUNT_MODEL,
                position_quantity=self.state.position.quantity,
                allow_short=self.allow_short,
            )
            self.balance = self.balance.reserve(reserved)
        except (InsufficientFunds, ShortSaleNotAllowed):
            assert reject(order).status == "rejected"
            return
        resting = Resting(accept(order), reserved)
        self.orders.append(resting)
        self.match(resting, on_arrival=True)

    def move(self, mid: D, spread: D) -> None:
        self.mid, self.spread = mid, spread
        for resting in list(self.orders):
            self.match(resting, on_arrival=False)

    def cancel(self, index: int) -> None:
        if self.orders:
            resting = self.orders[index % len(self.orders)]
            self.close(resting, cancel(resting.order))

    def match(self, resting: Resting, *, on_arrival: bool) -> None:
        outcome = match(resting.order, self.tick, INSTRUMENT, ACCOUNT_MODEL, on_arrival=on_arrival)
        execution = outcome.execution
        if execution is not None:
            fill = Fill(
                f"fill-{len(self.fills)}",
                "SIM-USD",
                resting.order.side,
                execution.quantity,
                execution.price,
                datetime.now(UTC),
                execution.fee,
            )
            released = reservation_release(
                resting.reserved, resting.order.remaining_quantity, execution.quantity
            )
            if not self.book(fill, released):
                self.close(resting, cancel(resting.order))  # cannot pay: canceled, not filled
                return
            resting.reserved -= released
        resting.order = outcome.order
        if not outcome.order.is_open:
            self.close(resting, outcome.order)

    def book(self, fill: Fill, released: D) -> bool:
        """Settle and apply one fill, once. False: the account cannot pay for it."""
        state, effect = apply_fill_once(self.state, fill)
        if not effect.applied:
            return True
        try:
            self.balance = settle_fill(
                self.balance,
                released=released,
                side=fill.side,
                quantity=fill.quantity,
                price=fill.price,
                fee=fill.fee,
                collateral_before=short_collateral(self.state.position),
                collateral_after=short_collateral(state.position),
            )
        except InsufficientFunds:
            return False
        self.state = state
        self.fills.append(fill)
        self.cash_moves.append(fill_cash_delta(fill.side, fill.quantity, fill.price, fill.fee))
        return True

    def close(self, resting: Resting, order: Order) -> None:
        self.balance = self.balance.release(resting.reserved)
        self.orders.remove(resting)

    def check(self) -> None:
        balance, position = self.balance, self.state.position
        assert balance.reserved >= 0 and balance.available >= 0
        assert balance.total == balance.reserved + balance.available
        # Reserved is exactly what open orders hold plus the short's collateral.
        held = sum((r.reserved for r in self.orders), D(0)) + short_collateral(position)
        assert balance.reserved == held
        assert balance.total == START + sum(self.cash_moves, D(0))
        assert position.quantity == sum((f.signed_quantity for f in self.fills), D(0))
        assert position.fees_paid == sum((f.fee for f in self.fills), D(0))
        # Cash + position value = start + realized + unrealized − fees, exactly.
        mark = self.mid
        assert balance.total + market_value(position, mark) == (
            START + position.realized_pnl + unrealized_pnl(position, mark) - position.fees_paid
        )
        if not self.allow_short:
            assert position.quantity >= 0


actions = st.one_of(
    st.tuples(
        st.just("place"),
        st.sampled_from([BUY, SELL]),
        st.sampled_from([OrderType.MARKET, OrderType.LIMIT, OrderType.STOP]),
        st.integers(min_value=1, max_value=120_000).map(lambda n: D(n) / 1000),
        st.integers(min_value=0, max_value=300).map(lambda n: D(n) / 100),
        st.sampled_from(list(TimeInForce)),
    ),
    st.tuples(
        st.just("move"),
        # Mostly small steps; sometimes a gap of up to ±60 %.
        st.one_of(
            st.integers(min_value=-300, max_value=300).map(lambda n: D(n) / 100),
            st.integers(min_value=-60, max_value=60).map(lambda n: D(n)),
        ),
        st.integers(min_value=0, max_value=10).map(lambda n: D(2 * n) / 100),
    ),
    st.tuples(st.just("cancel"), st.integers(min_value=0, max_value=10)),
    st.tuples(st.just("replay"), st.integers(min_value=0, max_value=100)),
)


@settings(max_examples=200, deadline=None)
@given(st.lists(actions, min_size=15, max_size=60), st.booleans())
def test_the_books_of_a_paper_account_always_balance(
    script: list[tuple[object, ...]], allow_short: bool
) -> None:
    account = Account(allow_short)
    for action in script:
        before = (account.balance, account.state)
        match action:
            case ("place", side, kind, quantity, offset, tif):
                account.place(side, kind, quantity, offset, tif)  # type: ignore[arg-type]
            case ("move", change, spread):
                mid = max(account.mid + change, D(5))  # type: ignore[operator]
                account.move(mid, spread)  # type: ignore[arg-type]
            case ("cancel", index):
                account.cancel(index)  # type: ignore[arg-type]
            case ("replay", index) if account.fills:
                fill = account.fills[index % len(account.fills)]  # type: ignore[operator]
                assert account.book(fill, D(0))
                assert (account.balance, account.state) == before  # applied once: no change
        account.check()
