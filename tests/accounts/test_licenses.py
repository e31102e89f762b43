"""Licenses and devices: a login with device_info takes a slot; a plan's maximum holds."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import httpx
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from tests.factories import DEFAULT_PASSWORD, make_user
from tradeos.accounts.models import AuditEvent, License
from tradeos.core.db import utcnow

API = "/api/v1"


def device(n: int = 1, **extra: Any) -> dict[str, Any]:
    return {
        "platform": "Windows 11",
        "processor": f"Intel i7-{n}",
        "memory": "32 GB",
        "client_version": "2.4.0",
        **extra,
    }


async def sign_in_from(
    client: httpx.AsyncClient, login: str, info: dict[str, Any]
) -> httpx.Response:
    return await client.post(
        f"{API}/auth/login",
        json={"login": login, "password": DEFAULT_PASSWORD, "device_info": info},
    )


def auth(response: httpx.Response) -> dict[str, str]:
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


async def test_devices_fill_the_license_and_a_removal_frees_a_slot(
    client: httpx.AsyncClient, session: AsyncSession
) -> None:
    await make_user(session, username="pro", tier="pro")  # three devices
    await session.commit()

    first = await sign_in_from(client, "pro", device(1))
    assert first.status_code == 200, first.text
    again = await sign_in_from(client, "pro", device(1, client_version="2.5.0"))  # same machine
    assert again.status_code == 200
    for n in (2, 3):
        assert (await sign_in_from(client, "pro", device(n))).status_code == 200
    fourth = await sign_in_from(client, "pro", device(4))
    assert fourth.status_code == 403
    assert "3 devices" in fourth.json()["detail"]

    status = await client.get(f"{API}/auth/license-status", headers=auth(first))
    assert status.status_code == 200
    license_ = status.json()
    assert license_["plan"] == "pro" and license_["max_devices"] == 3
    assert license_["devices_used"] == 3 and license_["is_valid"] is True
    assert "api_access" in license_["features"]
    first_device = license_["devices"][0]
    assert first_device["client_version"] == "2.5.0"

    # Freeing the slot also ends the sessions signed in from that device.
    second_machine = await sign_in_from(client, "pro", device(2))
    removed = await client.delete(
        f"{API}/auth/devices/{first_device['id']}", headers=auth(second_machine)
    )
    assert removed.status_code == 204
    assert (await client.get(f"{API}/auth/me", headers=auth(first))).status_code == 401
    assert (await client.get(f"{API}/auth/me", headers=auth(second_machine))).status_code == 200
    assert (await sign_in_from(client, "pro", device(4))).status_code == 200

    actions = set((await session.scalars(select(AuditEvent.action))).all())
    assert {"device_registered", "device_refused", "device_removed"} <= actions


async def test_a_login_without_device_info_takes_no_slot(
    client: httpx.AsyncClient, session: AsyncSession
) -> None:
    await make_user(session, username="web")  # free: one device
    await session.commit()
    assert (await sign_in_from(client, "web", device(1))).status_code == 200
    web = await client.post(
        f"{API}/auth/login", json={"login": "web", "password": DEFAULT_PASSWORD}
    )
    assert web.status_code == 200
    assert (await sign_in_from(client, "web", device(2))).status_code == 403


async def test_an_expired_license_refuses_device_logins(
    client: httpx.AsyncClient, session: AsyncSession
) -> None:
    user = await make_user(session, username="lapsed", tier="pro")
    session.add(
        License(
            user_id=user.id,
            plan="pro",
            features=["api_access"],
            max_devices=3,
            expires_at=utcnow() - timedelta(days=1),
        )
    )
    await session.commit()
    refused = await sign_in_from(client, "lapsed", device(1))
    assert refused.status_code == 403 and "expired" in refused.json()["detail"]
    web = await client.post(
        f"{API}/auth/login", json={"login": "lapsed", "password": DEFAULT_PASSWORD}
    )
    status = await client.get(f"{API}/auth/license-status", headers=auth(web))
    assert status.json()["is_valid"] is False


async def test_someone_elses_device_is_404(
    client: httpx.AsyncClient, session: AsyncSession
) -> None:
    await make_user(session, username="owner")
    await make_user(session, username="other")
    await session.commit()
    owner = await sign_in_from(client, "owner", device(1))
    other = await client.post(
        f"{API}/auth/login", json={"login": "other", "password": DEFAULT_PASSWORD}
    )
    devices = (await client.get(f"{API}/auth/license-status", headers=auth(owner))).json()[
        "devices"
    ]
    response = await client.delete(f"{API}/auth/devices/{devices[0]['id']}", headers=auth(other))
    assert response.status_code == 404
    assert (await client.get(f"{API}/auth/me", headers=auth(owner))).status_code == 200


async def test_device_info_is_validated(client: httpx.AsyncClient, session: AsyncSession) -> None:
    await make_user(session, username="v")
    await session.commit()
    for bad in ({"platform": ""}, {"platform": "x" * 51}, {"platform": "linux", "gpu": "yes"}, {}):
        response = await sign_in_from(client, "v", bad)
        assert response.status_code == 422, bad
