"""Risk endpoints: the profile (/risk/profile?account_id=), position sizing
(POST /risk/position-size) and the portfolio's risk (GET /risk/assessment?account_id=)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Query

from tradeos.accounts.deps import ReaderDep, TraderDep
from tradeos.core.db import MAX_ROW_ID
from tradeos.core.deps import SessionDep
from tradeos.core.routing import APIRouter
from tradeos.market.deps import ProviderDep
from tradeos.risk import service
from tradeos.risk.schemas import (
    PositionSizeIn,
    PositionSizeOut,
    RiskAssessmentOut,
    RiskProfileIn,
    RiskProfileOut,
)

risk = APIRouter(prefix="/risk", tags=["risk"])

AccountQuery = Annotated[
    int, Query(ge=1, le=MAX_ROW_ID, description="The trading account the profile belongs to.")
]


@risk.get("/profile")
async def get_profile(
    account_id: AccountQuery, principal: ReaderDep, session: SessionDep
) -> RiskProfileOut:
    """The account's risk limits (the defaults until set). Another user's account: 404."""
    return await service.get_profile(session, principal.user_id, account_id)


@risk.put("/profile")
async def put_profile(
    account_id: AccountQuery, body: RiskProfileIn, principal: TraderDep, session: SessionDep
) -> RiskProfileOut:
    """Replace the account's risk limits; a field left out takes its default."""
    return await service.set_profile(session, principal.user_id, account_id, body)


@risk.post("/position-size")
async def position_size(
    body: PositionSizeIn, principal: ReaderDep, session: SessionDep, provider: ProviderDep
) -> PositionSizeOut:
    """The quantity that loses `risk_percent` of the equity (given, or the account's at the
    live marks) if the stop is hit: rounded down to the instrument's quantity step (entry and
    stop first rounded to its tick, away from each other), with the money at risk. 422 for a
    stop equal to the entry, a risk % outside (0, 100], an unknown symbol."""
    return await service.position_size(session, provider, principal.user_id, body)


@risk.get("/assessment")
async def assessment(
    account_id: Annotated[int, Query(ge=1, le=MAX_ROW_ID)],
    principal: ReaderDep,
    session: SessionDep,
    provider: ProviderDep,
    lookback_days: Annotated[
        int, Query(ge=2, le=1000, description="Daily closes the VaR is computed over.")
    ] = service.DEFAULT_LOOKBACK_DAYS,
) -> RiskAssessmentOut:
    """The account's risk now: exposure per symbol and asset class, concentration, gross and
    net leverage, the 1-day 95% historical VaR of the current positions over the daily
    closes, and the current and maximum drawdown of its equity (portfolio snapshots and the
    equity now)."""
    return await service.assessment(session, provider, principal.user_id, account_id, lookback_days)


routers = (risk,)
