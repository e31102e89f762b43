"""Accounts tables: users, login sessions and their refresh tokens, API keys, KYC documents,
licenses and devices, and the audit log of security events."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    ForeignKey,
    Index,
    Integer,
    String,
    UniqueConstraint,
    func,
)
from sqlalchemy.orm import Mapped, mapped_column

# Foreign keys use BigIntPK, the same integer type as the primary keys they point at.
from tradeos.core.db import Base, BigIntPK, IdPK, UTCDateTime, utcnow


class Role(StrEnum):
    USER = "user"
    ADMIN = "admin"
    SUPER_ADMIN = "super_admin"


class KycStatus(StrEnum):
    NONE = "none"
    PENDING = "pending"
    APPROVED = "approved"
    REJECTED = "rejected"


class KycDocumentType(StrEnum):
    PASSPORT = "passport"
    ID_CARD = "id_card"
    PROOF_OF_ADDRESS = "proof_of_address"
    SELFIE = "selfie"


class User(Base):
    __tablename__ = "users"
    id: Mapped[IdPK]
    email: Mapped[str] = mapped_column(String(320))
    username: Mapped[str] = mapped_column(String(64))
    password_hash: Mapped[str] = mapped_column(String(255))
    full_name: Mapped[str | None] = mapped_column(String(200))
    role: Mapped[str] = mapped_column(String(20), default=Role.USER.value)
    is_active: Mapped[bool] = mapped_column(Boolean, default=True)
    # Subscription tier (billing.plans) and when it renews; payments set these later.
    tier: Mapped[str] = mapped_column(String(20), default="free", server_default="free")
    tier_renews_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    kyc_status: Mapped[str] = mapped_column(
        String(20), default=KycStatus.NONE.value, server_default=KycStatus.NONE.value
    )
    password_changed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_login_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


# Unique case-insensitively: "Alice@x.com" and "alice@x.com" are one person.
Index("uq_users_email_lower", func.lower(User.email), unique=True)
Index("uq_users_username_lower", func.lower(User.username), unique=True)


class AuthSession(Base):
    """One login: the family of refresh tokens that descend from it by rotation.

    Access tokens name their session (`sid`), so revoking the session ends them at once.
    """

    __tablename__ = "auth_sessions"
    id: Mapped[IdPK]
    user_id: Mapped[int] = mapped_column(BigIntPK, ForeignKey("users.id", ondelete="CASCADE"))
    device_id: Mapped[int | None] = mapped_column(
        BigIntPK, ForeignKey("devices.id", ondelete="SET NULL")
    )
    ip_address: Mapped[str | None] = mapped_column(String(45))
    user_agent: Mapped[str | None] = mapped_column(String(300))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_used_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # logout, logout_all, password_change, token_reuse, device_removed, deactivated
    revoked_reason: Mapped[str | None] = mapped_column(String(30))

    __table_args__ = (Index("ix_auth_sessions_user_id", "user_id"),)


class RefreshToken(Base):
    """A refresh token, stored as its SHA-256 (it is random, so no salt is needed)."""

    __tablename__ = "refresh_tokens"
    id: Mapped[IdPK]
    session_id: Mapped[int] = mapped_column(
        BigIntPK, ForeignKey("auth_sessions.id", ondelete="CASCADE")
    )
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    issued_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # Set when it is exchanged; a second exchange is theft and revokes the session.
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    __table_args__ = (Index("ix_refresh_tokens_session_id", "session_id"),)


class ApiKey(Base):
    """A programmatic key `trd_…`, stored as a keyed hash (HMAC-SHA256), shown once."""

    __tablename__ = "api_keys"
    id: Mapped[IdPK]
    user_id: Mapped[int] = mapped_column(BigIntPK, ForeignKey("users.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(100))
    prefix: Mapped[str] = mapped_column(String(16))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    scopes: Mapped[list[str]] = mapped_column(JSON)
    # The key that made this one, if a key did: revoking a key revokes what it made.
    parent_id: Mapped[int | None] = mapped_column(
        BigIntPK, ForeignKey("api_keys.id", ondelete="SET NULL")
    )
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    __table_args__ = (Index("ix_api_keys_user_id", "user_id"),)


class KycDocument(Base):
    __tablename__ = "kyc_documents"
    id: Mapped[IdPK]
    user_id: Mapped[int] = mapped_column(BigIntPK, ForeignKey("users.id", ondelete="CASCADE"))
    document_type: Mapped[str] = mapped_column(String(30))
    content_type: Mapped[str] = mapped_column(String(50))
    size_bytes: Mapped[int] = mapped_column(Integer)
    sha256: Mapped[str] = mapped_column(String(64))
    # Where the storage port keeps the bytes; never derived from the uploaded file name.
    storage_key: Mapped[str] = mapped_column(String(200), unique=True)
    original_filename: Mapped[str | None] = mapped_column(String(255))
    status: Mapped[str] = mapped_column(String(20), default=KycStatus.PENDING.value)
    reviewer_id: Mapped[int | None] = mapped_column(
        BigIntPK, ForeignKey("users.id", ondelete="SET NULL")
    )
    review_reason: Mapped[str | None] = mapped_column(String(500))
    reviewed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    __table_args__ = (
        Index("ix_kyc_documents_user_id", "user_id"),
        Index("ix_kyc_documents_status", "status"),
    )


class License(Base):
    """What a desktop or terminal client may do, and on how many devices."""

    __tablename__ = "licenses"
    id: Mapped[IdPK]
    user_id: Mapped[int] = mapped_column(
        BigIntPK, ForeignKey("users.id", ondelete="CASCADE"), unique=True
    )
    plan: Mapped[str] = mapped_column(String(20))
    features: Mapped[list[str]] = mapped_column(JSON)
    max_devices: Mapped[int] = mapped_column(Integer)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class Device(Base):
    __tablename__ = "devices"
    id: Mapped[IdPK]
    user_id: Mapped[int] = mapped_column(BigIntPK, ForeignKey("users.id", ondelete="CASCADE"))
    # SHA-256 of the normalised device description: the same machine maps to the same slot.
    fingerprint: Mapped[str] = mapped_column(String(64))
    platform: Mapped[str] = mapped_column(String(50))
    processor: Mapped[str | None] = mapped_column(String(100))
    memory: Mapped[str | None] = mapped_column(String(30))
    client_version: Mapped[str | None] = mapped_column(String(30))
    first_seen_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_seen_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    __table_args__ = (UniqueConstraint("user_id", "fingerprint"),)


class AuditEvent(Base):
    """A security event: who did what to whom, from where. Rows are only ever added."""

    __tablename__ = "audit_events"
    id: Mapped[IdPK]
    actor_id: Mapped[int | None] = mapped_column(
        BigIntPK, ForeignKey("users.id", ondelete="SET NULL")
    )
    action: Mapped[str] = mapped_column(String(50))
    target_user_id: Mapped[int | None] = mapped_column(
        BigIntPK, ForeignKey("users.id", ondelete="SET NULL")
    )
    ip_address: Mapped[str | None] = mapped_column(String(45))
    details: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    __table_args__ = (
        Index("ix_audit_events_created_at", "created_at"),
        Index("ix_audit_events_action", "action"),
        Index("ix_audit_events_actor_id", "actor_id"),
    )
