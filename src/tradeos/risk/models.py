"""Risk tables: one risk profile per trading account (no row: the defaults of rules.py)."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from sqlalchemy import JSON, Boolean, ForeignKey, Integer
from sqlalchemy.orm import Mapped, mapped_column

from tradeos.core.db import Base, BigIntPK, ExactDecimal, Money, Quantity, UTCDateTime, utcnow


class RiskProfileRow(Base):
    """The limits of `risk.rules.RiskProfile`; NULL switches a rule off."""

    __tablename__ = "risk_profiles"
    account_id: Mapped[int] = mapped_column(
        BigIntPK, ForeignKey("trading_accounts.id", ondelete="CASCADE"), primary_key=True
    )
    max_position_quantity: Mapped[Decimal | None] = mapped_column(Quantity)
    max_position_pct: Mapped[Decimal | None] = mapped_column(ExactDecimal)
    max_risk_per_trade_pct: Mapped[Decimal | None] = mapped_column(ExactDecimal)
    max_daily_loss: Mapped[Decimal | None] = mapped_column(Money)
    max_daily_loss_pct: Mapped[Decimal | None] = mapped_column(ExactDecimal)
    max_daily_trades: Mapped[int | None] = mapped_column(Integer)
    max_open_positions: Mapped[int | None] = mapped_column(Integer)
    max_leverage: Mapped[Decimal | None] = mapped_column(ExactDecimal)
    allowed_symbols: Mapped[list[str] | None] = mapped_column(JSON)
    allowed_asset_classes: Mapped[list[str] | None] = mapped_column(JSON)
    stop_loss_required: Mapped[bool] = mapped_column(Boolean, default=False)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)
