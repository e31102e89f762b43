"""/admin/audit: the security log, filled by real flows and filtered by actor, action, time."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from tests.factories import DEFAULT_PASSWORD, bearer, make_user, sign_in
from tradeos.accounts.models import AuditEvent, Role, User
from tradeos.config import Settings

API = "/api/v1"
T0 = datetime(2024, 3, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def settings(settings_factory: Callable[..., Settings]) -> Settings:
    # Two failures lock an account, so a lockout is quick to provoke.
    return settings_factory(login_max_failures=2)


async def signed_in_admin(
    session: AsyncSession, settings: Settings, role: Role = Role.ADMIN
) -> tuple[User, dict[str, str]]:
    admin = await make_user(session, role=role.value)
    return admin, bearer(await sign_in(session, settings, admin))


async def audit(
    client: httpx.AsyncClient, headers: dict[str, str], **params: Any
) -> list[dict[str, Any]]:
    response = await client.get(f"{API}/admin/audit", params=params, headers=headers)
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


async def test_logins_failures_and_lockouts_are_recorded(
    client: httpx.AsyncClient, session: AsyncSession, settings: Settings
) -> None:
    _, headers = await signed_in_admin(session, settings)
    ada = await make_user(session, username="ada")
    grace = await make_user(session, username="grace")
    await session.commit()
    login = f"{API}/auth/login"

    ok = await client.post(login, json={"login": "ada", "password": DEFAULT_PASSWORD})
    assert ok.status_code == 200, ok.text
    wrong = await client.post(login, json={"login": "ada", "password": "not-the-password"})
    assert wrong.status_code == 401
    stranger = await client.post(login, json={"login": "nobody", "password": "whatever-123"})
    assert stranger.status_code == 401
    for expected in (401, 429):  # the second failure locks grace's account
        response = await client.post(login, json={"login": "grace", "password": "wrong-one-1"})
        assert response.status_code == expected

    [success] = await audit(client, headers, action="login")
    assert (success["actor_id"], success["target_user_id"]) == (ada.id, ada.id)
    assert success["ip_address"]
    failures = await audit(client, headers, action="login_failed")
    # Newest first: grace twice, the stranger (no account to name), ada.
    assert [row["target_user_id"] for row in failures] == [grace.id, grace.id, None, ada.id]
    assert all(row["actor_id"] is None for row in failures)
    [locked] = await audit(client, headers, action="login_locked")
    assert locked["target_user_id"] == grace.id

    about_ada = await audit(client, headers, target_user_id=ada.id)
    assert [row["action"] for row in about_ada] == ["login_failed", "login"]
    by_ada = await audit(client, headers, actor_id=ada.id)
    assert [row["action"] for row in by_ada] == ["login"]


async def test_api_key_flows_and_admin_changes_are_recorded(
    client: httpx.AsyncClient, session: AsyncSession, settings: Settings
) -> None:
    root, headers = await signed_in_admin(session, settings, Role.SUPER_ADMIN)
    user = await make_user(session, tier="pro")
    user_headers = bearer(await sign_in(session, settings, user))
    await session.commit()

    created = await client.post(
        f"{API}/api-keys", json={"name": "bot", "scopes": ["read"]}, headers=user_headers
    )
    assert created.status_code == 201, created.text
    revoked = await client.delete(f"{API}/api-keys/{created.json()['id']}", headers=user_headers)
    assert revoked.status_code == 204
    patched = await client.patch(
        f"{API}/admin/users/{user.id}",
        json={"role": "admin", "tier": "enterprise"},
        headers=headers,
    )
    assert patched.status_code == 200, patched.text

    rows = await audit(client, headers, target_user_id=user.id)
    assert [row["action"] for row in rows] == [
        "tier_changed",
        "role_changed",
        "api_key_revoked",
        "api_key_created",
    ]
    by_actor = {row["action"]: row["actor_id"] for row in rows}
    assert by_actor["role_changed"] == by_actor["tier_changed"] == root.id
    assert by_actor["api_key_created"] == by_actor["api_key_revoked"] == user.id
    assert "key" not in rows[-1]["details"]  # the secret is never logged

    [tier] = await audit(client, headers, actor_id=root.id, action="tier_changed")
    assert tier["details"] == {"from": "pro", "to": "enterprise"}
    assert await audit(client, headers, actor_id=user.id, action="tier_changed") == []


@pytest.fixture
async def timeline(session: AsyncSession, settings: Settings) -> dict[str, Any]:
    """Four events an hour apart, by two actors, about various users."""
    _, headers = await signed_in_admin(session, settings)
    ann, ben, cat = [await make_user(session) for _ in range(3)]
    events = [
        AuditEvent(action="login", actor_id=ann.id, target_user_id=ann.id, created_at=T0),
        AuditEvent(
            action="role_changed",
            actor_id=ben.id,
            target_user_id=cat.id,
            details={"from": "user", "to": "admin"},
            created_at=T0 + timedelta(hours=1),
        ),
        AuditEvent(
            action="tier_changed",
            actor_id=ann.id,
            target_user_id=cat.id,
            created_at=T0 + timedelta(hours=2),
        ),
        AuditEvent(
            action="login_failed", target_user_id=ben.id, created_at=T0 + timedelta(hours=3)
        ),
    ]
    session.add_all(events)
    await session.flush()
    ids = [event.id for event in events]
    await session.commit()
    return {"headers": headers, "ids": ids, "ann": ann.id, "ben": ben.id, "cat": cat.id}


def _at(hours: float, offset_hours: int = 0) -> str:
    """T0 + `hours`, written in the zone `offset_hours` from UTC."""
    zone = timezone(timedelta(hours=offset_hours))
    return (T0 + timedelta(hours=hours)).astimezone(zone).isoformat()


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({}, [3, 2, 1, 0]),  # newest first
        ({"actor": "ann"}, [2, 0]),
        ({"actor": "ben"}, [1]),
        ({"target": "cat"}, [2, 1]),
        ({"action": "login"}, [0]),
        ({"action": "role_changed", "actor": "ben"}, [1]),
        ({"action": "role_changed", "actor": "ann"}, []),
        ({"since": _at(1)}, [3, 2, 1]),  # since is inclusive
        ({"until": _at(2)}, [1, 0]),  # until is exclusive
        ({"since": _at(1), "until": _at(3)}, [2, 1]),
        ({"since": _at(1, offset_hours=5), "until": _at(3, offset_hours=-4)}, [2, 1]),
        ({"since": _at(0.5), "actor": "ann"}, [2]),
        ({"since": _at(2), "until": _at(2)}, []),
        ({"since": _at(4)}, []),
    ],
)
async def test_filters(
    client: httpx.AsyncClient,
    timeline: dict[str, Any],
    params: dict[str, str],
    expected: list[int],
) -> None:
    names = {"actor": "actor_id", "target": "target_user_id"}
    query = {
        names.get(key, key): timeline[value] if key in names else value
        for key, value in params.items()
    }
    rows = await audit(client, timeline["headers"], **query)
    assert [row["id"] for row in rows] == [timeline["ids"][n] for n in expected]


async def test_pages(client: httpx.AsyncClient, timeline: dict[str, Any]) -> None:
    url = f"{API}/admin/audit"
    pages = [
        (await client.get(url, params={"size": 3, "page": n}, headers=timeline["headers"])).json()
        for n in (1, 2)
    ]
    assert [(p["total"], p["pages"], len(p["items"])) for p in pages] == [(4, 2, 3), (4, 2, 1)]
    ids = [row["id"] for page in pages for row in page["items"]]
    assert ids == list(reversed(timeline["ids"]))
    first = pages[0]["items"][1]
    assert first["action"] == "tier_changed" and first["created_at"].startswith("2024-03-01T14:00")


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"since": _at(3), "until": _at(1)}, "query.since"),
        ({"since": "2024-03-01T12:00:00"}, "query.since"),  # no zone: ambiguous
        ({"until": "yesterday"}, "query.until"),
        ({"action": "made_up"}, "query.action"),
        ({"actor_id": 0}, "query.actor_id"),
        ({"target_user_id": "ann"}, "query.target_user_id"),
        ({"size": 500}, "query.size"),
    ],
)
async def test_bad_filters_are_422_naming_the_field(
    client: httpx.AsyncClient, timeline: dict[str, Any], params: dict[str, Any], field: str
) -> None:
    response = await client.get(f"{API}/admin/audit", params=params, headers=timeline["headers"])
    assert response.status_code == 422, response.text
    assert [error["field"] for error in response.json()["errors"]] == [field]
