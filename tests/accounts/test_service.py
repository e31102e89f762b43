"""Account use cases: creating and finding users."""

from __future__ import annotations

import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from tests.factories import make_user, password_hash
from tradeos.accounts import service
from tradeos.accounts.models import Role
from tradeos.core.db import Database
from tradeos.core.errors import Conflict
from tradeos.core.security import verify_password


async def test_register_hashes_the_password(database: Database) -> None:
    user = await service.register(
        database,
        email="Ada@Example.com",
        username="ada",
        password="analytical-engine",
        role=Role.ADMIN,
    )
    assert user.id is not None and user.role == "admin" and user.is_active
    assert "analytical-engine" not in user.password_hash
    assert (await verify_password("analytical-engine", user.password_hash))[0]
    assert not (await verify_password("wrong-password", user.password_hash))[0]
    assert user.created_at.tzinfo is not None


@pytest.mark.parametrize("login", ["ada", "ADA", "ada@example.com", "  Ada@Example.COM "])
async def test_find_user_by_email_or_username_ignoring_case(
    session: AsyncSession, login: str
) -> None:
    await make_user(session, email="Ada@Example.com", username="Ada")
    found = await service.find_user(session, login)
    assert found is not None and found.username == "Ada"
    assert await service.find_user(session, "grace") is None


@pytest.mark.parametrize(
    ("email", "username"), [("ADA@example.com", "someone"), ("other@example.com", "ADA")]
)
async def test_taken_email_or_username_is_a_conflict(
    session: AsyncSession, email: str, username: str
) -> None:
    await make_user(session, email="ada@example.com", username="ada")
    with pytest.raises(Conflict, match="already registered"):
        await service.create_user(
            session, email=email, username=username, password_hash=password_hash()
        )
