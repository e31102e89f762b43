"""Rate limiting: quotas, strategies, headers and the 429, on process memory and on Redis.

Every limiter test runs on each strategy and on each backend: memory always, Redis when
TEST_REDIS_URL points at one (e.g. redis://127.0.0.1:6379/15). Each test gets its own random
Redis key prefix, and its keys are deleted afterwards, so runs never see each other's counts.
"""

from __future__ import annotations

import asyncio
import math
import time
import uuid
from collections.abc import AsyncIterator, Callable
from types import SimpleNamespace
from typing import Any, get_args

import httpx
import pytest
from fastapi import Depends, FastAPI, Request
from starlette.datastructures import State

from tests.conftest import TEST_REDIS_URL, serve_app
from tradeos.app import create_app
from tradeos.config import RateLimitStrategy, Settings
from tradeos.core.errors import (
    PROBLEM_CONTENT_TYPE,
    RateLimited,
    ServiceUnavailable,
    install_error_handlers,
)
from tradeos.core.middleware import HeadAsGetMiddleware
from tradeos.core.ratelimit import (
    RateLimiter,
    RateLimitHeadersMiddleware,
    RateLimitState,
    client_ip,
    enforce,
    ip_rate_limit,
    user_limit_for_tier,
)

STRATEGY_NAMES = get_args(RateLimitStrategy)
NO_REDIS = "TEST_REDIS_URL is not set: Redis-backed rate limits need a real Redis to run against"
needs_redis = pytest.mark.skipif(TEST_REDIS_URL is None, reason=NO_REDIS)

MakeLimiter = Callable[..., RateLimiter]


# -- fixtures --------------------------------------------------------------------------------


@pytest.fixture(params=["memory", pytest.param("redis", marks=needs_redis)])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(params=STRATEGY_NAMES)
def strategy(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def key_prefix() -> AsyncIterator[str]:
    """A prefix no other run uses; whatever was written under it is deleted afterwards."""
    prefix = f"test-ratelimit-{uuid.uuid4().hex}"
    yield prefix
    if TEST_REDIS_URL:
        await _delete_redis_keys(f"{prefix}*")


async def _delete_redis_keys(pattern: str) -> None:
    from redis.asyncio import Redis

    redis = Redis.from_url(TEST_REDIS_URL or "")
    try:
        keys = [key async for key in redis.scan_iter(match=pattern)]
        if keys:
            await redis.delete(*keys)
    finally:
        await redis.aclose()


@pytest.fixture
async def make_limiter(backend: str, key_prefix: str) -> AsyncIterator[MakeLimiter]:
    """Limiters on the test's backend, all closed at the end."""
    made: list[RateLimiter] = []

    def make(
        strategy: str = "moving-window", *, enabled: bool = True, prefix: str | None = None
    ) -> RateLimiter:
        limiter = RateLimiter(
            strategy=strategy,
            redis_url=TEST_REDIS_URL if backend == "redis" else None,
            key_prefix=prefix or key_prefix,
            enabled=enabled,
        )
        made.append(limiter)
        return limiter

    yield make
    for limiter in made:
        await limiter.aclose()


@pytest.fixture
def limiter(make_limiter: MakeLimiter, strategy: str) -> RateLimiter:
    return make_limiter(strategy)


@pytest.fixture
def limit_settings(settings_factory: Callable[..., Settings]) -> Settings:
    return settings_factory(rate_limit_auth="3/minute", rate_limit_trading="50/minute")


def _limited_app(limiter: RateLimiter, settings: Settings) -> FastAPI:
    """The smallest app with what create_app() will install: handlers, middleware, state."""
    app = FastAPI()
    install_error_handlers(app)
    # HEAD inside, as in create_app(): it hands the app a copy of the scope.
    app.add_middleware(HeadAsGetMiddleware)
    app.add_middleware(RateLimitHeadersMiddleware)
    app.state.rate_limiter = limiter
    app.state.settings = settings

    @app.get("/login", dependencies=[Depends(ip_rate_limit("auth"))])
    async def login() -> dict[str, str]:
        return {"ok": "yes"}

    @app.get("/orders", dependencies=[Depends(ip_rate_limit("trading"))])
    async def orders(request: Request) -> dict[str, str]:
        # The user's overall quota on top of the group's per-IP one.
        await enforce(limiter, request, "2/minute", "user", "u-1")
        return {"ok": "yes"}

    @app.get("/free")
    async def free() -> dict[str, str]:
        return {"ok": "yes"}

    return app


def _client(app: FastAPI, ip: str = "203.0.113.7") -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, client=(ip, 40000))
    return httpx.AsyncClient(transport=transport, base_url="http://testserver")


async def _clear_of_window_edge(window_seconds: int = 60) -> None:
    # The in-memory sliding-window counter aligns windows to the clock: hits straddling an
    # edge are weighted, so counts read one lower. Tests take milliseconds: start clear of it.
    if time.time() % window_seconds > window_seconds - 1:
        await asyncio.sleep(1.1)


def _ints(response: httpx.Response, *names: str) -> list[int]:
    return [int(response.headers[name]) for name in names]


# -- RateLimitState --------------------------------------------------------------------------


def test_retry_after_rounds_up_and_is_never_zero() -> None:
    now = time.time()
    assert RateLimitState(3, 0, now + 36.2, allowed=False).retry_after == 37
    assert RateLimitState(3, 0, now - 5, allowed=False).retry_after == 1


def test_headers_report_seconds_until_reset_and_retry_after_only_when_refused() -> None:
    reset_at = time.time() + 29.5
    allowed = RateLimitState(limit=10, remaining=4, reset_at=reset_at, allowed=True)
    assert allowed.headers() == {
        "RateLimit-Limit": "10",
        "RateLimit-Remaining": "4",
        "RateLimit-Reset": "30",
    }
    refused = RateLimitState(limit=10, remaining=0, reset_at=reset_at, allowed=False)
    assert refused.headers()["Retry-After"] == "30"
    assert refused.headers()["RateLimit-Reset"] == "30"
    past = RateLimitState(limit=10, remaining=10, reset_at=time.time() - 3, allowed=True)
    assert past.headers()["RateLimit-Reset"] == "0"


# -- the limiter, on every strategy and backend -----------------------------------------------


async def test_hits_count_down_then_refuse(limiter: RateLimiter) -> None:
    await _clear_of_window_edge()
    states = [await limiter.hit("3/minute", "ip", "auth", "10.0.0.1") for _ in range(4)]

    assert [state.allowed for state in states] == [True, True, True, False]
    assert [state.remaining for state in states] == [2, 1, 0, 0]
    assert {state.limit for state in states} == {3}
    for state in states:
        assert 1 <= state.reset_at - time.time() <= 60
    assert 1 <= states[-1].retry_after <= 60


async def test_cost_consumes_several_hits(limiter: RateLimiter) -> None:
    await _clear_of_window_edge()
    assert (await limiter.hit("5/minute", "bulk", cost=3)).remaining == 2
    refused = await limiter.hit("5/minute", "bulk", cost=3)
    assert not refused.allowed
    assert (await limiter.hit("5/minute", "bulk", cost=2)).allowed


async def test_a_refused_client_is_let_in_after_retry_after(limiter: RateLimiter) -> None:
    await _clear_of_window_edge(1)
    for _ in range(2):
        assert (await limiter.hit("2/second", "burst")).allowed
    refused = await limiter.hit("2/second", "burst")
    assert not refused.allowed
    assert refused.retry_after == 1

    await asyncio.sleep(refused.retry_after + 0.05)
    assert (await limiter.hit("2/second", "burst")).allowed


async def test_peek_does_not_consume(limiter: RateLimiter) -> None:
    await _clear_of_window_edge()
    await limiter.hit("3/minute", "k")
    for _ in range(3):
        peeked = await limiter.peek("3/minute", "k")
        assert (peeked.allowed, peeked.remaining) == (True, 2)
    assert (await limiter.hit("3/minute", "k")).remaining == 1

    await limiter.hit("3/minute", "k")
    exhausted = await limiter.peek("3/minute", "k")
    assert (exhausted.allowed, exhausted.remaining) == (False, 0)


async def test_clear_resets_the_quota(limiter: RateLimiter) -> None:
    await _clear_of_window_edge()
    for _ in range(4):
        await limiter.hit("3/minute", "k")
    await limiter.clear("3/minute", "k")

    assert (await limiter.peek("3/minute", "k")).remaining == 3
    assert (await limiter.hit("3/minute", "k")).remaining == 2


async def test_identifiers_are_isolated(limiter: RateLimiter) -> None:
    await _clear_of_window_edge()
    for _ in range(2):
        await limiter.hit("2/minute", "ip", "auth", "198.51.100.1")
    assert not (await limiter.hit("2/minute", "ip", "auth", "198.51.100.1")).allowed

    assert (await limiter.hit("2/minute", "ip", "auth", "198.51.100.2")).remaining == 1
    assert (await limiter.hit("2/minute", "ip", "trading", "198.51.100.1")).remaining == 1
    # `limits` joins identifiers with "/": escaped, so these two stay apart.
    await limiter.hit("1/minute", "a/b", "c")
    assert (await limiter.hit("1/minute", "a", "b/c")).allowed


async def test_the_same_limit_text_or_item_counts_alike(limiter: RateLimiter) -> None:
    await _clear_of_window_edge()
    item = limiter.parse("3/minute")
    assert limiter.parse("3/minute") is item  # parsed once
    await limiter.hit("3/minute", "k")
    assert (await limiter.hit(item, "k")).remaining == 1


async def test_disabled_limiter_never_limits(make_limiter: MakeLimiter) -> None:
    limiter = make_limiter(enabled=False)
    for _ in range(5):
        state = await limiter.hit("1/minute", "k")
        assert (state.allowed, state.remaining, state.limit) == (True, 1, 1)
    assert (await limiter.peek("1/minute", "k")).allowed


@pytest.mark.parametrize("name", STRATEGY_NAMES)
def test_each_strategy_is_selectable(name: str) -> None:
    assert RateLimiter(strategy=name, redis_url=None, key_prefix="t").strategy == name


async def test_each_strategy_counts_its_own_way(make_limiter: MakeLimiter) -> None:
    # Two patterns on 2/second, read 1.25 s after the first hit, tell the three apart:
    # A, hits at 0 and 0.5 s: the fixed window has restarted; in a moving window the second
    #   hit still counts; the sliding counter still weighs both previous hits (2 x 0.75).
    # B, two hits at 0: only the sliding counter still weighs them.
    limiters = {name: make_limiter(name) for name in STRATEGY_NAMES}
    await asyncio.sleep(math.ceil(time.time()) - time.time() + 0.01)  # in-memory windows align
    for limiter in limiters.values():
        await limiter.hit("2/second", "A")
        await limiter.hit("2/second", "B", cost=2)
    await asyncio.sleep(0.5)
    for limiter in limiters.values():
        await limiter.hit("2/second", "A")
    await asyncio.sleep(0.75)

    remaining = {
        name: [(await limiter.peek("2/second", key)).remaining for key in ("A", "B")]
        for name, limiter in limiters.items()
    }
    assert remaining == {
        "fixed-window": [2, 2],
        "moving-window": [1, 2],
        "sliding-window-counter": [1, 1],
    }


def test_an_unknown_strategy_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown rate limit strategy"):
        RateLimiter(strategy="token-bucket", redis_url=None, key_prefix="t")


async def test_sliding_window_reset_is_a_window_away_when_it_just_began(
    make_limiter: MakeLimiter, monkeypatch: pytest.MonkeyPatch
) -> None:
    # limits 5.8 reports "now" here (its current counter's TTL modulo the window is 0).
    limiter = make_limiter("sliding-window-counter")
    window_start = 1_800_000_000.0  # a multiple of 60: the in-memory window begins right now
    monkeypatch.setattr(time, "time", lambda: window_start)

    state = await limiter.hit("3/minute", "k")

    assert state.reset_at - window_start == pytest.approx(60, abs=0.01)


# -- enforce: the recorded state and the 429 --------------------------------------------------


def _holder() -> Any:
    return SimpleNamespace(state=State())


async def test_enforce_records_the_most_restrictive_state(limiter: RateLimiter) -> None:
    await _clear_of_window_edge()
    holder = _holder()
    await enforce(limiter, holder, "2/minute", "user", "u-1")
    await enforce(limiter, holder, "50/minute", "ip", "trading", "10.0.0.1")
    assert (holder.state.rate_limit.limit, holder.state.rate_limit.remaining) == (2, 1)

    holder = _holder()
    await enforce(limiter, holder, "50/minute", "ip", "trading", "10.0.0.1")
    await enforce(limiter, holder, "2/minute", "user", "u-1")
    assert (holder.state.rate_limit.limit, holder.state.rate_limit.remaining) == (2, 0)


async def test_enforce_raises_rate_limited_and_records_the_refusal(limiter: RateLimiter) -> None:
    await _clear_of_window_edge()
    holder = _holder()
    await enforce(limiter, holder, "1/minute", "k")
    await enforce(limiter, holder, "50/minute", "other")

    with pytest.raises(RateLimited) as caught:
        await enforce(limiter, holder, "1/minute", "k")

    error = caught.value
    retry_after = int(error.headers["Retry-After"])
    assert error.status == 429
    assert 1 <= retry_after <= 60
    assert error.detail == f"Rate limit of 1 per 1 minute exceeded; retry in {retry_after} s."
    assert error.headers["RateLimit-Remaining"] == "0"
    assert holder.state.rate_limit.allowed is False


async def test_enforce_records_nothing_when_disabled(make_limiter: MakeLimiter) -> None:
    holder = _holder()
    await enforce(make_limiter(enabled=False), holder, "1/minute", "k")
    assert not hasattr(holder.state, "rate_limit")


# -- over HTTP: the dependency, the middleware, the problem document ---------------------------


async def test_http_limit_headers_then_429(limiter: RateLimiter, limit_settings: Settings) -> None:
    await _clear_of_window_edge()
    names = ("RateLimit-Limit", "RateLimit-Remaining", "RateLimit-Reset")
    async with _client(_limited_app(limiter, limit_settings)) as http:
        responses = [await http.get("/login") for _ in range(4)]

    for response, remaining in zip(responses[:3], (2, 1, 0), strict=True):
        assert response.status_code == 200
        limit, left, reset = _ints(response, *names)
        assert (limit, left) == (3, remaining)
        assert 0 <= reset <= 60
        assert "Retry-After" not in response.headers

    refused = responses[3]
    assert refused.status_code == 429
    assert refused.headers["content-type"] == PROBLEM_CONTENT_TYPE
    body = refused.json()
    retry_after = int(refused.headers["Retry-After"])
    assert 1 <= retry_after <= 60
    assert body["status"] == 429
    assert body["detail"] == f"Rate limit of 3 per 1 minute exceeded; retry in {retry_after} s."
    assert _ints(refused, "RateLimit-Limit", "RateLimit-Remaining") == [3, 0]
    for name in (*names, "Retry-After"):
        assert len(refused.headers.get_list(name)) == 1, name


async def test_http_reports_the_most_restrictive_quota(
    limiter: RateLimiter, limit_settings: Settings
) -> None:
    await _clear_of_window_edge()
    async with _client(_limited_app(limiter, limit_settings)) as http:
        first, second, third = [await http.get("/orders") for _ in range(3)]

    # The per-IP trading quota (50/minute) has plenty left; the user's (2/minute) does not.
    assert _ints(first, "RateLimit-Limit", "RateLimit-Remaining") == [2, 1]
    assert _ints(second, "RateLimit-Limit", "RateLimit-Remaining") == [2, 0]
    assert third.status_code == 429
    assert _ints(third, "RateLimit-Limit", "RateLimit-Remaining") == [2, 0]


async def test_http_client_ips_do_not_share_counts(
    limiter: RateLimiter, limit_settings: Settings
) -> None:
    await _clear_of_window_edge()
    app = _limited_app(limiter, limit_settings)
    async with _client(app, "192.0.2.1") as first, _client(app, "192.0.2.2") as second:
        for _ in range(3):
            await first.get("/login")
        assert (await first.get("/login")).status_code == 429
        response = await second.get("/login")

    assert response.status_code == 200
    assert response.headers["RateLimit-Remaining"] == "2"


async def test_http_headers_survive_a_copied_scope(
    limiter: RateLimiter, limit_settings: Settings
) -> None:
    await _clear_of_window_edge()
    async with _client(_limited_app(limiter, limit_settings)) as http:
        response = await http.head("/login")
    assert response.status_code == 200
    assert _ints(response, "RateLimit-Limit", "RateLimit-Remaining") == [3, 2]


async def test_http_disabled_limiter_never_limits_nor_advertises(
    make_limiter: MakeLimiter, limit_settings: Settings
) -> None:
    app = _limited_app(make_limiter(enabled=False), limit_settings)
    async with _client(app) as http:
        responses = [await http.get("/login") for _ in range(10)]

    assert {response.status_code for response in responses} == {200}
    assert "RateLimit-Limit" not in responses[-1].headers


async def test_http_unlimited_routes_carry_no_headers(
    limiter: RateLimiter, limit_settings: Settings
) -> None:
    async with _client(_limited_app(limiter, limit_settings)) as http:
        response = await http.get("/free")
    assert response.status_code == 200
    assert "RateLimit-Limit" not in response.headers


# -- Redis: several API processes share one count ---------------------------------------------


@needs_redis
async def test_processes_on_one_redis_share_counters(strategy: str, key_prefix: str) -> None:
    first, second = (
        RateLimiter(strategy=strategy, redis_url=TEST_REDIS_URL, key_prefix=key_prefix)
        for _ in range(2)
    )
    try:
        await first.hit("3/minute", "ip", "auth", "10.0.0.9")
        await second.hit("3/minute", "ip", "auth", "10.0.0.9")
        assert (await first.hit("3/minute", "ip", "auth", "10.0.0.9")).remaining == 0
        assert not (await second.hit("3/minute", "ip", "auth", "10.0.0.9")).allowed
        await second.clear("3/minute", "ip", "auth", "10.0.0.9")
        assert (await first.peek("3/minute", "ip", "auth", "10.0.0.9")).remaining == 3
    finally:
        await first.aclose()
        await second.aclose()


@needs_redis
async def test_key_prefixes_keep_deployments_apart(strategy: str, key_prefix: str) -> None:
    ours, theirs = (
        RateLimiter(strategy=strategy, redis_url=TEST_REDIS_URL, key_prefix=prefix)
        for prefix in (key_prefix, f"{key_prefix}-other")
    )
    try:
        for _ in range(2):
            await ours.hit("2/minute", "k")
        assert not (await ours.hit("2/minute", "k")).allowed
        assert (await theirs.hit("2/minute", "k")).remaining == 1
    finally:
        await ours.aclose()
        await theirs.aclose()


@needs_redis
async def test_redis_url_without_a_port_works(key_prefix: str) -> None:
    # limits 5.8 refuses redis://host/db by itself ("Missing host or port"); settings allow it.
    url = (TEST_REDIS_URL or "").replace(":6379", "")
    if url == TEST_REDIS_URL:
        pytest.skip("TEST_REDIS_URL does not use the default port")
    limiter = RateLimiter(strategy="fixed-window", redis_url=url, key_prefix=key_prefix)
    try:
        assert (await limiter.hit("2/minute", "k")).remaining == 1
    finally:
        await limiter.aclose()


@needs_redis
async def test_aclose_closes_the_redis_connections(key_prefix: str) -> None:
    from redis.asyncio import Redis

    limiter = RateLimiter(strategy="moving-window", redis_url=TEST_REDIS_URL, key_prefix=key_prefix)
    observer = Redis.from_url(TEST_REDIS_URL or "")

    async def connections() -> int:
        clients = await observer.client_list()
        return sum(1 for client in clients if client.get("name") == key_prefix)

    try:
        await limiter.hit("2/minute", "k")
        assert await connections() >= 1
        await limiter.aclose()
        for _ in range(50):  # the server notices the closed socket a moment later
            if await connections() == 0:
                break
            await asyncio.sleep(0.02)
        assert await connections() == 0
    finally:
        await observer.aclose()


# -- helpers and wiring ------------------------------------------------------------------------


async def test_from_settings(settings_factory: Callable[..., Settings]) -> None:
    settings = settings_factory(
        rate_limit_strategy="fixed-window", rate_limit_enabled=False, redis_key_prefix="acme"
    )
    limiter = RateLimiter.from_settings(settings)
    try:
        assert (limiter.strategy, limiter.enabled) == ("fixed-window", False)
        assert limiter.backend == ("redis" if TEST_REDIS_URL else "memory")
    finally:
        await limiter.aclose()


def test_user_limit_for_tier(settings_factory: Callable[..., Settings]) -> None:
    settings = settings_factory(
        rate_limit_user="100/minute", rate_limit_tier_overrides={"pro": "300/minute"}
    )
    assert user_limit_for_tier(settings, "pro") == "300/minute"
    assert user_limit_for_tier(settings, "free") == "100/minute"


def test_ip_rate_limit_refuses_an_unknown_group() -> None:
    with pytest.raises(ValueError, match="unknown rate limit group"):
        ip_rate_limit("login")


def _request(client: tuple[str, int] | None) -> Request:
    return Request({"type": "http", "method": "GET", "path": "/", "headers": [], "client": client})


def test_client_ip_is_the_peer_address_never_a_forwarded_header() -> None:
    forwarded = [(b"x-forwarded-for", b"1.2.3.4")]
    request = Request({"type": "http", "headers": forwarded, "client": ("192.0.2.5", 1234)})
    assert client_ip(request) == "192.0.2.5"
    assert client_ip(_request(None)) == "unknown"


# -- when the counters' store is down -------------------------------------------------------

UNREACHABLE_REDIS = "redis://127.0.0.1:1/0"  # nothing listens on port 1


async def test_an_unreachable_store_lets_requests_through_when_failing_open() -> None:
    limiter = RateLimiter(
        strategy="moving-window", redis_url=UNREACHABLE_REDIS, key_prefix="down", fail_open=True
    )
    try:
        assert (await limiter.hit("1/minute", "a")).allowed
        assert (await limiter.hit("1/minute", "a")).allowed  # nothing is counted
        assert (await limiter.peek("1/minute", "a")).allowed
        await limiter.clear("1/minute", "a")
    finally:
        await limiter.aclose()


async def test_an_unreachable_store_is_503_when_failing_closed() -> None:
    limiter = RateLimiter(
        strategy="moving-window", redis_url=UNREACHABLE_REDIS, key_prefix="down", fail_open=False
    )
    try:
        with pytest.raises(ServiceUnavailable):
            await limiter.hit("1/minute", "a")
        with pytest.raises(ServiceUnavailable):
            await limiter.peek("1/minute", "a")
    finally:
        await limiter.aclose()


async def test_login_is_503_not_500_when_the_lockout_store_is_down(
    settings_factory: Any, database: Any
) -> None:
    app = create_app(settings_factory(redis_url=UNREACHABLE_REDIS), configure_logs=False)
    async with serve_app(app) as client:
        response = await client.post(
            "/api/v1/auth/login", json={"login": "someone", "password": "whatever-it-is"}
        )
    assert response.status_code == 503
    assert response.headers["content-type"] == "application/problem+json"
    assert "Retry-After" in response.headers
