"""CI helper: are PostgreSQL and Redis answering, and a throw-away database to test on.

python .ci/services.py probe            exit 0 when both answer
python .ci/services.py create NAME      create database NAME (dropping an old one)
python .ci/services.py drop NAME        drop database NAME and empty the test Redis db
"""

from __future__ import annotations

import asyncio
import os
import sys

PG_ADMIN_URL = os.environ.get("CI_POSTGRES_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("CI_REDIS_URL", "redis://127.0.0.1:6379/15")


async def _postgres(*statements: str) -> None:
    import asyncpg

    connection = await asyncpg.connect(PG_ADMIN_URL, timeout=3)
    try:
        for statement in statements:
            await connection.execute(statement)
    finally:
        await connection.close()


async def _redis(command: str) -> None:
    from redis.asyncio import Redis

    client = Redis.from_url(REDIS_URL, socket_connect_timeout=3)
    try:
        await client.execute_command(command)
    finally:
        await client.aclose()


async def main(action: str, name: str | None) -> int:
    if action == "probe":
        try:
            await _postgres("SELECT 1")
            await _redis("PING")
        except Exception as exc:  # any failure means: not available here
            print(f"PostgreSQL/Redis not available ({type(exc).__name__}): skipping that run")
            return 1
        return 0
    assert name and name.isidentifier(), "database name must be a plain identifier"
    if action == "create":
        await _postgres(f'DROP DATABASE IF EXISTS "{name}"', f'CREATE DATABASE "{name}"')
        await _redis("FLUSHDB")
    elif action == "drop":
        await _postgres(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await _redis("FLUSHDB")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else None)))
