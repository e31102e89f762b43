"""Tiers and features: defined once (billing.plans), shown by /subscriptions/current, enforced
by RequireFeature."""

from __future__ import annotations

import itertools
from datetime import timedelta

import httpx
import pytest
from fastapi import Depends, FastAPI
from sqlalchemy.ext.asyncio import AsyncSession

from tests.conftest import serve_app
from tests.factories import bearer, make_user, sign_in
from tradeos.accounts.deps import RequireFeature
from tradeos.app import create_app
from tradeos.billing.plans import PLANS, Feature, Quota, Tier, plan_for
from tradeos.config import Settings
from tradeos.core.db import utcnow
from tradeos.core.routing import APIRouter


def test_every_tier_defines_every_quota_and_tiers_only_grow() -> None:
    order = [Tier.FREE, Tier.PRO, Tier.ENTERPRISE]
    for tier in order:
        assert set(PLANS[tier].quotas) == set(Quota)
    for lower, higher in itertools.pairwise(order):
        assert PLANS[lower].features <= PLANS[higher].features
        for quota in Quota:
            low, high = PLANS[lower].quota(quota), PLANS[higher].quota(quota)
            assert high is None or (low is not None and low <= high)
    assert plan_for("no-such-tier").tier is Tier.FREE


@pytest.mark.parametrize("tier", ["free", "pro", "enterprise"])
async def test_current_subscription_shows_tier_features_and_quotas(
    client: httpx.AsyncClient, session: AsyncSession, settings: Settings, tier: str
) -> None:
    renews = utcnow() + timedelta(days=30) if tier != "free" else None
    user = await make_user(session, tier=tier, tier_renews_at=renews)
    headers = bearer(await sign_in(session, settings, user))
    await session.commit()
    response = await client.get("/api/v1/subscriptions/current", headers=headers)
    assert response.status_code == 200
    body = response.json()
    plan = PLANS[Tier(tier)]
    assert body["tier"] == tier and body["status"] == "active"
    assert body["features"] == {feature.value: plan.has(feature) for feature in Feature}
    assert body["quotas"] == {quota.value: plan.quota(quota) for quota in Quota}
    assert (body["renews_at"] is None) == (renews is None)


async def test_require_feature_guards_an_endpoint(
    settings: Settings, session: AsyncSession
) -> None:
    app: FastAPI = create_app(settings, configure_logs=False)
    probe = APIRouter()

    @probe.get("/needs-live-trading", dependencies=[Depends(RequireFeature(Feature.LIVE_TRADING))])
    async def needs_live_trading() -> dict[str, bool]:
        return {"ok": True}

    app.include_router(probe)
    free = await make_user(session)
    pro = await make_user(session, tier="pro")
    free_headers = bearer(await sign_in(session, settings, free))
    pro_headers = bearer(await sign_in(session, settings, pro))
    await session.commit()
    async with serve_app(app) as client:
        refused = await client.get("/needs-live-trading", headers=free_headers)
        assert refused.status_code == 403
        assert "live_trading" in refused.json()["detail"]
        assert (await client.get("/needs-live-trading", headers=pro_headers)).status_code == 200
