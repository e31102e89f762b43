"""API keys: created once, listed without the secret, scoped, revocable, expiring."""

from __future__ import annotations

from datetime import timedelta

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from tests.factories import bearer, make_api_key, make_user, sign_in
from tradeos.accounts.models import ApiKey, Role, User
from tradeos.config import Settings
from tradeos.core.db import utcnow

KEYS = "/api/v1/api-keys"


async def pro_user(session: AsyncSession, **overrides: object) -> User:
    return await make_user(session, tier="pro", **overrides)


async def test_create_list_and_use_a_key(
    client: httpx.AsyncClient, session: AsyncSession, settings: Settings
) -> None:
    user = await pro_user(session)
    headers = bearer(await sign_in(session, settings, user))
    await session.commit()

    expires = (utcnow() + timedelta(days=30)).isoformat()
    created = await client.post(
        KEYS,
        headers=headers,
        json={"name": "bot", "scopes": ["read", "trade"], "expires_at": expires},
    )
    assert created.status_code == 201, created.text
    body = created.json()
    secret = body["key"]
    assert secret.startswith("trd_") and body["prefix"] == secret[:12]
    assert body["scopes"] == ["read", "trade"] and body["expires_at"] is not None

    listed = await client.get(KEYS, headers=headers)
    assert listed.status_code == 200
    page = listed.json()
    assert page["total"] == 1 and page["items"][0]["prefix"] == body["prefix"]
    assert secret not in listed.text and "key_hash" not in listed.text
    assert page["items"][0]["last_used_at"] is None

    me = await client.get("/api/v1/auth/me", headers={"X-API-Key": secret})
    assert me.status_code == 200 and me.json()["id"] == user.id
    again = (await client.get(KEYS, headers=headers)).json()
    assert again["items"][0]["last_used_at"] is not None

    stored = await session.scalar(select(ApiKey.key_hash))
    assert stored is not None and secret not in stored and len(stored) == 64


async def test_a_read_key_cannot_do_what_needs_trade(
    client: httpx.AsyncClient, session: AsyncSession, settings: Settings
) -> None:
    user = await pro_user(session)
    _, read_only = await make_api_key(session, settings, user, scopes=["read"])
    _, trader = await make_api_key(session, settings, user, scopes=["read", "trade"])
    await session.commit()

    assert (await client.get(KEYS, headers={"X-API-Key": read_only})).status_code == 200
    body = {"name": "x", "scopes": ["read"]}
    refused = await client.post(KEYS, headers={"X-API-Key": read_only}, json=body)
    assert refused.status_code == 403 and "trade" in refused.json()["detail"]
    patch = await client.patch(
        "/api/v1/users/me", headers={"X-API-Key": read_only}, json={"full_name": "X"}
    )
    assert patch.status_code == 403
    allowed = await client.post(KEYS, headers={"X-API-Key": trader}, json=body)
    assert allowed.status_code == 201


async def test_a_key_never_grants_more_than_its_owner_has(
    client: httpx.AsyncClient, session: AsyncSession, settings: Settings
) -> None:
    user = await pro_user(session)
    headers = bearer(await sign_in(session, settings, user))
    _, trader = await make_api_key(session, settings, user, scopes=["read", "trade"])
    await session.commit()
    admin_scope = await client.post(KEYS, headers=headers, json={"name": "x", "scopes": ["admin"]})
    assert admin_scope.status_code == 403
    # A key may only hand on the scopes it has itself.
    wider = await client.post(
        KEYS, headers={"X-API-Key": trader}, json={"name": "y", "scopes": ["read"]}
    )
    assert wider.status_code == 201


async def test_an_admins_key_loses_admin_when_the_admin_is_demoted(
    client: httpx.AsyncClient, session: AsyncSession, settings: Settings
) -> None:
    admin = await pro_user(session, role=Role.ADMIN.value)
    _, key = await make_api_key(session, settings, admin, scopes=["read", "admin"])
    await session.commit()
    assert (await client.get("/api/v1/admin/users", headers={"X-API-Key": key})).status_code == 200
    admin.role = Role.USER.value
    await session.commit()
    assert (await client.get("/api/v1/admin/users", headers={"X-API-Key": key})).status_code == 403


async def test_revoked_key_stops_at_once(
    client: httpx.AsyncClient, session: AsyncSession, settings: Settings
) -> None:
    user = await pro_user(session)
    headers = bearer(await sign_in(session, settings, user))
    api_key, secret = await make_api_key(session, settings, user, scopes=["read"])
    await session.commit()
    assert (await client.get("/api/v1/auth/me", headers={"X-API-Key": secret})).status_code == 200

    assert (await client.delete(f"{KEYS}/{api_key.id}", headers=headers)).status_code == 204
    response = await client.get("/api/v1/auth/me", headers={"X-API-Key": secret})
    assert response.status_code == 401 and "revoked" in response.json()["detail"]
    assert "ApiKey" in response.headers["WWW-Authenticate"]
    assert (await client.get(KEYS, headers=headers)).json()["total"] == 0
    assert (await client.delete(f"{KEYS}/{api_key.id}", headers=headers)).status_code == 404


async def test_expired_key_is_401(
    client: httpx.AsyncClient, session: AsyncSession, settings: Settings
) -> None:
    user = await pro_user(session)
    _, secret = await make_api_key(
        session, settings, user, scopes=["read"], expires_at=utcnow() - timedelta(seconds=1)
    )
    await session.commit()
    response = await client.get("/api/v1/auth/me", headers={"X-API-Key": secret})
    assert response.status_code == 401 and "expired" in response.json()["detail"]


@pytest.mark.parametrize("value", ["trd_" + "x" * 40, "not-a-key", "trd_"])
async def test_unknown_keys_are_401(client: httpx.AsyncClient, value: str) -> None:
    response = await client.get("/api/v1/auth/me", headers={"X-API-Key": value})
    assert response.status_code == 401


async def test_another_users_key_is_404(
    client: httpx.AsyncClient, session: AsyncSession, settings: Settings
) -> None:
    owner = await pro_user(session)
    intruder = await pro_user(session)
    api_key, secret = await make_api_key(session, settings, owner, scopes=["read"])
    headers = bearer(await sign_in(session, settings, intruder))
    await session.commit()
    assert (await client.delete(f"{KEYS}/{api_key.id}", headers=headers)).status_code == 404
    assert (await client.get(KEYS, headers=headers)).json()["total"] == 0
    assert (await client.get("/api/v1/auth/me", headers={"X-API-Key": secret})).status_code == 200


async def test_free_tier_has_no_api_access_and_quotas_hold(
    client: httpx.AsyncClient, session: AsyncSession, settings: Settings
) -> None:
    free = await make_user(session)
    pro = await pro_user(session)
    free_headers = bearer(await sign_in(session, settings, free))
    pro_headers = bearer(await sign_in(session, settings, pro))
    await session.commit()
    body = {"name": "k", "scopes": ["read"]}
    refused = await client.post(KEYS, headers=free_headers, json=body)
    assert refused.status_code == 403 and "api_access" in refused.json()["detail"]
    for _ in range(5):  # the pro plan allows five active keys
        assert (await client.post(KEYS, headers=pro_headers, json=body)).status_code == 201
    sixth = await client.post(KEYS, headers=pro_headers, json=body)
    assert sixth.status_code == 403 and "5 active API keys" in sixth.json()["detail"]


@pytest.mark.parametrize(
    "body",
    [
        {"name": "k", "scopes": []},
        {"name": "k", "scopes": ["withdraw"]},
        {"name": "   ", "scopes": ["read"]},
        {"name": "k", "scopes": ["read"], "expires_at": "2020-01-01T00:00:00Z"},
        {"name": "k", "scopes": ["read"], "expires_at": "2999-01-01T00:00:00"},  # naive
    ],
)
async def test_invalid_key_requests_are_422(
    client: httpx.AsyncClient, session: AsyncSession, settings: Settings, body: dict[str, object]
) -> None:
    user = await pro_user(session)
    headers = bearer(await sign_in(session, settings, user))
    await session.commit()
    response = await client.post(KEYS, headers=headers, json=body)
    assert response.status_code == 422, response.text
