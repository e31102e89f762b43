"""Account use cases. Each takes the caller's session and flushes; the caller commits."""

from __future__ import annotations

from sqlalchemy import func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from tradeos.accounts.models import Role, User
from tradeos.core.errors import Conflict
from tradeos.core.security import hash_password


async def find_user(session: AsyncSession, login: str) -> User | None:
    """The user whose email or username is `login`, compared case-insensitively."""
    key = login.strip().lower()
    query = select(User).where(or_(func.lower(User.email) == key, func.lower(User.username) == key))
    return (await session.scalars(query)).first()


async def create_user(
    session: AsyncSession,
    *,
    email: str,
    username: str,
    password: str,
    role: Role = Role.USER,
    full_name: str | None = None,
) -> User:
    # Hash before touching the database: argon2 takes ~0.3 s, and on SQLite the session's one
    # connection (and with it every other request) would wait for it.
    password_hash = await hash_password(password)
    for login in (email, username):
        if await find_user(session, login) is not None:
            raise Conflict(f"{login!r} is already taken.")
    user = User(
        email=email.strip(),
        username=username.strip(),
        password_hash=password_hash,
        role=role.value,
        full_name=full_name,
    )
    session.add(user)
    await session.flush()
    return user
