"""Responses of the billing endpoints."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field


class CurrentSubscription(BaseModel):
    tier: str
    name: str
    status: str = Field(description="`active`; payments (a later release) add more states.")
    features: dict[str, bool] = Field(description="Every feature, and whether this tier has it.")
    quotas: dict[str, int | None] = Field(description="Limits of this tier; null is unlimited.")
    renews_at: datetime | None = Field(description="Next renewal; null for the free tier.")
