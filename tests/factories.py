"""Factories for test data: valid objects with unique values, any field overridable."""

from __future__ import annotations

import itertools
from functools import lru_cache
from typing import Any

from pwdlib import PasswordHash
from sqlalchemy.ext.asyncio import AsyncSession

from tradeos.accounts.models import Role, User

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
