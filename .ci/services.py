"""CI helper: PostgreSQL and Redis for the second test run.

    python .ci/services.py probe          exit 0: both listen (use them); exit 3: not here (skip)
    python .ci/services.py create NAME    create database NAME (dropping an old one), empty Redis
    python .ci/services.py drop NAME      drop database NAME, empty Redis
    python .ci/services.py probe-amqp     exit 0: RabbitMQ listens (its job tests run too)

A service that listens but then fails (bad credentials, no such database) fails CI rather than
quietly skipping the run.
"""

from __future__ import annotations

import asyncio
import os
import socket
import sys

# The maintenance database every PostgreSQL server has; trust auth on CI.
PG_ADMIN_URL = os.environ.get(
    "CI_POSTGRES_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
# A Redis database number of its own, emptied before and after the run.
REDIS_URL = os.environ.get("CI_REDIS_URL", "redis://127.0.0.1:6379/15")
NOT_HERE = 3


def _listening(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=2):
            return True
    except OSError:
        return False


async def _postgres(*statements: str) -> None:
    import asyncpg

    connection = await asyncpg.connect(PG_ADMIN_URL, timeout=5)
    try:
        for statement in statements:
            await connection.execute(statement)
    finally:
        await connection.close()


async def _redis(command: str) -> None:
    from redis.asyncio import Redis

    client = Redis.from_url(REDIS_URL, socket_connect_timeout=5)
    try:
        await client.execute_command(command)
    finally:
        await client.aclose()


async def main(action: str, name: str | None) -> int:
    if action == "probe-amqp":
        return 0 if _listening("127.0.0.1", 5672) else NOT_HERE
    if action == "probe":
        if not (_listening("127.0.0.1", 5432) and _listening("127.0.0.1", 6379)):
            print("PostgreSQL and Redis are not both listening on 127.0.0.1: skipping that run")
            return NOT_HERE
        await _postgres("SELECT 1")  # listening but unusable: this raises, and CI fails
        await _redis("PING")
        return 0
    if not (name and name.isidentifier()):
        raise SystemExit("a database name must be a plain identifier")
    if action == "create":
        await _postgres(f'DROP DATABASE IF EXISTS "{name}"', f'CREATE DATABASE "{name}"')
        await _redis("FLUSHDB")
    elif action == "drop":
        await _postgres(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await _redis("FLUSHDB")
    else:
        raise SystemExit(f"unknown action {action!r}")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else None)))
