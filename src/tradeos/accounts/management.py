"""Administration of accounts: finding users, changing their role, tier and status, reading
the audit log, and creating administrators from the command line.

Who may change what:

- Only a super admin grants or removes `admin` / `super_admin`, and only a super admin touches
  an administrator's account at all (its tier or status included).
- Nobody changes their own role or deactivates themselves: the last administrator must not be
  able to lock everyone out by accident.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Select, func, literal, select
from sqlalchemy.ext.asyncio import AsyncSession

from tradeos.accounts import service
from tradeos.accounts.models import AuditEvent, Role, User
from tradeos.accounts.service import Audit, ClientInfo, Principal
from tradeos.core.db import Database, UTCDateTime
from tradeos.core.errors import Conflict, Forbidden, field_error
from tradeos.core.pagination import Sorting
from tradeos.core.security import hash_password

ADMIN_ROLES = frozenset({Role.ADMIN.value, Role.SUPER_ADMIN.value})

# Never-signed-in users sort as the oldest logins on every backend (PostgreSQL and SQLite
# disagree on where NULLs go).
_NEVER = literal(datetime(1970, 1, 1, tzinfo=UTC), UTCDateTime())

USER_SORT = Sorting(
    {
        "created": User.created_at,
        "email": func.lower(User.email),
        "username": func.lower(User.username),
        "last_login": func.coalesce(User.last_login_at, _NEVER),
    },
    default="-created",
    tie_breaker=User.id,
)


# -- users -----------------------------------------------------------------------------------


def list_users_query(
    *,
    search: str | None = None,
    role: str | None = None,
    tier: str | None = None,
    is_active: bool | None = None,
    kyc_status: str | None = None,
) -> Select[Any]:
    """Users matching every filter given; `search` is a case-insensitive substring of the
    email or the username, taken literally (`%` and `_` match only themselves)."""
    query = select(User)
    needle = (search or "").strip().lower()
    if needle:
        query = query.where(
            func.lower(User.email).contains(needle, autoescape=True)
            | func.lower(User.username).contains(needle, autoescape=True)
        )
    if role is not None:
        query = query.where(User.role == role)
    if tier is not None:
        query = query.where(User.tier == tier)
    if is_active is not None:
        query = query.where(User.is_active.is_(is_active))
    if kyc_status is not None:
        query = query.where(User.kyc_status == kyc_status)
    return query


async def admin_update_user(
    session: AsyncSession,
    actor: Principal,
    user_id: int,
    changes: dict[str, Any],
    client: ClientInfo,
) -> User:
    """Apply `changes` (any of `role`, `tier`, `is_active`) to a user, as `actor`.

    Every rule is checked before anything changes; a value equal to the current one is no
    change (and no audit event).
    """
    user = await service.get_user(session, user_id)
    role = changes.get("role")
    tier = changes.get("tier")
    is_active = changes.get("is_active")
    new_role = role is not None and role != user.role
    new_tier = tier is not None and tier != user.tier
    new_status = is_active is not None and is_active != user.is_active
    is_self = user.id == actor.user_id
    is_super = actor.role == Role.SUPER_ADMIN

    if is_self and new_role:
        raise Conflict(
            "You cannot change your own role; another super admin must do it.",
            errors=[field_error("body.role", "is your own", "conflict")],
        )
    if is_self and new_status and not is_active:
        raise Conflict(
            "You cannot deactivate your own account; another administrator must do it.",
            errors=[field_error("body.is_active", "is your own", "conflict")],
        )
    if user.role in ADMIN_ROLES and not is_super:
        raise Forbidden("Only a super admin can change an administrator's account.")
    if new_role and not is_super and (role in ADMIN_ROLES or user.role in ADMIN_ROLES):
        raise Forbidden("Only a super admin can grant or remove administrator roles.")

    def log(action: Audit, **details: Any) -> None:
        service.record_audit(
            session,
            action,
            actor_id=actor.user_id,
            target_user_id=user.id,
            ip=client.ip,
            **details,
        )

    if new_role:
        previous = user.role
        user.role = str(role)
        log(Audit.ROLE_CHANGED, **_from_to(previous, user.role))
    if new_tier:
        previous = user.tier
        await service.change_tier(session, user, str(tier))
        log(Audit.TIER_CHANGED, **_from_to(previous, user.tier))
    if new_status:
        user.is_active = bool(is_active)
        if is_active:
            log(Audit.USER_ACTIVATED)
        else:
            # Its tokens stop working now, and stay dead if the account is activated again.
            ended = await service.revoke_sessions(session, user.id, reason="deactivated")
            log(Audit.USER_DEACTIVATED, sessions=ended)
    await session.flush()
    return user


def _from_to(previous: str | None, new: str) -> dict[str, Any]:
    # `from` is a Python keyword, so these details are passed as a mapping.
    return {"from": previous, "to": new}


# -- audit log -------------------------------------------------------------------------------


def audit_query(
    *,
    actor_id: int | None = None,
    target_user_id: int | None = None,
    action: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> Select[Any]:
    """Audit events matching every filter, newest first. The window is half-open:
    `since <= created_at < until`, so consecutive windows never count an event twice."""
    query = select(AuditEvent)
    if actor_id is not None:
        query = query.where(AuditEvent.actor_id == actor_id)
    if target_user_id is not None:
        query = query.where(AuditEvent.target_user_id == target_user_id)
    if action is not None:
        query = query.where(AuditEvent.action == action)
    if since is not None:
        query = query.where(AuditEvent.created_at >= since)
    if until is not None:
        query = query.where(AuditEvent.created_at < until)
    return query.order_by(AuditEvent.created_at.desc(), AuditEvent.id.desc())


# -- command line ----------------------------------------------------------------------------


async def create_admin(
    database: Database, *, email: str, username: str, password: str, role: Role
) -> User:
    """An administrator made from the command line (no actor: whoever runs the CLI has the
    database already). Conflict if the email or username is taken."""
    if role.value not in ADMIN_ROLES:
        raise ValueError(f"not an administrator role: {role}")
    password_hash = await hash_password(password)
    async with database.session() as session:
        user = await service.create_user(
            session, email=email, username=username, password_hash=password_hash, role=role
        )
        # The log shows where an administrator came from, not only that one exists.
        service.record_audit(
            session,
            Audit.ROLE_CHANGED,
            target_user_id=user.id,
            via="cli",
            **_from_to(None, role.value),
        )
    return user
