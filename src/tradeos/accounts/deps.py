"""Who is asking, and may they: the dependencies every protected endpoint declares.

    @router.post("/orders", dependencies=[RequireScope("trade")])
    async def place_order(principal: PrincipalDep, ...): ...

`Authorization: Bearer <jwt>` and `X-API-Key: trd_…` resolve to the same `Principal`. Every
authenticated request also counts against its user's overall rate limit (per tier).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.ext.asyncio import AsyncSession

from tradeos.accounts import service
from tradeos.accounts.lockout import LoginGuard
from tradeos.accounts.models import Role
from tradeos.accounts.service import ClientInfo, Principal
from tradeos.billing.plans import Feature
from tradeos.config import Settings
from tradeos.core.deps import DatabaseDep, SessionDep, SettingsDep
from tradeos.core.errors import Forbidden, Unauthorized
from tradeos.core.ratelimit import (
    RateLimiter,
    check_group,
    client_ip,
    client_network,
    enforce,
    group_limit,
    user_limit_for_tier,
)

# auto_error=False: a missing credential is answered by us, as a problem document.
_bearer = HTTPBearer(auto_error=False, description="An access token from POST /auth/login.")
_api_key = APIKeyHeader(
    name="X-API-Key", auto_error=False, description="An API key `trd_…` from POST /api-keys."
)


async def get_rate_limiter(request: Request) -> RateLimiter:
    limiter = request.app.state.rate_limiter
    assert isinstance(limiter, RateLimiter)
    return limiter


async def get_login_guard(request: Request) -> LoginGuard:
    guard = request.app.state.login_guard
    assert isinstance(guard, LoginGuard)
    return guard


async def get_client(request: Request) -> ClientInfo:
    return ClientInfo(
        ip=client_ip(request),
        user_agent=request.headers.get("user-agent"),
        network=client_network(request),
    )


RateLimiterDep = Annotated[RateLimiter, Depends(get_rate_limiter)]
LoginGuardDep = Annotated[LoginGuard, Depends(get_login_guard)]
ClientDep = Annotated[ClientInfo, Depends(get_client)]


async def _authenticate(
    request: Request,
    session: AsyncSession,
    settings: Settings,
    limiter: RateLimiter,
    bearer: HTTPAuthorizationCredentials | None,
    api_key: str | None,
) -> Principal:
    if bearer is not None and api_key is not None:
        raise Unauthorized("Send either a bearer token or an API key, not both.")
    if bearer is not None:
        principal = await service.authenticate_access_token(session, settings, bearer.credentials)
    elif api_key is not None:
        principal = await service.authenticate_api_key(session, settings, api_key)
    else:
        raise Unauthorized("Sign in: send `Authorization: Bearer <token>` or `X-API-Key`.")
    # The access log and error reports name the user (core.logging reads this).
    request.state.user_id = principal.user_id
    await enforce(
        limiter,
        request,
        user_limit_for_tier(settings, principal.tier),
        "user",
        str(principal.user_id),
    )
    return principal


async def get_principal(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    limiter: RateLimiterDep,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    api_key: Annotated[str | None, Depends(_api_key)],
) -> Principal:
    """The principal, looked up in the request's unit of work."""
    return await _authenticate(request, session, settings, limiter, bearer, api_key)


async def get_principal_before_work(
    request: Request,
    database: DatabaseDep,
    settings: SettingsDep,
    limiter: RateLimiterDep,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    api_key: Annotated[str | None, Depends(_api_key)],
) -> Principal:
    """The principal, looked up in a short unit of work of its own: for endpoints that do slow
    work (password hashing, file transfers) before they open theirs, and so take no request
    session. Like the request's own, it only reads for GET (and so never waits for SQLite's
    write lock there)."""
    writes = request.method not in ("GET", "HEAD", "OPTIONS")
    async with database.session(write=writes) as session:
        return await _authenticate(request, session, settings, limiter, bearer, api_key)


PrincipalDep = Annotated[Principal, Depends(get_principal)]


async def get_session_principal(principal: PrincipalDep) -> Principal:
    """For what only an interactive login may do (logout, password change)."""
    if principal.session_id is None:
        raise Forbidden("This needs a signed-in session; an API key cannot do it.")
    return principal


SessionPrincipalDep = Annotated[Principal, Depends(get_session_principal)]


async def get_session_principal_before_work(
    principal: Annotated[Principal, Depends(get_principal_before_work)],
) -> Principal:
    return await get_session_principal(principal)


# A signed-in session, authenticated before the endpoint's own (slow) work; see above.
SessionPrincipalBeforeWorkDep = Annotated[Principal, Depends(get_session_principal_before_work)]


class RequireRole:
    """Refuse (403) a principal whose role is not one of `roles`."""

    def __init__(self, *roles: Role) -> None:
        self.roles = frozenset(roles)

    async def __call__(self, principal: PrincipalDep) -> Principal:
        if principal.role not in self.roles:
            raise Forbidden("Your role does not allow this.")
        return principal


class RequireScope:
    """Refuse (403) a principal without `scope` (an API key made without it, say)."""

    def __init__(self, scope: str) -> None:
        self.scope = scope

    async def __call__(self, principal: PrincipalDep) -> Principal:
        if self.scope not in principal.scopes:
            raise Forbidden(
                f"This needs the `{self.scope}` scope, which these credentials do not have.",
                extra={"required_scope": self.scope},
            )
        return principal


class RequireFeature:
    """Refuse (403) a principal whose subscription tier lacks `feature`."""

    def __init__(self, feature: Feature) -> None:
        self.feature = feature

    async def __call__(self, principal: PrincipalDep) -> Principal:
        if not principal.has_feature(self.feature):
            raise Forbidden(
                f"Your plan ({principal.tier}) does not include {self.feature.value}. "
                "Upgrade to use it.",
                extra={"required_feature": self.feature.value},
            )
        return principal


class UserRateLimit:
    """Limit a group of endpoints per user (RATE_LIMIT_<GROUP>), on top of the user's overall
    limit: orders and trades declare `Depends(UserRateLimit("trading"))`."""

    def __init__(self, group: str) -> None:
        self.group = check_group(group)

    async def __call__(
        self,
        request: Request,
        principal: PrincipalDep,
        settings: SettingsDep,
        limiter: RateLimiterDep,
    ) -> Principal:
        limit = group_limit(settings, self.group)
        await enforce(limiter, request, limit, "user", self.group, str(principal.user_id))
        return principal


ReaderDep = Annotated[Principal, Depends(RequireScope("read"))]
TraderDep = Annotated[Principal, Depends(RequireScope("trade"))]


async def get_admin(principal: Annotated[Principal, Depends(RequireScope("admin"))]) -> Principal:
    if not principal.is_admin:
        raise Forbidden("Only administrators may do this.")
    return principal


AdminDep = Annotated[Principal, Depends(get_admin)]
SuperAdminDep = Annotated[Principal, Depends(RequireRole(Role.SUPER_ADMIN))]


# -- the same guards for endpoints that authenticate before their own (slow) work ------------
# (file uploads and downloads, password checks: see get_principal_before_work)

PrincipalBeforeWork = Annotated[Principal, Depends(get_principal_before_work)]


class RequireScopeBeforeWork:
    """`RequireScope(scope)` for a principal authenticated before the endpoint's work."""

    def __init__(self, scope: str) -> None:
        self.require = RequireScope(scope)

    async def __call__(self, principal: PrincipalBeforeWork) -> Principal:
        return await self.require(principal)


async def get_admin_before_work(
    principal: Annotated[Principal, Depends(RequireScopeBeforeWork("admin"))],
) -> Principal:
    """`get_admin` (admin scope, then admin role) for a principal authenticated before work."""
    return await get_admin(principal)


ReaderBeforeWorkDep = Annotated[Principal, Depends(RequireScopeBeforeWork("read"))]
TraderBeforeWorkDep = Annotated[Principal, Depends(RequireScopeBeforeWork("trade"))]
AdminBeforeWorkDep = Annotated[Principal, Depends(get_admin_before_work)]
