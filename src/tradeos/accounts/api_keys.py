"""API keys: programmatic access as a user, narrowed to scopes.

A key `trd_…` is shown once, at creation, and stored as a keyed hash (core.security). It never
grants more than its owner has, lives no longer than the key that made it (if a key made it),
and goes when that key is revoked. Authentication with a key is in `service`, beside the
access-token check.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from tradeos.accounts import service
from tradeos.accounts.models import ApiKey
from tradeos.accounts.service import ClientInfo, Principal
from tradeos.billing.plans import Quota, plan_for
from tradeos.config import Settings
from tradeos.core.db import utcnow
from tradeos.core.errors import Forbidden, NotFound, ValidationFailed, field_error
from tradeos.core.security import API_KEY_DISPLAY_LENGTH, api_key_digest, new_api_key


async def create_api_key(
    session: AsyncSession,
    settings: Settings,
    principal: Principal,
    *,
    name: str,
    scopes: list[str],
    expires_at: datetime | None,
    client: ClientInfo,
) -> tuple[ApiKey, str]:
    """A new key and its secret, which is returned this once and never stored."""
    beyond = sorted(set(scopes) - principal.scopes)
    if beyond:
        raise Forbidden(
            f"You cannot grant scopes you do not have: {', '.join(beyond)}.",
            errors=[field_error("body.scopes", "exceeds your own scopes", "forbidden")],
        )
    if expires_at is not None and expires_at <= utcnow():
        raise ValidationFailed(
            "expires_at must be in the future.",
            errors=[field_error("body.expires_at", "must be in the future")],
        )
    expires_at = await _within_parent_key(session, principal, expires_at)
    limit = plan_for(principal.tier).quota(Quota.MAX_API_KEYS)
    await service.lock_owner(session, principal.user_id)
    active = await session.scalar(
        select(func.count()).select_from(ApiKey).where(*_active_keys(principal.user_id))
    )
    if limit is not None and int(active or 0) >= limit:
        raise Forbidden(
            f"Your plan allows {limit} active API keys. Revoke one or upgrade your plan."
        )
    assert settings.jwt_secret_key is not None
    secret = new_api_key()
    api_key = ApiKey(
        user_id=principal.user_id,
        name=name,
        prefix=secret[:API_KEY_DISPLAY_LENGTH],
        key_hash=api_key_digest(secret, settings.jwt_secret_key.get_secret_value()),
        scopes=sorted(scopes),
        expires_at=expires_at,
        parent_id=principal.api_key_id,
    )
    session.add(api_key)
    await session.flush()
    service.record_audit(
        session,
        service.Audit.API_KEY_CREATED,
        actor_id=principal.user_id,
        target_user_id=principal.user_id,
        ip=client.ip,
        api_key_id=api_key.id,
        prefix=api_key.prefix,
        scopes=api_key.scopes,
    )
    return api_key, secret


async def _within_parent_key(
    session: AsyncSession, principal: Principal, expires_at: datetime | None
) -> datetime | None:
    """A key made with a key lives no longer than the key that made it: revoking a leaked key
    at its expiry must not leave an everlasting child behind."""
    if principal.api_key_id is None:
        return expires_at
    parent = await session.get(ApiKey, principal.api_key_id)
    if parent is None or parent.expires_at is None:
        return expires_at
    if expires_at is None or expires_at > parent.expires_at:
        return parent.expires_at
    return expires_at


def _active_keys(user_id: int) -> tuple[Any, ...]:
    now = utcnow()
    return (
        ApiKey.user_id == user_id,
        ApiKey.revoked_at.is_(None),
        or_(ApiKey.expires_at.is_(None), ApiKey.expires_at > now),
    )


def api_keys_query(user_id: int) -> Any:
    """The user's usable keys, newest first (for a paginated list)."""
    return (
        select(ApiKey)
        .where(*_active_keys(user_id))
        .order_by(ApiKey.created_at.desc(), ApiKey.id.desc())
    )


async def revoke_api_key(
    session: AsyncSession, principal: Principal, key_id: int, client: ClientInfo
) -> None:
    api_key = await session.scalar(
        select(ApiKey).where(
            ApiKey.id == key_id, ApiKey.user_id == principal.user_id, ApiKey.revoked_at.is_(None)
        )
    )
    if api_key is None:
        raise NotFound("No such API key.")
    now = utcnow()
    api_key.revoked_at = now
    # Keys made with this key go with it: a leaked key must not leave its children behind.
    descendants = await _revoke_descendants(session, api_key.id, now)
    service.record_audit(
        session,
        service.Audit.API_KEY_REVOKED,
        actor_id=principal.user_id,
        target_user_id=principal.user_id,
        ip=client.ip,
        api_key_id=api_key.id,
        prefix=api_key.prefix,
        also_revoked=descendants,
    )
    await session.flush()


async def _revoke_descendants(session: AsyncSession, key_id: int, now: datetime) -> list[int]:
    revoked: list[int] = []
    parents = [key_id]
    while parents:
        children = (
            await session.scalars(
                select(ApiKey).where(ApiKey.parent_id.in_(parents), ApiKey.revoked_at.is_(None))
            )
        ).all()
        for child in children:
            child.revoked_at = now
        parents = [child.id for child in children]
        revoked.extend(parents)
    return revoked
