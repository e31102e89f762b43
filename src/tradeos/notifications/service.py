"""Notifications: other domains call `notify`; users read, mark and delete theirs.

`notify` stores the notification in the caller's unit of work and publishes it to the user's
channel (`user:{id}:notifications`, which the WebSocket gateway relays) once that unit of
work commits; if it rolls back, nothing was said. A type the user muted is neither stored
nor sent.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from sqlalchemy import Select, delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from tradeos.core.db import utcnow
from tradeos.core.errors import NotFound
from tradeos.core.events import EventBus, publish_after_commit
from tradeos.core.pagination import Sorting
from tradeos.notifications.models import Notification, NotificationPreferences
from tradeos.notifications.schemas import (
    NOTIFICATION_TYPE_PATTERN,
    TITLE_MAX_LENGTH,
    TYPE_MAX_LENGTH,
    NotificationOut,
)


def user_channel(user_id: int) -> str:
    """The topic a user's notifications are published on."""
    return f"user:{user_id}:notifications"


def as_out(notification: Notification) -> NotificationOut:
    return NotificationOut(
        id=notification.id,
        type=notification.type,
        title=notification.title,
        body=notification.body,
        data=notification.data,
        read=notification.read_at is not None,
        read_at=notification.read_at,
        created_at=notification.created_at,
    )


async def muted_types(session: AsyncSession, user_id: int) -> list[str]:
    preferences = await session.get(NotificationPreferences, user_id)
    return list(preferences.muted_types) if preferences else []


async def notify(
    session: AsyncSession,
    events: EventBus,
    user_id: int,
    *,
    type: str,
    title: str,
    body: str,
    data: Mapping[str, Any] | None = None,
) -> Notification | None:
    """Tell a user something. None when the user muted this type.

    A type that is not a dotted lower-case name, or a title too long for its column, is a bug
    in the caller: ValueError, before anything is stored."""
    if not re.fullmatch(NOTIFICATION_TYPE_PATTERN, type) or len(type) > TYPE_MAX_LENGTH:
        raise ValueError(f"notification type {type!r} is not a dotted lower-case name")
    if len(title) > TITLE_MAX_LENGTH:
        raise ValueError(f"notification title is longer than {TITLE_MAX_LENGTH} characters")
    if type in await muted_types(session, user_id):
        return None
    notification = Notification(
        user_id=user_id, type=type, title=title, body=body, data=dict(data or {})
    )
    session.add(notification)
    await session.flush()
    publish_after_commit(
        session,
        events,
        user_channel(user_id),
        as_out(notification).model_dump(mode="json"),
    )
    return notification


# Newest first by default; the id breaks ties between notifications of the same instant.
NOTIFICATION_SORT = Sorting(
    {"created": Notification.created_at}, default="-created", tie_breaker=Notification.id
)


def notifications_query(user_id: int, *, unread: bool | None) -> Select[tuple[Notification]]:
    """The user's notifications (order them with NOTIFICATION_SORT)."""
    query = select(Notification).where(Notification.user_id == user_id)
    if unread is True:
        query = query.where(Notification.read_at.is_(None))
    elif unread is False:
        query = query.where(Notification.read_at.is_not(None))
    return query


async def _own(session: AsyncSession, user_id: int, notification_id: int) -> Notification:
    notification = await session.scalar(
        select(Notification).where(
            Notification.id == notification_id, Notification.user_id == user_id
        )
    )
    if notification is None:
        raise NotFound("No such notification.")
    return notification


async def mark_read(session: AsyncSession, user_id: int, notification_id: int) -> Notification:
    notification = await _own(session, user_id, notification_id)
    if notification.read_at is None:  # marking twice keeps the first time
        notification.read_at = utcnow()
        await session.flush()
    return notification


async def mark_all_read(session: AsyncSession, user_id: int) -> int:
    result = await session.execute(
        update(Notification)
        .where(Notification.user_id == user_id, Notification.read_at.is_(None))
        .values(read_at=utcnow())
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


async def delete_notification(session: AsyncSession, user_id: int, notification_id: int) -> None:
    await _own(session, user_id, notification_id)
    await session.execute(
        delete(Notification).where(
            Notification.id == notification_id, Notification.user_id == user_id
        )
    )


async def set_muted_types(session: AsyncSession, user_id: int, types: list[str]) -> list[str]:
    preferences = await session.get(NotificationPreferences, user_id)
    if preferences is None:
        preferences = NotificationPreferences(user_id=user_id)
        session.add(preferences)
    preferences.muted_types = sorted(set(types))
    await session.flush()
    return preferences.muted_types
