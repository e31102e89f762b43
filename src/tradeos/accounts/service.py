"""Identity use cases: registration, logins and sessions, tokens, API keys, devices, audit.

Most functions take the caller's session and flush; the request boundary commits. The ones
that check a password (login, register, password change) take the `Database` instead and open
short units of work around the hashing: argon2 takes ~0.3 s, and on SQLite a unit of work
holds the process's only connection, so no unit of work may wait for a hash.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, Final

import structlog
from sqlalchemy import bindparam, func, or_, select, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession

from tradeos.accounts.lockout import PASSWORD_CHANGE, LoginGuard
from tradeos.accounts.models import (
    ApiKey,
    AuditEvent,
    AuthSession,
    Device,
    License,
    RefreshToken,
    Role,
    User,
)
from tradeos.accounts.schemas import DeviceInfo, TokenPair
from tradeos.billing.plans import Feature, Quota, plan_for
from tradeos.config import Settings
from tradeos.core.db import MAX_ROW_ID, Database, utcnow
from tradeos.core.errors import (
    Conflict,
    Forbidden,
    NotFound,
    Unauthorized,
    field_error,
)
from tradeos.core.security import (
    InvalidToken,
    api_key_digest,
    decode_access_token,
    hash_password,
    issue_access_token,
    looks_like_api_key,
    new_refresh_token,
    token_digest,
    verify_password,
)
from tradeos.trading import service as trading_service

logger = structlog.get_logger("tradeos.accounts")

# What each role may do; an API key narrows this further, never widens it.
ROLE_SCOPES: dict[str, frozenset[str]] = {
    Role.USER: frozenset({"read", "trade"}),
    Role.ADMIN: frozenset({"read", "trade", "admin"}),
    Role.SUPER_ADMIN: frozenset({"read", "trade", "admin"}),
}
# last_used_at of an API key is written at most this often: a busy key must not turn every
# read into a write.
API_KEY_TOUCH_INTERVAL = timedelta(seconds=60)


class Audit(StrEnum):
    """The actions written to the audit log (names of events, not secrets)."""

    REGISTERED = "user_registered"
    LOGIN = "login"
    LOGIN_FAILED = "login_failed"
    LOGIN_LOCKED = "login_locked"
    LOGOUT = "logout"
    LOGOUT_ALL = "logout_all"
    REFRESH_TOKEN_REUSED = "refresh_token_reused"  # noqa: S105
    PASSWORD_CHANGED = "password_changed"  # noqa: S105
    PASSWORD_CHANGE_FAILED = "password_change_failed"  # noqa: S105
    PASSWORD_CHANGE_LOCKED = "password_change_locked"  # noqa: S105
    PROFILE_UPDATED = "profile_updated"
    API_KEY_CREATED = "api_key_created"
    API_KEY_REVOKED = "api_key_revoked"
    DEVICE_REGISTERED = "device_registered"
    DEVICE_REFUSED = "device_refused"
    DEVICE_REMOVED = "device_removed"
    ROLE_CHANGED = "role_changed"
    TIER_CHANGED = "tier_changed"
    USER_ACTIVATED = "user_activated"
    USER_DEACTIVATED = "user_deactivated"
    KYC_UPLOADED = "kyc_uploaded"
    KYC_APPROVED = "kyc_approved"
    KYC_REJECTED = "kyc_rejected"
    JOB_RETRIED = "job_retried"


@dataclass(frozen=True)
class Principal:
    """Who is asking: a user, through a login session (JWT) or an API key, with its scopes."""

    user_id: int
    username: str
    role: str
    tier: str
    scopes: frozenset[str]
    session_id: int | None = None
    api_key_id: int | None = None

    @property
    def is_admin(self) -> bool:
        return self.role in (Role.ADMIN, Role.SUPER_ADMIN)

    def has_feature(self, feature: Feature) -> bool:
        return plan_for(self.tier).has(feature)


@dataclass(frozen=True)
class ClientInfo:
    """Where a request comes from: the address for sessions and the audit log, the network
    (see core.ratelimit.client_network) for per-address limits."""

    ip: str | None = None
    user_agent: str | None = None
    network: str | None = None


# -- audit -----------------------------------------------------------------------------------


def record_audit(
    session: AsyncSession,
    action: str,
    *,
    actor_id: int | None = None,
    target_user_id: int | None = None,
    ip: str | None = None,
    **details: Any,
) -> None:
    session.add(
        AuditEvent(
            action=action,
            actor_id=actor_id,
            target_user_id=target_user_id,
            ip_address=ip,
            details=details,
        )
    )


# -- users -----------------------------------------------------------------------------------


async def find_user(session: AsyncSession, login: str) -> User | None:
    """The user whose email or username is `login`, compared case-insensitively."""
    key = login.strip().lower()
    query = select(User).where(or_(func.lower(User.email) == key, func.lower(User.username) == key))
    return (await session.scalars(query)).first()


async def get_user(session: AsyncSession, user_id: int) -> User:
    user = await session.get(User, user_id)
    if user is None:
        raise NotFound("No such user.")
    return user


async def _ensure_available(
    session: AsyncSession, *, email: str | None, username: str | None, except_id: int | None = None
) -> None:
    for field, value, column in (
        ("email", email, User.email),
        ("username", username, User.username),
    ):
        if value is None:
            continue
        query = select(User.id).where(func.lower(column) == value.strip().lower())
        if except_id is not None:
            query = query.where(User.id != except_id)
        if await session.scalar(query) is not None:
            raise Conflict(
                f"That {field} is already registered.",
                errors=[field_error(f"body.{field}", "already taken", "conflict")],
            )


def normalize_email(email: str) -> str:
    """Emails are kept lower-cased. Comparing them case-insensitively in SQL is not enough:
    SQLite's lower() knows only ASCII, so "Ölaf@…" and "ölaf@…" would be two accounts there."""
    return email.strip().lower()


def _license_for(user: User) -> License:
    license_ = License(user_id=user.id)
    _apply_plan(license_, user.tier)
    return license_


def _apply_plan(license_: License, tier: str) -> None:
    plan = plan_for(tier)
    license_.plan = plan.tier.value
    license_.features = sorted(plan.features)
    license_.max_devices = plan.quota(Quota.MAX_DEVICES) or 0


async def change_tier(session: AsyncSession, user: User, tier: str) -> None:
    """Move a user to another tier; the license follows the plan."""
    user.tier = plan_for(tier).tier.value
    _apply_plan(await get_license(session, user), user.tier)
    await session.flush()


async def create_user(
    session: AsyncSession,
    *,
    email: str,
    username: str,
    password_hash: str,
    role: Role = Role.USER,
    full_name: str | None = None,
    client: ClientInfo | None = None,
) -> User:
    """A new account with its license. The password is hashed by the caller, outside any
    unit of work."""
    await _ensure_available(session, email=email, username=username)
    user = User(
        email=normalize_email(email),
        username=username.strip(),
        password_hash=password_hash,
        role=role.value,
        full_name=full_name,
    )
    session.add(user)
    await session.flush()
    session.add(_license_for(user))
    await trading_service.create_default_account(session, user.id)
    record_audit(
        session,
        Audit.REGISTERED,
        actor_id=user.id,
        target_user_id=user.id,
        ip=client.ip if client else None,
    )
    await session.flush()
    return user


async def register(
    database: Database,
    *,
    email: str,
    username: str,
    password: str,
    full_name: str | None = None,
    role: Role = Role.USER,
    client: ClientInfo | None = None,
) -> User:
    password_hash = await hash_password(password)
    async with database.session() as session:
        user = await create_user(
            session,
            email=email,
            username=username,
            password_hash=password_hash,
            role=role,
            full_name=full_name,
            client=client,
        )
    return user


async def update_profile(
    session: AsyncSession,
    principal: Principal,
    *,
    changes: dict[str, Any],
    client: ClientInfo | None = None,
) -> User:
    user_id = principal.user_id
    if principal.session_id is None and ({"email", "username"} & changes.keys()):
        # What one signs in with is changed by the person, signed in, never by a program.
        raise Forbidden("Changing email or username needs a signed-in session, not an API key.")
    user = await get_user(session, user_id)
    await _ensure_available(
        session, email=changes.get("email"), username=changes.get("username"), except_id=user_id
    )
    if "email" in changes:
        changes = {**changes, "email": normalize_email(changes["email"])}
    for field in ("email", "username", "full_name"):
        if field in changes:
            setattr(user, field, changes[field])
    record_audit(
        session,
        Audit.PROFILE_UPDATED,
        actor_id=user_id,
        target_user_id=user_id,
        ip=client.ip if client else None,
        fields=sorted(changes),
    )
    await session.flush()
    return user


# -- tokens ----------------------------------------------------------------------------------


def _access_token(settings: Settings, user: User, auth_session: AuthSession) -> tuple[str, int]:
    lifetime = timedelta(minutes=settings.access_token_minutes)
    assert settings.jwt_secret_key is not None  # settings refuse to start without one
    token = issue_access_token(
        secret=settings.jwt_secret_key.get_secret_value(),
        issuer=settings.jwt_issuer,
        audience=settings.jwt_audience,
        subject=str(user.id),
        lifetime=lifetime,
        now=utcnow(),
        claims={
            "sid": auth_session.id,
            "role": user.role,
            "tier": user.tier,
            "scopes": sorted(ROLE_SCOPES.get(user.role, frozenset())),
        },
    )
    return token, int(lifetime.total_seconds())


async def _issue_refresh_token(session: AsyncSession, auth_session: AuthSession) -> str:
    token = new_refresh_token()
    session.add(RefreshToken(session_id=auth_session.id, token_hash=token_digest(token)))
    await session.flush()
    return token


async def open_session(
    session: AsyncSession,
    settings: Settings,
    user: User,
    *,
    device: Device | None,
    client: ClientInfo,
) -> TokenPair:
    now = utcnow()
    auth_session = AuthSession(
        user_id=user.id,
        device_id=device.id if device else None,
        ip_address=client.ip,
        user_agent=(client.user_agent or "")[:300] or None,
        created_at=now,
        last_used_at=now,
        expires_at=now + timedelta(days=settings.refresh_token_days),
    )
    session.add(auth_session)
    await session.flush()
    refresh_token = await _issue_refresh_token(session, auth_session)
    access_token, expires_in = _access_token(settings, user, auth_session)
    return TokenPair(access_token=access_token, refresh_token=refresh_token, expires_in=expires_in)


# -- login and brute-force protection ---------------------------------------------------------


async def login(
    database: Database,
    guard: LoginGuard,
    *,
    login_name: str,
    password: str,
    device_info: DeviceInfo | None,
    client: ClientInfo,
) -> TokenPair:
    settings = guard.settings
    ip = client.ip or "unknown"
    # Counted by the name given, known or not, never by the account behind it: if an email and
    # a username shared one count, the lockout would tell which email belongs to which user.
    # (So each account has its email's attempts and its username's.)
    account_key = f"name:{login_name.strip().lower()}"
    await guard.begin(account_key, client.network or ip)
    async with database.session(write=False) as session:
        user = await find_user(session, login_name)
        user_id = user.id if user else None
        stored_hash = user.password_hash if user else None
        is_active = user.is_active if user else False

    matches, new_hash = await verify_password(password, stored_hash)
    if not matches:
        locked = await guard.failed(account_key, client.network or ip)
        async with database.session() as session:
            record_audit(session, Audit.LOGIN_FAILED, target_user_id=user_id, ip=ip)
            if locked:
                record_audit(session, Audit.LOGIN_LOCKED, target_user_id=user_id, ip=ip)
        if locked:
            raise await guard.locked_error(account_key)
        raise Unauthorized("The login or password is wrong.")
    assert user_id is not None
    # The right password settles the count, whatever happens next.
    await guard.succeeded(account_key)
    if not is_active:
        raise Forbidden("This account is disabled. Contact support.")

    async with database.session() as session:
        user = await get_user(session, user_id)
        if new_hash:  # hashing parameters changed since this password was set
            user.password_hash = new_hash
        try:
            device = (
                await _register_device(session, user, device_info, client) if device_info else None
            )
        except Forbidden as refusal:
            # Refused, but the refusal is recorded: the unit of work still commits.
            record_audit(
                session, Audit.DEVICE_REFUSED, actor_id=user.id, target_user_id=user.id, ip=ip
            )
            refused: Forbidden | None = refusal
        else:
            refused = None
            user.last_login_at = utcnow()
            tokens = await open_session(session, settings, user, device=device, client=client)
            record_audit(
                session,
                Audit.LOGIN,
                actor_id=user.id,
                target_user_id=user.id,
                ip=client.ip,
                device_id=device.id if device else None,
            )
    if refused is not None:
        raise refused
    return tokens


# -- refresh and logout ----------------------------------------------------------------------


async def refresh(database: Database, settings: Settings, refresh_token: str) -> TokenPair:
    """Exchange a refresh token for a new pair. Each token works once: presenting a used one
    again means it was copied, so the whole session (every token descended from that login)
    is revoked."""
    now = utcnow()
    reused = False
    tokens: TokenPair | None = None
    async with database.session() as session:
        row = (
            await session.execute(
                select(RefreshToken, AuthSession, User)
                .join(AuthSession, RefreshToken.session_id == AuthSession.id)
                .join(User, AuthSession.user_id == User.id)
                .where(RefreshToken.token_hash == token_digest(refresh_token))
            )
        ).first()
        if row is not None:
            token, auth_session, user = row
            # Marking it used is one conditional UPDATE, so two concurrent exchanges of the
            # same token cannot both succeed: the loser is treated as reuse.
            claimed = await session.execute(
                update(RefreshToken)
                .where(RefreshToken.id == token.id, RefreshToken.used_at.is_(None))
                .values(used_at=now)
            )
            if claimed.rowcount != 1:  # type: ignore[attr-defined]
                reused = True
                if auth_session.revoked_at is None:
                    auth_session.revoked_at = now
                    auth_session.revoked_reason = "token_reuse"
                    record_audit(
                        session,
                        Audit.REFRESH_TOKEN_REUSED,
                        target_user_id=user.id,
                        session_id=auth_session.id,
                    )
            elif (
                auth_session.revoked_at is None and auth_session.expires_at > now and user.is_active
            ):
                auth_session.last_used_at = now
                auth_session.expires_at = now + timedelta(days=settings.refresh_token_days)
                new_token = await _issue_refresh_token(session, auth_session)
                access_token, expires_in = _access_token(settings, user, auth_session)
                tokens = TokenPair(
                    access_token=access_token, refresh_token=new_token, expires_in=expires_in
                )
    if reused:
        raise Unauthorized(
            "This refresh token was already used. The session has been ended for safety; "
            "sign in again."
        )
    if tokens is None:
        raise Unauthorized("The refresh token is not valid or its session has ended.")
    return tokens


async def revoke_sessions(
    session: AsyncSession,
    user_id: int,
    *,
    reason: str,
    only_session: int | None = None,
    keep_session: int | None = None,
) -> int:
    """Revoke one, all, or all-but-one of a user's sessions; how many were revoked."""
    query = (
        update(AuthSession)
        .where(AuthSession.user_id == user_id, AuthSession.revoked_at.is_(None))
        .values(revoked_at=utcnow(), revoked_reason=reason)
    )
    if only_session is not None:
        query = query.where(AuthSession.id == only_session)
    if keep_session is not None:
        query = query.where(AuthSession.id != keep_session)
    result = await session.execute(query)
    return int(result.rowcount)  # type: ignore[attr-defined]


async def logout(session: AsyncSession, principal: Principal, client: ClientInfo) -> None:
    await revoke_sessions(
        session, principal.user_id, reason="logout", only_session=principal.session_id
    )
    record_audit(
        session,
        Audit.LOGOUT,
        actor_id=principal.user_id,
        target_user_id=principal.user_id,
        ip=client.ip,
    )


async def logout_all(session: AsyncSession, principal: Principal, client: ClientInfo) -> int:
    count = await revoke_sessions(session, principal.user_id, reason="logout_all")
    record_audit(
        session,
        Audit.LOGOUT_ALL,
        actor_id=principal.user_id,
        target_user_id=principal.user_id,
        ip=client.ip,
        sessions=count,
    )
    return count


async def change_password(
    database: Database,
    guard: LoginGuard,
    principal: Principal,
    *,
    current_password: str,
    new_password: str,
    client: ClientInfo,
) -> None:
    """Needs the current password; every other session of the user ends. Wrong guesses are
    counted and locked out like sign-ins, so a stolen access token cannot be turned into the
    password by trying."""
    key = f"password-change:{principal.user_id}"
    network = client.network or client.ip or "unknown"
    await guard.begin(key, network, locks=PASSWORD_CHANGE)
    async with database.session(write=False) as session:
        stored_hash = (await get_user(session, principal.user_id)).password_hash
    matches, _ = await verify_password(current_password, stored_hash)
    if not matches:
        locked = await guard.failed(key, network)
        async with database.session() as session:
            actions = [Audit.PASSWORD_CHANGE_FAILED]
            if locked:
                actions.append(Audit.PASSWORD_CHANGE_LOCKED)
            for action in actions:
                record_audit(
                    session,
                    action,
                    actor_id=principal.user_id,
                    target_user_id=principal.user_id,
                    ip=client.ip,
                )
        if locked:
            raise await guard.locked_error(key, locks=PASSWORD_CHANGE)
        raise Forbidden(
            "The current password is wrong.",
            errors=[field_error("body.current_password", "is wrong", "invalid")],
        )
    await guard.succeeded(key)
    new_hash = await hash_password(new_password)
    async with database.session() as session:
        user = await get_user(session, principal.user_id)
        user.password_hash = new_hash
        user.password_changed_at = utcnow()
        await revoke_sessions(
            session, user.id, reason="password_change", keep_session=principal.session_id
        )
        record_audit(
            session, Audit.PASSWORD_CHANGED, actor_id=user.id, target_user_id=user.id, ip=client.ip
        )


# -- authentication of requests --------------------------------------------------------------


# Columns, not entities: every signed-in request runs this, and it only reads. Built once,
# with bound parameters: building the expression costs more than running it.
_SIGNED_IN_USER: Final = (
    select(
        User.username,
        User.role,
        User.tier,
        User.is_active,
        AuthSession.revoked_at,
        AuthSession.expires_at,
    )
    .join(AuthSession, AuthSession.user_id == User.id)
    .where(User.id == bindparam("user_id"), AuthSession.id == bindparam("session_id"))
)


async def authenticate_access_token(
    session: AsyncSession, settings: Settings, token: str
) -> Principal:
    assert settings.jwt_secret_key is not None
    try:
        claims = decode_access_token(
            token,
            secret=settings.jwt_secret_key.get_secret_value(),
            issuer=settings.jwt_issuer,
            audience=settings.jwt_audience,
        )
        user_id = int(claims["sub"])
        session_id = int(claims["sid"])
        # Ids are 64-bit: a token naming a larger one is not ours.
        if not (0 < user_id <= MAX_ROW_ID and 0 < session_id <= MAX_ROW_ID):
            raise ValueError("id out of range")
    except InvalidToken as error:
        raise Unauthorized(str(error), headers=_bearer_error("invalid_token")) from None
    except (KeyError, TypeError, ValueError):
        raise Unauthorized(
            "The access token is not valid.", headers=_bearer_error("invalid_token")
        ) from None
    row = (
        await session.execute(_SIGNED_IN_USER, {"user_id": user_id, "session_id": session_id})
    ).first()
    if row is None:
        raise Unauthorized("The access token is not valid.", headers=_bearer_error("invalid_token"))
    username, role, tier, is_active, revoked_at, expires_at = row
    if revoked_at is not None or expires_at <= utcnow():
        raise Unauthorized(
            "This session has ended; sign in again.", headers=_bearer_error("invalid_token")
        )
    if not is_active:
        raise Unauthorized("This account is disabled.", headers=_bearer_error("invalid_token"))
    return Principal(
        user_id=user_id,
        username=username,
        role=role,
        tier=tier,
        scopes=ROLE_SCOPES.get(role, frozenset()),
        session_id=session_id,
    )


async def authenticate_api_key(session: AsyncSession, settings: Settings, key: str) -> Principal:
    assert settings.jwt_secret_key is not None
    if not looks_like_api_key(key):  # not even shaped like one: no need to look it up
        raise Unauthorized("The API key is not valid.", headers=_api_key_challenge())
    digest = api_key_digest(key, settings.jwt_secret_key.get_secret_value())
    row = (
        await session.execute(
            select(ApiKey, User)
            .join(User, ApiKey.user_id == User.id)
            .where(ApiKey.key_hash == digest)
        )
    ).first()
    now = utcnow()
    if row is None:
        raise Unauthorized("The API key is not valid.", headers=_api_key_challenge())
    api_key, user = row
    if api_key.revoked_at is not None:
        raise Unauthorized("The API key has been revoked.", headers=_api_key_challenge())
    if api_key.expires_at is not None and api_key.expires_at <= now:
        raise Unauthorized("The API key has expired.", headers=_api_key_challenge())
    if not user.is_active:
        raise Unauthorized("This account is disabled.", headers=_api_key_challenge())
    if not plan_for(user.tier).has(Feature.API_ACCESS):
        raise Forbidden(
            f"Your plan ({user.tier}) no longer includes API access; the key works again "
            "when it does. Sign in to manage your plan."
        )
    if api_key.last_used_at is None or now - api_key.last_used_at >= API_KEY_TOUCH_INTERVAL:
        await _touch(session, api_key, now)
    # A key keeps only the scopes its owner still has (a demoted admin's key loses `admin`).
    scopes = frozenset(api_key.scopes) & ROLE_SCOPES.get(user.role, frozenset())
    return Principal(
        user_id=user.id,
        username=user.username,
        role=user.role,
        tier=user.tier,
        scopes=scopes,
        api_key_id=api_key.id,
    )


async def _touch(session: AsyncSession, api_key: ApiKey, now: datetime) -> None:
    """Note when a key was last used, as a bonus: a GET's unit of work only reads, and on
    SQLite another process may hold the write lock, so a refused write is skipped, never an
    error (a savepoint keeps the rest of the unit of work intact)."""
    try:
        async with session.begin_nested():
            await session.execute(
                update(ApiKey).where(ApiKey.id == api_key.id).values(last_used_at=now)
            )
    except DBAPIError:  # SQLite's lock, PostgreSQL's lock timeout or deadlock
        logger.info("api_key_touch_skipped", api_key_id=api_key.id)


def _bearer_error(code: str) -> dict[str, str]:
    return {"WWW-Authenticate": f'Bearer realm="tradeos", error="{code}"'}


def _api_key_challenge() -> dict[str, str]:
    return {"WWW-Authenticate": 'ApiKey realm="tradeos", header="X-API-Key"'}


async def lock_owner(session: AsyncSession, user_id: int) -> None:
    """Serialise counting-then-adding for one user (API keys, devices): without it, parallel
    requests on PostgreSQL all count the same total and all add one. (SQLite serialises
    writers anyway; there FOR UPDATE is not needed and not emitted.)"""
    await session.execute(select(User.id).where(User.id == user_id).with_for_update())


# -- licenses and devices --------------------------------------------------------------------


def device_fingerprint(info: DeviceInfo) -> str:
    """The same machine and client describe themselves the same way, so they map to one slot."""
    described = {
        "platform": info.platform.lower(),
        "processor": (info.processor or "").lower(),
        "memory": (info.memory or "").lower(),
    }
    return hashlib.sha256(json.dumps(described, sort_keys=True).encode()).hexdigest()


async def get_license(session: AsyncSession, user: User) -> License:
    license_ = await session.scalar(select(License).where(License.user_id == user.id))
    if license_ is None:  # users made before licenses existed get theirs on first use
        license_ = _license_for(user)
        session.add(license_)
        await session.flush()
    return license_


async def _register_device(
    session: AsyncSession, user: User, info: DeviceInfo, client: ClientInfo
) -> Device:
    fingerprint = device_fingerprint(info)
    await lock_owner(session, user.id)
    device = await session.scalar(
        select(Device).where(Device.user_id == user.id, Device.fingerprint == fingerprint)
    )
    now = utcnow()
    license_ = await get_license(session, user)
    if license_.expires_at is not None and license_.expires_at <= now:
        raise Forbidden("Your license has expired; renew it to sign in from a desktop client.")
    if device is None:
        used = await session.scalar(
            select(func.count()).select_from(Device).where(Device.user_id == user.id)
        )
        if int(used or 0) >= license_.max_devices:
            raise Forbidden(
                f"Your license allows {license_.max_devices} device"
                f"{'s' if license_.max_devices != 1 else ''} and all are in use. Remove one "
                "with DELETE /api/v1/auth/devices/{id}, or upgrade your plan.",
                extra={"max_devices": license_.max_devices},
            )
        device = Device(user_id=user.id, fingerprint=fingerprint, platform=info.platform)
        session.add(device)
        record_audit(
            session, Audit.DEVICE_REGISTERED, actor_id=user.id, target_user_id=user.id, ip=client.ip
        )
    device.platform = info.platform
    device.processor = info.processor
    device.memory = info.memory
    device.client_version = info.client_version
    device.last_seen_at = now
    await session.flush()
    return device


@dataclass(frozen=True)
class LicenseView:
    license: License
    devices: list[Device]

    @property
    def is_valid(self) -> bool:
        expires_at = self.license.expires_at
        return expires_at is None or expires_at > utcnow()


async def license_status(session: AsyncSession, user_id: int) -> LicenseView:
    user = await get_user(session, user_id)
    return LicenseView(await get_license(session, user), await list_devices(session, user_id))


async def list_devices(session: AsyncSession, user_id: int) -> list[Device]:
    query = (
        select(Device).where(Device.user_id == user_id).order_by(Device.first_seen_at, Device.id)
    )
    return list((await session.scalars(query)).all())


async def remove_device(
    session: AsyncSession, principal: Principal, device_id: int, client: ClientInfo
) -> None:
    device = await session.scalar(
        select(Device).where(Device.id == device_id, Device.user_id == principal.user_id)
    )
    if device is None:
        raise NotFound("No such device.")
    # Sessions signed in from that device end with it.
    await session.execute(
        update(AuthSession)
        .where(AuthSession.device_id == device.id, AuthSession.revoked_at.is_(None))
        .values(revoked_at=utcnow(), revoked_reason="device_removed")
    )
    await session.delete(device)
    record_audit(
        session,
        Audit.DEVICE_REMOVED,
        actor_id=principal.user_id,
        target_user_id=principal.user_id,
        ip=client.ip,
        device_id=device_id,
    )
    await session.flush()
