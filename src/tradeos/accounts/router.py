"""Identity endpoints: /auth (sign-up, sign-in, tokens, devices), /users/me, /api-keys."""

from __future__ import annotations

from fastapi import Depends, status
from pydantic import BaseModel

from tradeos.accounts import api_keys as api_keys_service
from tradeos.accounts import service
from tradeos.accounts.deps import (
    ClientDep,
    LoginGuardDep,
    ReaderDep,
    RequireFeature,
    SessionPrincipalBeforeWorkDep,
    SessionPrincipalDep,
    TraderDep,
)
from tradeos.accounts.schemas import (
    ApiKeyCreate,
    ApiKeyCreated,
    ApiKeyOut,
    DeviceOut,
    LicenseStatus,
    LoginRequest,
    PasswordChange,
    ProfileUpdate,
    RefreshRequest,
    RegisterRequest,
    TokenPair,
    UserOut,
)
from tradeos.billing.plans import Feature
from tradeos.core.deps import DatabaseDep, PageQuery, ResourceId, SessionDep, SettingsDep
from tradeos.core.pagination import Page, paginate
from tradeos.core.ratelimit import ip_rate_limit
from tradeos.core.routing import APIRouter

auth = APIRouter(prefix="/auth", tags=["auth"], dependencies=[Depends(ip_rate_limit("auth"))])
users = APIRouter(prefix="/users", tags=["users"])
# Password checks are limited like sign-ins, per client network.
_password_attempts = [Depends(ip_rate_limit("auth"))]
api_keys = APIRouter(prefix="/api-keys", tags=["api-keys"])


class SessionsRevoked(BaseModel):
    revoked_sessions: int


@auth.post("/register", status_code=status.HTTP_201_CREATED)
async def register(body: RegisterRequest, database: DatabaseDep, client: ClientDep) -> UserOut:
    user = await service.register(
        database,
        email=str(body.email),
        username=body.username,
        password=body.password,
        full_name=body.full_name,
        client=client,
    )
    return UserOut.model_validate(user)


@auth.post("/login")
async def login(
    body: LoginRequest, database: DatabaseDep, guard: LoginGuardDep, client: ClientDep
) -> TokenPair:
    return await service.login(
        database,
        guard,
        login_name=body.login,
        password=body.password,
        device_info=body.device_info,
        client=client,
    )


@auth.post("/refresh")
async def refresh(body: RefreshRequest, database: DatabaseDep, settings: SettingsDep) -> TokenPair:
    return await service.refresh(database, settings, body.refresh_token)


@auth.post("/logout", status_code=status.HTTP_204_NO_CONTENT)
async def logout(principal: SessionPrincipalDep, session: SessionDep, client: ClientDep) -> None:
    await service.logout(session, principal, client)


@auth.post("/logout-all")
async def logout_all(
    principal: SessionPrincipalDep, session: SessionDep, client: ClientDep
) -> SessionsRevoked:
    return SessionsRevoked(revoked_sessions=await service.logout_all(session, principal, client))


@auth.get("/me")
async def auth_me(principal: ReaderDep, session: SessionDep) -> UserOut:
    return UserOut.model_validate(await service.get_user(session, principal.user_id))


@auth.get("/license-status")
async def license_status(principal: ReaderDep, session: SessionDep) -> LicenseStatus:
    view = await service.license_status(session, principal.user_id)
    return LicenseStatus(
        plan=view.license.plan,
        features=view.license.features,
        max_devices=view.license.max_devices,
        devices_used=len(view.devices),
        expires_at=view.license.expires_at,
        is_valid=view.is_valid,
        devices=[DeviceOut.model_validate(device) for device in view.devices],
    )


@auth.delete("/devices/{device_id}", status_code=status.HTTP_204_NO_CONTENT)
async def remove_device(
    device_id: ResourceId, principal: TraderDep, session: SessionDep, client: ClientDep
) -> None:
    await service.remove_device(session, principal, device_id, client)


@users.get("/me")
async def get_me(principal: ReaderDep, session: SessionDep) -> UserOut:
    return UserOut.model_validate(await service.get_user(session, principal.user_id))


@users.patch("/me")
async def update_me(
    body: ProfileUpdate, principal: TraderDep, session: SessionDep, client: ClientDep
) -> UserOut:
    changes = body.model_dump(exclude_unset=True, mode="json")
    user = await service.update_profile(session, principal, changes=changes, client=client)
    return UserOut.model_validate(user)


@users.post("/me/password", status_code=status.HTTP_204_NO_CONTENT, dependencies=_password_attempts)
async def change_password(
    body: PasswordChange,
    principal: SessionPrincipalBeforeWorkDep,
    database: DatabaseDep,
    guard: LoginGuardDep,
    client: ClientDep,
) -> None:
    await service.change_password(
        database,
        guard,
        principal,
        current_password=body.current_password,
        new_password=body.new_password,
        client=client,
    )


@api_keys.post(
    "",
    status_code=status.HTTP_201_CREATED,
    dependencies=[Depends(RequireFeature(Feature.API_ACCESS))],
)
async def create_api_key(
    body: ApiKeyCreate,
    principal: TraderDep,
    session: SessionDep,
    settings: SettingsDep,
    client: ClientDep,
) -> ApiKeyCreated:
    api_key, secret = await api_keys_service.create_api_key(
        session,
        settings,
        principal,
        name=body.name,
        scopes=list(body.scopes),
        expires_at=body.expires_at,
        client=client,
    )
    return ApiKeyCreated.model_validate(
        {**ApiKeyOut.model_validate(api_key).model_dump(), "key": secret}
    )


@api_keys.get("")
async def list_api_keys(
    principal: ReaderDep, session: SessionDep, paging: PageQuery
) -> Page[ApiKeyOut]:
    page = await paginate(session, api_keys_service.api_keys_query(principal.user_id), paging)
    return page.map(ApiKeyOut.model_validate)


@api_keys.delete("/{key_id}", status_code=status.HTTP_204_NO_CONTENT)
async def revoke_api_key(
    key_id: ResourceId, principal: TraderDep, session: SessionDep, client: ClientDep
) -> None:
    await api_keys_service.revoke_api_key(session, principal, key_id, client)


routers = (auth, users, api_keys)
