"""The guards other domains put on their endpoints: role, scope, per-user group limits."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import Depends, FastAPI
from sqlalchemy.ext.asyncio import AsyncSession

from tests.conftest import serve_app
from tests.factories import bearer, make_api_key, make_user, sign_in
from tradeos.accounts.deps import PrincipalDep, RequireRole, RequireScope, UserRateLimit
from tradeos.accounts.models import Role
from tradeos.app import create_app
from tradeos.config import Settings
from tradeos.core.routing import APIRouter


def app_with_probes(settings: Settings) -> FastAPI:
    app = create_app(settings, configure_logs=False)
    probes = APIRouter(prefix="/probe")

    @probes.get("/super", dependencies=[Depends(RequireRole(Role.SUPER_ADMIN))])
    async def super_only() -> dict[str, str]:
        return {"ok": "super"}

    @probes.post(
        "/orders",
        dependencies=[Depends(RequireScope("trade")), Depends(UserRateLimit("trading"))],
    )
    async def place_order(principal: PrincipalDep) -> dict[str, int]:
        return {"user": principal.user_id}

    app.include_router(probes)
    return app


async def test_require_role(settings: Settings, database: Any, session: AsyncSession) -> None:
    headers = {
        role: bearer(await sign_in(session, settings, await make_user(session, role=role.value)))
        for role in Role
    }
    await session.commit()
    async with serve_app(app_with_probes(settings)) as client:
        for role, expected in ((Role.USER, 403), (Role.ADMIN, 403), (Role.SUPER_ADMIN, 200)):
            response = await client.get("/probe/super", headers=headers[role])
            assert response.status_code == expected, role


async def test_trade_scope_and_the_per_user_trading_limit(
    settings_factory: Callable[..., Settings], database: Any, session: AsyncSession
) -> None:
    settings = settings_factory(rate_limit_trading="2/minute")
    alice = await make_user(session, tier="pro")
    bob = await make_user(session, tier="pro")
    _, read_key = await make_api_key(session, settings, alice, scopes=["read"])
    _, trade_key = await make_api_key(session, settings, alice, scopes=["trade"])
    bob_headers = bearer(await sign_in(session, settings, bob))
    await session.commit()
    async with serve_app(app_with_probes(settings)) as client:
        refused = await client.post("/probe/orders", headers={"X-API-Key": read_key})
        assert refused.status_code == 403 and "`trade` scope" in refused.json()["detail"]
        for _ in range(2):
            placed = await client.post("/probe/orders", headers={"X-API-Key": trade_key})
            assert placed.status_code == 200 and placed.json() == {"user": alice.id}
        limited = await client.post("/probe/orders", headers={"X-API-Key": trade_key})
        assert limited.status_code == 429 and limited.headers["RateLimit-Limit"] == "2"
        # Per user: Bob, from the same address, has his own budget.
        assert (await client.post("/probe/orders", headers=bob_headers)).status_code == 200
