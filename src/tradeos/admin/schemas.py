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


class JobRunOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    name: str
    queue: str
    status: str = Field(description="queued, running, succeeded or failed.")
    arguments_summary: str
    owner_id: int | None
    attempts: int
    max_attempts: int
    progress: int = Field(description="0 to 100.")
    progress_message: str | None
    result_summary: str | None
    error: str | None = Field(description="The last attempt's error, with its traceback's end.")
    created_at: datetime
    run_after: datetime = Field(description="Not started before this (retry backoff, delay).")
    started_at: datetime | None
    finished_at: datetime | None
    updated_at: datetime


class QueueCountsOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    name: str
    depth: int = Field(description="Queued runs due now.")
    delayed: int = Field(description="Queued runs waiting out a retry backoff or a delay.")
    running: int
    failed_last_24h: int
    succeeded_last_24h: int


class ScheduledJobOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    name: str
    schedule: str = Field(description="The schedule the job runs on; off when switched off.")
    declared_schedule: str = Field(description="The schedule the job's code declares.")
    overridden: bool = Field(description="JOB_SCHEDULES changes the schedule or switches it off.")
    queue: str
    next_run_at: datetime | None = Field(description="Null when the job is switched off.")
    last_run_at: datetime | None
    last_status: str | None


class WorkerOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    kind: str = Field(description="worker (runs jobs) or scheduler.")
    queues: list[str]
    concurrency: int
    started_at: datetime
    last_seen_at: datetime
    alive: bool = Field(description="Seen within the last minute.")


class QueueStatusOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    backend: str = Field(description="memory (in-process) or redis.")
    queues: list[QueueCountsOut]
    scheduled: list[ScheduledJobOut]
    workers: list[WorkerOut] = Field(description="Seen in the last 24 hours.")
    broker: dict[str, int] | None = Field(
        description="Messages Redis holds per priority stream and delayed; null in-process."
    )
