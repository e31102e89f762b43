"""Paper trading use cases: trading accounts, orders and their fills, positions.

The hard logic is pure (orders.py, positions.py, ledger.py, fill_model.py, risk/rules.py); this
module loads rows, calls it, and writes back what it decided, inside the request's unit of work.

Placing an order (`place_order`):

1. The instrument and its current tick come from the market service, before any lock is taken.
2. The account row is locked (`SELECT … FOR UPDATE` on PostgreSQL; SQLite runs one writer at a
   time, its write transactions begin IMMEDIATE), so concurrent orders on one account are
   serialized and nothing spends `available` twice.
3. A `client_order_id` already used on the account returns the first order (`created=False`).
4. `orders.validate_order` (422 naming the fields), the ledger's reservation (a short sale in an
   account without `allow_short` is a 422), then `risk.rules.check_order` with the account's
   risk profile (422 naming the rule, its limit and the order's value).
5. The order is accepted and its reservation taken; then it is matched once against the tick
   (`orders.match(on_arrival=True)`): a market order, a marketable limit order and a stop whose
   price is already reached fill at once, in this same transaction (fill row, order, position,
   balance). Others rest, accepted (a day order until the next 00:00 UTC, `expires_at`); the
   execution engine (execution.py) fills them later, on price events, with `book_execution`.

A bracket order (`stop_loss` / `take_profit`) gets its children when it stops filling with a
filled quantity (`open_bracket_children`: filled, or canceled / expired after a partial fill);
they are one-cancels-other, matched as a pair by the engine. `amend_order` (PATCH) changes an
open order under the same checks as placing it.

A refused order is not stored: the 422 rolls the unit of work back. Its `order.rejected` event is
published at once (there is no commit to wait for).

What the risk rules are told: equity is cash plus the positions at their last price; today's
trades are the orders placed since 00:00 UTC (or the reset, if later); the day-start equity is
the account's equity when its UTC day started (trading/state.py: the first order, state change
or 00:00 UTC job of the day, or the first after a reset); today's loss is the day-start equity
less the equity now (positive when losing). After each booked fill, a loss past a daily loss
limit halts the account until the next UTC day (trading/state.py).

Resetting a paper account cancels its open orders, deletes its positions and sets the cash back to
the starting balance; orders and fills stay as history. `reset_at` marks where the new start is.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from decimal import Decimal, localcontext
from typing import Any, Final

import structlog
from sqlalchemy import Select, bindparam, delete, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from tradeos.config import Settings, get_settings
from tradeos.core.db import strip_trailing_zeros, utcnow
from tradeos.core.errors import Conflict, NotFound, TradeOSError, ValidationFailed, field_error
from tradeos.core.events import EventBus, publish_after_commit
from tradeos.core.fields import decimal_text
from tradeos.core.pagination import Sorting
from tradeos.market import service as market_service
from tradeos.market.providers.base import AssetClass, InstrumentSpec, MarketProvider, Tick
from tradeos.notifications import service as notifications
from tradeos.risk import rules
from tradeos.risk import service as risk_service
from tradeos.trading import ledger, orders, positions
from tradeos.trading import state as trading_state
from tradeos.trading.errors import InsufficientFunds, OrderInvalid, ShortSaleNotAllowed
from tradeos.trading.fill_model import FillModel
from tradeos.trading.models import Fill, Order, Position, TradingAccount
from tradeos.trading.orders import (
    ARITHMETIC,
    ZERO,
    OrderSide,
    OrderStatus,
    OrderType,
    TimeInForce,
)
from tradeos.trading.round_trips import record_round_trip
from tradeos.trading.schemas import (
    DEFAULT_ACCOUNT_NAME,
    DEFAULT_STARTING_BALANCE,
    AccountCreate,
    AccountDetailOut,
    AccountOut,
    FillOut,
    OrderAmend,
    OrderCreate,
    OrderDetailOut,
    OrderOut,
    PositionOut,
)

logger = structlog.get_logger("tradeos.trading")

OPEN: Final = tuple(status.value for status in orders.OPEN_STATUSES)


class RiskRefused(ValidationFailed):
    """An order a risk rule refused: the problem names the rule, its limit and the value."""

    slug = "risk-rule-violated"
    title = "Order refused by a risk rule"


def orders_channel(user_id: int) -> str:
    return f"user:{user_id}:orders"


def positions_channel(user_id: int) -> str:
    return f"user:{user_id}:positions"


def fill_model(settings: Settings) -> FillModel:
    """The paper accounts' fill model: the settings' slippage and fees (percent -> fraction)."""
    return FillModel(
        taker_fee_rate=settings.paper_taker_fee_percent / 100,
        maker_fee_rate=settings.paper_maker_fee_percent / 100,
        min_fee=settings.paper_min_fee,
        slippage_bps=settings.paper_slippage_bps,
    )


# -- accounts ---------------------------------------------------------------------------------


async def create_account(
    session: AsyncSession, user_id: int, body: AccountCreate
) -> TradingAccount:
    """A new paper account; 409 when the user has an account of that name."""
    taken = await session.scalar(
        select(TradingAccount.id).where(
            TradingAccount.owner_id == user_id, TradingAccount.name == body.name
        )
    )
    if taken is not None:
        raise Conflict(f"You already have an account named {body.name!r}.")
    account = TradingAccount(
        owner_id=user_id,
        name=body.name,
        kind=body.kind,
        base_currency=body.base_currency,
        starting_balance=body.starting_balance,
        cash_total=body.starting_balance,
        cash_reserved=ZERO,
        allow_short=body.allow_short,
        trading_state=rules.TradingState.ACTIVE.value,
    )
    try:
        async with session.begin_nested():
            session.add(account)
            await session.flush()
    except IntegrityError:  # the same name created concurrently
        raise Conflict(f"You already have an account named {body.name!r}.") from None
    return account


async def create_default_account(session: AsyncSession, user_id: int) -> TradingAccount:
    """Every new user's "Paper" account with 100,000 USD."""
    return await create_account(
        session,
        user_id,
        AccountCreate(name=DEFAULT_ACCOUNT_NAME, starting_balance=DEFAULT_STARTING_BALANCE),
    )


ACCOUNT_SORT = Sorting(
    {"created": TradingAccount.created_at, "name": TradingAccount.name},
    default="created",
    tie_breaker=TradingAccount.id,
)


def accounts_query(user_id: int) -> Select[TradingAccount]:
    return select(TradingAccount).where(TradingAccount.owner_id == user_id)


# Statements every order runs, built once with bound parameters: building a SQLAlchemy
# expression costs more CPU than running the statement.
_OWN_ACCOUNT: Final = select(TradingAccount).where(
    TradingAccount.id == bindparam("account_id"), TradingAccount.owner_id == bindparam("user_id")
)
# populate_existing: a row read earlier in this unit of work is read again under the lock,
# never taken stale from the session's identity map.
_OWN_ACCOUNT_LOCKED: Final = _OWN_ACCOUNT.with_for_update().execution_options(
    populate_existing=True
)
_ACCOUNT_POSITIONS: Final = (
    select(Position).where(Position.account_id == bindparam("account_id")).order_by(Position.symbol)
)
_ORDERS_SINCE: Final = (
    select(func.count())
    .select_from(Order)
    .where(Order.account_id == bindparam("account_id"), Order.created_at >= bindparam("since"))
)
_ORDERS_SINCE_BUT: Final = _ORDERS_SINCE.where(Order.id != bindparam("amending"))


async def get_account(
    session: AsyncSession, user_id: int, account_id: int, *, lock: bool = False
) -> TradingAccount:
    """The user's account, or 404 (another user's account is 404 too). `lock`: the row is
    locked until the unit of work ends."""
    query = _OWN_ACCOUNT_LOCKED if lock else _OWN_ACCOUNT
    account = await session.scalar(query, {"account_id": account_id, "user_id": user_id})
    if account is None:
        raise NotFound("No such trading account.")
    return account


async def first_account_id(session: AsyncSession, user_id: int) -> int | None:
    """The user's first trading account (their default paper account, unless deleted)."""
    return await session.scalar(
        select(TradingAccount.id)
        .where(TradingAccount.owner_id == user_id)
        .order_by(TradingAccount.id)
        .limit(1)
    )


async def account_or_first(
    session: AsyncSession, user_id: int, account_id: int | None, *, lock: bool = False
) -> TradingAccount:
    """The user's account `account_id` (404 if not theirs), or when None their first one (404
    when they have none): the default of every endpoint whose `account_id` is optional."""
    if account_id is None:
        account_id = await first_account_id(session, user_id)
        if account_id is None:
            raise NotFound("You have no trading account.")
    return await get_account(session, user_id, account_id, lock=lock)


def _balance(account: TradingAccount) -> ledger.Balance:
    return ledger.Balance(account.cash_total, account.cash_reserved)


def account_out(account: TradingAccount) -> AccountOut:
    return AccountOut(**_account_fields(account))


def _account_fields(account: TradingAccount) -> dict[str, Any]:
    return {
        "id": account.id,
        "name": account.name,
        "kind": account.kind,
        "base_currency": account.base_currency,
        "starting_balance": account.starting_balance,
        "allow_short": account.allow_short,
        "trading_state": account.trading_state,
        "cash": account.cash_total,
        "reserved": account.cash_reserved,
        "available": _balance(account).available,
        "created_at": account.created_at,
        "reset_at": account.reset_at,
    }


async def _positions_of(session: AsyncSession, account_id: int) -> list[Position]:
    return list(await session.scalars(_ACCOUNT_POSITIONS, {"account_id": account_id}))


async def _positions_of_symbol(
    session: AsyncSession, account_id: int, symbol: str
) -> list[Position]:
    return list(
        await session.scalars(
            select(Position).where(Position.account_id == account_id, Position.symbol == symbol)
        )
    )


def _position_row(rows: Iterable[Position], symbol: str) -> Position | None:
    return next((row for row in rows if row.symbol == symbol), None)


def _pure(row: Position) -> positions.Position:
    return positions.Position(row.symbol, row.quantity, row.cost, row.realized_pnl, row.fees_paid)


async def mark_prices(
    session: AsyncSession, provider: MarketProvider | None, symbols: Iterable[str]
) -> dict[str, Decimal | None]:
    """The last price of each symbol from the market service; None when it has none now (the
    position is then valued at its cost)."""
    marks: dict[str, Decimal | None] = {}
    for symbol in sorted(set(symbols)):
        try:
            instrument = await market_service.get_instrument(session, symbol)
            _, tick = await market_service.last_tick(session, provider, instrument)
            marks[symbol] = tick.last
        except TradeOSError as exc:
            logger.warning("mark_price_unavailable", symbol=symbol, error=exc.detail)
            marks[symbol] = None
    return marks


@dataclass(frozen=True)
class Valuation:
    equity: Decimal
    market_value: Decimal
    gross_exposure: Decimal
    unrealized_pnl: Decimal
    realized_pnl: Decimal
    fees_paid: Decimal
    margin_used: Decimal
    open_positions: int


def valuation(
    account: TradingAccount, rows: Sequence[Position], marks: Mapping[str, Decimal | None]
) -> Valuation:
    """The account at the marks (a position without a mark counts at its cost)."""
    with localcontext(ARITHMETIC):
        market_value = gross = unrealized = realized = fees = margin = ZERO
        open_count = 0
        for row in rows:
            position = _pure(row)
            mark = marks.get(row.symbol)
            value = position.cost if mark is None else positions.market_value(position, mark)
            market_value += value
            gross += abs(value)
            if mark is not None:
                unrealized += positions.unrealized_pnl(position, mark)
            realized += position.realized_pnl
            fees += position.fees_paid
            margin += ledger.short_collateral(position)
            open_count += not position.is_flat
        return Valuation(
            equity=account.cash_total + market_value,
            market_value=market_value,
            gross_exposure=gross,
            unrealized_pnl=unrealized,
            realized_pnl=realized,
            fees_paid=fees,
            margin_used=margin,
            open_positions=open_count,
        )


async def account_detail(
    session: AsyncSession, provider: MarketProvider | None, user_id: int, account_id: int
) -> AccountDetailOut:
    account = await get_account(session, user_id, account_id)
    rows = await _positions_of(session, account.id)
    marks = await mark_prices(session, provider, (row.symbol for row in rows if row.quantity))
    worth = valuation(account, rows, marks)
    return AccountDetailOut(
        **_account_fields(account),
        equity=worth.equity,
        market_value=worth.market_value,
        unrealized_pnl=worth.unrealized_pnl,
        realized_pnl=worth.realized_pnl,
        fees_paid=worth.fees_paid,
        margin_used=worth.margin_used,
    )


async def reset_account(
    session: AsyncSession, events: EventBus, user_id: int, account_id: int
) -> TradingAccount:
    """Start the paper account over: open orders canceled, positions deleted, cash back to the
    starting balance, trading state active. Orders and fills stay, as history."""
    account = await get_account(session, user_id, account_id, lock=True)
    now = utcnow()
    open_orders = await session.scalars(
        select(Order).where(Order.account_id == account.id, Order.status.in_(OPEN))
    )
    for order in open_orders:
        order.status = orders.transition(OrderStatus(order.status), OrderStatus.CANCELED).value
        order.reserved = ZERO
        order.cancel_reason = "account reset"
        _publish_order(session, events, user_id, "order.canceled", order)
    await session.execute(delete(Position).where(Position.account_id == account.id))
    account.cash_total = account.starting_balance
    account.cash_reserved = ZERO
    account.trading_state = rules.TradingState.ACTIVE.value
    account.reset_at = now
    await session.flush()
    publish_after_commit(
        session,
        events,
        positions_channel(user_id),
        {"event": "positions.reset", "account_id": account.id},
    )
    return account


# -- orders -----------------------------------------------------------------------------------


def order_out(order: Order) -> OrderOut:
    return OrderOut.model_validate(order)


def _publish_order(
    session: AsyncSession, events: EventBus, user_id: int, event: str, order: Order
) -> None:
    publish_after_commit(
        session,
        events,
        orders_channel(user_id),
        {"event": event, "order": order_out(order).model_dump(mode="json")},
    )


def _position_out(
    row: Position, mark: Decimal | None, account_id: int | None = None
) -> PositionOut:
    position = _pure(row)
    return PositionOut(
        account_id=account_id or row.account_id,
        symbol=row.symbol,
        quantity=position.quantity,
        average_entry_price=position.average_price,
        mark_price=mark,
        market_value=None if mark is None else positions.market_value(position, mark),
        cost=position.cost,
        realized_pnl=position.realized_pnl,
        unrealized_pnl=None if mark is None else positions.unrealized_pnl(position, mark),
        fees_paid=position.fees_paid,
        opened_at=row.opened_at,
    )


def _spec(instrument: Any) -> InstrumentSpec:
    return InstrumentSpec(
        symbol=instrument.symbol,
        name=instrument.name,
        asset_class=AssetClass(instrument.asset_class),
        base=instrument.base,
        quote=instrument.quote,
        tick_size=instrument.tick_size,
        quantity_step=instrument.quantity_step,
    )


def _invalid(errors: Iterable[tuple[str, str]], detail: str) -> ValidationFailed:
    return ValidationFailed(
        detail, errors=[field_error(f"body.{field}", message) for field, message in errors]
    )


def _reservation_price(order: orders.Order, tick: Tick) -> Decimal:
    """What the ledger reserves against: the limit, the stop, or the ask / bid."""
    if order.limit_price is not None:
        return order.limit_price
    if order.stop_price is not None:
        return order.stop_price
    return tick.ask if order.side is OrderSide.BUY else tick.bid


async def _find_by_client_id(
    session: AsyncSession, account_id: int, client_order_id: str
) -> Order | None:
    return await session.scalar(
        select(Order).where(
            Order.account_id == account_id, Order.client_order_id == client_order_id
        )
    )


async def _trades_today(
    session: AsyncSession, account: TradingAccount, now: datetime, amending: int | None
) -> int:
    """The orders placed today (since the reset, if later), but the one being amended: a
    change is not another trade."""
    since = now.replace(hour=0, minute=0, second=0, microsecond=0)
    if account.reset_at is not None and account.reset_at > since:
        since = account.reset_at
    parameters: dict[str, Any] = {"account_id": account.id, "since": since}
    query = _ORDERS_SINCE
    if amending is not None:
        query, parameters["amending"] = _ORDERS_SINCE_BUT, amending
    return int(await session.scalar(query, parameters) or 0)


async def place_order(
    session: AsyncSession,
    events: EventBus,
    provider: MarketProvider | None,
    settings: Settings,
    user_id: int,
    body: OrderCreate,
    origin: str = "api",
) -> tuple[Order, bool]:
    """The order placed (see the module's doc), and whether it is new: False when
    `client_order_id` named an order placed before, which is returned as it is. `origin` says
    where it came from ("api", "close", "signal")."""
    if body.client_order_id is not None:  # a retry answers without a price or a lock
        await get_account(session, user_id, body.account_id)
        found = await _find_by_client_id(session, body.account_id, body.client_order_id)
        if found is not None:
            return found, False
    # Without one, the account is read once, locked, below: another user's account is a 404
    # there, after the instrument (which reveals nothing of the account).
    try:
        instrument = await market_service.get_instrument(session, body.symbol)
    except NotFound as exc:
        raise _invalid([("symbol", "no such instrument")], exc.detail) from None
    if instrument.status != "trading":
        status = f"{instrument.symbol} is {instrument.status}"
        raise _invalid([("symbol", status)], f"{status}: it is not trading now.")
    spec = _spec(instrument)
    _, tick = await market_service.last_tick(session, provider, instrument)

    account = await get_account(session, user_id, body.account_id, lock=True)
    await trading_state.start_day(session, events, provider, account)
    if body.client_order_id is not None:  # placed meanwhile, while this request waited
        found = await _find_by_client_id(session, account.id, body.client_order_id)
        if found is not None:
            return found, False

    request = orders.OrderRequest(
        side=body.side,
        type=body.type,
        quantity=body.quantity,
        notional=body.notional,
        limit_price=body.limit_price,
        stop_price=body.stop_price,
        time_in_force=body.time_in_force,
        stop_loss=body.stop_loss,
        take_profit=body.take_profit,
    )
    reference = tick.ask if body.side is OrderSide.BUY else tick.bid
    try:
        order = orders.validate_order(request, spec, reference)
    except OrderInvalid as exc:
        errors = [(error.field, error.message) for error in exc.errors]
        await _publish_rejected(events, user_id, body, str(exc))
        raise _invalid(errors, f"The order is invalid: {exc}") from None

    # Read once under the lock, for the risk rules and for the fill.
    position_rows = await _positions_of(session, account.id)
    position_row = _position_row(position_rows, spec.symbol)
    position_quantity = position_row.quantity if position_row is not None else ZERO
    model = fill_model(settings)
    price = _reservation_price(order, tick)
    try:
        reservation = ledger.order_reservation(
            order.side,
            order.quantity,
            price,
            model,
            position_quantity=position_quantity,
            allow_short=account.allow_short,
        )
    except ShortSaleNotAllowed as exc:
        await _publish_rejected(events, user_id, body, str(exc))
        raise _invalid([("side", str(exc))], "This account does not permit short sales.") from None

    profile = await risk_service.profile_of(session, account.id)
    violations = await _risk_violations(
        session,
        provider,
        account,
        profile,
        position_rows,
        spec,
        order,
        body,
        price,
        reservation,
        position_quantity,
        tick,
    )
    if violations:
        await _publish_rejected(events, user_id, body, violations[0].message)
        raise _risk_refused(violations)

    balance = _balance(account).reserve(reservation)  # risk checked buying power: it fits
    accepted = orders.accept(order)
    row = Order(
        account_id=account.id,
        owner_id=user_id,
        symbol=spec.symbol,
        side=order.side.value,
        type=order.type.value,
        time_in_force=order.time_in_force.value,
        status=accepted.status.value,
        quantity=order.quantity,
        notional=body.notional,
        filled_quantity=ZERO,
        limit_price=order.limit_price,
        stop_price=order.stop_price,
        stop_loss=order.stop_loss,
        take_profit=order.take_profit,
        reserved=reservation,
        fees=ZERO,
        client_order_id=body.client_order_id,
        strategy_id=body.strategy_id,
        signal_id=body.signal_id,
        expires_at=_day_end(order),
        origin=origin,
    )
    if body.client_order_id is None:  # nothing can collide: no savepoint needed
        session.add(row)
        await session.flush()
    else:
        try:
            async with session.begin_nested():
                session.add(row)
                await session.flush()
        except IntegrityError:
            # The same client order id, placed by a request that committed after ours looked.
            found = await _find_by_client_id(session, account.id, body.client_order_id)
            if found is None:
                raise
            return found, False
    account.cash_total, account.cash_reserved = balance.total, balance.reserved
    _publish_order(session, events, user_id, "order.accepted", row)

    result = orders.match(accepted, tick, spec, model, on_arrival=True)
    if result.execution is not None:
        await book_execution(
            session,
            events,
            model,
            account,
            row,
            accepted,
            result,
            tick.time,
            new_order=True,
            position_rows=position_rows,
            profile=profile,
        )
    elif result.order.status is OrderStatus.CANCELED:  # an IOC / FOK that could not fill
        _close_unfilled(row, account, "not marketable on arrival")
        _publish_order(session, events, user_id, "order.canceled", row)
    else:
        row.triggered = result.order.triggered
    await open_bracket_children(session, events, model, account, row)
    await session.flush()
    return row, True


def _text(value: Decimal | str) -> str:
    """A decimal as the API writes it, without trailing zeros: `1001.5005`, `5`."""
    return value if isinstance(value, str) else decimal_text(strip_trailing_zeros(value))


async def _publish_rejected(events: EventBus, user_id: int, body: OrderCreate, reason: str) -> None:
    # A refused order is not stored: there is no commit to wait for.
    payload = {
        "event": "order.rejected",
        "order": {
            **body.model_dump(mode="json"),
            "status": OrderStatus.REJECTED.value,
        },
        "reason": reason[:500],
    }
    try:
        await events.publish(orders_channel(user_id), payload)
    except Exception as exc:  # the refusal stands whether or not anyone heard of it
        logger.error("order_rejected_event_failed", error=repr(exc))


def _risk_refused(violations: Sequence[rules.RiskViolation]) -> RiskRefused:
    """The 422 naming the first rule refused, its limit and the order's value."""
    first = violations[0]
    return RiskRefused(
        f"Refused by the {first.rule} rule: {first.message}.",
        extra={
            "rule": first.rule,
            "limit": _text(first.limit),
            "value": _text(first.value),
            "violations": [
                {
                    "rule": v.rule,
                    "limit": _text(v.limit),
                    "value": _text(v.value),
                    "message": v.message,
                }
                for v in violations
            ],
        },
    )


async def _risk_violations(
    session: AsyncSession,
    provider: MarketProvider | None,
    account: TradingAccount,
    profile: rules.RiskProfile,
    rows: list[Position],
    spec: InstrumentSpec,
    order: orders.Order,
    body: OrderCreate,
    price: Decimal,
    reservation: Decimal,
    position_quantity: Decimal,
    tick: Tick,
    amending: int | None = None,
) -> list[rules.RiskViolation]:
    """What the account's risk `profile` refuses of the order (see the module's doc), given
    its position `rows` (read under the lock); `amending` names the stored order a PATCH
    changes."""
    now = utcnow()
    others = [row.symbol for row in rows if row.quantity and row.symbol != spec.symbol]
    marks = await mark_prices(session, provider, others)
    marks[spec.symbol] = tick.last
    worth = valuation(account, rows, marks)
    # Today's loss, positive when losing: the equity at the start of the UTC day (kept by
    # trading/state.py, set when the account was locked) less the equity now.
    day_start_equity = account.day_start_equity
    if day_start_equity is None:
        day_start_equity = worth.equity
    with localcontext(ARITHMETIC):
        day_loss = day_start_equity - worth.equity
    context = rules.OrderContext(
        side=order.side,
        quantity=order.quantity,
        reference_price=price,
        symbol=spec.symbol,
        asset_class=spec.asset_class,
        equity=worth.equity,
        available_cash=_balance(account).available,
        stop_loss=body.stop_loss,
        position_quantity=position_quantity,
        open_positions=worth.open_positions,
        day_loss=day_loss,
        day_start_equity=day_start_equity,
        trades_today=await _trades_today(session, account, now, amending),
        gross_exposure=worth.gross_exposure,
        trading_state=rules.TradingState(account.trading_state),
        order_cost=reservation,
    )
    return rules.check_order(profile, context)


def _release(row: Order, account: TradingAccount) -> None:
    """Give back to the account what the order still reserves."""
    released = _balance(account).release(row.reserved)
    account.cash_total, account.cash_reserved = released.total, released.reserved
    row.reserved = ZERO


def _close_unfilled(row: Order, account: TradingAccount, reason: str) -> None:
    """Cancel the rest of an order and give back what it still reserves."""
    row.status = orders.transition(OrderStatus(row.status), OrderStatus.CANCELED).value
    row.cancel_reason = reason
    _release(row, account)


async def book_execution(
    session: AsyncSession,
    events: EventBus,
    model: FillModel,
    account: TradingAccount,
    row: Order,
    before: orders.Order,
    result: orders.Match,
    time: datetime,
    *,
    new_order: bool = False,
    position_rows: list[Position] | None = None,
    profile: rules.RiskProfile | None = None,
) -> bool:
    """Book the fill `orders.match` decided for the order `before` (the order as matched):
    fill row, order, position and balance, in this transaction, the account row locked. A
    fill the account cannot pay (the price moved past the reservation) cancels the order.

    The fill id is the order and the quantity filled before it, so the same match booked
    twice (a retry, or two processes matching one order) makes the same id: the unique fill
    id lets it apply once. `new_order`: the order was stored by this unit of work, so no
    other can have booked a fill of it, and that check is skipped. What the caller already
    read under the lock is not read again: the account's `position_rows`, its risk
    `profile`. Returns whether the fill was booked."""
    execution = result.execution
    assert execution is not None
    fill_id = f"paper:{row.id}:{_text(before.filled_quantity)}"
    if not new_order and await session.scalar(select(Fill.id).where(Fill.fill_id == fill_id)):
        logger.info("fill_seen_twice", fill_id=fill_id)
        return False
    if position_rows is None:
        position_rows = await _positions_of_symbol(session, account.id, row.symbol)
    position_row = _position_row(position_rows, row.symbol)
    current = _pure(position_row) if position_row is not None else positions.Position(row.symbol)
    fill = positions.Fill(
        fill_id=fill_id,
        symbol=row.symbol,
        side=OrderSide(row.side),
        quantity=execution.quantity,
        price=execution.price,
        time=time,
        fee=execution.fee,
        strategy=row.strategy_id,
    )
    state, effect = positions.apply_fill_once(positions.PositionState(current), fill)
    released = ledger.reservation_release(
        row.reserved, before.remaining_quantity, execution.quantity
    )
    try:
        balance = ledger.settle_fill(
            _balance(account),
            released=released,
            side=fill.side,
            quantity=fill.quantity,
            price=fill.price,
            fee=fill.fee,
            collateral_before=ledger.short_collateral(current),
            collateral_after=ledger.short_collateral(state.position),
        )
    except InsufficientFunds as exc:
        _close_unfilled(row, account, f"cannot be paid: {exc}")
        _publish_order(session, events, row.owner_id, "order.canceled", row)
        return False
    fill_row = Fill(
        fill_id=fill.fill_id,
        order_id=row.id,
        account_id=account.id,
        symbol=fill.symbol,
        side=fill.side.value,
        quantity=fill.quantity,
        price=fill.price,
        fee=fill.fee,
        liquidity=execution.liquidity.value,
        realized_pnl=effect.realized_pnl,
        time=fill.time,
    )
    if new_order:  # nobody else can know this fill id: written with the rest at the flush
        session.add(fill_row)
    else:
        try:
            async with session.begin_nested():
                session.add(fill_row)
                await session.flush()
        except IntegrityError:  # booked meanwhile by another unit of work: applied once
            logger.info("fill_seen_twice", fill_id=fill.fill_id)
            return False
    account.cash_total, account.cash_reserved = balance.total, balance.reserved
    after = state.position
    if position_row is None:
        position_row = Position(account_id=account.id, symbol=row.symbol)
        session.add(position_row)
        position_rows.append(position_row)
    if current.is_flat or (after.quantity > 0) != (current.quantity > 0):
        position_row.opened_at = None if after.is_flat else fill.time
    elif after.is_flat:
        position_row.opened_at = None
    position_row.quantity = after.quantity
    position_row.cost = after.cost
    position_row.realized_pnl = after.realized_pnl
    position_row.fees_paid = after.fees_paid
    with localcontext(ARITHMETIC):
        filled_before = row.filled_quantity
        filled_after = filled_before + fill.quantity
        average = ((row.average_fill_price or ZERO) * filled_before + fill.notional) / filled_after
    row.average_fill_price = orders.round_to_storage(average)
    row.filled_quantity = result.order.filled_quantity
    row.status = result.order.status.value
    row.triggered = result.order.triggered
    row.fees = row.fees + fill.fee
    row.reserved = row.reserved - released
    if not result.order.is_open and row.reserved:  # the canceled rest of an IOC order
        row.cancel_reason = "the rest of an immediate-or-cancel order"
        _release(row, account)
    await session.flush()
    event = "order.filled" if row.status == OrderStatus.FILLED.value else "order.partially_filled"
    _publish_order(session, events, row.owner_id, event, row)
    publish_after_commit(
        session,
        events,
        positions_channel(row.owner_id),
        {
            "event": "position.changed",
            "position": _position_out(position_row, None, account.id).model_dump(mode="json"),
        },
    )
    verb = "Bought" if fill.side is OrderSide.BUY else "Sold"
    await notifications.notify(
        session,
        events,
        row.owner_id,
        type="order.filled",
        title=f"{verb} {_text(fill.quantity)} {row.symbol} at {_text(fill.price)}"[:200],
        body=f"Order {row.id} filled {_text(fill.quantity)} {row.symbol} at "
        f"{_text(fill.price)}, fee {_text(fill.fee)}.",
        data={"order_id": row.id, "fill_id": fill.fill_id, "account_id": account.id},
    )
    await record_round_trip(session, account, current, after, fill)
    await trading_state.review_after_fill(session, events, account, profile=profile)
    return True


async def _own_order(
    session: AsyncSession, user_id: int, order_id: int, *, lock: bool = False
) -> Order:
    query = select(Order).where(Order.id == order_id, Order.owner_id == user_id)
    if lock:
        query = query.with_for_update().execution_options(populate_existing=True)
    order = await session.scalar(query)
    if order is None:
        raise NotFound("No such order.")
    return order


async def order_detail(session: AsyncSession, user_id: int, order_id: int) -> OrderDetailOut:
    order = await _own_order(session, user_id, order_id)
    fills = await session.scalars(select(Fill).where(Fill.order_id == order.id).order_by(Fill.id))
    return OrderDetailOut(
        **order_out(order).model_dump(), fills=[FillOut.model_validate(f) for f in fills]
    )


async def cancel_order(
    session: AsyncSession,
    events: EventBus,
    user_id: int,
    order_id: int,
    settings: Settings | None = None,
) -> Order:
    """Cancel an open order and release what it reserves; 409 when it is not open."""
    order = await _own_order(session, user_id, order_id)
    # Lock the account first (the order placing path's lock order), then read the order again.
    account = await get_account(session, user_id, order.account_id, lock=True)
    await session.refresh(order)
    if order.status not in OPEN:
        raise Conflict(f"Order {order.id} is {order.status}: only an open order can be canceled.")
    _close_unfilled(order, account, "canceled by the trader")
    await session.flush()
    _publish_order(session, events, user_id, "order.canceled", order)
    # A parent canceled after a partial fill protects what did fill.
    model = fill_model(settings or get_settings())
    await open_bracket_children(session, events, model, account, order)
    return order


def _day_end(order: orders.Order) -> datetime | None:
    """When a day order placed now expires (the next 00:00 UTC); None for the others."""
    if order.time_in_force is not TimeInForce.DAY:
        return None
    return orders.expires_at(utcnow())


def order_state(row: Order) -> orders.Order:
    """The stored order as the pure engine sees it."""
    return orders.Order(
        side=OrderSide(row.side),
        type=OrderType(row.type),
        quantity=row.quantity,
        time_in_force=TimeInForce(row.time_in_force),
        limit_price=row.limit_price,
        stop_price=row.stop_price,
        status=OrderStatus(row.status),
        filled_quantity=row.filled_quantity,
        triggered=row.triggered,
        stop_loss=row.stop_loss,
        take_profit=row.take_profit,
    )


BRACKET_ROLES: Final = ("stop_loss", "take_profit")


async def open_bracket_children(
    session: AsyncSession,
    events: EventBus,
    model: FillModel,
    account: TradingAccount,
    parent: Order,
) -> list[Order]:
    """The stop-loss and take-profit children of a bracket parent that has stopped filling
    with a filled quantity (`orders.bracket_children`), stored, reserved and published once;
    nothing for any other order. The account row is locked by the caller.

    A child closes the position the parent opened, so it usually reserves nothing
    (`ledger.order_reservation` of a reducing order); one that would open a short in an account
    without `allow_short` (the position was closed meanwhile) is stored canceled."""
    if parent.stop_loss is None and parent.take_profit is None:
        return []
    state = order_state(parent)
    if state.status not in orders.TERMINAL_STATUSES or state.filled_quantity <= 0:
        return []
    made = await session.scalar(select(Order.id).where(Order.parent_order_id == parent.id))
    if made is not None:  # made already: a parent closes once, this is a replay
        return []
    children = orders.bracket_children(state)
    position_row = await session.scalar(
        select(Position).where(Position.account_id == account.id, Position.symbol == parent.symbol)
    )
    position_quantity = position_row.quantity if position_row is not None else ZERO
    rows = []
    for role, child in zip(BRACKET_ROLES, (children.stop_loss, children.take_profit), strict=True):
        if child is None:
            continue
        price = child.stop_price if child.stop_price is not None else child.limit_price
        assert price is not None  # bracket children are stop and limit orders
        row = Order(
            account_id=account.id,
            owner_id=parent.owner_id,
            symbol=parent.symbol,
            side=child.side.value,
            type=child.type.value,
            time_in_force=child.time_in_force.value,
            quantity=child.quantity,
            filled_quantity=ZERO,
            limit_price=child.limit_price,
            stop_price=child.stop_price,
            reserved=ZERO,
            fees=ZERO,
            strategy_id=parent.strategy_id,
            signal_id=parent.signal_id,
            origin="bracket",
            parent_order_id=parent.id,
            bracket_role=role,
        )
        try:
            reservation = ledger.order_reservation(
                child.side,
                child.quantity,
                price,
                model,
                position_quantity=position_quantity,
                allow_short=account.allow_short,
            )
            balance = _balance(account).reserve(reservation)
        except (ShortSaleNotAllowed, InsufficientFunds) as exc:
            row.status = orders.cancel(child).status.value
            row.cancel_reason = f"cannot protect the position: {exc}"[:500]
            event = "order.canceled"
        else:
            row.status = orders.accept(child).status.value
            row.reserved = reservation
            account.cash_total, account.cash_reserved = balance.total, balance.reserved
            event = "order.accepted"
        session.add(row)
        await session.flush()
        _publish_order(session, events, parent.owner_id, event, row)
        rows.append(row)
    return rows


async def expire_order(
    session: AsyncSession,
    events: EventBus,
    model: FillModel,
    account: TradingAccount,
    row: Order,
) -> None:
    """End a day order whose UTC day is over: expired, its reservation released, the trader
    told; a bracket parent that partly filled gets its children. The account row is locked."""
    row.status = orders.transition(OrderStatus(row.status), OrderStatus.EXPIRED).value
    row.cancel_reason = "a day order: its UTC day ended"
    _release(row, account)
    await session.flush()
    _publish_order(session, events, row.owner_id, "order.expired", row)
    await notifications.notify(
        session,
        events,
        row.owner_id,
        type="order.expired",
        title=f"Order {row.id} ({row.side} {_text(row.quantity)} {row.symbol}) expired"[:200],
        body=f"Day order {row.id} expired at the end of its UTC day with "
        f"{_text(row.filled_quantity)} of {_text(row.quantity)} {row.symbol} filled.",
        data={"order_id": row.id, "account_id": account.id},
    )
    await open_bracket_children(session, events, model, account, row)


AMENDABLE: Final = ("quantity", "limit_price", "stop_price", "stop_loss", "take_profit")


async def amend_order(
    session: AsyncSession,
    events: EventBus,
    provider: MarketProvider | None,
    settings: Settings,
    user_id: int,
    order_id: int,
    body: OrderAmend,
) -> Order:
    """Change the quantity or prices of an open order (accepted or partially filled): checked
    like a new order (422 naming the fields), its reservation taken again (the old one
    released first) and the risk rules asked again (422 naming the rule, nothing changed);
    404 for another user's order, 409 when it is not open. An order the change makes
    marketable fills at once, as on placement."""
    changes = body.model_dump(exclude_unset=True)
    row = await _own_order(session, user_id, order_id)
    if not changes:
        raise ValidationFailed(
            "Nothing to change.",
            errors=[field_error("body", "give at least one of " + ", ".join(AMENDABLE))],
        )
    instrument = await market_service.get_instrument(session, row.symbol)
    spec = _spec(instrument)
    _, tick = await market_service.last_tick(session, provider, instrument)

    # The placing path's lock order: the account first, then the order read again.
    account = await get_account(session, user_id, row.account_id, lock=True)
    await trading_state.start_day(session, events, provider, account)
    await session.refresh(row)
    if row.status not in OPEN:
        raise Conflict(f"Order {row.id} is {row.status}: only an open order can be changed.")
    current = order_state(row)
    wanted = {field: getattr(row, field) for field in AMENDABLE} | changes
    request = orders.OrderRequest(
        side=current.side,
        type=current.type,
        quantity=wanted["quantity"],
        limit_price=wanted["limit_price"],
        stop_price=wanted["stop_price"],
        time_in_force=current.time_in_force,
        stop_loss=wanted["stop_loss"],
        take_profit=wanted["take_profit"],
    )
    reference = tick.ask if current.side is OrderSide.BUY else tick.bid
    errors = [(e.field, e.message) for e in orders.order_errors(request, spec, reference)]
    quantity = wanted["quantity"]
    if quantity is not None and quantity <= row.filled_quantity:
        errors.append(
            ("quantity", f"must be more than the {_text(row.filled_quantity)} already filled")
        )
    if row.parent_order_id is not None:
        errors += [
            (field, "a bracket child has no bracket of its own")
            for field in ("stop_loss", "take_profit")
            if wanted[field] is not None
        ]
    if errors:
        listed = "; ".join(f"{field}: {message}" for field, message in errors)
        raise _invalid(errors, f"The change is invalid: {listed}")
    amended = replace(
        current,
        quantity=quantity,
        limit_price=request.limit_price,
        stop_price=request.stop_price,
        stop_loss=request.stop_loss,
        take_profit=request.take_profit,
    )

    position_rows = await _positions_of(session, account.id)
    position_row = _position_row(position_rows, spec.symbol)
    position_quantity = position_row.quantity if position_row is not None else ZERO
    model = fill_model(settings)
    price = _reservation_price(amended, tick)
    _release(row, account)  # the old reservation back first: the change is judged without it
    try:
        reservation = ledger.order_reservation(
            amended.side,
            amended.remaining_quantity,
            price,
            model,
            position_quantity=position_quantity,
            allow_short=account.allow_short,
        )
    except ShortSaleNotAllowed as exc:
        refusal = "This account does not permit short sales."
        raise _invalid([("quantity", str(exc))], refusal) from None
    rest = replace(amended, quantity=amended.remaining_quantity, filled_quantity=ZERO)
    as_placed = OrderCreate(
        account_id=account.id,
        symbol=spec.symbol,
        side=rest.side,
        type=rest.type,
        quantity=rest.quantity,
        limit_price=rest.limit_price,
        stop_price=rest.stop_price,
        time_in_force=rest.time_in_force,
        stop_loss=rest.stop_loss,
        take_profit=rest.take_profit,
    )
    profile = await risk_service.profile_of(session, account.id)
    violations = await _risk_violations(
        session,
        provider,
        account,
        profile,
        position_rows,
        spec,
        rest,
        as_placed,
        price,
        reservation,
        position_quantity,
        tick,
        amending=row.id,
    )
    if violations:
        raise _risk_refused(violations)
    try:
        balance = _balance(account).reserve(reservation)
    except InsufficientFunds as exc:  # no buying-power rule in the profile: still never overspent
        raise _invalid([("quantity", str(exc))], f"The change cannot be paid: {exc}") from None
    account.cash_total, account.cash_reserved = balance.total, balance.reserved
    row.quantity = amended.quantity
    row.limit_price = amended.limit_price
    row.stop_price = amended.stop_price
    row.stop_loss = amended.stop_loss
    row.take_profit = amended.take_profit
    row.reserved = reservation
    await session.flush()
    _publish_order(session, events, user_id, "order.replaced", row)

    result = orders.match(amended, tick, spec, model, on_arrival=True)
    if result.execution is not None:
        await book_execution(
            session,
            events,
            model,
            account,
            row,
            amended,
            result,
            tick.time,
            position_rows=position_rows,
            profile=profile,
        )
        await open_bracket_children(session, events, model, account, row)
    else:
        row.triggered = result.order.triggered
    await session.flush()
    return row


ORDER_SORT = Sorting(
    {
        "created": Order.created_at,
        "symbol": Order.symbol,
        "status": Order.status,
        "updated": Order.updated_at,
    },
    default="-created",
    tie_breaker=Order.id,
)


def orders_query(
    user_id: int,
    *,
    account_id: int | None = None,
    status: str | None = None,
    symbol: str | None = None,
    side: str | None = None,
    created_from: datetime | None = None,
    created_to: datetime | None = None,
) -> Select[Order]:
    query = select(Order).where(Order.owner_id == user_id)
    if account_id is not None:
        query = query.where(Order.account_id == account_id)
    if status is not None:
        query = query.where(Order.status == status)
    if symbol is not None:
        query = query.where(Order.symbol == symbol.upper())
    if side is not None:
        query = query.where(Order.side == side)
    if created_from is not None:
        query = query.where(Order.created_at >= created_from)
    if created_to is not None:
        query = query.where(Order.created_at < created_to)
    return query


# -- positions --------------------------------------------------------------------------------


def positions_query(user_id: int, account_id: int | None) -> Select[Position]:
    """The user's open positions (of one account, if given), by account and symbol."""
    owned = select(TradingAccount.id).where(TradingAccount.owner_id == user_id)
    query = select(Position).where(Position.account_id.in_(owned), Position.quantity != ZERO)
    if account_id is not None:
        query = query.where(Position.account_id == account_id)
    return query.order_by(Position.account_id, Position.symbol)


async def positions_out(
    session: AsyncSession, provider: MarketProvider | None, rows: Sequence[Position]
) -> list[PositionOut]:
    marks = await mark_prices(session, provider, (row.symbol for row in rows))
    return [_position_out(row, marks.get(row.symbol)) for row in rows]


async def position(
    session: AsyncSession,
    provider: MarketProvider | None,
    user_id: int,
    symbol: str,
    account_id: int | None,
) -> PositionOut:
    """The position in `symbol` of the account (default: the user's first account); 404 when
    the account never traded it."""
    if account_id is None:
        account_id = await first_account_id(session, user_id)
        if account_id is None:
            raise NotFound("No such position.")
    else:
        await get_account(session, user_id, account_id)
    instrument = await market_service.get_instrument(session, symbol)
    row = await session.scalar(
        select(Position).where(
            Position.account_id == account_id, Position.symbol == instrument.symbol
        )
    )
    if row is None:
        raise NotFound("No such position.")
    marks = await mark_prices(session, provider, [row.symbol]) if row.quantity else {}
    return _position_out(row, marks.get(row.symbol))
