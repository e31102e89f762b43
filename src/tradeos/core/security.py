"""Password hashing. Argon2 costs ~0.3 s of CPU, so it always runs in a worker thread."""

from __future__ import annotations

from anyio import to_thread
from pwdlib import PasswordHash

_hasher = PasswordHash.recommended()


async def hash_password(password: str) -> str:
    return await to_thread.run_sync(_hasher.hash, password)


async def verify_password(password: str, password_hash: str) -> tuple[bool, str | None]:
    """Whether it matches, and a new hash when the stored one uses outdated parameters."""
    return await to_thread.run_sync(_hasher.verify_and_update, password, password_hash)
