"""Rate limiting: the `limits` library's async strategies over in-process or Redis counters.

One `RateLimiter` per process (on `app.state.rate_limiter`), built from the settings: counters
live in process memory by default, or in Redis when REDIS_URL is set, so every API process
behind a load balancer counts against the same quota. Endpoints call `enforce` (directly, or
through the `ip_rate_limit` dependency); it raises `RateLimited` (429, problem+json) and
records the request's most restrictive quota, which `RateLimitHeadersMiddleware` then
advertises on every response as the IETF draft's `RateLimit-Limit` / `-Remaining` / `-Reset`.

The reset time (`RateLimit-Reset`, `Retry-After`) is what `limits` 5.8 reports, per strategy:
- fixed-window: when the window's counter expires (on Redis its TTL, in whole seconds);
- moving-window: when the oldest hit in the window ages out, i.e. when one slot frees up;
- sliding-window-counter: the sooner of the current window's end and the moment the previous
  window's weighted count next drops by one (corrected, see `_SlidingWindowCounter`).
With nothing counted yet, fixed and sliding windows report "now", the moving window
"now + window"; either way `RateLimit-Reset` is a whole number of seconds, never negative.
"""

from __future__ import annotations

import ipaddress
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, cast

import limits
import structlog
from fastapi import Request
from limits import RateLimitItem
from limits.aio.storage import (
    MemoryStorage,
    RedisStorage,
    SlidingWindowCounterSupport,
    Storage,
)
from limits.aio.strategies import (
    FixedWindowRateLimiter,
    MovingWindowRateLimiter,
    SlidingWindowCounterRateLimiter,
)
from limits.aio.strategies import RateLimiter as LimitsStrategy
from limits.util import WindowStats
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tradeos.config import Settings
from tradeos.core.errors import RateLimited, ServiceUnavailable
from tradeos.core.redis import REDIS_ERRORS, request_pool

if TYPE_CHECKING:
    from redis.asyncio import ConnectionPool

# The endpoint groups limited per client IP, each with its RATE_LIMIT_<GROUP> setting.
LIMIT_GROUPS = ("auth", "trading", "market_data", "data_sync")
# Redis calls sit on the request path: a stalled Redis must fail the request, not hang it.
_STATE_KEY = "rate_limit"
logger = structlog.get_logger("tradeos.ratelimit")


class _FixedWindow(FixedWindowRateLimiter):
    """The library's strategy, except that a refused costly hit consumes nothing.

    limits 5.8 increments the counter first and compares after, so a refused hit still
    counts: harmless at cost 1 (any count past the limit reads the same, and the window's end
    does not move), but a refused hit of cost 3 with 2 left would burn those 2. Testing first
    costs one more round trip, so only when the cost is above 1.
    """

    async def hit(self, item: RateLimitItem, *identifiers: str, cost: int = 1) -> bool:
        if cost > 1 and not await self.test(item, *identifiers, cost=cost):
            return False
        return await super().hit(item, *identifiers, cost=cost)


class _SlidingWindowCounter(SlidingWindowCounterRateLimiter):
    """The library's strategy, with an honest reset time for a window that has just begun.

    limits 5.8 takes the current window's end as `current_ttl % window`. The current counter
    lives for up to two windows, so one created this very millisecond has a TTL of exactly
    two windows and its reset comes out as "now" instead of a window away: on Redis, after
    nearly every first hit of a window. `current_ttl - window` is the same value otherwise.
    """

    async def get_window_stats(self, item: RateLimitItem, *identifiers: str) -> WindowStats:
        window = item.get_expiry()
        storage = cast(SlidingWindowCounterSupport, self.storage)
        previous, previous_ttl, current, current_ttl = await storage.get_sliding_window(
            item.key_for(*identifiers), window
        )
        weighted = previous * previous_ttl / window + current
        waits = []
        if previous:  # until the previous window's weighted count next drops by one
            waits.append(previous_ttl % (window / previous))
        if current:  # until the current window ends
            waits.append(max(0.0, current_ttl - window))
        remaining = max(0, item.amount - math.floor(weighted))
        return WindowStats(time.time() + min(waits, default=0.0), remaining)


# RATE_LIMIT_STRATEGY -> the `limits` strategy (spelled out: its own table is typed abstract).
STRATEGIES: dict[str, Callable[[Storage], LimitsStrategy]] = {
    "fixed-window": _FixedWindow,
    "moving-window": MovingWindowRateLimiter,
    "sliding-window-counter": _SlidingWindowCounter,
}


@dataclass(frozen=True)
class RateLimitState:
    """One quota as seen by one hit (or peek): what the RateLimit-* headers report."""

    limit: int
    remaining: int
    reset_at: float  # epoch seconds
    allowed: bool

    def seconds_until_reset(self, now: float | None = None) -> int:
        # Rounded up: a client told "0" would come back while the window is still full.
        current = time.time() if now is None else now
        return max(0, math.ceil(self.reset_at - current))

    @property
    def retry_after(self) -> int:
        # Never 0: "retry after 0 s" invites an immediate retry that is refused again.
        return max(1, self.seconds_until_reset())

    def headers(self) -> dict[str, str]:
        now = time.time()  # one clock reading, so Reset and Retry-After agree
        reset = self.seconds_until_reset(now)
        headers = {
            "RateLimit-Limit": str(self.limit),
            "RateLimit-Remaining": str(self.remaining),
            "RateLimit-Reset": str(reset),
        }
        if not self.allowed:
            headers["Retry-After"] = str(max(1, reset))
        return headers


def _more_restrictive(candidate: RateLimitState, current: RateLimitState) -> bool:
    """A refused quota first, then the one with fewer hits left, then the later reset."""

    def rank(state: RateLimitState) -> tuple[bool, int, float]:
        return (state.allowed, state.remaining, -state.reset_at)

    return rank(candidate) < rank(current)


def _key_parts(identifiers: tuple[str, ...]) -> tuple[str, ...]:
    # `limits` joins identifiers with "/": escape it, so ("a/b", "c") and ("a", "b/c") differ.
    return tuple(part.replace("%", "%25").replace("/", "%2F") for part in identifiers)


def _redis_storage(pool: ConnectionPool, key_prefix: str) -> RedisStorage:
    # `limits` parses its URI even when handed a pool, and refuses forms redis-py accepts
    # (redis://host/0 without a port; unix:// selects valkey). The pool already knows the
    # address, so the URI only names the scheme. Owning the pool is also how we close it:
    # RedisStorage itself has no close method.
    return RedisStorage(
        "async+redis://",
        implementation="redispy",
        key_prefix=key_prefix,
        connection_pool=pool,  # type: ignore[arg-type]  # documented, but typed as scalar options
    )


class RateLimiter:
    """Hits, peeks at and clears quotas; one instance per process, shared by all requests."""

    def __init__(
        self,
        *,
        strategy: str,
        redis_url: str | None,
        key_prefix: str,
        enabled: bool = True,
        fail_open: bool = True,
    ) -> None:
        """`fail_open`: when the counters' store (Redis) cannot be reached, let requests
        through (True: rate limits protect capacity, and an outage of Redis should not become
        an outage of the API) or refuse them with 503 (False: for security counters such as
        login lockout, which must not stop counting silently)."""
        if strategy not in STRATEGIES:
            raise ValueError(f"unknown rate limit strategy {strategy!r}; use {sorted(STRATEGIES)}")
        self.strategy = strategy
        self.enabled = enabled
        self.fail_open = fail_open
        self.backend = "redis" if redis_url else "memory"
        self._pool = request_pool(redis_url, client_name=key_prefix) if redis_url else None
        # Keyed by strategy too: fixed and moving windows keep different Redis types under the
        # same key (WRONGTYPE errors while both run, e.g. during a rolling change of strategy).
        storage: Storage = (
            MemoryStorage()
            if self._pool is None
            else _redis_storage(self._pool, f"{key_prefix}:{strategy}")
        )
        self._strategy: LimitsStrategy = STRATEGIES[strategy](storage)
        self._items: dict[str, RateLimitItem] = {}

    @classmethod
    def from_settings(cls, settings: Settings) -> RateLimiter:
        return cls(
            strategy=settings.rate_limit_strategy,
            redis_url=settings.redis_url,
            # Its own namespace under the deployment's prefix, apart from cache keys.
            key_prefix=f"{settings.redis_key_prefix}:ratelimit",
            enabled=settings.rate_limit_enabled,
        )

    def parse(self, limit: str | RateLimitItem) -> RateLimitItem:
        """The limit as a `limits` item; texts like "10/minute" are parsed once, then cached."""
        if isinstance(limit, RateLimitItem):
            return limit
        item = self._items.get(limit)
        if item is None:
            item = self._items[limit] = limits.parse(limit)
        return item

    async def hit(
        self, limit: str | RateLimitItem, *identifiers: str, cost: int = 1
    ) -> RateLimitState:
        """Consume `cost` from the quota named by `identifiers`; say whether it was allowed."""
        item = self.parse(limit)
        if not self.enabled:
            return _unlimited(item)
        keys = _key_parts(identifiers)
        try:
            allowed = await self._strategy.hit(item, *keys, cost=cost)
            return await self._state(item, keys, allowed=allowed)
        except REDIS_ERRORS as error:
            return self._store_unreachable(item, error)

    async def peek(self, limit: str | RateLimitItem, *identifiers: str) -> RateLimitState:
        """The quota as it stands, consuming nothing: would one more hit be allowed?"""
        item = self.parse(limit)
        if not self.enabled:
            return _unlimited(item)
        keys = _key_parts(identifiers)
        try:
            allowed = await self._strategy.test(item, *keys)
            return await self._state(item, keys, allowed=allowed)
        except REDIS_ERRORS as error:
            return self._store_unreachable(item, error)

    async def clear(self, limit: str | RateLimitItem, *identifiers: str) -> None:
        """Forget every hit counted against this quota (e.g. after an admin unlock)."""
        item = self.parse(limit)
        try:
            await self._strategy.clear(item, *_key_parts(identifiers))
        except REDIS_ERRORS as error:
            self._store_unreachable(item, error)

    def _store_unreachable(self, item: RateLimitItem, error: Exception) -> RateLimitState:
        logger.warning(
            "rate_limit_store_unreachable",
            backend=self.backend,
            fail_open=self.fail_open,
            error=type(error).__name__,
        )
        if not self.fail_open:
            raise ServiceUnavailable(
                "This is briefly unavailable; try again in a moment.",
                headers={"Retry-After": "5"},
            )
        return _unlimited(item)

    async def aclose(self) -> None:
        if self._pool is not None:
            await self._pool.aclose()

    async def _state(
        self, item: RateLimitItem, keys: tuple[str, ...], *, allowed: bool
    ) -> RateLimitState:
        stats = await self._strategy.get_window_stats(item, *keys)
        return RateLimitState(
            limit=item.amount,
            remaining=max(0, stats.remaining),
            reset_at=stats.reset_time,
            allowed=allowed,
        )


def _unlimited(item: RateLimitItem) -> RateLimitState:
    return RateLimitState(
        limit=item.amount, remaining=item.amount, reset_at=time.time(), allowed=True
    )


class HasState(Protocol):
    """A Request or WebSocket: anything with Starlette's per-connection `state`."""

    @property
    def state(self) -> Any: ...


async def enforce(
    limiter: RateLimiter,
    request: HasState,
    limit: str | RateLimitItem,
    *identifiers: str,
    cost: int = 1,
) -> RateLimitState:
    """Hit the quota; remember it for the response headers; raise `RateLimited` if refused."""
    state = await limiter.hit(limit, *identifiers, cost=cost)
    if limiter.enabled:
        # Disabled limits are not advertised: a client would pace itself for nothing.
        _record(request, state)
    if not state.allowed:
        headers = state.headers()
        retry_after = int(headers["Retry-After"])
        detail = f"Rate limit of {limiter.parse(limit)} exceeded; retry in {retry_after} s."
        raise RateLimited(detail=detail, retry_after=retry_after, headers=headers)
    return state


def _record(request: HasState, state: RateLimitState) -> None:
    # Several quotas can apply to one request (its group's, the user's overall one): the
    # headers describe the one the client will run into first.
    current = getattr(request.state, _STATE_KEY, None)
    if not isinstance(current, RateLimitState) or _more_restrictive(state, current):
        setattr(request.state, _STATE_KEY, state)


class RateLimitHeadersMiddleware:
    """Adds the request's recorded RateLimit-* headers to its response, success or error."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        # Created here, not by the first `request.state`: a middleware further in may copy
        # the scope, and the copy must share this dict for the record to reach us.
        request_state: dict[str, Any] = scope.setdefault("state", {})

        async def send_with_headers(message: Message) -> None:
            state = request_state.get(_STATE_KEY)
            if message["type"] == "http.response.start" and isinstance(state, RateLimitState):
                _add_missing_headers(message, state)
            await send(message)

        await self.app(scope, receive, send_with_headers)


def _add_missing_headers(message: Message, state: RateLimitState) -> None:
    headers = MutableHeaders(scope=message)
    for name, value in state.headers().items():
        # Retry-After belongs to the 429 alone, which brings its own (as do its RateLimit-*).
        if name != "Retry-After" and name not in headers:
            headers.append(name, value)


def client_ip(request: Request) -> str:
    """The peer address. Behind a proxy, uvicorn's --proxy-headers (with --forwarded-allow-ips)
    puts the real client here; reading X-Forwarded-For ourselves would let anyone forge it."""
    return request.client.host if request.client else "unknown"


def network_of(address: str) -> str:
    """What per-address limits count by: an IPv4 address itself, but an IPv6 address's /64.

    One customer line gets a whole /64 (2^64 addresses); counting each address apart would let
    one client pick a fresh address for every request and never be limited."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address  # "unknown", a test client's name: count it as it is
    if isinstance(ip, ipaddress.IPv4Address):
        return str(ip)
    if ip.ipv4_mapped is not None:  # ::ffff:192.0.2.1 is the IPv4 client 192.0.2.1
        return str(ip.ipv4_mapped)
    return str(ipaddress.ip_network(f"{ip}/64", strict=False))


def client_network(request: Request) -> str:
    return network_of(client_ip(request))


def user_limit_for_tier(settings: Settings, tier: str) -> str:
    """A user's overall limit: the tier's override, else RATE_LIMIT_USER."""
    return settings.rate_limit_tier_overrides.get(tier, settings.rate_limit_user)


def check_group(group: str) -> str:
    """`group` if it names a limit group; checked when routes are declared, so a typo fails at
    import, not on the first request."""
    if group not in LIMIT_GROUPS:
        raise ValueError(f"unknown rate limit group {group!r}; use one of {LIMIT_GROUPS}")
    return group


def group_limit(settings: Settings, group: str) -> str:
    """The configured limit of a group of endpoints (RATE_LIMIT_<GROUP>)."""
    limit: str = getattr(settings, f"rate_limit_{check_group(group)}")
    return limit


def ip_rate_limit(group: str) -> Callable[[Request], Awaitable[RateLimitState]]:
    """A FastAPI dependency limiting a group of endpoints per client IP (RATE_LIMIT_<GROUP>)."""
    check_group(group)

    async def limit_by_ip(request: Request) -> RateLimitState:
        limiter = request.app.state.rate_limiter
        settings = request.app.state.settings
        assert isinstance(limiter, RateLimiter)
        assert isinstance(settings, Settings)
        limit = group_limit(settings, group)
        return await enforce(limiter, request, limit, "ip", group, client_network(request))

    limit_by_ip.__name__ = f"ip_rate_limit_{group}"
    return limit_by_ip
