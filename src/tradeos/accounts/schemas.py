"""Requests and responses of the identity endpoints."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    EmailStr,
    Field,
    StringConstraints,
    field_validator,
)

from tradeos.accounts.passwords import MIN_PASSWORD_LENGTH, password_problem
from tradeos.core.fields import NOT_BLANK, Moment, NoNul, text

Scope = Literal["read", "trade", "admin"]
Username = Annotated[
    str,
    StringConstraints(
        strip_whitespace=True, min_length=3, max_length=32, pattern=r"^[A-Za-z0-9_.-]+$"
    ),
]
FullName = Annotated[str, text(200), NoNul]
# Bounded above: argon2 work grows with the input, and nobody types 128+ characters.
Password = Annotated[str, StringConstraints(min_length=1, max_length=128), NoNul]
# A password being set: the length rule is in the schema; the common-password rule is checked
# by NewPassword (it cannot be said in JSON Schema).
ChosenPassword = Annotated[
    str, StringConstraints(min_length=MIN_PASSWORD_LENGTH, max_length=128), NoNul
]


class _Request(BaseModel):
    # Unknown fields are refused, so `role`, `tier` or `is_active` in a profile update is an
    # error, never silently ignored. Inputs (passwords) never appear in validation errors.
    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)


class NewPassword(_Request):
    @field_validator("password", "new_password", check_fields=False)
    @classmethod
    def _strong_enough(cls, value: str) -> str:
        problem = password_problem(value)
        if problem:
            raise ValueError(problem)
        return value


class RegisterRequest(NewPassword):
    email: EmailStr = Field(max_length=320)
    username: Username
    password: ChosenPassword
    full_name: FullName | None = None


class DeviceInfo(_Request):
    platform: Annotated[str, text(50), NoNul]
    processor: Annotated[str, text(100), NoNul] | None = None
    memory: Annotated[str, text(30), NoNul] | None = None
    client_version: Annotated[str, text(30), NoNul] | None = None


class LoginRequest(_Request):
    login: Annotated[str, NoNul] = Field(
        min_length=1,
        pattern=NOT_BLANK,
        max_length=320,
        validation_alias=AliasChoices("login", "email", "username"),
        description="Email or username (the fields `email` and `username` are accepted too).",
    )
    password: Password
    device_info: DeviceInfo | None = None


class RefreshRequest(_Request):
    refresh_token: str = Field(min_length=1, max_length=200)


class TokenPair(BaseModel):
    access_token: str
    refresh_token: str
    token_type: Literal["bearer"] = "bearer"  # noqa: S105 - the scheme name
    expires_in: int = Field(description="Seconds until the access token expires.")


class UserOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    email: str
    username: str
    full_name: str | None
    role: str
    tier: str
    kyc_status: str
    is_active: bool
    created_at: datetime
    last_login_at: datetime | None


class ProfileUpdate(_Request):
    """Only the fields sent change. `full_name: null` clears the name; email and username can
    be changed but never removed, so null is refused for them."""

    email: EmailStr = Field(default=None, max_length=320)  # type: ignore[assignment]
    username: Username = None  # type: ignore[assignment]
    full_name: FullName | None = None


class PasswordChange(NewPassword):
    current_password: Password
    new_password: ChosenPassword


class ApiKeyCreate(_Request):
    name: Annotated[str, text(100), NoNul]
    scopes: list[Scope] = Field(min_length=1, max_length=3)
    expires_at: Moment | None = None

    @field_validator("scopes")
    @classmethod
    def _unique(cls, scopes: list[str]) -> list[str]:
        return sorted(set(scopes))


class ApiKeyOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    name: str
    prefix: str
    scopes: list[str]
    created_at: datetime
    last_used_at: datetime | None
    expires_at: datetime | None


class ApiKeyCreated(ApiKeyOut):
    key: str = Field(description="The secret key. Shown this once; store it safely.")


class DeviceOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    platform: str
    processor: str | None
    memory: str | None
    client_version: str | None
    first_seen_at: datetime
    last_seen_at: datetime


class LicenseStatus(BaseModel):
    plan: str
    features: list[str]
    max_devices: int
    devices_used: int
    expires_at: datetime | None
    is_valid: bool
    devices: list[DeviceOut]
