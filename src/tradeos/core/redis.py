"""The one place Redis clients are made (redis-py 8 needs care; see STACK.md)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from redis.asyncio import Redis


def make_redis(url: str, *, connect_timeout: float = 5.0) -> Redis:
    """A client for `url`. redis-py 8 times out every blocking call after 5 s by default, which
    breaks pub/sub listeners and blocking stream reads: so no socket timeout, and a periodic
    health check that notices dead connections instead.

    Imported here, not at the top: Redis is an extra, and settings refuse a REDIS_URL when it
    is not installed, so this import only runs where it can succeed."""
    from redis.asyncio import Redis

    return Redis.from_url(
        url,
        socket_timeout=None,
        socket_connect_timeout=connect_timeout,
        health_check_interval=30,
        decode_responses=False,
    )
