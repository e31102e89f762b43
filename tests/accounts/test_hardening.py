"""What a hostile or careless client tries, and what it gets: networks instead of addresses,
password guessing behind a stolen token, keys that outlive their parent, odd characters and
dates, races on quotas."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import httpx
import jwt
import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from tests.conftest import serve_app
from tests.factories import DEFAULT_PASSWORD, bearer, make_api_key, make_user, sign_in
from tradeos.accounts.models import ApiKey, AuditEvent, Device
from tradeos.app import create_app
from tradeos.config import Settings
from tradeos.core.db import utcnow
from tradeos.core.ratelimit import network_of

API = "/api/v1"


@pytest.mark.parametrize(
    ("address", "network"),
    [
        ("192.0.2.7", "192.0.2.7"),
        ("2001:db8:1:2::1", "2001:db8:1:2::/64"),
        ("2001:db8:1:2:ffff:ffff:ffff:ffff", "2001:db8:1:2::/64"),
        ("::ffff:192.0.2.7", "192.0.2.7"),
        ("testclient", "testclient"),
    ],
)
def test_limits_count_ipv6_clients_by_their_64(address: str, network: str) -> None:
    assert network_of(address) == network


async def test_a_fresh_ipv6_address_per_request_does_not_escape_the_auth_limit(
    settings_factory: Callable[..., Settings], database: Any
) -> None:
    app = create_app(settings_factory(rate_limit_auth="3/minute"), configure_logs=False)
    async with serve_app(app):
        statuses = []
        for n in range(5):
            transport = httpx.ASGITransport(app=app, client=(f"2001:db8:1:2::{n + 1}", 1000))
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
                response = await client.post(f"{API}/auth/refresh", json={"refresh_token": "x"})
                statuses.append(response.status_code)
    assert statuses == [401, 401, 401, 429, 429]


async def test_guessing_the_current_password_locks_like_a_login(
    client: httpx.AsyncClient, session: AsyncSession, settings: Settings
) -> None:
    user = await make_user(session)
    headers = bearer(await sign_in(session, settings, user))
    await session.commit()

    async def change(current: str) -> httpx.Response:
        return await client.post(
            f"{API}/users/me/password",
            headers=headers,
            json={"current_password": current, "new_password": "Fresh-Ledger-Line-9"},
        )

    outcomes = [(await change(f"guess-number-{n}")).status_code for n in range(5)]
    assert outcomes == [403, 403, 403, 403, 429]
    right = await change(DEFAULT_PASSWORD)
    assert right.status_code == 429 and right.json()["type"].endswith("account-locked")
    assert "signing in still works" in right.json()["detail"]
    actions = (await session.scalars(select(AuditEvent.action).order_by(AuditEvent.id))).all()
    assert actions == ["password_change_failed"] * 5 + ["password_change_locked"]
    await session.commit()  # end the test's unit of work: on SQLite it holds the write lock
    sign_in_ = await client.post(
        f"{API}/auth/login", json={"login": user.username, "password": DEFAULT_PASSWORD}
    )
    assert sign_in_.status_code == 200


async def test_a_key_made_by_a_key_does_not_outlive_it(
    client: httpx.AsyncClient, session: AsyncSession, settings: Settings
) -> None:
    user = await make_user(session, tier="pro")
    parent_expiry = utcnow() + timedelta(hours=1)
    _, parent = await make_api_key(
        session, settings, user, scopes=["read", "trade"], expires_at=parent_expiry
    )
    await session.commit()
    for asked in (None, (utcnow() + timedelta(days=365)).isoformat()):
        created = await client.post(
            f"{API}/api-keys",
            headers={"X-API-Key": parent},
            json={"name": "child", "scopes": ["read"], "expires_at": asked},
        )
        assert created.status_code == 201
        child_expiry = datetime.fromisoformat(created.json()["expires_at"])
        assert abs((child_expiry - parent_expiry).total_seconds()) < 1


async def test_a_key_cannot_change_what_the_owner_signs_in_with(
    client: httpx.AsyncClient, session: AsyncSession, settings: Settings
) -> None:
    user = await make_user(session, tier="pro")
    _, key = await make_api_key(session, settings, user, scopes=["read", "trade"])
    await session.commit()
    for body in ({"email": "thief@example.com"}, {"username": "thief"}):
        response = await client.patch(f"{API}/users/me", headers={"X-API-Key": key}, json=body)
        assert response.status_code == 403
    name = await client.patch(
        f"{API}/users/me", headers={"X-API-Key": key}, json={"full_name": "Bot"}
    )
    assert name.status_code == 200


async def test_a_downgrade_to_a_plan_without_api_access_stops_keys(
    client: httpx.AsyncClient, session: AsyncSession, settings: Settings
) -> None:
    user = await make_user(session, tier="pro")
    _, key = await make_api_key(session, settings, user, scopes=["read"])
    await session.commit()
    assert (await client.get(f"{API}/auth/me", headers={"X-API-Key": key})).status_code == 200
    user.tier = "free"
    await session.commit()
    refused = await client.get(f"{API}/auth/me", headers={"X-API-Key": key})
    assert refused.status_code == 403 and "API access" in refused.json()["detail"]


async def test_emails_are_one_account_whatever_their_case_even_beyond_ascii(
    client: httpx.AsyncClient,
) -> None:
    body = {"email": "Ölaf@Example.com", "username": "olaf", "password": "Fjord-Ledger-Line-3"}
    created = await client.post(f"{API}/auth/register", json=body)
    assert created.status_code == 201 and created.json()["email"] == "ölaf@example.com"
    for login in ("Ölaf@example.com", "ölaf@EXAMPLE.com"):
        response = await client.post(
            f"{API}/auth/login", json={"login": login, "password": body["password"]}
        )
        assert response.status_code == 200, login
    twin = {**body, "email": "ölaf@example.com", "username": "olaf2"}
    assert (await client.post(f"{API}/auth/register", json=twin)).status_code == 409


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/auth/login", {"login": "a\u0000b", "password": "whatever-it-is"}),
        (
            "/auth/register",
            {
                "email": "n@example.com",
                "username": "nul",
                "password": "Nul-Ledger-Line-1",
                "full_name": "A\u0000B",
            },
        ),
    ],
)
async def test_a_nul_character_is_a_422(
    client: httpx.AsyncClient, path: str, body: dict[str, str]
) -> None:
    response = await client.post(f"{API}{path}", json=body)
    assert response.status_code == 422
    assert "NUL" in response.json()["errors"][0]["message"]


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("until=0.5", "ISO 8601"),
        ("since=1795000000", "ISO 8601"),
        ("until=9999-12-31T23:59:59-12:00", "range"),
        ("since=0001-01-01T00:00:00%2B14:00", "range"),
        ("since=2026-01-01T00:00:00", "timezone"),
    ],
)
async def test_odd_moments_are_422(
    client: httpx.AsyncClient, session: AsyncSession, settings: Settings, query: str, message: str
) -> None:
    admin = await make_user(session, role="admin")
    headers = bearer(await sign_in(session, settings, admin))
    await session.commit()
    response = await client.get(f"{API}/admin/audit?{query}", headers=headers)
    assert response.status_code == 422, response.text
    assert message in response.json()["errors"][0]["message"]


async def test_an_expiry_beyond_the_calendar_is_a_422(
    client: httpx.AsyncClient, session: AsyncSession, settings: Settings
) -> None:
    user = await make_user(session, tier="pro")
    headers = bearer(await sign_in(session, settings, user))
    await session.commit()
    response = await client.post(
        f"{API}/api-keys",
        headers=headers,
        json={"name": "k", "scopes": ["read"], "expires_at": "9999-12-31T23:59:59-01:00"},
    )
    assert response.status_code == 422


async def test_a_signed_token_naming_an_impossible_id_is_401(
    client: httpx.AsyncClient, settings: Settings, database: Any
) -> None:
    now = utcnow()
    claims = {
        "iss": settings.jwt_issuer,
        "aud": settings.jwt_audience,
        "sub": str(2**70),
        "sid": 2**70,
        "jti": "x",
        "iat": now,
        "exp": now + timedelta(minutes=5),
    }
    token = jwt.encode(claims, settings.jwt_secret_key.get_secret_value(), algorithm="HS256")  # type: ignore[union-attr]
    response = await client.get(f"{API}/auth/me", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 401


async def test_parallel_requests_cannot_exceed_quotas(
    client: httpx.AsyncClient, session: AsyncSession, settings: Settings
) -> None:
    pro = await make_user(session, tier="pro", username="racer")  # 5 keys, 3 devices
    headers = bearer(await sign_in(session, settings, pro))
    await session.commit()
    keys = await asyncio.gather(
        *(
            client.post(
                f"{API}/api-keys", headers=headers, json={"name": f"k{n}", "scopes": ["read"]}
            )
            for n in range(8)
        )
    )
    assert sorted(response.status_code for response in keys) == [201] * 5 + [403] * 3
    logins = await asyncio.gather(
        *(
            client.post(
                f"{API}/auth/login",
                json={
                    "login": "racer",
                    "password": DEFAULT_PASSWORD,
                    "device_info": {"platform": f"machine-{n}"},
                },
            )
            for n in range(4)  # four attempts per name stay under the lockout
        )
    )
    assert sorted(response.status_code for response in logins) == [200] * 3 + [403]
    assert await session.scalar(select(func.count()).select_from(ApiKey)) == 5
    assert await session.scalar(select(func.count()).select_from(Device)) == 3


@pytest.mark.parametrize(
    "body",
    [
        {"email": "s@example.com", "username": "sur", "password": "Lone-\ud800-Surrogate"},
        {
            "email": "s@example.com",
            "username": "sur",
            "password": "Fine-Ledger-Line-4",
            "full_name": "half \udc00 pair",
        },
    ],
)
async def test_half_a_surrogate_pair_is_a_422(
    client: httpx.AsyncClient, body: dict[str, str]
) -> None:
    response = await client.post(
        f"{API}/auth/register",
        content=json.dumps(body),  # json.dumps writes the lone surrogate as \\ud800
        headers={"content-type": "application/json"},
    )
    # Pydantic refuses text with no UTF-8 form before it could reach a hash or the database.
    assert response.status_code == 422


async def test_revoking_a_key_revokes_the_keys_it_made(
    client: httpx.AsyncClient, session: AsyncSession, settings: Settings
) -> None:
    user = await make_user(session, tier="pro")
    headers = bearer(await sign_in(session, settings, user))
    parent, parent_secret = await make_api_key(session, settings, user, scopes=["read", "trade"])
    _, sibling_secret = await make_api_key(session, settings, user, scopes=["read"])
    await session.commit()

    async def child_of(secret: str) -> str:
        made = await client.post(
            f"{API}/api-keys",
            headers={"X-API-Key": secret},
            json={"name": "child", "scopes": ["read", "trade"]},
        )
        assert made.status_code == 201
        return str(made.json()["key"])

    child = await child_of(parent_secret)
    grandchild = await child_of(child)
    for secret in (child, grandchild):
        assert (
            await client.get(f"{API}/auth/me", headers={"X-API-Key": secret})
        ).status_code == 200
    assert (await client.delete(f"{API}/api-keys/{parent.id}", headers=headers)).status_code == 204
    for secret in (parent_secret, child, grandchild):
        response = await client.get(f"{API}/auth/me", headers={"X-API-Key": secret})
        assert response.status_code == 401 and "revoked" in response.json()["detail"]
    sibling = await client.get(f"{API}/auth/me", headers={"X-API-Key": sibling_secret})
    assert sibling.status_code == 200


@pytest.mark.parametrize("blank", [" ", "\x85", "\x1c", "\u3000"])
async def test_text_of_nothing_but_spaces_is_422(
    client: httpx.AsyncClient, session: AsyncSession, blank: str
) -> None:
    await make_user(session, username="spaces")
    await session.commit()
    response = await client.post(
        f"{API}/auth/login",
        json={"login": "spaces", "password": DEFAULT_PASSWORD, "device_info": {"platform": blank}},
    )
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "body.device_info.platform"
