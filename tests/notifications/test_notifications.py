"""Notifications: stored and published by notify(), listed, read, deleted, muted."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from tests.factories import bearer, make_api_key, make_user, sign_in
from tradeos.accounts.models import User
from tradeos.config import Settings
from tradeos.core.events import EventBus, MemoryEventBus
from tradeos.notifications import service
from tradeos.notifications.models import Notification

API = "/api/v1/notifications"


async def tell(session: AsyncSession, bus: EventBus, user: User, n: int, **extra: Any) -> None:
    values: dict[str, Any] = {"type": "order.filled", "title": f"Order {n} filled", "body": "Done."}
    values.update(extra)
    await service.notify(session, bus, user.id, **values)


@pytest.fixture
async def alice(session: AsyncSession, settings: Settings) -> tuple[User, dict[str, str]]:
    user = await make_user(session)
    headers = bearer(await sign_in(session, settings, user))
    await session.commit()
    return user, headers


async def test_list_newest_first_with_unread_filter_and_paging(
    app: FastAPI, client: httpx.AsyncClient, session: AsyncSession, alice: Any
) -> None:
    user, headers = alice
    bus = app.state.events
    for n in range(3):
        await tell(session, bus, user, n)
    await session.commit()

    page = (await client.get(API, headers=headers, params={"size": 2})).json()
    assert page["total"] == 3 and page["pages"] == 2
    assert [item["title"] for item in page["items"]] == ["Order 2 filled", "Order 1 filled"]
    first = page["items"][0]
    assert first["read"] is False and first["data"] == {}

    read = await client.put(f"{API}/{first['id']}/read", headers=headers)
    assert read.status_code == 200 and read.json()["read"] is True
    again = await client.put(f"{API}/{first['id']}/read", headers=headers)
    assert again.json()["read_at"] == read.json()["read_at"]  # the first time stays

    unread = (await client.get(API, headers=headers, params={"unread": "true"})).json()
    assert unread["total"] == 2
    done = (await client.get(API, headers=headers, params={"unread": "false"})).json()
    assert [item["id"] for item in done["items"]] == [first["id"]]

    all_read = await client.post(f"{API}/read-all", headers=headers)
    assert all_read.json() == {"marked_read": 2}
    assert (await client.get(API, headers=headers, params={"unread": "true"})).json()["total"] == 0

    deleted = await client.delete(f"{API}/{first['id']}", headers=headers)
    assert deleted.status_code == 204
    assert (await client.get(API, headers=headers)).json()["total"] == 2


async def test_another_users_notification_is_404(
    app: FastAPI, client: httpx.AsyncClient, session: AsyncSession, settings: Settings, alice: Any
) -> None:
    user, _ = alice
    intruder = await make_user(session)
    intruder_headers = bearer(await sign_in(session, settings, intruder))
    await tell(session, app.state.events, user, 1)
    await session.commit()
    own_id = await session.scalar(select(Notification.id))
    await session.commit()
    for method, url in (
        ("PUT", f"{API}/{own_id}/read"),
        ("DELETE", f"{API}/{own_id}"),
    ):
        assert (await client.request(method, url, headers=intruder_headers)).status_code == 404
    assert (await client.get(API, headers=intruder_headers)).json()["total"] == 0
    assert (await client.post(f"{API}/read-all", headers=intruder_headers)).json() == {
        "marked_read": 0
    }


async def test_notify_publishes_to_the_users_channel_after_commit(
    app: FastAPI, client: httpx.AsyncClient, session: AsyncSession, alice: Any
) -> None:
    user, _ = alice
    bus: EventBus = app.state.events
    async with bus.subscribe(service.user_channel(user.id)) as subscription:
        await tell(session, bus, user, 7, data={"order_id": 7})
        assert await subscription.get(timeout=0.2) is None  # not before the commit
        await session.commit()
        event = await subscription.get(timeout=2)
        assert event is not None and event.payload["title"] == "Order 7 filled"
        assert event.payload["data"] == {"order_id": 7}

        await tell(session, bus, user, 8)
        await session.rollback()
        assert await subscription.get(timeout=0.3) is None  # rolled back: never said
    assert await session.scalar(select(func.count()).select_from(Notification)) == 1


async def test_muted_types_are_neither_stored_nor_sent(
    app: FastAPI, client: httpx.AsyncClient, session: AsyncSession, alice: Any
) -> None:
    user, headers = alice
    assert (await client.get(f"{API}/preferences", headers=headers)).json() == {"muted_types": []}
    muted = await client.put(
        f"{API}/preferences",
        headers=headers,
        json={"muted_types": ["order.filled", "order.filled"]},
    )
    assert muted.status_code == 200 and muted.json() == {"muted_types": ["order.filled"]}

    bus: EventBus = app.state.events
    async with bus.subscribe(service.user_channel(user.id)) as subscription:
        await tell(session, bus, user, 1)
        await tell(session, bus, user, 2, type="kyc.approved", title="Approved")
        await session.commit()
        event = await subscription.get(timeout=2)
        assert event is not None and event.payload["type"] == "kyc.approved"
        assert await subscription.get(timeout=0.2) is None
    listed = (await client.get(API, headers=headers)).json()
    assert [item["type"] for item in listed["items"]] == ["kyc.approved"]


@pytest.mark.parametrize(
    "body", [{"muted_types": ["Not A Type"]}, {"muted_types": "order.filled"}, {"other": []}]
)
async def test_bad_preferences_are_422(
    client: httpx.AsyncClient, alice: Any, body: dict[str, Any]
) -> None:
    _, headers = alice
    assert (await client.put(f"{API}/preferences", headers=headers, json=body)).status_code == 422


async def test_a_read_key_cannot_change_notifications(
    client: httpx.AsyncClient, session: AsyncSession, settings: Settings
) -> None:
    user = await make_user(session, tier="pro")
    _, key = await make_api_key(session, settings, user, scopes=["read"])
    await session.commit()
    assert (await client.get(API, headers={"X-API-Key": key})).status_code == 200
    refused = await client.post(f"{API}/read-all", headers={"X-API-Key": key})
    assert refused.status_code == 403


async def test_sorting_oldest_first_and_unknown_sort_fields(
    app: FastAPI, client: httpx.AsyncClient, session: AsyncSession, alice: Any
) -> None:
    user, headers = alice
    for n in range(3):
        await tell(session, app.state.events, user, n)
    await session.commit()
    oldest_first = (await client.get(API, headers=headers, params={"sort": "created"})).json()
    assert [item["title"] for item in oldest_first["items"]] == [
        "Order 0 filled",
        "Order 1 filled",
        "Order 2 filled",
    ]
    unknown = await client.get(API, headers=headers, params={"sort": "-title"})
    assert unknown.status_code == 422


@pytest.mark.parametrize(
    "values",
    [{"type": "Not A Type"}, {"type": "x" * 51}, {"title": "t" * 201}],
)
async def test_notify_refuses_what_the_columns_or_mutes_could_not_hold(
    session: AsyncSession, alice: Any, values: dict[str, Any]
) -> None:
    user, _ = alice
    with pytest.raises(ValueError, match="notification"):
        await tell(session, MemoryEventBus(), user, 1, **values)
