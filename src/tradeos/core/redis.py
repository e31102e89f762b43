"""The one place Redis clients are made (redis-py 8 needs care; see STACK.md)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from redis.asyncio import ConnectionPool, Redis


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


# A call on the request path waits at most this long for Redis: a stalled Redis must slow a
# request down, not hang it.
REQUEST_TIMEOUT_SECONDS = 2.0


def request_pool(
    url: str, *, client_name: str, timeout: float = REQUEST_TIMEOUT_SECONDS
) -> ConnectionPool:
    """A connection pool for calls made while a request waits (rate limits, cache): short
    timeouts, and a name that shows up in Redis' CLIENT LIST. A pool built from a URL retries
    nothing, so one call costs at most one timeout."""
    from redis.asyncio import ConnectionPool

    return ConnectionPool.from_url(
        url,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        health_check_interval=30,
        client_name=client_name,
    )


def _connection_errors() -> tuple[type[Exception], ...]:
    try:
        from redis.exceptions import RedisError
    except ImportError:  # pragma: no cover - the embedded install has no Redis client
        return (OSError, TimeoutError)
    return (OSError, TimeoutError, RedisError)


# What an unreachable or stalled Redis raises: socket errors, and redis-py's own (Redis is an
# extra, so its errors only where it is installed).
REDIS_ERRORS: tuple[type[Exception], ...] = _connection_errors()
