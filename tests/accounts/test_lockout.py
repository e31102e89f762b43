"""Brute-force protection: accounts lock after repeated failures, addresses are limited too.

These run on the in-process counters, and on Redis when TEST_REDIS_URL is set (the settings
fixture points the app there), where two API processes share one set of counters.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from tests.conftest import TEST_REDIS_URL, serve_app
from tests.factories import DEFAULT_PASSWORD, make_user
from tradeos.accounts.models import AuditEvent
from tradeos.app import create_app
from tradeos.config import Settings

LOGIN = "/api/v1/auth/login"
WRONG = "wrong-password"


async def attempt(client: httpx.AsyncClient, login: str, password: str = WRONG) -> httpx.Response:
    return await client.post(LOGIN, json={"login": login, "password": password})


@pytest.fixture
async def user(session: AsyncSession) -> Any:
    user = await make_user(session, username="victim", email="victim@example.com")
    await session.commit()
    return user


async def test_five_failures_lock_the_account_even_for_the_right_password(
    client: httpx.AsyncClient, user: Any, session: AsyncSession
) -> None:
    for _ in range(4):
        assert (await attempt(client, "victim")).status_code == 401
    fifth = await attempt(client, "victim")
    assert fifth.status_code == 429
    problem = fifth.json()
    assert problem["type"] == "urn:tradeos:problem:account-locked"
    assert "locked" in problem["detail"] and "15 minutes" in problem["detail"]
    assert 14 * 60 <= int(fifth.headers["Retry-After"]) <= 15 * 60

    right = await attempt(client, "victim", DEFAULT_PASSWORD)
    assert right.status_code == 429 and right.json()["type"].endswith("account-locked")

    actions = (await session.scalars(select(AuditEvent.action).order_by(AuditEvent.id))).all()
    assert actions == ["login_failed"] * 5 + ["login_locked"]


async def test_a_lockout_does_not_reveal_whether_the_account_exists(
    client: httpx.AsyncClient, user: Any
) -> None:
    responses = {}
    for name in ("victim", "no-such-user"):
        for _ in range(5):
            last = await attempt(client, name)
        responses[name] = last
    real, fake = responses["victim"], responses["no-such-user"]
    assert real.status_code == fake.status_code == 429
    assert real.json()["detail"] == fake.json()["detail"]
    assert real.json()["type"] == fake.json()["type"]


async def test_each_name_is_counted_alike_so_the_lockout_links_no_email_to_a_user(
    client: httpx.AsyncClient, user: Any
) -> None:
    # Case and spacing variants are one name.
    for name in ("victim", "VICTIM", " victim ", "Victim"):
        assert (await attempt(client, name)).status_code == 401
    assert (await attempt(client, "victim")).status_code == 429
    # The same account's email has a count of its own, exactly like an unknown email, so a
    # lockout never confirms that an email belongs to a username.
    for email in ("victim@example.com", "stranger@example.com"):
        outcomes = [(await attempt(client, email)).status_code for _ in range(5)]
        assert outcomes == [401, 401, 401, 401, 429]


async def test_parallel_guesses_cannot_outrun_the_count(
    client: httpx.AsyncClient, user: Any, session: AsyncSession
) -> None:
    guesses = [attempt(client, "victim") for _ in range(12)]
    guesses.append(attempt(client, "victim", DEFAULT_PASSWORD))
    outcomes = [response.status_code for response in await asyncio.gather(*guesses)]
    # Every attempt is counted before its password is checked: at most five are checked.
    assert outcomes.count(401) + outcomes.count(200) <= 5
    assert outcomes.count(429) >= 8
    checked = await session.scalars(
        select(AuditEvent.action).where(AuditEvent.action.in_(["login_failed", "login"]))
    )
    assert len(checked.all()) <= 5


async def test_the_right_password_of_a_disabled_account_never_adds_up_to_a_lock(
    client: httpx.AsyncClient, session: AsyncSession
) -> None:
    await make_user(session, username="paused", is_active=False)
    await session.commit()
    for _ in range(7):
        response = await attempt(client, "paused", DEFAULT_PASSWORD)
        assert response.status_code == 403 and "disabled" in response.json()["detail"]


async def test_a_success_starts_the_count_again(client: httpx.AsyncClient, user: Any) -> None:
    for _ in range(4):
        await attempt(client, "victim")
    assert (await attempt(client, "victim", DEFAULT_PASSWORD)).status_code == 200
    for _ in range(4):
        assert (await attempt(client, "victim")).status_code == 401


async def test_thresholds_are_configurable(
    settings_factory: Callable[..., Settings], database: Any, session: AsyncSession
) -> None:
    await make_user(session, username="victim")
    await session.commit()
    app = create_app(
        settings_factory(login_max_failures=2, login_lockout_minutes=3), configure_logs=False
    )
    async with serve_app(app) as client:
        assert (await attempt(client, "victim")).status_code == 401
        locked = await attempt(client, "victim")
        assert locked.status_code == 429 and "3 minutes" in locked.json()["detail"]
        assert int(locked.headers["Retry-After"]) <= 180


async def test_failures_are_limited_per_address(
    settings_factory: Callable[..., Settings], database: Any
) -> None:
    app = create_app(settings_factory(login_max_failures_per_ip=3), configure_logs=False)
    async with serve_app(app) as client:
        for n in range(3):  # three different accounts, none reaching its own lockout
            assert (await attempt(client, f"someone{n}")).status_code == 401
        blocked = await attempt(client, "someone-else")
        assert blocked.status_code == 429
        assert "network address" in blocked.json()["detail"] and "Retry-After" in blocked.headers
        # Another address is not affected.
        other = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app, client=("203.0.113.9", 4000)),
            base_url="http://testserver",
        )
        async with other:
            assert (await attempt(other, "someone-else")).status_code == 401


@pytest.mark.skipif(TEST_REDIS_URL is not None, reason="moves the in-process clock only")
async def test_the_lock_ends_after_the_lockout(
    client: httpx.AsyncClient, user: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import limits.aio.storage.memory as memory_storage

    for _ in range(5):
        await attempt(client, "victim")
    assert (await attempt(client, "victim", DEFAULT_PASSWORD)).status_code == 429

    class Later:
        @staticmethod
        def time() -> float:
            return time.time() + 15 * 60 + 1

    monkeypatch.setattr(memory_storage, "time", Later)
    assert (await attempt(client, "victim", DEFAULT_PASSWORD)).status_code == 200


@pytest.mark.skipif(TEST_REDIS_URL is None, reason="needs TEST_REDIS_URL")
async def test_two_api_processes_share_the_lockout_on_redis(
    settings: Settings, database: Any, user: Any
) -> None:
    first, second = (create_app(settings, configure_logs=False) for _ in range(2))
    async with serve_app(first) as one, serve_app(second) as two:
        for client in (one, two, one, two):
            failed = await attempt(client, "victim")
            assert failed.status_code == 401, failed.text
        assert (await attempt(one, "victim")).status_code == 429  # the fifth, on the first
        assert (await attempt(two, "victim", DEFAULT_PASSWORD)).status_code == 429
