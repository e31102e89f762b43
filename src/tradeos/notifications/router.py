"""Notification endpoints: /notifications."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Query, status

from tradeos.accounts.deps import ReaderDep, TraderDep
from tradeos.core.deps import PageQuery, ResourceId, SessionDep
from tradeos.core.pagination import Ordering, Page, paginate
from tradeos.core.routing import APIRouter
from tradeos.notifications import service
from tradeos.notifications.schemas import MarkedRead, NotificationOut, Preferences

notifications = APIRouter(prefix="/notifications", tags=["notifications"])


@notifications.get("")
async def list_notifications(
    principal: ReaderDep,
    session: SessionDep,
    paging: PageQuery,
    order: Annotated[Ordering, Depends(service.NOTIFICATION_SORT)],
    unread: Annotated[
        bool | None, Query(description="true: only unread; false: only read; unset: all.")
    ] = None,
) -> Page[NotificationOut]:
    query = service.notifications_query(principal.user_id, unread=unread)
    page = await paginate(session, query.order_by(*order.clauses), paging)
    return page.map(service.as_out)


@notifications.get("/preferences")
async def get_preferences(principal: ReaderDep, session: SessionDep) -> Preferences:
    return Preferences(muted_types=await service.muted_types(session, principal.user_id))


@notifications.put("/preferences")
async def set_preferences(
    body: Preferences, principal: TraderDep, session: SessionDep
) -> Preferences:
    muted = await service.set_muted_types(session, principal.user_id, body.muted_types)
    return Preferences(muted_types=muted)


@notifications.post("/read-all")
async def mark_all_read(principal: TraderDep, session: SessionDep) -> MarkedRead:
    return MarkedRead(marked_read=await service.mark_all_read(session, principal.user_id))


@notifications.put("/{notification_id:int}/read")
async def mark_read(
    notification_id: ResourceId, principal: TraderDep, session: SessionDep
) -> NotificationOut:
    notification = await service.mark_read(session, principal.user_id, notification_id)
    return service.as_out(notification)


# `:int`: only numbers are ids, so /notifications/preferences and /read-all are never taken
# for one (and a 405 there lists only their own methods).
@notifications.delete("/{notification_id:int}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_notification(
    notification_id: ResourceId, principal: TraderDep, session: SessionDep
) -> None:
    await service.delete_notification(session, principal.user_id, notification_id)


routers = (notifications,)
