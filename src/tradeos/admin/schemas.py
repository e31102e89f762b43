"""Requests and responses of the administration endpoints."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from tradeos.accounts.models import Role
from tradeos.accounts.schemas import UserOut
from tradeos.billing.plans import Tier


class AdminUserOut(UserOut):
    """A user as an administrator sees them: what the user sees of themselves, and more.
    Listed field by field, here and in UserOut: no secret can slip in."""

    tier_renews_at: datetime | None
    updated_at: datetime
    password_changed_at: datetime | None


class AdminUserUpdate(BaseModel):
    # Unknown fields are refused, never silently ignored (a typo must not look applied). Fields
    # are optional but never null, and at least one is needed: the schema says so too.
    model_config = ConfigDict(extra="forbid", json_schema_extra={"minProperties": 1})

    role: Role = Field(  # type: ignore[assignment]
        default=None, description="Granting or removing admin roles needs a super admin."
    )
    tier: Tier = Field(  # type: ignore[assignment]
        default=None, description="The license follows the tier's plan."
    )
    is_active: bool = Field(  # type: ignore[assignment]
        default=None, description="false ends every session of the user at once."
    )

    @model_validator(mode="after")
    def _not_empty(self) -> AdminUserUpdate:
        if self.role is None and self.tier is None and self.is_active is None:
            raise ValueError("send at least one of role, tier, is_active")
        return self

    def changes(self) -> dict[str, Any]:
        return self.model_dump(exclude_none=True, mode="json")


class AuditEventOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    action: str
    actor_id: int | None = Field(description="Who did it; null for the system or a stranger.")
    target_user_id: int | None = Field(description="Whose account it concerns.")
    ip_address: str | None
    details: dict[str, Any]
    created_at: datetime
