"""Accounts end to end: register, login, refresh rotation, logout, profile, password change."""

from __future__ import annotations

import httpx
import pytest
from pwdlib import PasswordHash
from pwdlib.hashers.argon2 import Argon2Hasher
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from tests.factories import DEFAULT_PASSWORD, bearer, make_user, sign_in
from tradeos.accounts.models import AuditEvent, AuthSession, RefreshToken, User
from tradeos.config import Settings

API = "/api/v1"
STRONG = "Tr4ding-Desk-Ledger"


async def register(client: httpx.AsyncClient, **overrides: object) -> httpx.Response:
    body = {"email": "ada@example.com", "username": "ada", "password": STRONG}
    body.update(overrides)
    return await client.post(f"{API}/auth/register", json=body)


async def login(
    client: httpx.AsyncClient, login: str, password: str, **extra: object
) -> httpx.Response:
    return await client.post(
        f"{API}/auth/login", json={"login": login, "password": password, **extra}
    )


async def test_register_then_login_with_email_or_username(client: httpx.AsyncClient) -> None:
    created = await register(client, full_name="Ada Lovelace")
    assert created.status_code == 201, created.text
    user = created.json()
    assert user["username"] == "ada" and user["role"] == "user" and user["tier"] == "free"
    assert "password" not in created.text and "password_hash" not in user

    for name in ("ada", "ADA@example.com"):
        response = await login(client, name, STRONG)
        assert response.status_code == 200, response.text
        tokens = response.json()
        assert set(tokens) == {"access_token", "refresh_token", "token_type", "expires_in"}
        assert tokens["token_type"] == "bearer" and tokens["expires_in"] == 15 * 60
        me = await client.get(f"{API}/auth/me", headers=bearer_of(tokens))
        assert me.status_code == 200 and me.json()["email"] == "ada@example.com"


def bearer_of(tokens: dict[str, str]) -> dict[str, str]:
    return {"Authorization": f"Bearer {tokens['access_token']}"}


@pytest.mark.parametrize(
    ("field", "value"),
    [("email", "ADA@Example.com"), ("username", "Ada")],
)
async def test_taken_email_or_username_is_409_ignoring_case(
    client: httpx.AsyncClient, field: str, value: str
) -> None:
    assert (await register(client)).status_code == 201
    other = {"email": "someone@example.com", "username": "someone", field: value}
    response = await register(client, **other)
    assert response.status_code == 409
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["errors"][0]["field"] == f"body.{field}"


@pytest.mark.parametrize(
    ("password", "reason"),
    [("short1!", "at least 8"), ("password123", "common"), ("qwertyuiop", "common")],
)
async def test_weak_passwords_are_refused(
    client: httpx.AsyncClient, password: str, reason: str
) -> None:
    response = await register(client, password=password)
    assert response.status_code == 422
    error = response.json()["errors"][0]
    assert error["field"] == "body.password" and reason in error["message"]
    assert password not in response.text  # the refused password is not echoed


@pytest.mark.parametrize("body", [{"role": "admin"}, {"tier": "pro"}, {"is_active": False}])
async def test_register_cannot_choose_role_tier_or_status(
    client: httpx.AsyncClient, body: dict[str, object]
) -> None:
    response = await register(client, **body)
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == f"body.{next(iter(body))}"


async def test_wrong_password_and_unknown_user_answer_alike(client: httpx.AsyncClient) -> None:
    assert (await register(client)).status_code == 201
    wrong = await login(client, "ada", "not-the-password")
    unknown = await login(client, "nobody", "not-the-password")
    assert wrong.status_code == unknown.status_code == 401
    assert wrong.json()["detail"] == unknown.json()["detail"]
    assert "WWW-Authenticate" in wrong.headers


async def test_disabled_account_cannot_log_in(
    client: httpx.AsyncClient, session: AsyncSession
) -> None:
    await make_user(session, username="gone", is_active=False)
    await session.commit()
    response = await login(client, "gone", DEFAULT_PASSWORD)
    assert response.status_code == 403 and "disabled" in response.json()["detail"]


async def test_refresh_rotates_and_reuse_revokes_the_family(
    client: httpx.AsyncClient, session: AsyncSession
) -> None:
    assert (await register(client)).status_code == 201
    first = (await login(client, "ada", STRONG)).json()

    second = await client.post(
        f"{API}/auth/refresh", json={"refresh_token": first["refresh_token"]}
    )
    assert second.status_code == 200
    rotated = second.json()
    assert rotated["refresh_token"] != first["refresh_token"]
    assert (await client.get(f"{API}/auth/me", headers=bearer_of(rotated))).status_code == 200

    third = await client.post(
        f"{API}/auth/refresh", json={"refresh_token": rotated["refresh_token"]}
    )
    assert third.status_code == 200
    newest = third.json()

    # The first token is presented again: it was copied. The whole family ends, including the
    # newest tokens the thief or the owner holds.
    reused = await client.post(
        f"{API}/auth/refresh", json={"refresh_token": first["refresh_token"]}
    )
    assert reused.status_code == 401 and "already used" in reused.json()["detail"]
    assert "WWW-Authenticate" in reused.headers
    assert (await client.get(f"{API}/auth/me", headers=bearer_of(newest))).status_code == 401
    again = await client.post(
        f"{API}/auth/refresh", json={"refresh_token": newest["refresh_token"]}
    )
    assert again.status_code == 401

    revoked = (await session.scalars(select(AuthSession))).all()
    assert [row.revoked_reason for row in revoked] == ["token_reuse"]
    actions = (await session.scalars(select(AuditEvent.action))).all()
    assert "refresh_token_reused" in actions


async def test_a_second_login_is_not_touched_by_reuse_in_another(
    client: httpx.AsyncClient,
) -> None:
    assert (await register(client)).status_code == 201
    laptop = (await login(client, "ada", STRONG)).json()
    phone = (await login(client, "ada", STRONG)).json()
    await client.post(f"{API}/auth/refresh", json={"refresh_token": laptop["refresh_token"]})
    await client.post(f"{API}/auth/refresh", json={"refresh_token": laptop["refresh_token"]})
    assert (await client.get(f"{API}/auth/me", headers=bearer_of(phone))).status_code == 200


async def test_refresh_tokens_are_stored_hashed(
    client: httpx.AsyncClient, session: AsyncSession
) -> None:
    assert (await register(client)).status_code == 201
    tokens = (await login(client, "ada", STRONG)).json()
    stored = (await session.scalars(select(RefreshToken.token_hash))).all()
    assert len(stored) == 1 and tokens["refresh_token"] not in stored[0]


@pytest.mark.parametrize(("token", "status"), [("", 422), ("x" * 201, 422), ("not-a-token", 401)])
async def test_bad_refresh_tokens(client: httpx.AsyncClient, token: str, status: int) -> None:
    response = await client.post(f"{API}/auth/refresh", json={"refresh_token": token})
    assert response.status_code == status
    assert response.headers["content-type"] == "application/problem+json"


async def test_logout_ends_this_session_only(client: httpx.AsyncClient) -> None:
    assert (await register(client)).status_code == 201
    one = (await login(client, "ada", STRONG)).json()
    two = (await login(client, "ada", STRONG)).json()
    assert (await client.post(f"{API}/auth/logout", headers=bearer_of(one))).status_code == 204
    assert (await client.get(f"{API}/auth/me", headers=bearer_of(one))).status_code == 401
    refresh = await client.post(f"{API}/auth/refresh", json={"refresh_token": one["refresh_token"]})
    assert refresh.status_code == 401
    assert (await client.get(f"{API}/auth/me", headers=bearer_of(two))).status_code == 200


async def test_logout_all_ends_every_session(client: httpx.AsyncClient) -> None:
    assert (await register(client)).status_code == 201
    sessions = [(await login(client, "ada", STRONG)).json() for _ in range(3)]
    response = await client.post(f"{API}/auth/logout-all", headers=bearer_of(sessions[0]))
    assert response.status_code == 200 and response.json() == {"revoked_sessions": 3}
    for tokens in sessions:
        assert (await client.get(f"{API}/auth/me", headers=bearer_of(tokens))).status_code == 401


async def test_profile_read_and_update(
    client: httpx.AsyncClient, session: AsyncSession, settings: Settings
) -> None:
    user = await make_user(session, username="grace", email="grace@example.com")
    other = await make_user(session, username="taken")
    headers = bearer(await sign_in(session, settings, user))
    await session.commit()

    me = await client.get(f"{API}/users/me", headers=headers)
    assert me.status_code == 200 and me.json()["username"] == "grace"
    updated = await client.patch(
        f"{API}/users/me",
        headers=headers,
        json={"full_name": "  Grace Hopper ", "username": "ghopper"},
    )
    assert updated.status_code == 200, updated.text
    assert updated.json()["full_name"] == "Grace Hopper" and updated.json()["username"] == "ghopper"

    clash = await client.patch(f"{API}/users/me", headers=headers, json={"username": "TAKEN"})
    assert clash.status_code == 409
    assert other.username == "taken"


@pytest.mark.parametrize(
    "body",
    [
        {"role": "super_admin"},
        {"tier": "enterprise"},
        {"is_active": True},
        {"kyc_status": "approved"},
    ],
)
async def test_a_user_never_sets_their_own_role_tier_or_status(
    client: httpx.AsyncClient, session: AsyncSession, settings: Settings, body: dict[str, object]
) -> None:
    user = await make_user(session)
    headers = bearer(await sign_in(session, settings, user))
    await session.commit()
    response = await client.patch(f"{API}/users/me", headers=headers, json=body)
    assert response.status_code == 422
    await session.refresh(user)
    assert (user.role, user.tier, user.kyc_status) == ("user", "free", "none")


async def test_password_change_needs_the_current_one_and_ends_other_sessions(
    client: httpx.AsyncClient,
) -> None:
    assert (await register(client)).status_code == 201
    here = (await login(client, "ada", STRONG)).json()
    elsewhere = (await login(client, "ada", STRONG)).json()

    wrong = await client.post(
        f"{API}/users/me/password",
        headers=bearer_of(here),
        json={"current_password": "nope-nope-nope", "new_password": "An0ther-Ledger-Line"},
    )
    assert wrong.status_code == 403
    assert (await client.get(f"{API}/auth/me", headers=bearer_of(elsewhere))).status_code == 200

    changed = await client.post(
        f"{API}/users/me/password",
        headers=bearer_of(here),
        json={"current_password": STRONG, "new_password": "An0ther-Ledger-Line"},
    )
    assert changed.status_code == 204, changed.text
    assert (await client.get(f"{API}/auth/me", headers=bearer_of(here))).status_code == 200
    assert (await client.get(f"{API}/auth/me", headers=bearer_of(elsewhere))).status_code == 401
    assert (await login(client, "ada", STRONG)).status_code == 401
    assert (await login(client, "ada", "An0ther-Ledger-Line")).status_code == 200


async def test_password_change_refuses_a_weak_new_password(client: httpx.AsyncClient) -> None:
    assert (await register(client)).status_code == 201
    here = (await login(client, "ada", STRONG)).json()
    response = await client.post(
        f"{API}/users/me/password",
        headers=bearer_of(here),
        json={"current_password": STRONG, "new_password": "letmein1"},
    )
    assert response.status_code == 422


async def test_login_rehashes_a_password_hashed_with_old_parameters(
    client: httpx.AsyncClient, session: AsyncSession
) -> None:
    weak_hasher = PasswordHash((Argon2Hasher(time_cost=1, memory_cost=8192),))
    old_hash = weak_hasher.hash(STRONG)
    user = await make_user(session, username="old", password_hash=old_hash)
    await session.commit()
    assert (await login(client, "old", STRONG)).status_code == 200
    await session.refresh(user)
    await session.commit()  # end the test's unit of work: on SQLite it holds the write lock
    assert user.password_hash != old_hash and "m=8192" not in user.password_hash
    assert (await login(client, "old", STRONG)).status_code == 200


async def test_login_is_audited(client: httpx.AsyncClient, session: AsyncSession) -> None:
    assert (await register(client)).status_code == 201
    await login(client, "ada", "wrong-wrong")
    await login(client, "ada", STRONG)
    rows = (await session.scalars(select(AuditEvent).order_by(AuditEvent.id))).all()
    assert [row.action for row in rows] == ["user_registered", "login_failed", "login"]
    user_id = await session.scalar(select(User.id))
    assert all(row.target_user_id == user_id for row in rows)
    assert await session.scalar(select(func.count()).select_from(AuthSession)) == 1


@pytest.mark.parametrize("body", [{"username": None}, {"email": None}])
async def test_email_and_username_cannot_be_removed(
    client: httpx.AsyncClient, session: AsyncSession, settings: Settings, body: dict[str, object]
) -> None:
    user = await make_user(session, full_name="Named")
    headers = bearer(await sign_in(session, settings, user))
    await session.commit()
    response = await client.patch(f"{API}/users/me", headers=headers, json=body)
    assert response.status_code == 422
    cleared = await client.patch(f"{API}/users/me", headers=headers, json={"full_name": None})
    assert cleared.status_code == 200 and cleared.json()["full_name"] is None
