"""Strategy tables: a user's formulas, and their tags (a table of its own, so a tag filter is an
exact, indexed lookup on SQLite and PostgreSQL alike)."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, Boolean, Float, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from tradeos.core.db import Base, BigIntPK, ExactDecimal, IdPK, UTCDateTime, utcnow

NAME_MAX_LENGTH = 100
DESCRIPTION_MAX_LENGTH = 5000
TAG_MAX_LENGTH = 30
MAX_TAGS = 10


class StrategyCategory(StrEnum):
    TREND = "trend"
    MEAN_REVERSION = "mean_reversion"
    MOMENTUM = "momentum"
    BREAKOUT = "breakout"
    VOLATILITY = "volatility"
    OTHER = "other"


class Strategy(Base):
    __tablename__ = "strategies"
    id: Mapped[IdPK]
    owner_id: Mapped[int] = mapped_column(BigIntPK, ForeignKey("users.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(NAME_MAX_LENGTH))
    description: Mapped[str] = mapped_column(Text, default="")
    formula: Mapped[str] = mapped_column(Text)
    # Read from the formula when it is saved, so listing never parses formulas again:
    # its declared parameter defaults, and the rules it defines.
    declared_params: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    rules: Mapped[list[str]] = mapped_column(JSON, default=list)
    # The owner's overrides of the declared defaults (only names the formula declares).
    default_params: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    category: Mapped[str] = mapped_column(String(20), default=StrategyCategory.OTHER.value)
    is_public: Mapped[bool] = mapped_column(Boolean, default=False)
    # Marketplace figures, kept up to date by reviews, subscriptions and backtests.
    rating_average: Mapped[float | None] = mapped_column(Float)  # None until reviewed
    rating_count: Mapped[int] = mapped_column(Integer, default=0)
    subscriber_count: Mapped[int] = mapped_column(Integer, default=0)
    # The latest stored backtest's total return, as a fraction (0.12 is +12 %).
    performance: Mapped[Decimal | None] = mapped_column(ExactDecimal)
    performance_updated_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)

    tags: Mapped[list[StrategyTag]] = relationship(
        lazy="raise",
        cascade="all, delete-orphan",
        passive_deletes=True,
        order_by="StrategyTag.tag",
    )

    # Lists are "mine" (owner, newest first) or "public ones" (newest first), often by category.
    __table_args__ = (
        Index("ix_strategies_owner_id_created_at", "owner_id", "created_at"),
        Index("ix_strategies_is_public_created_at", "is_public", "created_at"),
        Index("ix_strategies_category", "category"),
    )


class StrategyTag(Base):
    __tablename__ = "strategy_tags"
    strategy_id: Mapped[int] = mapped_column(
        BigIntPK, ForeignKey("strategies.id", ondelete="CASCADE"), primary_key=True
    )
    tag: Mapped[str] = mapped_column(String(TAG_MAX_LENGTH), primary_key=True)

    # The `tag` filter looks strategies up by tag.
    __table_args__ = (Index("ix_strategy_tags_tag_strategy_id", "tag", "strategy_id"),)
