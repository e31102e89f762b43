"""Security properties of the whole API, checked route by route.

- Every protected operation refuses a request without credentials, with an expired token and
  with a tampered one (and a new route is protected unless it is listed as public here).
- Every resource a user owns answers 404 to another user, on read, update and delete.
- Secrets (passwords, tokens, API keys) never reach the logs, nor any response after creation.
"""

from __future__ import annotations

import base64
import io
import json
import re
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

import httpx
import jwt
import pytest
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncSession

from tests.conftest import CapturedLogs
from tests.documents import PNG
from tests.factories import DEFAULT_PASSWORD, bearer, make_api_key, make_user, sign_in
from tradeos.accounts.models import User
from tradeos.config import Settings
from tradeos.core.db import utcnow
from tradeos.core.events import MemoryEventBus
from tradeos.notifications.service import notify

# Operations anyone may call. Everything else in the OpenAPI document must demand credentials.
# (Routes kept out of the document are public by design: /docs, /redoc, /openapi.json and
# /metrics, which belongs behind the network's edge.)
PUBLIC = {
    ("GET", "/health"),
    ("GET", "/ready"),
    ("GET", "/live"),
    ("GET", "/api/v1/"),
    ("GET", "/api/v1/ping"),
    ("GET", "/api/v1/info"),
    ("POST", "/api/v1/auth/register"),
    ("POST", "/api/v1/auth/login"),
    ("POST", "/api/v1/auth/refresh"),
}


def operations(app: FastAPI) -> list[tuple[str, str]]:
    found = []
    for path, item in app.openapi()["paths"].items():
        for method in item:
            if method in {"get", "post", "put", "patch", "delete"}:
                found.append((method.upper(), path))
    return sorted(found)


def concrete(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "1", path)


def expired_token(settings: Settings, user: User, session_id: int) -> str:
    now = utcnow()
    claims = {
        "iss": settings.jwt_issuer,
        "aud": settings.jwt_audience,
        "sub": str(user.id),
        "sid": session_id,
        "jti": "x",
        "iat": now - timedelta(hours=1),
        "exp": now - timedelta(minutes=1),
    }
    return jwt.encode(claims, settings.jwt_secret_key.get_secret_value(), algorithm="HS256")  # type: ignore[union-attr]


def tampered_token(token: str) -> str:
    header, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["role"] = "super_admin"
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    return f"{header}.{forged}.{signature}"


async def test_every_protected_operation_refuses_missing_expired_and_tampered_credentials(
    app: FastAPI, client: httpx.AsyncClient, session: AsyncSession, settings: Settings
) -> None:
    user = await make_user(session, role="super_admin", tier="enterprise")
    tokens = await sign_in(session, settings, user)
    await session.commit()
    session_id = jwt.decode(tokens.access_token, options={"verify_signature": False})["sid"]
    bad_credentials = {
        "none": {},
        "expired": {"Authorization": f"Bearer {expired_token(settings, user, session_id)}"},
        "tampered": {"Authorization": f"Bearer {tampered_token(tokens.access_token)}"},
        "unknown key": {"X-API-Key": "trd_" + "A" * 43},
    }
    all_operations = operations(app)
    protected = [op for op in all_operations if op not in PUBLIC]
    assert len(protected) >= 20, "the route walk found suspiciously few operations"
    assert set(PUBLIC) <= set(all_operations), "a public operation listed here no longer exists"

    for method, path in protected:
        for name, headers in bad_credentials.items():
            kwargs: dict[str, Any] = {"headers": headers}
            if method in {"POST", "PUT", "PATCH"}:
                kwargs["json"] = {}
            response = await client.request(method, concrete(path), **kwargs)
            assert response.status_code == 401, (method, path, name, response.text)
            assert "WWW-Authenticate" in response.headers, (method, path, name)
            assert response.headers["content-type"] == "application/problem+json"

    # The genuine token opens a protected route, so the refusals above are about credentials.
    assert (await client.get("/api/v1/auth/me", headers=bearer(tokens))).status_code == 200


# -- ownership ------------------------------------------------------------------------------


Owned = Callable[[httpx.AsyncClient, dict[str, str], AsyncSession, Settings, User], Awaitable[int]]


async def _api_key(
    client: httpx.AsyncClient,
    headers: dict[str, str],
    session: AsyncSession,
    settings: Settings,
    user: User,
) -> int:
    api_key, _ = await make_api_key(session, settings, user, scopes=["read"])
    await session.commit()
    return api_key.id


async def _device(
    client: httpx.AsyncClient,
    headers: dict[str, str],
    session: AsyncSession,
    settings: Settings,
    user: User,
) -> int:
    response = await client.post(
        "/api/v1/auth/login",
        json={
            "login": user.username,
            "password": DEFAULT_PASSWORD,
            "device_info": {"platform": "linux"},
        },
    )
    assert response.status_code == 200, response.text
    status = await client.get("/api/v1/auth/license-status", headers=headers)
    return int(status.json()["devices"][0]["id"])


async def _kyc_document(
    client: httpx.AsyncClient,
    headers: dict[str, str],
    session: AsyncSession,
    settings: Settings,
    user: User,
) -> int:
    response = await client.post(
        "/api/v1/auth/kyc/upload",
        headers=headers,
        data={"document_type": "selfie"},
        files={"file": ("me.png", io.BytesIO(PNG), "image/png")},
    )
    assert response.status_code == 201, response.text
    return int(response.json()["id"])


async def _notification(
    client: httpx.AsyncClient,
    headers: dict[str, str],
    session: AsyncSession,
    settings: Settings,
    user: User,
) -> int:
    # Nobody listens here: any bus will do.
    notification = await notify(
        session, MemoryEventBus(), user.id, type="test.owned", title="t", body="b"
    )
    await session.commit()
    assert notification is not None
    return notification.id


async def _trading_account(
    client: httpx.AsyncClient,
    headers: dict[str, str],
    session: AsyncSession,
    settings: Settings,
    user: User,
) -> int:
    response = await client.post("/api/v1/accounts", headers=headers, json={"name": "Owned"})
    assert response.status_code == 201, response.text
    return int(response.json()["id"])


async def _order(
    client: httpx.AsyncClient,
    headers: dict[str, str],
    session: AsyncSession,
    settings: Settings,
    user: User,
) -> int:
    account_id = await _trading_account(client, headers, session, settings, user)
    # Far below the market: it rests, open, so its owner can still cancel it.
    body = {
        "account_id": account_id,
        "symbol": "AAPL",
        "side": "buy",
        "type": "limit",
        "quantity": "1",
        "limit_price": "1.00",
    }
    response = await client.post("/api/v1/orders", headers=headers, json=body)
    assert response.status_code == 201, response.text
    return int(response.json()["id"])


STRATEGY = {"name": "mine", "formula": "entry_long = close > open"}


async def _strategy(
    client: httpx.AsyncClient,
    headers: dict[str, str],
    session: AsyncSession,
    settings: Settings,
    user: User,
) -> int:
    response = await client.post("/api/v1/strategies", headers=headers, json=STRATEGY)
    assert response.status_code == 201, response.text
    return int(response.json()["id"])


async def _backtest(
    client: httpx.AsyncClient,
    headers: dict[str, str],
    session: AsyncSession,
    settings: Settings,
    user: User,
) -> int:
    from datetime import datetime

    from tradeos.backtest import runner
    from tradeos.backtest import service as backtests
    from tradeos.market.providers.sim import SimProvider
    from tradeos.market.timeframes import Timeframe

    start, end = "2026-01-01T00:00:00Z", "2026-01-03T00:00:00Z"
    body = {"formula": STRATEGY["formula"], "symbols": ["BTC-USD"], "start": start, "end": end}
    response = await client.post("/api/v1/backtests", headers=headers, json=body)
    assert response.status_code == 202, response.text
    backtest_id = int(response.json()["id"])
    # Finished here, so its report exists too (the app may run its job as well: it is
    # idempotent, and whichever stores first wins).
    candles = await backtests.load_candles(
        session,
        SimProvider(seed=settings.sim_seed),
        ["BTC-USD"],
        Timeframe.H1,
        datetime.fromisoformat(start),
        datetime.fromisoformat(end),
    )
    run = runner.run_formula(candles, STRATEGY["formula"])
    await backtests.start(session, backtest_id)
    await backtests.store_result(session, backtest_id, backtests.backtest_result(run))
    await session.commit()
    return backtest_id


# Bodies for the routes that need one (so the owner's own request succeeds).
BODIES: dict[tuple[str, str], dict[str, Any]] = {
    ("PUT", "/api/v1/strategies/{strategy_id}"): STRATEGY,
    ("PATCH", "/api/v1/strategies/{strategy_id}"): {"name": "renamed"},
    ("PATCH", "/api/v1/orders/{order_id}"): {"limit_price": "2.00"},
    ("PUT", "/api/v1/accounts/{account_id}/trading-state"): {"state": "reducing"},
}


# Every route with an id of something a user owns, and how to make one such thing. A route with
# an id that is neither here nor under /admin fails `test_every_owned_route_is_checked`.
OWNED: dict[str, tuple[Owned, list[tuple[str, str]]]] = {
    "api key": (_api_key, [("DELETE", "/api/v1/api-keys/{key_id}")]),
    "device": (_device, [("DELETE", "/api/v1/auth/devices/{device_id}")]),
    "kyc document": (_kyc_document, [("GET", "/api/v1/auth/kyc/documents/{document_id}")]),
    "notification": (
        _notification,
        [
            ("PUT", "/api/v1/notifications/{notification_id}/read"),
            ("DELETE", "/api/v1/notifications/{notification_id}"),
        ],
    ),
    "trading account": (
        _trading_account,
        [
            ("GET", "/api/v1/accounts/{account_id}"),
            ("POST", "/api/v1/accounts/{account_id}/reset"),
            ("GET", "/api/v1/accounts/{account_id}/trading-state"),
            ("PUT", "/api/v1/accounts/{account_id}/trading-state"),
        ],
    ),
    "order": (
        _order,
        [
            ("GET", "/api/v1/orders/{order_id}"),
            ("PATCH", "/api/v1/orders/{order_id}"),
            ("DELETE", "/api/v1/orders/{order_id}"),
        ],
    ),
    "strategy": (
        _strategy,
        [
            ("GET", "/api/v1/strategies/{strategy_id}"),
            ("PUT", "/api/v1/strategies/{strategy_id}"),
            ("PATCH", "/api/v1/strategies/{strategy_id}"),
            ("DELETE", "/api/v1/strategies/{strategy_id}"),
        ],
    ),
    "backtest": (
        _backtest,
        [
            ("GET", "/api/v1/backtests/{backtest_id}"),
            ("GET", "/api/v1/backtests/{backtest_id}/report"),
            ("DELETE", "/api/v1/backtests/{backtest_id}"),
        ],
    ),
}


# Routes with a path parameter that names shared data, the same for every user: nobody owns it.
SHARED = {
    ("GET", "/api/v1/market/candles/{symbol}"),
    ("GET", "/api/v1/market/ticker/{symbol}"),
    ("GET", "/api/v1/cryptocurrencies/{symbol}"),
    ("GET", "/api/v1/cryptocurrencies/{symbol}/history"),
    ("GET", "/api/v1/cryptocurrencies/top/{category}"),
}


# Routes whose path names an instrument, in one of the caller's own accounts (another user's
# account given as `account_id` is 404: tests/trading/test_positions_api.py; closing one,
# tests/trading/test_close_api.py).
OWN_BY_SYMBOL = {
    ("GET", "/api/v1/positions/{symbol}"),
    ("POST", "/api/v1/positions/{symbol}/close"),
}


def test_every_owned_route_is_checked(app: FastAPI) -> None:
    with_ids = {
        (method, path)
        for method, path in operations(app)
        if "{" in path and not path.startswith("/api/v1/admin/")
    }
    checked = {route for _, routes in OWNED.values() for route in routes}
    assert with_ids - SHARED - OWN_BY_SYMBOL == checked
    assert with_ids >= SHARED | OWN_BY_SYMBOL  # no stale entries


@pytest.mark.parametrize("resource", sorted(OWNED))
async def test_another_users_resource_is_404(
    client: httpx.AsyncClient, session: AsyncSession, settings: Settings, resource: str
) -> None:
    owner = await make_user(session, tier="pro")
    intruder = await make_user(session, tier="pro")
    owner_headers = bearer(await sign_in(session, settings, owner))
    intruder_headers = bearer(await sign_in(session, settings, intruder))
    await session.commit()
    make, routes = OWNED[resource]
    resource_id = await make(client, owner_headers, session, settings, owner)
    missing_id = resource_id + 10_000
    for method, path in routes:
        url = re.sub(r"\{[^}]+\}", str(resource_id), path)
        kwargs: dict[str, Any] = {"json": BODIES[method, path]} if (method, path) in BODIES else {}
        foreign = await client.request(method, url, headers=intruder_headers, **kwargs)
        absent = await client.request(
            method,
            re.sub(r"\{[^}]+\}", str(missing_id), path),
            headers=intruder_headers,
            **kwargs,
        )
        assert foreign.status_code == absent.status_code == 404, (method, path)
        assert foreign.json()["detail"] == absent.json()["detail"]  # nothing tells them apart
        owned = await client.request(method, url, headers=owner_headers, **kwargs)
        assert owned.status_code < 300, (method, path, owned.text)


# -- secrets ----------------------------------------------------------------------------------


async def test_secrets_never_reach_logs_or_later_responses(
    client: httpx.AsyncClient, session: AsyncSession, captured_logs: CapturedLogs
) -> None:
    password = "Quiet-Harbour-Lantern-42"
    register = await client.post(
        "/api/v1/auth/register",
        json={"email": "sec@example.com", "username": "sec", "password": password},
    )
    assert register.status_code == 201
    await client.post("/api/v1/auth/login", json={"login": "sec", "password": "Wrong-Guess-123"})
    login = await client.post("/api/v1/auth/login", json={"login": "sec", "password": password})
    first = login.json()
    refreshed = (
        await client.post("/api/v1/auth/refresh", json={"refresh_token": first["refresh_token"]})
    ).json()
    headers = {"Authorization": f"Bearer {refreshed['access_token']}"}
    user = await session.get(User, register.json()["id"])
    assert user is not None
    user.tier = "pro"
    await session.commit()
    created = await client.post(
        "/api/v1/api-keys", headers=headers, json={"name": "bot", "scopes": ["read"]}
    )
    assert created.status_code == 201
    api_key = created.json()["key"]
    await client.get("/api/v1/auth/me", headers={"X-API-Key": api_key})
    await client.get("/api/v1/auth/me", headers=headers)
    # Failed attempts log too; the wrong password must not appear either.
    secrets = {
        "password": password,
        "wrong password": "Wrong-Guess-123",
        "access token": first["access_token"],
        "refreshed access token": refreshed["access_token"],
        "refresh token": first["refresh_token"],
        "new refresh token": refreshed["refresh_token"],
        "api key": api_key,
        "api key body": api_key.removeprefix("trd_"),
    }
    logs = captured_logs.text
    assert "request" in logs  # the capture works: access lines were written
    for name, secret in secrets.items():
        assert secret not in logs, f"{name} leaked into the logs"

    later = [
        await client.get("/api/v1/api-keys", headers=headers),
        await client.get("/api/v1/auth/me", headers=headers),
        await client.get("/api/v1/users/me", headers=headers),
    ]
    for response in later:
        assert response.status_code == 200
        for name, secret in secrets.items():
            assert secret not in response.text, f"{name} returned by {response.request.url}"
        assert "argon2" not in response.text and "hash" not in response.text
