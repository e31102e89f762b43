"""Access tokens: what they carry, and every way a forged or stale one is refused."""

from __future__ import annotations

import base64
import json
from datetime import timedelta
from typing import Any

import httpx
import jwt
import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from tests.factories import bearer, make_user, sign_in
from tradeos.accounts.models import Role
from tradeos.config import Settings
from tradeos.core.db import utcnow

ME = "/api/v1/auth/me"


def _b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


async def test_access_token_claims(session: AsyncSession, settings: Settings) -> None:
    user = await make_user(session, role=Role.ADMIN.value)
    tokens = await sign_in(session, settings, user)
    header = jwt.get_unverified_header(tokens.access_token)
    claims = jwt.decode(tokens.access_token, options={"verify_signature": False})
    assert header["alg"] == "HS256"
    assert {"iss", "aud", "sub", "exp", "iat", "jti", "role", "scopes", "sid"} <= set(claims)
    assert claims["iss"] == "tradeos" and claims["aud"] == "tradeos-api"
    assert claims["sub"] == str(user.id) and claims["role"] == "admin"
    assert claims["scopes"] == ["admin", "read", "trade"]
    assert claims["exp"] - claims["iat"] == 15 * 60


async def test_token_lifetime_is_configurable(session: AsyncSession, settings_factory: Any) -> None:
    settings = settings_factory(access_token_minutes=5)
    tokens = await sign_in(session, settings, await make_user(session))
    claims = jwt.decode(tokens.access_token, options={"verify_signature": False})
    assert claims["exp"] - claims["iat"] == 300 and tokens.expires_in == 300


def _forge(settings: Settings, claims: dict[str, Any], **changes: Any) -> str:
    key = changes.pop("key", settings.jwt_secret_key.get_secret_value())  # type: ignore[union-attr]
    algorithm = changes.pop("algorithm", "HS256")
    return jwt.encode({**claims, **changes}, key, algorithm=algorithm)


@pytest.mark.parametrize(
    "case",
    [
        "wrong_secret",
        "alg_none",
        "wrong_audience",
        "wrong_issuer",
        "expired",
        "no_exp",
        "tampered",
        "hs512",
        "garbage",
        "other_session",
    ],
)
async def test_bad_access_tokens_are_401_with_a_challenge(
    client: httpx.AsyncClient, session: AsyncSession, settings: Settings, case: str
) -> None:
    user = await make_user(session)
    tokens = await sign_in(session, settings, user)
    await session.commit()
    claims = jwt.decode(tokens.access_token, options={"verify_signature": False})
    now = utcnow()
    forged = {
        "wrong_secret": lambda: _forge(settings, claims, key="another-secret-of-enough-length-123"),
        "alg_none": lambda: f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64(claims)}.",
        "wrong_audience": lambda: _forge(settings, claims, aud="someone-else"),
        "wrong_issuer": lambda: _forge(settings, claims, iss="evil"),
        "expired": lambda: _forge(
            settings, claims, iat=now - timedelta(hours=1), exp=now - timedelta(minutes=1)
        ),
        "no_exp": lambda: _forge(settings, {k: v for k, v in claims.items() if k != "exp"}),
        # A valid signature of other claims, glued to claims that make this user an admin.
        "tampered": lambda: ".".join(
            [
                tokens.access_token.split(".")[0],
                _b64({**claims, "role": "super_admin"}),
                tokens.access_token.split(".")[2],
            ]
        ),
        "hs512": lambda: _forge(settings, claims, algorithm="HS512"),
        "garbage": lambda: "not.a.jwt",
        "other_session": lambda: _forge(settings, claims, sid=claims["sid"] + 1000),
    }[case]()
    # The genuine token works, so the refusal below is about the forgery.
    assert (await client.get(ME, headers=bearer(tokens))).status_code == 200
    response = await client.get(ME, headers={"Authorization": f"Bearer {forged}"})
    assert response.status_code == 401
    assert response.headers["content-type"] == "application/problem+json"
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


async def test_missing_credentials(client: httpx.AsyncClient) -> None:
    response = await client.get(ME)
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    basic = await client.get(ME, headers={"Authorization": "Basic YWxhZGRpbjpvcGVuc2VzYW1l"})
    assert basic.status_code == 401


async def test_role_comes_from_the_account_not_the_token(
    client: httpx.AsyncClient, session: AsyncSession, settings: Settings
) -> None:
    admin = await make_user(session, role=Role.ADMIN.value)
    tokens = await sign_in(session, settings, admin)
    admin.role = Role.USER.value  # demoted after signing in
    await session.commit()
    response = await client.get("/api/v1/admin/users", headers=bearer(tokens))
    assert response.status_code == 403


async def test_a_deactivated_user_is_refused_at_once(
    client: httpx.AsyncClient, session: AsyncSession, settings: Settings
) -> None:
    user = await make_user(session)
    tokens = await sign_in(session, settings, user)
    await session.commit()
    assert (await client.get(ME, headers=bearer(tokens))).status_code == 200
    user.is_active = False
    await session.commit()
    assert (await client.get(ME, headers=bearer(tokens))).status_code == 401
