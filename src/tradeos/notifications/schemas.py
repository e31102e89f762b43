"""Requests and responses of the notification endpoints."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

# A dotted lower-case name: "kyc.approved", "order.filled".
NOTIFICATION_TYPE_PATTERN = r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)*$"
TYPE_MAX_LENGTH = 50  # the columns' sizes (notifications/models.py)
TITLE_MAX_LENGTH = 200
NotificationType = Annotated[
    str,
    StringConstraints(min_length=1, max_length=TYPE_MAX_LENGTH, pattern=NOTIFICATION_TYPE_PATTERN),
]


class NotificationOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    type: str
    title: str
    body: str
    data: dict[str, Any]
    read: bool = Field(description="Whether the user has marked it read.")
    read_at: datetime | None
    created_at: datetime


class MarkedRead(BaseModel):
    marked_read: int = Field(description="How many notifications this changed.")


class Preferences(BaseModel):
    model_config = ConfigDict(extra="forbid")

    muted_types: list[NotificationType] = Field(
        default_factory=list,
        max_length=100,
        description="Types that are neither stored nor sent, e.g. `order.filled`.",
    )
