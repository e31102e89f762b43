"""Notifications tables: what a user was told, and which kinds they do not want."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, ForeignKey, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from tradeos.core.db import Base, BigIntPK, IdPK, UTCDateTime, utcnow


class Notification(Base):
    __tablename__ = "notifications"
    id: Mapped[IdPK]
    user_id: Mapped[int] = mapped_column(BigIntPK, ForeignKey("users.id", ondelete="CASCADE"))
    # What happened, as a dotted name: "kyc.approved", "order.filled", "challenge.passed".
    type: Mapped[str] = mapped_column(String(50))
    title: Mapped[str] = mapped_column(String(200))
    body: Mapped[str] = mapped_column(Text)
    data: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    read_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    # The list is per user, newest first, often only the unread ones.
    __table_args__ = (Index("ix_notifications_user_id_created_at", "user_id", "created_at"),)


class NotificationPreferences(Base):
    __tablename__ = "notification_preferences"
    user_id: Mapped[int] = mapped_column(
        BigIntPK, ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    # Types the user does not want: they are neither stored nor sent.
    muted_types: Mapped[list[str]] = mapped_column(JSON, default=list)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)
