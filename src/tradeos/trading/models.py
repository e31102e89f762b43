"""Trading tables: trading accounts, their orders, fills and positions.

Money and quantities are exact (`Money` / `Quantity`): on SQLite they are text, so sums and
comparisons of them happen in Python, never in SQL.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from sqlalchemy import Boolean, ForeignKey, Index, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from tradeos.core.db import (
    Base,
    BigIntPK,
    ExactDecimal,
    IdPK,
    Money,
    Quantity,
    UTCDateTime,
    utcnow,
)


class TradingAccount(Base):
    """A cash account orders are placed in. `cash_total == cash_reserved + available` always
    (trading/ledger.py); the row is locked while an order changes it."""

    __tablename__ = "trading_accounts"
    id: Mapped[IdPK]
    owner_id: Mapped[int] = mapped_column(BigIntPK, ForeignKey("users.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(100))
    kind: Mapped[str] = mapped_column(String(10), default="paper")  # paper (live: later)
    base_currency: Mapped[str] = mapped_column(String(10), default="USD")
    starting_balance: Mapped[Decimal] = mapped_column(Money)
    cash_total: Mapped[Decimal] = mapped_column(Money)
    cash_reserved: Mapped[Decimal] = mapped_column(Money, default=Decimal(0))
    allow_short: Mapped[bool] = mapped_column(Boolean, default=False)
    trading_state: Mapped[str] = mapped_column(String(10), default="active")
    # Why and when the state last changed, and by whom: "user", or "risk" for the automatic
    # halt at the daily loss limit, which (alone) lifts itself at the next 00:00 UTC.
    trading_state_reason: Mapped[str | None] = mapped_column(String(200))
    trading_state_set_by: Mapped[str | None] = mapped_column(String(10))
    # The state an automatic halt returns to at the next 00:00 UTC (rules.TradingStatus).
    trading_state_resumes_to: Mapped[str | None] = mapped_column(String(10))
    trading_state_changed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # The equity at the start of the UTC day `day_started_at` falls in: today's loss is
    # measured from it. NULL until the first snapshot or order of a day.
    day_start_equity: Mapped[Decimal | None] = mapped_column(Money)
    day_started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # When the account was last reset: orders before it no longer count towards today's trades.
    reset_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)

    __table_args__ = (UniqueConstraint("owner_id", "name"),)


class Order(Base):
    __tablename__ = "orders"
    id: Mapped[IdPK]
    account_id: Mapped[int] = mapped_column(
        BigIntPK, ForeignKey("trading_accounts.id", ondelete="CASCADE")
    )
    # The account's owner, kept on the order so a user's orders list without a join.
    owner_id: Mapped[int] = mapped_column(BigIntPK, ForeignKey("users.id", ondelete="CASCADE"))
    symbol: Mapped[str] = mapped_column(String(41))
    side: Mapped[str] = mapped_column(String(4))
    type: Mapped[str] = mapped_column(String(10))
    time_in_force: Mapped[str] = mapped_column(String(3))
    status: Mapped[str] = mapped_column(String(20))
    quantity: Mapped[Decimal] = mapped_column(Quantity)
    notional: Mapped[Decimal | None] = mapped_column(Money)  # as asked, for a market order
    filled_quantity: Mapped[Decimal] = mapped_column(Quantity, default=Decimal(0))
    average_fill_price: Mapped[Decimal | None] = mapped_column(Money)
    limit_price: Mapped[Decimal | None] = mapped_column(Money)
    stop_price: Mapped[Decimal | None] = mapped_column(Money)
    stop_loss: Mapped[Decimal | None] = mapped_column(Money)
    take_profit: Mapped[Decimal | None] = mapped_column(Money)
    triggered: Mapped[bool] = mapped_column(Boolean, default=False)  # a stop reached its price
    # What the order still holds of the account's cash (ledger.order_reservation).
    reserved: Mapped[Decimal] = mapped_column(Money, default=Decimal(0))
    fees: Mapped[Decimal] = mapped_column(Money, default=Decimal(0))
    client_order_id: Mapped[str | None] = mapped_column(String(64))
    strategy_id: Mapped[str | None] = mapped_column(String(64))  # tags: opaque to trading
    signal_id: Mapped[str | None] = mapped_column(String(64))
    cancel_reason: Mapped[str | None] = mapped_column(Text)
    # Where the order came from: "api" (a trader's POST /orders), "bracket" (a stop-loss or
    # take-profit child), "close" (a position closed), "journal" (POST /trades), "signal"
    # (POST /trading/execute).
    origin: Mapped[str] = mapped_column(String(10), default="api", server_default="api")
    # A bracket child's parent and role ("stop_loss" | "take_profit"); one cancels the other.
    parent_order_id: Mapped[int | None] = mapped_column(
        BigIntPK, ForeignKey("orders.id", ondelete="CASCADE")
    )
    bracket_role: Mapped[str | None] = mapped_column(String(12))
    # The trader's own words on a journal entry (POST /trades).
    note: Mapped[str | None] = mapped_column(String(500))
    # A day order's end: the next 00:00 UTC after it was placed (orders.expires_at).
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)

    __table_args__ = (
        # A retry with the same client order id finds the first order (NULLs never clash).
        UniqueConstraint("account_id", "client_order_id"),
        Index("ix_orders_owner_id_created_at", "owner_id", "created_at"),
        Index("ix_orders_account_id_status", "account_id", "status"),
        # The resting-order matcher's lookup: open orders of one symbol.
        Index("ix_orders_symbol_status", "symbol", "status"),
        Index("ix_orders_parent_order_id", "parent_order_id"),
    )


class Fill(Base):
    """One execution of an order. `fill_id` is unique: a fill booked twice is booked once."""

    __tablename__ = "fills"
    id: Mapped[IdPK]
    fill_id: Mapped[str] = mapped_column(String(64), unique=True)
    order_id: Mapped[int] = mapped_column(BigIntPK, ForeignKey("orders.id", ondelete="CASCADE"))
    account_id: Mapped[int] = mapped_column(
        BigIntPK, ForeignKey("trading_accounts.id", ondelete="CASCADE")
    )
    symbol: Mapped[str] = mapped_column(String(41))
    side: Mapped[str] = mapped_column(String(4))
    quantity: Mapped[Decimal] = mapped_column(Quantity)
    price: Mapped[Decimal] = mapped_column(Money)
    fee: Mapped[Decimal] = mapped_column(Money)
    liquidity: Mapped[str] = mapped_column(String(5))  # maker | taker
    realized_pnl: Mapped[Decimal] = mapped_column(Money, default=Decimal(0))  # gross of fees
    time: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    __table_args__ = (
        Index("ix_fills_order_id", "order_id"),
        Index("ix_fills_account_id_time", "account_id", "time"),
    )


class Position(Base):
    """A signed quantity per (account, symbol), changed only by positions.apply(fill)."""

    __tablename__ = "positions"
    id: Mapped[IdPK]
    account_id: Mapped[int] = mapped_column(
        BigIntPK, ForeignKey("trading_accounts.id", ondelete="CASCADE")
    )
    symbol: Mapped[str] = mapped_column(String(41))
    quantity: Mapped[Decimal] = mapped_column(Quantity, default=Decimal(0))
    cost: Mapped[Decimal] = mapped_column(Money, default=Decimal(0))
    realized_pnl: Mapped[Decimal] = mapped_column(Money, default=Decimal(0))
    fees_paid: Mapped[Decimal] = mapped_column(Money, default=Decimal(0))
    opened_at: Mapped[datetime | None] = mapped_column(UTCDateTime)  # None while flat
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)

    __table_args__ = (UniqueConstraint("account_id", "symbol"),)


class RoundTrip(Base):
    """One closed trade, flat to flat (positions.Trade), stored as the fill that closed it is
    booked. `pnl` is gross of fees, `net_pnl` net; `closing_fill_id` makes it booked once."""

    __tablename__ = "round_trips"

    id: Mapped[IdPK]
    account_id: Mapped[int] = mapped_column(
        BigIntPK, ForeignKey("trading_accounts.id", ondelete="CASCADE")
    )
    symbol: Mapped[str] = mapped_column(String(41))
    direction: Mapped[str] = mapped_column(String(5))  # long | short
    quantity: Mapped[Decimal] = mapped_column(Quantity)
    entry_price: Mapped[Decimal] = mapped_column(Money)
    exit_price: Mapped[Decimal] = mapped_column(Money)
    pnl: Mapped[Decimal] = mapped_column(Money)
    fees: Mapped[Decimal] = mapped_column(Money)
    net_pnl: Mapped[Decimal] = mapped_column(Money)
    return_pct: Mapped[Decimal] = mapped_column(ExactDecimal)
    opened_at: Mapped[datetime] = mapped_column(UTCDateTime)
    closed_at: Mapped[datetime] = mapped_column(UTCDateTime)
    strategy_id: Mapped[str | None] = mapped_column(String(64))
    closing_fill_id: Mapped[str] = mapped_column(String(64), unique=True)

    __table_args__ = (Index("ix_round_trips_account_id_closed_at", "account_id", "closed_at"),)


class PortfolioSnapshot(Base):
    """An account's worth at one time, taken by the portfolio snapshot job."""

    __tablename__ = "portfolio_snapshots"

    id: Mapped[IdPK]
    account_id: Mapped[int] = mapped_column(
        BigIntPK, ForeignKey("trading_accounts.id", ondelete="CASCADE")
    )
    time: Mapped[datetime] = mapped_column(UTCDateTime)
    equity: Mapped[Decimal] = mapped_column(Money)
    cash: Mapped[Decimal] = mapped_column(Money)
    positions_value: Mapped[Decimal] = mapped_column(Money)
    realized_pnl: Mapped[Decimal] = mapped_column(Money)
    unrealized_pnl: Mapped[Decimal] = mapped_column(Money)

    __table_args__ = (UniqueConstraint("account_id", "time"),)
