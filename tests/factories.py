"""Factories for test data: valid objects with unique values, any field overridable."""

from __future__ import annotations

import itertools
from functools import lru_cache
from typing import Any

from pwdlib import PasswordHash
from sqlalchemy.ext.asyncio import AsyncSession

from tradeos.accounts.models import ApiKey, Role, User
from tradeos.accounts.schemas import TokenPair
from tradeos.accounts.service import ClientInfo, open_session
from tradeos.config import Settings
from tradeos.core.security import api_key_digest, new_api_key

DEFAULT_PASSWORD = "correct-horse-battery-staple"
_sequence = itertools.count(1)


@lru_cache(maxsize=8)
def password_hash(password: str = DEFAULT_PASSWORD) -> str:
    # Argon2 takes ~0.3 s; hash each distinct password once per test run.
    return PasswordHash.recommended().hash(password)


async def make_user(
    session: AsyncSession, *, password: str = DEFAULT_PASSWORD, **overrides: Any
) -> User:
    n = next(_sequence)
    values: dict[str, Any] = {
        "email": f"trader{n}@example.com",
        "username": f"trader{n}",
        "password_hash": password_hash(password),
        "role": Role.USER.value,
    }
    values.update(overrides)
    user = User(**values)
    session.add(user)
    await session.flush()
    return user


async def make_api_key(
    session: AsyncSession, settings: Settings, user: User, *, scopes: list[str], **overrides: Any
) -> tuple[ApiKey, str]:
    """A stored API key of `user` and its secret `trd_…`."""
    assert settings.jwt_secret_key is not None
    secret = new_api_key()
    values: dict[str, Any] = {
        "user_id": user.id,
        "name": f"key {next(_sequence)}",
        "prefix": secret[:12],
        "key_hash": api_key_digest(secret, settings.jwt_secret_key.get_secret_value()),
        "scopes": scopes,
    }
    values.update(overrides)
    api_key = ApiKey(**values)
    session.add(api_key)
    await session.flush()
    return api_key, secret


async def sign_in(session: AsyncSession, settings: Settings, user: User) -> TokenPair:
    """A login session for `user` without going through the password check (fast)."""
    return await open_session(session, settings, user, device=None, client=ClientInfo())


def bearer(tokens: TokenPair) -> dict[str, str]:
    return {"Authorization": f"Bearer {tokens.access_token}"}
