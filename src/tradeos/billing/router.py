"""Billing endpoints: /subscriptions."""

from __future__ import annotations

from tradeos.accounts.deps import ReaderDep
from tradeos.billing import service
from tradeos.billing.schemas import CurrentSubscription
from tradeos.core.deps import SessionDep
from tradeos.core.routing import APIRouter

subscriptions = APIRouter(prefix="/subscriptions", tags=["billing"])


@subscriptions.get("/current")
async def current_subscription(principal: ReaderDep, session: SessionDep) -> CurrentSubscription:
    return await service.current_subscription(session, principal.user_id)


routers = (subscriptions,)
