"""Rate limits as a client meets them: /auth per address, every user overall, per tier.

On the in-process counters, and on Redis when TEST_REDIS_URL is set; with Redis, two API
processes share the counters.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from tests.conftest import TEST_REDIS_URL, serve_app
from tests.factories import bearer, make_user, sign_in
from tradeos.app import create_app
from tradeos.config import Settings

REFRESH = "/api/v1/auth/refresh"


async def bad_refresh(client: httpx.AsyncClient) -> httpx.Response:
    return await client.post(REFRESH, json={"refresh_token": "not-a-real-token"})


@pytest.mark.parametrize("strategy", ["fixed-window", "moving-window", "sliding-window-counter"])
async def test_auth_is_limited_per_address_by_default(
    settings_factory: Callable[..., Settings], database: Any, strategy: str
) -> None:
    # The default, 10/minute (the test settings raise it for the other tests).
    settings = settings_factory(rate_limit_auth="10/minute", rate_limit_strategy=strategy)
    app = create_app(settings, configure_logs=False)
    async with serve_app(app) as client:
        for n in range(10):
            response = await bad_refresh(client)
            assert response.status_code == 401
            assert response.headers["RateLimit-Limit"] == "10"
            assert response.headers["RateLimit-Remaining"] == str(9 - n)
            assert 0 <= int(response.headers["RateLimit-Reset"]) <= 60
        limited = await bad_refresh(client)
        assert limited.status_code == 429
        assert limited.headers["content-type"] == "application/problem+json"
        assert 1 <= int(limited.headers["Retry-After"]) <= 60
        assert limited.headers["RateLimit-Remaining"] == "0"
        # Another address has its own budget.
        transport = httpx.ASGITransport(app=app, client=("198.51.100.7", 1))
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as other:
            assert (await bad_refresh(other)).status_code == 401


async def test_every_authenticated_user_has_an_overall_limit_with_tier_overrides(
    settings_factory: Callable[..., Settings], database: Any, session: AsyncSession
) -> None:
    settings = settings_factory(
        rate_limit_user="3/minute", rate_limit_tier_overrides="pro=5/minute"
    )
    free = bearer(await sign_in(session, settings, await make_user(session)))
    pro = bearer(await sign_in(session, settings, await make_user(session, tier="pro")))
    await session.commit()
    async with serve_app(create_app(settings, configure_logs=False)) as client:
        for headers, allowed in ((free, 3), (pro, 5)):
            for _ in range(allowed):
                response = await client.get("/api/v1/users/me", headers=headers)
                assert response.status_code == 200
                assert response.headers["RateLimit-Limit"] == str(allowed)
            limited = await client.get("/api/v1/users/me", headers=headers)
            assert limited.status_code == 429 and "Retry-After" in limited.headers


async def test_limits_can_be_switched_off(
    settings_factory: Callable[..., Settings], database: Any
) -> None:
    settings = settings_factory(rate_limit_auth="2/minute", rate_limit_enabled=False)
    async with serve_app(create_app(settings, configure_logs=False)) as client:
        for _ in range(5):
            response = await bad_refresh(client)
            assert response.status_code == 401 and "RateLimit-Limit" not in response.headers


@pytest.mark.skipif(TEST_REDIS_URL is None, reason="needs TEST_REDIS_URL")
async def test_two_api_processes_share_counters_on_redis(
    settings_factory: Callable[..., Settings], database: Any
) -> None:
    settings = settings_factory(rate_limit_auth="4/minute")
    first, second = (create_app(settings, configure_logs=False) for _ in range(2))
    async with serve_app(first) as one, serve_app(second) as two:
        for client in (one, two, one, two):
            assert (await bad_refresh(client)).status_code == 401
        assert (await bad_refresh(one)).status_code == 429
        assert (await bad_refresh(two)).status_code == 429
