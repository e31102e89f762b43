"""/admin/users: finding accounts, and who may change whose role, tier and status."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from tests.factories import bearer, make_api_key, make_user, sign_in
from tradeos.accounts.models import AuditEvent, AuthSession, Role, User
from tradeos.config import Settings

API = "/api/v1"
T0 = datetime(2024, 1, 1, tzinfo=UTC)


async def signed_in(
    session: AsyncSession, settings: Settings, **fields: Any
) -> tuple[User, dict[str, str]]:
    user = await make_user(session, **fields)
    return user, bearer(await sign_in(session, settings, user))


# Reads of what the app wrote end this session's transaction before (an older SQLite snapshot
# would not show the change) and after (it would hold the write lock the app needs next).


async def reload(session: AsyncSession, user: User) -> User:
    """The user as the app left it."""
    await session.commit()
    await session.refresh(user)
    await session.commit()
    return user


async def audit_rows(session: AsyncSession, action: str) -> list[AuditEvent]:
    await session.commit()
    query = select(AuditEvent).where(AuditEvent.action == action).order_by(AuditEvent.id)
    rows = list((await session.scalars(query)).all())
    await session.commit()
    return rows


# -- who may call ----------------------------------------------------------------------------


def _admin_routes(user_id: int) -> list[tuple[str, str, dict[str, Any] | None]]:
    return [
        ("GET", f"{API}/admin/users", None),
        ("GET", f"{API}/admin/users/{user_id}", None),
        ("PATCH", f"{API}/admin/users/{user_id}", {"tier": "enterprise"}),
        ("GET", f"{API}/admin/audit", None),
    ]


async def test_a_user_is_refused_every_admin_route(
    client: httpx.AsyncClient, session: AsyncSession, settings: Settings
) -> None:
    user, headers = await signed_in(session, settings)
    await session.commit()
    for method, url, body in _admin_routes(user.id):
        response = await client.request(method, url, json=body, headers=headers)
        assert response.status_code == 403, (method, url, response.text)
        assert response.headers["content-type"].startswith("application/problem+json")
    assert (await reload(session, user)).tier == "free"  # no self-upgrade


async def test_without_credentials_every_admin_route_is_401(
    client: httpx.AsyncClient, session: AsyncSession
) -> None:
    user = await make_user(session)
    await session.commit()
    for method, url, body in _admin_routes(user.id):
        response = await client.request(method, url, json=body)
        assert response.status_code == 401, (method, url)


async def test_an_admins_read_only_api_key_cannot_manage_users(
    client: httpx.AsyncClient, session: AsyncSession, settings: Settings
) -> None:
    owner = await make_user(session, role=Role.ADMIN.value, tier="pro")  # pro: API access
    target = await make_user(session)
    _, read_only = await make_api_key(session, settings, owner, scopes=["read"])
    _, admin_key = await make_api_key(session, settings, owner, scopes=["read", "admin"])
    await session.commit()
    url = f"{API}/admin/users/{target.id}"

    refused = await client.patch(url, json={"tier": "pro"}, headers={"X-API-Key": read_only})
    assert refused.status_code == 403
    assert refused.json()["required_scope"] == "admin"
    listing = await client.get(f"{API}/admin/users", headers={"X-API-Key": read_only})
    assert listing.status_code == 403
    assert (await reload(session, target)).tier == "free"

    allowed = await client.patch(url, json={"tier": "pro"}, headers={"X-API-Key": admin_key})
    assert allowed.status_code == 200, allowed.text
    assert (await reload(session, target)).tier == "pro"


# -- listing ---------------------------------------------------------------------------------


@pytest.fixture
async def population(session: AsyncSession, settings: Settings) -> dict[str, Any]:
    """An admin and five users with distinct emails, names, tiers, statuses and KYC states."""
    admin, headers = await signed_in(
        session,
        settings,
        email="boss@corp.example",
        username="boss",
        role=Role.ADMIN.value,
        created_at=T0,
    )
    specs = [
        ("alice", "Alice.Smith@Example.com", {"tier": "pro", "kyc_status": "approved"}),
        ("bobby_x", "bob@example.org", {"is_active": False, "kyc_status": "pending"}),
        ("bobbyzx", "carol@example.com", {"tier": "enterprise"}),
        ("percent", "100%sure@example.com", {"kyc_status": "rejected"}),
        ("slash", "a/b@example.com", {"role": Role.SUPER_ADMIN.value}),
    ]
    users = {"boss": admin}
    for n, (username, email, extra) in enumerate(specs, start=1):
        users[username] = await make_user(
            session,
            username=username,
            email=email,
            created_at=T0 + timedelta(days=n),
            last_login_at=T0 + timedelta(days=10 - n) if n % 2 else None,
            **extra,
        )
    await session.commit()
    return {"headers": headers, "users": users}


async def _usernames(
    client: httpx.AsyncClient, headers: dict[str, str], **params: Any
) -> list[str]:
    response = await client.get(f"{API}/admin/users", params=params, headers=headers)
    assert response.status_code == 200, response.text
    return [item["username"] for item in response.json()["items"]]


async def test_list_shows_every_user_newest_first_without_secrets(
    client: httpx.AsyncClient, population: dict[str, Any]
) -> None:
    response = await client.get(f"{API}/admin/users", headers=population["headers"])
    assert response.status_code == 200
    body = response.json()
    assert body["total"] == 6 and body["pages"] == 1
    assert [item["username"] for item in body["items"]] == [
        "slash",
        "percent",
        "bobbyzx",
        "bobby_x",
        "alice",
        "boss",
    ]
    for item in body["items"]:
        assert not [key for key in item if "hash" in key]
    bob = next(item for item in body["items"] if item["username"] == "bobby_x")
    assert (bob["is_active"], bob["kyc_status"], bob["tier"]) == (False, "pending", "free")


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"search": "SMITH"}, {"alice"}),
        ({"search": "example.org"}, {"bobby_x"}),
        ({"search": "bobby"}, {"bobby_x", "bobbyzx"}),
        ({"search": "  Corp.EXAMPLE "}, {"boss"}),
        ({"role": "admin"}, {"boss"}),
        ({"role": "super_admin"}, {"slash"}),
        ({"tier": "pro"}, {"alice"}),
        ({"tier": "free"}, {"boss", "bobby_x", "percent", "slash"}),
        ({"status": "inactive"}, {"bobby_x"}),
        ({"status": "active"}, {"boss", "alice", "bobbyzx", "percent", "slash"}),
        ({"kyc_status": "pending"}, {"bobby_x"}),
        ({"kyc_status": "none"}, {"boss", "bobbyzx", "slash"}),
        ({"search": "bobby", "status": "active"}, {"bobbyzx"}),
        ({"search": "example.com", "tier": "free", "kyc_status": "rejected"}, {"percent"}),
        ({"search": "nobody-has-this"}, set()),
    ],
)
async def test_search_and_filters(
    client: httpx.AsyncClient,
    population: dict[str, Any],
    params: dict[str, str],
    expected: set[str],
) -> None:
    assert set(await _usernames(client, population["headers"], **params)) == expected


@pytest.mark.parametrize(
    ("search", "expected"),
    # As LIKE patterns these would match far more: `_` any one character, `%` anything.
    [
        ("y_x", {"bobby_x"}),
        ("_", {"bobby_x"}),
        ("%", {"percent"}),
        ("0%s", {"percent"}),
        ("a/b", {"slash"}),  # and the escape character itself
        ("/", {"slash"}),
    ],
)
async def test_search_takes_like_wildcards_literally(
    client: httpx.AsyncClient, population: dict[str, Any], search: str, expected: set[str]
) -> None:
    assert set(await _usernames(client, population["headers"], search=search)) == expected


@pytest.mark.parametrize(
    ("sort", "expected"),
    [
        ("created", ["boss", "alice", "bobby_x", "bobbyzx", "percent", "slash"]),
        ("email", ["percent", "slash", "alice", "bobby_x", "boss", "bobbyzx"]),
        ("-email", ["bobbyzx", "boss", "bobby_x", "alice", "slash", "percent"]),
        ("username", ["alice", "bobby_x", "bobbyzx", "boss", "percent", "slash"]),
        # Most recent sign-in first; those who never signed in last, on every database.
        ("-last_login", ["alice", "bobbyzx", "slash", "percent", "bobby_x", "boss"]),
        ("last_login", ["boss", "bobby_x", "percent", "slash", "bobbyzx", "alice"]),
    ],
)
async def test_sorting(
    client: httpx.AsyncClient, population: dict[str, Any], sort: str, expected: list[str]
) -> None:
    assert await _usernames(client, population["headers"], sort=sort) == expected


async def test_pages_and_bad_list_parameters(
    client: httpx.AsyncClient, population: dict[str, Any]
) -> None:
    headers = population["headers"]
    url = f"{API}/admin/users"
    first = (await client.get(url, params={"size": 4, "sort": "username"}, headers=headers)).json()
    second = (
        await client.get(url, params={"size": 4, "page": 2, "sort": "username"}, headers=headers)
    ).json()
    assert (first["total"], first["pages"], first["size"], second["page"]) == (6, 2, 4, 2)
    assert [u["username"] for u in first["items"] + second["items"]] == [
        "alice",
        "bobby_x",
        "bobbyzx",
        "boss",
        "percent",
        "slash",
    ]

    for params, field in [
        ({"sort": "password_hash"}, "query.sort"),
        ({"status": "banned"}, "query.status"),
        ({"role": "root"}, "query.role"),
        ({"tier": "gold"}, "query.tier"),
        ({"kyc_status": "maybe"}, "query.kyc_status"),
        ({"size": 101}, "query.size"),
        ({"search": "x" * 101}, "query.search"),
    ]:
        response = await client.get(url, params=params, headers=headers)
        assert response.status_code == 422, params
        assert [error["field"] for error in response.json()["errors"]] == [field]


async def test_get_one_user(
    client: httpx.AsyncClient, session: AsyncSession, settings: Settings
) -> None:
    _, headers = await signed_in(session, settings, role=Role.ADMIN.value)
    user = await make_user(session, full_name="Ada Lovelace", kyc_status="approved")
    await session.commit()
    response = await client.get(f"{API}/admin/users/{user.id}", headers=headers)
    assert response.status_code == 200
    body = response.json()
    assert (body["id"], body["email"], body["full_name"], body["kyc_status"]) == (
        user.id,
        user.email,
        "Ada Lovelace",
        "approved",
    )
    assert "password_hash" not in body
    assert user.password_hash not in response.text

    missing = await client.get(f"{API}/admin/users/{user.id + 1000}", headers=headers)
    assert missing.status_code == 404
    assert (await client.get(f"{API}/admin/users/0", headers=headers)).status_code == 422


# -- changing users --------------------------------------------------------------------------


async def test_an_admin_cannot_grant_admin_but_a_super_admin_can(
    client: httpx.AsyncClient, session: AsyncSession, settings: Settings
) -> None:
    admin, admin_headers = await signed_in(session, settings, role=Role.ADMIN.value)
    root, root_headers = await signed_in(session, settings, role=Role.SUPER_ADMIN.value)
    user, user_headers = await signed_in(session, settings)
    await session.commit()
    url = f"{API}/admin/users/{user.id}"

    for role in ("admin", "super_admin"):
        refused = await client.patch(url, json={"role": role}, headers=admin_headers)
        assert refused.status_code == 403, refused.text
        assert "super admin" in refused.json()["detail"]
    assert (await reload(session, user)).role == "user"
    assert await audit_rows(session, "role_changed") == []

    granted = await client.patch(url, json={"role": "admin"}, headers=root_headers)
    assert granted.status_code == 200, granted.text
    assert granted.json()["role"] == "admin"
    # The promoted user's existing session gets the new powers at once...
    assert (await client.get(f"{API}/admin/users", headers=user_headers)).status_code == 200

    removed = await client.patch(url, json={"role": "user"}, headers=root_headers)
    assert removed.status_code == 200
    # ...and loses them at once.
    assert (await client.get(f"{API}/admin/users", headers=user_headers)).status_code == 403

    rows = await audit_rows(session, "role_changed")
    assert [(r.actor_id, r.target_user_id, r.details) for r in rows] == [
        (root.id, user.id, {"from": "user", "to": "admin"}),
        (root.id, user.id, {"from": "admin", "to": "user"}),
    ]
    assert admin.id not in {r.actor_id for r in rows}


async def test_an_admin_cannot_touch_another_administrators_account(
    client: httpx.AsyncClient, session: AsyncSession, settings: Settings
) -> None:
    _, admin_headers = await signed_in(session, settings, role=Role.ADMIN.value)
    _, root_headers = await signed_in(session, settings, role=Role.SUPER_ADMIN.value)
    other_root = await make_user(session, role=Role.SUPER_ADMIN.value)
    other_admin = await make_user(session, role=Role.ADMIN.value)
    await session.commit()

    for target in (other_root, other_admin):
        for change in ({"tier": "pro"}, {"is_active": False}, {"role": "user"}):
            response = await client.patch(
                f"{API}/admin/users/{target.id}", json=change, headers=admin_headers
            )
            assert response.status_code == 403, (target.role, change)
        target = await reload(session, target)
        assert (target.tier, target.is_active) == ("free", True)
    assert (await reload(session, other_root)).role == "super_admin"

    # A super admin may: demote another super admin, deactivate an admin.
    demoted = await client.patch(
        f"{API}/admin/users/{other_root.id}", json={"role": "admin"}, headers=root_headers
    )
    assert demoted.status_code == 200 and demoted.json()["role"] == "admin"
    deactivated = await client.patch(
        f"{API}/admin/users/{other_admin.id}", json={"is_active": False}, headers=root_headers
    )
    assert deactivated.status_code == 200 and deactivated.json()["is_active"] is False


async def test_an_admin_manages_ordinary_users(
    client: httpx.AsyncClient, session: AsyncSession, settings: Settings
) -> None:
    admin, headers = await signed_in(session, settings, role=Role.ADMIN.value)
    user = await make_user(session)
    await session.commit()
    response = await client.patch(
        f"{API}/admin/users/{user.id}",
        json={"tier": "enterprise", "is_active": False},
        headers=headers,
    )
    assert response.status_code == 200, response.text
    assert (response.json()["tier"], response.json()["is_active"]) == ("enterprise", False)
    user = await reload(session, user)
    assert (user.tier, user.is_active) == ("enterprise", False)
    [deactivated] = await audit_rows(session, "user_deactivated")
    assert (deactivated.actor_id, deactivated.target_user_id) == (admin.id, user.id)


@pytest.mark.parametrize("role", [Role.ADMIN, Role.SUPER_ADMIN])
async def test_nobody_demotes_or_deactivates_themselves(
    client: httpx.AsyncClient, session: AsyncSession, settings: Settings, role: Role
) -> None:
    me, headers = await signed_in(session, settings, role=role.value)
    await session.commit()
    url = f"{API}/admin/users/{me.id}"
    for change, field, words in [
        ({"role": "user"}, "body.role", "your own role"),
        ({"role": "admin" if role == Role.SUPER_ADMIN else "super_admin"}, "body.role", "own role"),
        ({"is_active": False}, "body.is_active", "deactivate your own"),
    ]:
        response = await client.patch(url, json=change, headers=headers)
        assert response.status_code == 409, (change, response.text)
        assert words in response.json()["detail"]
        assert response.json()["errors"][0]["field"] == field
    me = await reload(session, me)
    assert (me.role, me.is_active) == (role.value, True)
    assert (await client.get(f"{API}/admin/users", headers=headers)).status_code == 200


async def test_a_super_admin_may_change_their_own_tier(
    client: httpx.AsyncClient, session: AsyncSession, settings: Settings
) -> None:
    me, headers = await signed_in(session, settings, role=Role.SUPER_ADMIN.value)
    await session.commit()
    response = await client.patch(
        f"{API}/admin/users/{me.id}",
        json={"tier": "pro", "role": "super_admin", "is_active": True},  # the last two: as is
        headers=headers,
    )
    assert response.status_code == 200, response.text
    assert (await reload(session, me)).tier == "pro"
    assert await audit_rows(session, "role_changed") == []  # nothing changed, nothing logged


async def test_deactivation_ends_every_session_of_the_user(
    client: httpx.AsyncClient, session: AsyncSession, settings: Settings
) -> None:
    admin, admin_headers = await signed_in(session, settings, role=Role.ADMIN.value)
    user, phone = await signed_in(session, settings)
    laptop = bearer(await sign_in(session, settings, user))
    await session.commit()
    for headers in (phone, laptop):
        assert (await client.get(f"{API}/auth/me", headers=headers)).status_code == 200

    url = f"{API}/admin/users/{user.id}"
    response = await client.patch(url, json={"is_active": False}, headers=admin_headers)
    assert response.status_code == 200
    for headers in (phone, laptop):
        assert (await client.get(f"{API}/auth/me", headers=headers)).status_code == 401

    # Activated again, the old tokens stay dead: the sessions were revoked, not just paused.
    response = await client.patch(url, json={"is_active": True}, headers=admin_headers)
    assert response.status_code == 200 and response.json()["is_active"] is True
    for headers in (phone, laptop):
        assert (await client.get(f"{API}/auth/me", headers=headers)).status_code == 401
    await session.commit()
    reasons = await session.scalars(
        select(AuthSession.revoked_reason).where(AuthSession.user_id == user.id)
    )
    assert list(reasons) == ["deactivated", "deactivated"]
    await session.commit()
    assert (await client.get(f"{API}/auth/me", headers=admin_headers)).status_code == 200

    [off] = await audit_rows(session, "user_deactivated")
    [on] = await audit_rows(session, "user_activated")
    assert (off.actor_id, off.target_user_id, off.details) == (admin.id, user.id, {"sessions": 2})
    assert (on.actor_id, on.target_user_id) == (admin.id, user.id)


async def test_a_tier_change_changes_the_subscription_and_the_license(
    client: httpx.AsyncClient, session: AsyncSession, settings: Settings
) -> None:
    admin, admin_headers = await signed_in(session, settings, role=Role.ADMIN.value)
    user, headers = await signed_in(session, settings)
    await session.commit()

    async def subscription_and_license() -> tuple[str, str, int]:
        current = await client.get(f"{API}/subscriptions/current", headers=headers)
        license_ = await client.get(f"{API}/auth/license-status", headers=headers)
        assert current.status_code == license_.status_code == 200
        return current.json()["tier"], license_.json()["plan"], license_.json()["max_devices"]

    assert await subscription_and_license() == ("free", "free", 1)
    response = await client.patch(
        f"{API}/admin/users/{user.id}", json={"tier": "pro"}, headers=admin_headers
    )
    assert response.status_code == 200 and response.json()["tier"] == "pro"
    assert await subscription_and_license() == ("pro", "pro", 3)

    [row] = await audit_rows(session, "tier_changed")
    assert (row.actor_id, row.target_user_id, row.details) == (
        admin.id,
        user.id,
        {"from": "free", "to": "pro"},
    )


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "body"),
        ({"role": None}, "body.role"),  # optional, but never null
        ({"password_hash": "x"}, "body.password_hash"),
        ({"tier": "pro", "email": "new@example.com"}, "body.email"),
        ({"role": "root"}, "body.role"),
        ({"tier": "platinum"}, "body.tier"),
        ({"is_active": "perhaps"}, "body.is_active"),
    ],
)
async def test_bad_updates_are_422(
    client: httpx.AsyncClient,
    session: AsyncSession,
    settings: Settings,
    body: dict[str, Any],
    field: str,
) -> None:
    _, headers = await signed_in(session, settings, role=Role.SUPER_ADMIN.value)
    user = await make_user(session)
    await session.commit()
    response = await client.patch(f"{API}/admin/users/{user.id}", json=body, headers=headers)
    assert response.status_code == 422, response.text
    assert [error["field"] for error in response.json()["errors"]] == [field]
    user = await reload(session, user)
    assert (user.role, user.tier, user.is_active) == ("user", "free", True)


async def test_updating_an_unknown_user_is_404(
    client: httpx.AsyncClient, session: AsyncSession, settings: Settings
) -> None:
    me, headers = await signed_in(session, settings, role=Role.SUPER_ADMIN.value)
    await session.commit()
    response = await client.patch(
        f"{API}/admin/users/{me.id + 1000}", json={"tier": "pro"}, headers=headers
    )
    assert response.status_code == 404
