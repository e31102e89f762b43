"""The cache port: get/set/TTL, invalidation by key, prefix and tag, the `cached` helper, and
what happens when Redis is unreachable or stalled.

The behaviour tests run on each backend: memory always, Redis when TEST_REDIS_URL points at one
(e.g. redis://127.0.0.1:6379/15). Each test gets its own random Redis key prefix, and its keys
are deleted afterwards.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable
from decimal import Decimal
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from tests.conftest import TEST_REDIS_URL, CapturedLogs, serve_app
from tradeos.config import Settings
from tradeos.core import cache as cache_module
from tradeos.core.cache import (
    Cache,
    CacheDep,
    MemoryCache,
    RedisCache,
    cached,
    make_cache,
)

NO_REDIS = "TEST_REDIS_URL is not set: Redis-backed caching needs a real Redis to run against"
needs_redis = pytest.mark.skipif(TEST_REDIS_URL is None, reason=NO_REDIS)
UNREACHABLE_REDIS = "redis://:s3cret-password@127.0.0.1:1/0"  # nothing listens on port 1
TTL = 60.0
SHORT_TTL = 0.2


async def _delete_redis_keys(prefix: str) -> None:
    from redis.asyncio import Redis

    assert TEST_REDIS_URL is not None
    client = Redis.from_url(TEST_REDIS_URL)
    try:
        names = [name async for name in client.scan_iter(match=f"{prefix}:*")]
        if names:
            await client.unlink(*names)
    finally:
        await client.aclose()


@pytest.fixture
def redis_prefix() -> str:
    return f"test-{uuid.uuid4().hex}"


@pytest.fixture(params=["memory", pytest.param("redis", marks=needs_redis)])
async def cache(request: pytest.FixtureRequest, redis_prefix: str) -> AsyncIterator[Cache]:
    store: Cache
    if request.param == "redis":
        assert TEST_REDIS_URL is not None
        store = RedisCache(TEST_REDIS_URL, redis_prefix)
    else:
        store = MemoryCache()
    try:
        yield store
    finally:
        await store.aclose()
        if request.param == "redis":
            await _delete_redis_keys(redis_prefix)


@pytest.fixture
async def redis_client() -> AsyncIterator[Any]:
    """A plain client on the test Redis, for looking at what the cache wrote."""
    from redis.asyncio import Redis

    assert TEST_REDIS_URL is not None
    client = Redis.from_url(TEST_REDIS_URL)
    yield client
    await client.aclose()


@pytest.fixture
async def unreachable() -> AsyncIterator[RedisCache]:
    store = RedisCache(UNREACHABLE_REDIS, f"test-{uuid.uuid4().hex}")
    yield store
    await store.aclose()


# -- get / set / TTL ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        {"symbol": "BTC-USD", "bids": [[1, 2.5]], "open": True, "note": None},
        ["a", 1, 2.5, False],
        "text",
        0,
        -3,
        1.25,
        True,
        False,
        [],
        {},
    ],
)
async def test_a_value_reads_back_as_it_was_set(cache: Cache, value: Any) -> None:
    await cache.set("quote:1", value, ttl=TTL)
    assert await cache.get("quote:1") == value


async def test_a_key_never_set_is_a_miss(cache: Cache) -> None:
    assert await cache.get("never-set") is None


async def test_an_entry_expires_after_its_ttl(cache: Cache) -> None:
    await cache.set("short", {"v": 1}, ttl=SHORT_TTL)
    await cache.set("long", {"v": 2}, ttl=TTL)
    assert await cache.get("short") == {"v": 1}
    await asyncio.sleep(SHORT_TTL + 0.15)
    assert await cache.get("short") is None
    assert await cache.get("long") == {"v": 2}


async def test_setting_a_key_again_replaces_its_value_and_ttl(cache: Cache) -> None:
    await cache.set("k", "first", ttl=SHORT_TTL)
    await cache.set("k", "second", ttl=TTL)
    await asyncio.sleep(SHORT_TTL + 0.15)
    assert await cache.get("k") == "second"


async def test_a_decimal_is_stored_as_its_exact_string(cache: Cache) -> None:
    await cache.set("price", {"price": Decimal("1.10"), "qty": Decimal("0.000000001")}, ttl=TTL)
    assert await cache.get("price") == {"price": "1.10", "qty": "1E-9"}


async def test_a_read_value_is_a_copy_the_caller_may_change(cache: Cache) -> None:
    await cache.set("list", [1, 2], ttl=TTL)
    first = await cache.get("list")
    first.append(3)
    assert await cache.get("list") == [1, 2]


@pytest.mark.parametrize("value", [object(), {1, 2}, {"nested": object()}, {1: "int key"}])
async def test_a_value_json_cannot_hold_is_a_type_error_and_stores_nothing(
    cache: Cache, value: Any
) -> None:
    with pytest.raises(TypeError):
        await cache.set("bad", value, ttl=TTL)
    assert await cache.get("bad") is None


@pytest.mark.parametrize("key", ["", "x" * 301, "has space", "tab\there", "new\nline"])
async def test_a_malformed_key_is_a_value_error(cache: Cache, key: str) -> None:
    with pytest.raises(ValueError, match="cache key"):
        await cache.set(key, 1, ttl=TTL)
    with pytest.raises(ValueError, match="cache key"):
        await cache.get(key)
    with pytest.raises(ValueError, match="cache key"):
        await cache.delete(key)


async def test_the_longest_key_is_accepted(cache: Cache) -> None:
    key = "k" * 300
    await cache.set(key, 1, ttl=TTL)
    assert await cache.get(key) == 1


@pytest.mark.parametrize("ttl", [0, -1, float("nan"), float("inf")])
async def test_a_ttl_that_is_not_a_positive_number_is_a_value_error(
    cache: Cache, ttl: float
) -> None:
    with pytest.raises(ValueError, match="TTL"):
        await cache.set("k", 1, ttl=ttl)


async def test_tags_must_be_a_collection_of_well_formed_tags(cache: Cache) -> None:
    with pytest.raises(TypeError, match="not one string"):
        await cache.set("k", 1, ttl=TTL, tags="instruments")
    with pytest.raises(ValueError, match="cache tag"):
        await cache.set("k", 1, ttl=TTL, tags=["bad tag"])
    assert await cache.get("k") is None


# -- invalidation ---------------------------------------------------------------------------


async def test_delete_removes_one_key(cache: Cache) -> None:
    await cache.set("a", 1, ttl=TTL)
    await cache.set("b", 2, ttl=TTL)
    await cache.delete("a")
    await cache.delete("never-set")  # not an error
    assert await cache.get("a") is None
    assert await cache.get("b") == 2


async def test_delete_prefix_removes_exactly_the_keys_starting_with_it(cache: Cache) -> None:
    for key in ("candles:BTC:1m", "candles:BTC:1h", "candles:ETH:1m", "candle", "tickers:BTC"):
        await cache.set(key, key, ttl=TTL)
    assert await cache.delete_prefix("candles:BTC:") == 2
    assert await cache.get("candles:BTC:1m") is None
    assert await cache.get("candles:BTC:1h") is None
    for key in ("candles:ETH:1m", "candle", "tickers:BTC"):
        assert await cache.get(key) == key
    assert await cache.delete_prefix("candles:BTC:") == 0


async def test_delete_prefix_removes_many_keys(cache: Cache) -> None:
    # More than one SCAN step / UNLINK batch on Redis.
    for index in range(1_200):
        await cache.set(f"bulk:{index}", index, ttl=TTL)
    await cache.set("other", 1, ttl=TTL)
    assert await cache.delete_prefix("bulk:") == 1_200
    assert await cache.get("bulk:7") is None
    assert await cache.get("other") == 1


@pytest.mark.parametrize("prefix", ["a*", "a?", "a[bc]", "a\\", "a^"])
async def test_a_prefix_with_glob_characters_matches_only_literally(
    cache: Cache, prefix: str
) -> None:
    literal = f"{prefix}x"
    await cache.set(literal, 1, ttl=TTL)
    for other in ("abx", "acx", "a", "ax", "a\\x", "a*"):
        if not other.startswith(prefix):
            await cache.set(other, 2, ttl=TTL)
    assert await cache.delete_prefix(prefix) == 1
    assert await cache.get(literal) is None
    for other in ("abx", "acx", "a", "ax"):
        if not other.startswith(prefix):
            assert await cache.get(other) == 2


async def test_invalidate_tag_removes_only_the_keys_set_with_it(cache: Cache) -> None:
    await cache.set("plans:list", [1], ttl=TTL, tags=["plans"])
    await cache.set("plans:pro", {"id": 2}, ttl=TTL, tags=["plans", "plan:pro"])
    await cache.set("strategies:list", [3], ttl=TTL, tags=["strategies"])
    await cache.set("untagged", 4, ttl=TTL)
    assert await cache.invalidate_tag("plans") == 2
    assert await cache.get("plans:list") is None
    assert await cache.get("plans:pro") is None
    assert await cache.get("strategies:list") == [3]
    assert await cache.get("untagged") == 4
    assert await cache.invalidate_tag("plans") == 0
    assert await cache.invalidate_tag("never-used") == 0


async def test_a_key_in_two_tags_goes_with_either(cache: Cache) -> None:
    await cache.set("both", 1, ttl=TTL, tags=["t1", "t2"])
    await cache.set("only-t2", 2, ttl=TTL, tags=["t2"])
    assert await cache.invalidate_tag("t1") == 1
    assert await cache.get("both") is None
    assert await cache.get("only-t2") == 2
    # "both" is gone already: invalidating its other tag removes only what is left.
    assert await cache.invalidate_tag("t2") == 1
    assert await cache.get("only-t2") is None


async def test_a_key_set_again_after_its_tag_was_invalidated_is_cached(cache: Cache) -> None:
    await cache.set("k", 1, ttl=TTL, tags=["t"])
    await cache.invalidate_tag("t")
    await cache.set("k", 2, ttl=TTL, tags=["t"])
    assert await cache.get("k") == 2
    assert await cache.invalidate_tag("t") == 1


async def test_expired_entries_are_not_counted_as_invalidated(cache: Cache) -> None:
    await cache.set("gone", 1, ttl=SHORT_TTL, tags=["t"])
    await cache.set("pre:gone", 1, ttl=SHORT_TTL)
    await asyncio.sleep(SHORT_TTL + 0.15)
    assert await cache.invalidate_tag("t") == 0
    assert await cache.delete_prefix("pre:") == 0


# -- memory: the LRU bound and the tag index ------------------------------------------------


async def test_memory_evicts_the_least_recently_used_entry() -> None:
    cache = MemoryCache(max_entries=3)
    for key in ("a", "b", "c"):
        await cache.set(key, key, ttl=TTL)
    assert await cache.get("a") == "a"  # "a" is now the most recently used; "b" the least
    await cache.set("d", "d", ttl=TTL)
    assert len(cache) == 3
    assert await cache.get("b") is None
    assert [await cache.get(key) for key in ("a", "c", "d")] == ["a", "c", "d"]
    await cache.set("c", "c2", ttl=TTL)  # a write is a use too: "a" is now the least recent
    await cache.set("e", "e", ttl=TTL)
    assert await cache.get("a") is None
    assert [await cache.get(key) for key in ("c", "d", "e")] == ["c2", "d", "e"]


async def test_memory_tag_index_forgets_evicted_entries() -> None:
    cache = MemoryCache(max_entries=2)
    await cache.set("a", 1, ttl=TTL, tags=["t", "only-a"])
    await cache.set("b", 2, ttl=TTL, tags=["t"])
    await cache.set("c", 3, ttl=TTL)  # evicts "a"
    assert cache._tags == {"t": {"b"}}
    assert await cache.invalidate_tag("t") == 1
    assert cache._tags == {}
    assert len(cache) == 1


async def test_memory_tag_index_forgets_expired_deleted_and_retagged_entries() -> None:
    cache = MemoryCache()
    await cache.set("expiring", 1, ttl=SHORT_TTL, tags=["t"])
    await cache.set("deleted", 2, ttl=TTL, tags=["t"])
    await cache.set("by-prefix", 3, ttl=TTL, tags=["t"])
    await cache.set("retagged", 4, ttl=TTL, tags=["t", "old"])
    await cache.set("retagged", 4, ttl=TTL, tags=["new"])
    await cache.delete("deleted")
    await cache.delete_prefix("by-")
    assert cache._tags == {"t": {"expiring"}, "new": {"retagged"}}
    await asyncio.sleep(SHORT_TTL + 0.15)
    assert await cache.get("expiring") is None
    assert cache._tags == {"new": {"retagged"}}
    assert len(cache) == 1


async def test_memory_max_entries_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_entries"):
        MemoryCache(max_entries=0)


# -- Redis: the layout ----------------------------------------------------------------------


@needs_redis
async def test_redis_layout_ttls_in_milliseconds_and_tag_set_expiry(
    redis_client: Any, redis_prefix: str
) -> None:
    assert TEST_REDIS_URL is not None
    cache = RedisCache(TEST_REDIS_URL, redis_prefix)
    try:
        await cache.set("short", 1, ttl=0.25, tags=["t"])
        await cache.set("long", 2, ttl=30, tags=["t"])
        await cache.set("later-short", 3, ttl=0.25, tags=["t"])
        assert await redis_client.get(f"{redis_prefix}:cache:short") == b"1"
        assert 0 < await redis_client.pttl(f"{redis_prefix}:cache:short") <= 250
        tag_set = f"{redis_prefix}:cache-tag:t"
        assert await redis_client.smembers(tag_set) == {
            f"{redis_prefix}:cache:{key}".encode() for key in ("short", "long", "later-short")
        }
        # At least the longest member's TTL; a shorter member set later does not shorten it.
        assert 29_000 < await redis_client.pttl(tag_set) <= 30_000
    finally:
        await cache.aclose()
        await _delete_redis_keys(redis_prefix)


@needs_redis
async def test_redis_caches_with_other_prefixes_are_separate(redis_prefix: str) -> None:
    assert TEST_REDIS_URL is not None
    mine = RedisCache(TEST_REDIS_URL, redis_prefix)
    theirs = RedisCache(TEST_REDIS_URL, f"{redis_prefix}-other")
    try:
        await mine.set("k", "mine", ttl=TTL, tags=["t"])
        await theirs.set("k", "theirs", ttl=TTL, tags=["t"])
        assert await theirs.invalidate_tag("t") == 1
        assert await theirs.delete_prefix("k") == 0
        assert await mine.get("k") == "mine"
    finally:
        await mine.aclose()
        await theirs.aclose()
        await _delete_redis_keys(redis_prefix)
        await _delete_redis_keys(f"{redis_prefix}-other")


# -- cached() -------------------------------------------------------------------------------


class Source:
    """A slow read: counts how often it is asked."""

    def __init__(self, value: Any = None, delay: float = 0.05) -> None:
        self.value = {"items": [1, 2], "price": Decimal("2.50")} if value is None else value
        self.delay = delay
        self.calls = 0

    async def __call__(self) -> Any:
        self.calls += 1
        await asyncio.sleep(self.delay)
        return self.value


async def test_cached_computes_once_for_concurrent_callers_then_reads_the_cache(
    cache: Cache,
) -> None:
    source = Source()
    results = await asyncio.gather(*(cached(cache, "report", source, ttl=TTL) for _ in range(20)))
    assert source.calls == 1
    # Every caller sees the value as the cache holds it, each its own copy.
    assert all(result == {"items": [1, 2], "price": "2.50"} for result in results)
    assert len({id(result) for result in results}) == len(results)
    assert await cached(cache, "report", source, ttl=TTL) == {"items": [1, 2], "price": "2.50"}
    assert source.calls == 1
    assert cache_module._in_flight == {}


async def test_cached_computes_again_after_invalidation_or_expiry(cache: Cache) -> None:
    source = Source(value=[1])
    await cached(cache, "k", source, ttl=SHORT_TTL, tags=["t"])
    await cached(cache, "k", source, ttl=SHORT_TTL, tags=["t"])
    assert source.calls == 1
    await cache.invalidate_tag("t")
    await cached(cache, "k", source, ttl=SHORT_TTL, tags=["t"])
    assert source.calls == 2
    await asyncio.sleep(SHORT_TTL + 0.15)
    await cached(cache, "k", source, ttl=SHORT_TTL, tags=["t"])
    assert source.calls == 3


async def test_cached_keys_are_computed_separately(cache: Cache) -> None:
    first, second = Source(value="one"), Source(value="two")
    results = await asyncio.gather(
        cached(cache, "a", first, ttl=TTL), cached(cache, "b", second, ttl=TTL)
    )
    assert list(results) == ["one", "two"]
    assert (first.calls, second.calls) == (1, 1)


async def test_cached_shares_a_failure_with_the_waiting_callers_and_caches_nothing(
    cache: Cache,
) -> None:
    calls = 0

    async def failing() -> Any:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.05)
        raise RuntimeError("source down")

    results = await asyncio.gather(
        *(cached(cache, "k", failing, ttl=TTL) for _ in range(5)), return_exceptions=True
    )
    assert calls == 1
    assert all(isinstance(result, RuntimeError) for result in results)
    assert await cache.get("k") is None
    assert cache_module._in_flight == {}
    assert await cached(cache, "k", Source(value=7), ttl=TTL) == 7


async def test_cached_a_waiting_caller_computes_when_the_computing_one_is_cancelled(
    cache: Cache,
) -> None:
    source = Source(value="v", delay=0.2)
    leader = asyncio.create_task(cached(cache, "k", source, ttl=TTL))
    await asyncio.sleep(0.02)
    follower = asyncio.create_task(cached(cache, "k", source, ttl=TTL))
    await asyncio.sleep(0.02)
    leader.cancel()
    assert await follower == "v"
    assert leader.cancelled()
    assert source.calls == 2
    assert cache_module._in_flight == {}


async def test_cached_a_cancelled_waiting_caller_leaves_the_computation_running(
    cache: Cache,
) -> None:
    source = Source(value="v", delay=0.1)
    leader = asyncio.create_task(cached(cache, "k", source, ttl=TTL))
    await asyncio.sleep(0.02)
    follower = asyncio.create_task(cached(cache, "k", source, ttl=TTL))
    await asyncio.sleep(0.02)
    follower.cancel()
    assert await leader == "v"
    assert follower.cancelled()
    assert source.calls == 1


async def test_cached_none_is_returned_but_not_cached(cache: Cache) -> None:
    calls = 0

    async def nothing() -> None:
        nonlocal calls
        calls += 1

    assert await cached(cache, "k", nothing, ttl=TTL) is None
    assert await cached(cache, "k", nothing, ttl=TTL) is None
    assert calls == 2


async def test_cached_checks_its_arguments_before_computing(cache: Cache) -> None:
    source = Source()
    with pytest.raises(ValueError, match="cache key"):
        await cached(cache, "bad key", source, ttl=TTL)
    with pytest.raises(ValueError, match="TTL"):
        await cached(cache, "k", source, ttl=0)
    with pytest.raises(ValueError, match="cache tag"):
        await cached(cache, "k", source, ttl=TTL, tags=["bad tag"])
    assert source.calls == 0


async def test_cached_reads_tags_from_a_one_shot_iterator(cache: Cache) -> None:
    await cached(cache, "k", Source(value=1), ttl=TTL, tags=iter(["t1", "t2"]))
    assert await cache.invalidate_tag("t2") == 1


# -- Redis unreachable or stalled -----------------------------------------------------------


async def test_unreachable_redis_reads_as_an_empty_cache(
    unreachable: RedisCache, captured_logs: CapturedLogs
) -> None:
    assert await unreachable.get("k") is None
    await unreachable.set("k", {"v": 1}, ttl=TTL, tags=["t"])
    await unreachable.delete("k")
    assert await unreachable.delete_prefix("k") == 0
    assert await unreachable.invalidate_tag("t") == 0
    events = captured_logs.events("cache_unavailable")
    assert [event["operation"] for event in events] == [
        "get",
        "set",
        "delete",
        "delete_prefix",
        "invalidate_tag",
    ]
    assert all(event["level"] == "warning" for event in events)
    assert "s3cret-password" not in captured_logs.text


async def test_unreachable_redis_still_refuses_programming_errors(
    unreachable: RedisCache,
) -> None:
    with pytest.raises(TypeError):
        await unreachable.set("k", object(), ttl=TTL)
    with pytest.raises(ValueError, match="cache key"):
        await unreachable.get("bad key")


async def test_cached_computes_when_redis_is_unreachable(unreachable: RedisCache) -> None:
    source = Source(value={"price": Decimal("3.0")})
    results = await asyncio.gather(*(cached(unreachable, "k", source, ttl=TTL) for _ in range(5)))
    assert results == [{"price": "3.0"}] * 5
    assert source.calls == 1  # concurrent callers still share one computation
    assert await cached(unreachable, "k", source, ttl=TTL) == {"price": "3.0"}
    assert source.calls == 2


async def test_a_stalled_redis_costs_a_miss_not_a_hung_request(
    captured_logs: CapturedLogs,
) -> None:
    """A server that accepts connections and never answers: each call gives up at the timeout."""

    async def never_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.read()  # until the client hangs up
        finally:
            writer.close()

    server = await asyncio.start_server(never_answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    store = RedisCache(f"redis://127.0.0.1:{port}/0", "test-stalled", timeout=0.2)
    try:
        started = time.monotonic()
        assert await store.get("k") is None
        await store.set("k", 1, ttl=TTL)
        assert await cached(store, "k", Source(value=5, delay=0), ttl=TTL) == 5
        elapsed = time.monotonic() - started
    finally:
        await store.aclose()
        server.close()
        await server.wait_closed()
    # Four Redis calls of at most one 0.2 s timeout each: no retries, no backoff.
    assert elapsed < 2.0
    assert len(captured_logs.events("cache_unavailable")) == 4


def _read_endpoint_app(store: Cache) -> tuple[FastAPI, Source]:
    source = Source(value={"items": [{"symbol": "BTC-USD", "last": Decimal("65000.10")}]})
    app = FastAPI()
    app.state.cache = store

    @app.get("/api/v1/tickers")
    async def tickers(cache: CacheDep) -> Any:
        return await cached(cache, "tickers:list", source, ttl=TTL, tags=["tickers"])

    return app, source


async def test_a_read_endpoint_answers_200_when_redis_is_unreachable(
    unreachable: RedisCache,
) -> None:
    app, source = _read_endpoint_app(unreachable)
    async with serve_app(app) as client:
        for _ in range(2):
            response = await client.get("/api/v1/tickers")
            assert response.status_code == 200
            assert response.json() == {"items": [{"symbol": "BTC-USD", "last": "65000.10"}]}
    assert source.calls == 2  # nothing could be cached


async def test_a_read_endpoint_is_served_from_the_cache(cache: Cache) -> None:
    app, source = _read_endpoint_app(cache)
    async with serve_app(app) as client:
        responses = await asyncio.gather(*(client.get("/api/v1/tickers") for _ in range(5)))
        responses.append(await client.get("/api/v1/tickers"))
    assert [response.status_code for response in responses] == [200] * 6
    assert {response.text for response in responses} == {
        '{"items":[{"symbol":"BTC-USD","last":"65000.10"}]}'
    }
    assert source.calls == 1


# -- wiring ---------------------------------------------------------------------------------


async def test_make_cache_picks_memory_without_redis(
    settings_factory: Callable[..., Settings],
) -> None:
    store = make_cache(settings_factory(redis_url=None), max_entries=5)
    assert isinstance(store, MemoryCache)
    assert (store.backend, store.max_entries) == ("memory", 5)
    await store.aclose()


async def test_make_cache_picks_redis_when_configured(
    settings_factory: Callable[..., Settings],
) -> None:
    settings = settings_factory(redis_url=UNREACHABLE_REDIS, redis_key_prefix="tradeos-x")
    store = make_cache(settings)
    try:
        assert isinstance(store, RedisCache)
        assert store.backend == "redis"
        assert store._entry_prefix == "tradeos-x:cache:"
        assert await store.get("k") is None  # made without connecting; unreachable is a miss
    finally:
        await store.aclose()


async def test_get_cache_reads_the_app_state() -> None:
    store = MemoryCache()
    app = FastAPI()
    app.state.cache = store

    @app.get("/backend")
    async def backend(cache: CacheDep) -> dict[str, Any]:
        await cache.set("seen", True, ttl=TTL)
        return {"backend": cache.backend}

    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        response = await client.get("/backend")
    assert response.json() == {"backend": "memory"}
    assert await store.get("seen") is True


async def test_a_value_overtaken_by_an_invalidation_is_neither_stored_nor_shared(
    cache: Cache,
) -> None:
    """A reader starts computing from old data; the data changes and is invalidated; a reader
    who comes after the invalidation must see the new data, and the old value must not be
    stored."""
    data = {"price": "old"}
    started = asyncio.Event()
    release = asyncio.Event()

    async def slow_read() -> dict[str, str]:
        snapshot = dict(data)
        started.set()
        await release.wait()
        return snapshot

    async def fresh_read() -> dict[str, str]:
        return dict(data)

    first = asyncio.create_task(cached(cache, "quote", slow_read, ttl=30))
    await started.wait()
    data["price"] = "new"
    await cache.delete("quote")
    after = await cached(cache, "quote", fresh_read, ttl=30)
    release.set()
    assert (await first) == {"price": "old"}  # its own caller gets what it computed
    assert after == {"price": "new"}
    assert await cache.get("quote") == {"price": "new"}
