"""The cache port: get/set with a TTL, invalidation by key, prefix and tag.

Two adapters, picked by the settings (`make_cache`): a bounded in-process LRU by default, Redis
when REDIS_URL is set, so every API process sees the same entries and the same invalidations.

Values are stored as JSON (orjson), in both adapters, so a value reads back the same whichever
backend holds it: dict/list/str/int/float/bool/None, plus `Decimal` (stored as its string,
"1.10" stays "1.10" — the API's convention for money) and whatever else orjson writes natively
(datetime, UUID, … as strings; tuples as lists). A value JSON cannot hold raises `TypeError`:
that is a programming error, never a miss. `None` is indistinguishable from a miss, so a cached
`None` reads back as "not cached".

The cache is an optimisation, never a dependency: when Redis is unreachable or stalled (each
call gives up after REQUEST_TIMEOUT_SECONDS), `RedisCache` logs `cache_unavailable` once for the
call and behaves as an empty cache — `get` misses, writes and invalidations do nothing, counts
are 0 — so a read endpoint still answers from its source.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Annotated, Any, Protocol, TypeVar, cast

import orjson
import structlog
from fastapi import Depends, Request

from tradeos.config import Settings
from tradeos.core.redis import REDIS_ERRORS, REQUEST_TIMEOUT_SECONDS, request_pool

if TYPE_CHECKING:
    from redis.asyncio import Redis

T = TypeVar("T")

MAX_KEY_LENGTH = 300
DEFAULT_MAX_ENTRIES = 10_000
# Redis calls sit on the request path: a stalled Redis must cost a request a miss, not hang it.
# Keys per SCAN step / per UNLINK call when invalidating many keys at once.
_BATCH_SIZE = 500
_GLOB_SPECIALS = frozenset("\\*?[]")

logger = structlog.get_logger("tradeos.cache")


class Cache(Protocol):
    backend: str  # "memory" | "redis"
    # Counts this process's invalidations (delete, delete_prefix, invalidate_tag): `cached()`
    # does not store, nor share, a value computed from data an invalidation has since replaced.
    generation: int

    async def get(self, key: str) -> Any | None: ...

    async def set(self, key: str, value: Any, *, ttl: float, tags: Iterable[str] = ()) -> None: ...

    # The stored form (JSON bytes, as `dumps` writes it) as it is: what a response body can be
    # sent from unchanged.
    async def get_json(self, key: str) -> bytes | None: ...

    async def set_json(
        self, key: str, payload: bytes, *, ttl: float, tags: Iterable[str] = ()
    ) -> None: ...

    async def delete(self, key: str) -> None: ...

    async def delete_prefix(self, prefix: str) -> int: ...

    async def invalidate_tag(self, tag: str) -> int: ...

    async def aclose(self) -> None: ...


# -- values, keys, TTLs ---------------------------------------------------------------------


def _json_default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)  # exact: money stays a string, as everywhere in the API
    raise TypeError(f"cannot cache a value of type {type(value).__name__}")


def dumps(value: Any) -> bytes:
    """The stored form of a value; `TypeError` when JSON cannot hold it."""
    return orjson.dumps(value, default=_json_default)  # JSONEncodeError is a TypeError


def _check_name(name: str, what: str) -> str:
    if not isinstance(name, str) or not 0 < len(name) <= MAX_KEY_LENGTH:
        raise ValueError(f"a cache {what} is 1 to {MAX_KEY_LENGTH} characters")
    if any(char.isspace() for char in name):
        raise ValueError(f"a cache {what} has no whitespace: {name!r}")
    return name


def _check_tags(tags: Iterable[str]) -> frozenset[str]:
    if isinstance(tags, str):  # one tag passed bare would become a tag per character
        raise TypeError("tags is an iterable of tags, not one string")
    return frozenset(_check_name(tag, "tag") for tag in tags)


def _check_ttl(ttl: float) -> float:
    if not (isinstance(ttl, int | float) and math.isfinite(ttl) and ttl > 0):
        raise ValueError(f"a cache TTL is a positive number of seconds, not {ttl!r}")
    return float(ttl)


# -- in process -----------------------------------------------------------------------------


@dataclass(slots=True)
class _Entry:
    payload: bytes
    expires_at: float  # time.monotonic()
    tags: frozenset[str]


class MemoryCache:
    """A bounded LRU in this process: at most `max_entries` entries, each with its own TTL.

    Reading an entry makes it the most recently used; a write past the bound evicts the least
    recently used. Expired entries are dropped when touched, matched by an invalidation, or
    evicted. The tag index only ever names keys present in the LRU: every removal path goes
    through `_remove`. All methods finish without awaiting, so concurrent requests on one
    event loop never see half an update.
    """

    backend = "memory"
    generation = 0

    def __init__(self, max_entries: int = DEFAULT_MAX_ENTRIES) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self.max_entries = max_entries
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._tags: dict[str, set[str]] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def _remove(self, key: str) -> _Entry | None:
        entry = self._entries.pop(key, None)
        if entry is not None:
            for tag in entry.tags:
                members = self._tags.get(tag)
                if members is not None:
                    members.discard(key)
                    if not members:
                        del self._tags[tag]
        return entry

    async def get(self, key: str) -> Any | None:
        payload = await self.get_json(key)
        return None if payload is None else orjson.loads(payload)

    async def get_json(self, key: str) -> bytes | None:
        _check_name(key, "key")
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry.expires_at <= time.monotonic():
            self._remove(key)
            return None
        self._entries.move_to_end(key)
        return entry.payload

    async def set(self, key: str, value: Any, *, ttl: float, tags: Iterable[str] = ()) -> None:
        _check_name(key, "key")
        await self.set_json(key, dumps(value), ttl=ttl, tags=tags)

    async def set_json(
        self, key: str, payload: bytes, *, ttl: float, tags: Iterable[str] = ()
    ) -> None:
        _check_name(key, "key")
        ttl = _check_ttl(ttl)
        tag_set = _check_tags(tags)
        self._remove(key)  # its old tags go with it
        self._entries[key] = _Entry(payload, time.monotonic() + ttl, tag_set)
        for tag in tag_set:
            self._tags.setdefault(tag, set()).add(key)
        while len(self._entries) > self.max_entries:
            self._remove(next(iter(self._entries)))  # the least recently used

    async def delete(self, key: str) -> None:
        _check_name(key, "key")
        self.generation += 1
        self._remove(key)

    def _remove_all(self, keys: Iterable[str]) -> int:
        """Remove `keys`, counting those that had not expired yet."""
        now = time.monotonic()
        removed = 0
        for key in list(keys):
            entry = self._remove(key)
            if entry is not None and entry.expires_at > now:
                removed += 1
        return removed

    async def delete_prefix(self, prefix: str) -> int:
        _check_name(prefix, "prefix")
        self.generation += 1
        return self._remove_all(key for key in self._entries if key.startswith(prefix))

    async def invalidate_tag(self, tag: str) -> int:
        _check_name(tag, "tag")
        self.generation += 1
        return self._remove_all(self._tags.get(tag, ()))

    async def aclose(self) -> None:
        self._entries.clear()
        self._tags.clear()


# -- Redis ----------------------------------------------------------------------------------


def _glob_escape(text: str) -> str:
    """`text` as a literal inside a Redis MATCH pattern."""
    return "".join(f"\\{char}" if char in _GLOB_SPECIALS else char for char in text)


class RedisCache:
    """Entries in Redis, shared by every process using the same URL and key prefix.

    Layout: each entry is a string `{prefix}:cache:{key}` holding the JSON value, with a TTL in
    milliseconds (PX); each tag is a set `{prefix}:cache-tag:{tag}` of the entries' Redis keys,
    expiring no sooner than its longest-lived member. An entry is written together with its
    tag memberships (MULTI), and a tag's members are read and the set deleted together, so an
    entry written during an invalidation is either invalidated or listed in a fresh tag set,
    never lost from it. A tag set may still name an entry that expired or was overwritten
    without that tag: invalidating it then deletes one entry too many, which costs a miss.
    """

    backend = "redis"
    generation = 0

    def __init__(
        self, url: str, key_prefix: str, *, timeout: float = REQUEST_TIMEOUT_SECONDS
    ) -> None:
        from redis.asyncio import Redis

        self._entry_prefix = f"{key_prefix}:cache:"
        self._tag_prefix = f"{key_prefix}:cache-tag:"
        self._pool = request_pool(url, client_name=f"{key_prefix}:cache", timeout=timeout)
        self._redis: Redis = Redis(connection_pool=self._pool)

    def _unavailable(self, operation: str, error: BaseException) -> None:
        # The error's text names host and port at most, never the URL's password.
        logger.warning(
            "cache_unavailable", operation=operation, error=type(error).__name__, detail=str(error)
        )

    async def get(self, key: str) -> Any | None:
        payload = await self.get_json(key)
        if payload is None:
            return None
        try:
            return orjson.loads(payload)
        except orjson.JSONDecodeError:  # not written by this code: treat as absent
            logger.warning("cache_corrupt_entry", key=key)
            return None

    async def get_json(self, key: str) -> bytes | None:
        name = self._entry_prefix + _check_name(key, "key")
        try:
            payload = await self._redis.get(name)
        except REDIS_ERRORS as error:
            self._unavailable("get", error)
            return None
        return payload.encode() if isinstance(payload, str) else payload

    async def set(self, key: str, value: Any, *, ttl: float, tags: Iterable[str] = ()) -> None:
        _check_name(key, "key")
        # Encoded before any I/O: a bad value raises even with Redis down.
        await self.set_json(key, dumps(value), ttl=ttl, tags=tags)

    async def set_json(
        self, key: str, payload: bytes, *, ttl: float, tags: Iterable[str] = ()
    ) -> None:
        name = self._entry_prefix + _check_name(key, "key")
        milliseconds = max(1, math.ceil(_check_ttl(ttl) * 1000))
        tag_set = _check_tags(tags)
        try:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.set(name, payload, px=milliseconds)
                for tag in tag_set:
                    tag_name = self._tag_prefix + tag
                    pipe.sadd(tag_name, name)
                    # A new set has no TTL (which GT treats as infinite): NX gives it one,
                    # GT then extends it to this member's TTL when that is longer.
                    pipe.pexpire(tag_name, milliseconds, nx=True)
                    pipe.pexpire(tag_name, milliseconds, gt=True)
                await pipe.execute()
        except REDIS_ERRORS as error:
            self._unavailable("set", error)

    async def delete(self, key: str) -> None:
        name = self._entry_prefix + _check_name(key, "key")
        self.generation += 1
        try:
            await self._redis.unlink(name)
        except REDIS_ERRORS as error:
            self._unavailable("delete", error)

    async def _unlink(self, names: list[bytes]) -> int:
        return int(await self._redis.unlink(*names)) if names else 0

    async def delete_prefix(self, prefix: str) -> int:
        pattern = _glob_escape(self._entry_prefix + _check_name(prefix, "prefix")) + "*"
        self.generation += 1
        removed = 0
        batch: list[bytes] = []
        try:
            async for name in self._redis.scan_iter(match=pattern, count=_BATCH_SIZE):
                batch.append(name)
                if len(batch) >= _BATCH_SIZE:
                    removed += await self._unlink(batch)
                    batch = []
            return removed + await self._unlink(batch)
        except REDIS_ERRORS as error:
            self._unavailable("delete_prefix", error)
            return 0

    async def invalidate_tag(self, tag: str) -> int:
        tag_name = self._tag_prefix + _check_name(tag, "tag")
        self.generation += 1
        try:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.smembers(tag_name)
                pipe.unlink(tag_name)
                members, _ = await pipe.execute()
            names = list(cast(set[bytes], members))
            removed = 0
            for start in range(0, len(names), _BATCH_SIZE):
                removed += await self._unlink(names[start : start + _BATCH_SIZE])
            return removed
        except REDIS_ERRORS as error:
            self._unavailable("invalidate_tag", error)
            return 0

    async def aclose(self) -> None:
        await self._redis.aclose()
        await self._pool.aclose()


def make_cache(settings: Settings, *, max_entries: int = DEFAULT_MAX_ENTRIES) -> Cache:
    """Redis when REDIS_URL is set, else an in-process LRU of `max_entries` entries."""
    if settings.redis_url:
        return RedisCache(settings.redis_url, settings.redis_key_prefix)
    return MemoryCache(max_entries)


# -- read endpoints ------------------------------------------------------------------------

# (id(cache), key) -> the stored form of the value being computed. An entry lives only while
# its computation runs, so the map never outgrows the requests in flight.
_in_flight: dict[tuple[int, str, int], asyncio.Future[bytes]] = {}


async def cached(
    cache: Cache,
    key: str,
    compute: Callable[[], Awaitable[T]],
    *,
    ttl: float,
    tags: Iterable[str] = (),
) -> T:
    """The cached value of `key`, or `compute()`'s, stored for `ttl` seconds with `tags`.

    Every caller gets the value as it reads back from the cache (JSON: a Decimal comes back as
    a string), hit or miss, each its own copy. A `None` result is not cached (it reads as a
    miss). See `cached_json` for how concurrent misses and invalidations are handled.
    """
    payload = await cached_json(cache, key, compute, ttl=ttl, tags=tags)
    return cast(T, orjson.loads(payload))


async def cached_json(
    cache: Cache,
    key: str,
    compute: Callable[[], Awaitable[Any]],
    *,
    ttl: float,
    tags: Iterable[str] = (),
) -> bytes:
    """`cached`, answering the stored form itself (JSON bytes), hit or miss: a read endpoint
    sends it as the response body without decoding and encoding it again.

    Concurrent misses for one key in this process share one computation: the first caller
    computes, the others wait for its result (or its exception). They do not wait on the
    cache, so with Redis down they still compute once, not once each in turn.

    A value whose computation an invalidation overtook (in this process) is returned to the
    callers already waiting for it, but neither stored nor handed to callers who came after the
    invalidation: they compute afresh. Another process's invalidation is not seen that way, so
    across processes such a value can stay until its TTL: choose TTLs with that in mind.
    """
    _check_name(key, "key")
    _check_ttl(ttl)
    tag_set = _check_tags(tags)  # checked before computing; an iterator is read once
    hit = await cache.get_json(key)
    if hit is not None:  # only `set_json` writes entries, and it is given `dumps` output
        return hit
    generation = cache.generation
    slot = (id(cache), key, generation)
    while (pending := _in_flight.get(slot)) is not None:
        try:
            return await asyncio.shield(pending)
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if pending.cancelled() and (task is None or not task.cancelling()):
                continue  # the computing caller was cancelled, not us: compute ourselves
            raise
    future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
    _in_flight[slot] = future
    try:
        value = await compute()
        payload = dumps(value)
        if value is not None and cache.generation == generation:
            await cache.set_json(key, payload, ttl=ttl, tags=tag_set)
    except asyncio.CancelledError:
        future.cancel()
        raise
    except BaseException as error:
        future.set_exception(error)
        future.exception()  # retrieved: no "never retrieved" warning when nobody waited
        raise
    else:
        future.set_result(payload)
        return payload
    finally:
        del _in_flight[slot]


async def get_cache(request: Request) -> Cache:
    """The process's cache, made at startup (`app.state.cache`). `async`, though it awaits
    nothing: FastAPI runs a plain `def` dependency in a worker thread, a hop that cost a small
    request 0.2-1.5 ms (more under load)."""
    return cast(Cache, request.app.state.cache)


CacheDep = Annotated[Cache, Depends(get_cache)]
