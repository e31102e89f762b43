"""Risk profile endpoints: /risk/profile?account_id=."""

from __future__ import annotations

from typing import Annotated

from fastapi import Query

from tradeos.accounts.deps import ReaderDep, TraderDep
from tradeos.core.db import MAX_ROW_ID
from tradeos.core.deps import SessionDep
from tradeos.core.routing import APIRouter
from tradeos.risk import service
from tradeos.risk.schemas import RiskProfileIn, RiskProfileOut

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


routers = (risk,)
