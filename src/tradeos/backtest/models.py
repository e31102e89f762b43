"""Backtest table: a user's backtest or optimization run, its request and its stored result."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, BigInteger, ForeignKey, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from tradeos.core.db import Base, BigIntPK, ExactDecimal, IdPK, UTCDateTime, utcnow


class BacktestKind(StrEnum):
    BACKTEST = "backtest"
    OPTIMIZE = "optimize"


class BacktestStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELED = "canceled"  # deleted while queued or running: its job stores nothing


FINISHED = frozenset({BacktestStatus.SUCCEEDED, BacktestStatus.FAILED, BacktestStatus.CANCELED})


class Backtest(Base):
    __tablename__ = "backtests"
    id: Mapped[IdPK]
    owner_id: Mapped[int] = mapped_column(BigIntPK, ForeignKey("users.id", ondelete="CASCADE"))
    # The strategy the formula came from (null for an inline formula, or once it is deleted).
    strategy_id: Mapped[int | None] = mapped_column(
        BigIntPK, ForeignKey("strategies.id", ondelete="SET NULL")
    )
    kind: Mapped[str] = mapped_column(String(20), default=BacktestKind.BACKTEST.value)
    status: Mapped[str] = mapped_column(String(20), default=BacktestStatus.QUEUED.value)
    # The job run that computes it: a plain number, as job runs are pruned on their own.
    job_id: Mapped[int | None] = mapped_column(BigInteger)
    # What was asked, normalized (the formula text included, so the run never depends on a
    # strategy changing after the request).
    request: Mapped[dict[str, Any]] = mapped_column(JSON)
    error: Mapped[str | None] = mapped_column(Text)
    # Copied out of the result for sorting; the whole result is the JSON below.
    total_return: Mapped[Decimal | None] = mapped_column(ExactDecimal)
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # Deleted rows stay (without their result) so the daily quota still counts them.
    deleted_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    # Lists are one owner's, newest first; the quota counts one owner's since midnight.
    __table_args__ = (
        Index("ix_backtests_owner_id_created_at", "owner_id", "created_at"),
        Index("ix_backtests_strategy_id", "strategy_id"),
    )
