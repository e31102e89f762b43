"""Billing use cases. For now: what the user's subscription gives them."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from tradeos.accounts import service as accounts
from tradeos.billing.plans import Feature, plan_for
from tradeos.billing.schemas import CurrentSubscription


async def current_subscription(session: AsyncSession, user_id: int) -> CurrentSubscription:
    user = await accounts.get_user(session, user_id)
    plan = plan_for(user.tier)
    return CurrentSubscription(
        tier=plan.tier.value,
        name=plan.name,
        status="active",
        features={feature.value: plan.has(feature) for feature in Feature},
        quotas={quota.value: limit for quota, limit in plan.quotas.items()},
        renews_at=user.tier_renews_at,
    )
