"""The event bus: in-process always; Redis pub/sub too when TEST_REDIS_URL is set (e.g.
redis://127.0.0.1:6379/15). Each test gets its own key prefix, so its channels are its own."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable, Iterable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any
from urllib.parse import urlsplit

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from tests.conftest import TEST_REDIS_URL
from tradeos.config import Settings
from tradeos.core.errors import ServiceUnavailable, TradeOSError
from tradeos.core.events import (
    Event,
    EventBus,
    EventsUnavailable,
    MemoryEventBus,
    RedisEventBus,
    Subscription,
    SubscriptionClosed,
    SubscriptionOverflow,
    flush_after_commit,
    make_event_bus,
    publish_after_commit,
)
from tradeos.core.redis import make_redis

NO_REDIS = "TEST_REDIS_URL is not set: the Redis event bus needs a real Redis to run against"
needs_redis = pytest.mark.skipif(TEST_REDIS_URL is None, reason=NO_REDIS)
WAIT = 2.0  # seconds an expected event may take
QUIET = 0.2  # seconds of silence that show an event is not coming


def _prefix() -> str:
    return f"test-{uuid.uuid4().hex}"


BACKENDS = ["memory", pytest.param("redis", marks=needs_redis)]
# For tests taking `make_bus` that only make sense on Redis.
redis_only = pytest.mark.parametrize(
    "make_bus", [pytest.param("redis", marks=needs_redis)], indirect=True
)


@pytest.fixture(params=BACKENDS)
async def make_bus(request: pytest.FixtureRequest) -> AsyncIterator[Callable[..., Any]]:
    """Builds buses of the test's backend, closing them all afterwards; buses made with the
    same `prefix` share their topics (two "processes")."""
    backend = request.param
    default_prefix = _prefix()
    buses: list[EventBus] = []

    def make(*, prefix: str | None = None, max_queue: int = 1000) -> Any:
        bus: EventBus
        if backend == "redis":
            assert TEST_REDIS_URL is not None
            bus = RedisEventBus(
                TEST_REDIS_URL, prefix=prefix or default_prefix, max_queue=max_queue
            )
        else:
            bus = MemoryEventBus(max_queue=max_queue)
        buses.append(bus)
        return bus

    yield make
    for bus in buses:
        await bus.aclose()


@pytest.fixture
def bus(make_bus: Callable[..., Any]) -> Any:
    return make_bus()


async def _next(subscription: Subscription) -> Event:
    event = await subscription.get(timeout=WAIT)
    assert event is not None, "expected an event, none arrived"
    return event


async def test_publish_reaches_a_subscriber(bus: Any) -> None:
    async with bus.subscribe("tickers:BTC-USD") as subscription:
        await bus.publish("tickers:BTC-USD", {"price": "64000.5", "ts": 1})
        assert await _next(subscription) == Event("tickers:BTC-USD", {"price": "64000.5", "ts": 1})


async def test_one_subscription_gets_several_topics_in_order(bus: Any) -> None:
    async with bus.subscribe("tickers:BTC-USD", "tickers:ETH-USD") as subscription:
        await bus.publish("tickers:BTC-USD", {"n": 1})
        await bus.publish("tickers:ETH-USD", {"n": 2})
        await bus.publish("tickers:BTC-USD", {"n": 3})
        received = [await _next(subscription) for _ in range(3)]
    assert [(event.topic, event.payload["n"]) for event in received] == [
        ("tickers:BTC-USD", 1),
        ("tickers:ETH-USD", 2),
        ("tickers:BTC-USD", 3),
    ]


async def test_async_iteration(bus: Any) -> None:
    async with bus.subscribe("user:42:notifications") as subscription:
        for n in range(3):
            await bus.publish("user:42:notifications", {"n": n})
        received = []
        async with asyncio.timeout(WAIT):
            async for event in subscription:
                received.append(event.payload["n"])
                if len(received) == 3:
                    break
    assert received == [0, 1, 2]


async def test_concurrent_subscribers_of_a_new_channel_are_both_live_on_entry(bus: Any) -> None:
    first, second = bus.subscribe("tickers:NEW-USD"), bus.subscribe("tickers:NEW-USD", "other")
    await asyncio.gather(first.__aenter__(), second.__aenter__())
    try:
        await bus.publish("tickers:NEW-USD", {"n": 1})
        assert (await _next(first)).payload == {"n": 1}
        assert (await _next(second)).payload == {"n": 1}
    finally:
        await first.aclose()
        await second.aclose()
    assert bus.subscription_count == 0


async def test_a_subscriber_only_gets_its_topics(bus: Any) -> None:
    async with bus.subscribe("user:1:notifications") as mine:
        await bus.publish("user:2:notifications", {"for": 2})
        await bus.publish("user:1", {"for": "prefix only"})
        await bus.publish("user:1:notifications", {"for": 1})
        assert (await _next(mine)).payload == {"for": 1}
        assert await mine.get(timeout=QUIET) is None


async def test_every_subscriber_gets_its_own_copy(bus: Any) -> None:
    async with (
        bus.subscribe("tickers:BTC-USD") as first,
        bus.subscribe("tickers:BTC-USD") as second,
    ):
        sent = {"price": "1", "nested": {"bid": "0.9"}}
        await bus.publish("tickers:BTC-USD", sent)
        one = await _next(first)
        one.payload["price"] = "mutated"
        one.payload["nested"]["bid"] = "mutated"
        two = await _next(second)
    assert two.payload == {"price": "1", "nested": {"bid": "0.9"}}
    assert sent == {"price": "1", "nested": {"bid": "0.9"}}  # the publisher's dict untouched


async def test_payload_arrives_as_plain_json(bus: Any) -> None:
    async with bus.subscribe("t") as subscription:
        await bus.publish("t", {"at": datetime(2026, 11, 2, 12, 0, tzinfo=UTC), "ok": True})
        assert (await _next(subscription)).payload == {
            "at": "2026-11-02T12:00:00+00:00",
            "ok": True,
        }


async def test_leaving_the_context_unsubscribes(bus: Any) -> None:
    async with bus.subscribe("a", "b") as subscription:
        assert bus.subscription_count == 1
    assert bus.subscription_count == 0
    assert subscription.closed
    if isinstance(bus, MemoryEventBus):
        assert bus._by_topic == {}
    await bus.publish("a", {"n": 1})  # nobody listening: no error
    with pytest.raises(SubscriptionClosed):
        await subscription.get(timeout=QUIET)
    async with asyncio.timeout(WAIT):
        assert [event async for event in subscription] == []


async def test_a_subscription_is_only_entered_once(bus: Any) -> None:
    subscription = bus.subscribe("a")
    with pytest.raises(RuntimeError, match="enter the subscription"):
        await subscription.get(timeout=QUIET)
    async with subscription:
        pass
    with pytest.raises(RuntimeError, match="only once"):
        await subscription.__aenter__()
    assert bus.subscription_count == 0


async def test_get_returns_none_on_timeout(bus: Any) -> None:
    async with bus.subscribe("quiet") as subscription:
        started = asyncio.get_running_loop().time()
        assert await subscription.get(timeout=0.05) is None
        assert asyncio.get_running_loop().time() - started < WAIT


async def test_closing_the_bus_ends_iteration(make_bus: Callable[..., Any]) -> None:
    bus = make_bus()
    async with bus.subscribe("a") as subscription:
        reader = asyncio.create_task(anext(subscription, None))
        await asyncio.sleep(0.05)
        await bus.aclose()
        async with asyncio.timeout(WAIT):
            assert await reader is None
    assert bus.subscription_count == 0
    with pytest.raises(EventsUnavailable):
        await bus.publish("a", {})


async def test_overflow_disconnects_only_the_slow_subscriber(make_bus: Callable[..., Any]) -> None:
    bus = make_bus(max_queue=3)
    async with bus.subscribe("t") as slow, bus.subscribe("t") as fast:
        for n in range(5):
            await bus.publish("t", {"n": n})
            assert (await _next(fast)).payload == {"n": n}
        async with asyncio.timeout(WAIT):
            # The Redis reader delivers in its own task: poll, bounded by the timeout.
            while not slow.closed:  # noqa: ASYNC110
                await asyncio.sleep(0.01)
        assert slow.overflowed
        assert bus.subscription_count == 1  # the slow one left the registry at once
        with pytest.raises(SubscriptionOverflow):
            await slow.get(timeout=QUIET)
        with pytest.raises(SubscriptionOverflow):
            await anext(slow)
        # The others carry on.
        await bus.publish("t", {"n": "after"})
        assert (await _next(fast)).payload == {"n": "after"}
    assert bus.subscription_count == 0


@pytest.mark.parametrize(
    "topic", ["", "x" * 201, "has space", "tab\there", "line\nbreak", "nul\x00", 42]
)
async def test_invalid_topics_are_refused(bus: Any, topic: Any) -> None:
    with pytest.raises(ValueError, match="topic"):
        await bus.publish(topic, {})
    with pytest.raises(ValueError, match="topic"):
        bus.subscribe("ok", topic)


async def test_topic_limits(bus: Any) -> None:
    longest = "x" * 200
    async with bus.subscribe(longest) as subscription:
        await bus.publish(longest, {})
        assert (await _next(subscription)).topic == longest
    with pytest.raises(ValueError, match="at least one topic"):
        bus.subscribe()


@pytest.mark.parametrize(
    "payload",
    [{"price": Decimal("1.5")}, {"x": object()}, {1: "non-string key"}, ["not", "a", "mapping"]],
)
async def test_payloads_that_are_not_json_are_refused(bus: Any, payload: Any) -> None:
    async with bus.subscribe("t") as subscription:
        with pytest.raises(ValueError, match="payload"):
            await bus.publish("t", payload)
        assert await subscription.get(timeout=QUIET) is None


async def test_bus_satisfies_the_port(bus: Any) -> None:
    assert isinstance(bus, EventBus)
    assert bus.backend in ("memory", "redis")


# -- publish after commit ---------------------------------------------------------------------


async def test_publish_after_commit_sends_on_commit_only(bus: Any, session: AsyncSession) -> None:
    async with bus.subscribe("orders:1") as subscription:
        await session.execute(text("SELECT 1"))
        publish_after_commit(session, bus, "orders:1", {"status": "filled"})
        publish_after_commit(session, bus, "orders:1", {"status": "settled"})
        await flush_after_commit()
        assert await subscription.get(timeout=QUIET) is None  # not before the commit
        await session.commit()
        assert (await _next(subscription)).payload == {"status": "filled"}
        assert (await _next(subscription)).payload == {"status": "settled"}
        # Sent once: a later commit does not send them again.
        await session.execute(text("SELECT 1"))
        await session.commit()
        await flush_after_commit()
        assert await subscription.get(timeout=QUIET) is None


async def test_publish_after_commit_drops_on_rollback(bus: Any, session: AsyncSession) -> None:
    async with bus.subscribe("orders:1") as subscription:
        await session.execute(text("SELECT 1"))
        publish_after_commit(session, bus, "orders:1", {"status": "rolled back"})
        await session.rollback()
        # Dropped, not carried over to the next transaction.
        await session.execute(text("SELECT 1"))
        publish_after_commit(session, bus, "orders:1", {"status": "committed"})
        await session.commit()
        assert (await _next(subscription)).payload == {"status": "committed"}
        await flush_after_commit()
        assert await subscription.get(timeout=QUIET) is None


async def test_publish_after_commit_drops_when_the_session_closes_uncommitted(
    bus: Any, session: AsyncSession
) -> None:
    async with bus.subscribe("orders:1") as subscription:
        await session.execute(text("SELECT 1"))
        publish_after_commit(session, bus, "orders:1", {"status": "abandoned"})
        await session.close()
        await session.execute(text("SELECT 1"))
        await session.commit()
        await flush_after_commit()
        assert await subscription.get(timeout=QUIET) is None


async def test_publish_after_commit_checks_and_copies_now(bus: Any, session: AsyncSession) -> None:
    with pytest.raises(ValueError, match="topic"):
        publish_after_commit(session, bus, "bad topic", {})
    with pytest.raises(ValueError, match="payload"):
        publish_after_commit(session, bus, "t", {"price": Decimal(1)})
    async with bus.subscribe("t") as subscription:
        payload = {"n": 1}
        publish_after_commit(session, bus, "t", payload)
        payload["n"] = 2
        await session.commit()
        assert (await _next(subscription)).payload == {"n": 1}


async def test_publish_after_commit_logs_failures_instead_of_raising(
    session: AsyncSession, captured_logs: Any
) -> None:
    bus = MemoryEventBus()
    await bus.aclose()  # publishing on it now fails
    publish_after_commit(session, bus, "t", {"n": 1})
    await session.commit()  # does not raise
    await flush_after_commit()
    [line] = captured_logs.events("event_publish_failed")
    assert line["topic"] == "t"


# -- Redis only -------------------------------------------------------------------------------


@redis_only
async def test_an_event_crosses_processes(make_bus: Callable[..., Any]) -> None:
    shared = _prefix()
    publisher, subscriber = make_bus(prefix=shared), make_bus(prefix=shared)
    other_deployment = make_bus(prefix=_prefix())
    async with (
        subscriber.subscribe("tickers:BTC-USD") as subscription,
        other_deployment.subscribe("tickers:BTC-USD") as elsewhere,
    ):
        await publisher.publish("tickers:BTC-USD", {"price": "1"})
        assert await _next(subscription) == Event("tickers:BTC-USD", {"price": "1"})
        assert await elsewhere.get(timeout=QUIET) is None  # another prefix, another bus


async def test_unreachable_redis_raises_events_unavailable() -> None:
    pytest.importorskip("redis")
    bus = RedisEventBus("redis://127.0.0.1:1/0", prefix=_prefix())
    try:
        with pytest.raises(EventsUnavailable) as raised:
            await bus.publish("t", {"n": 1})
        assert isinstance(raised.value, ServiceUnavailable)
        assert isinstance(raised.value, TradeOSError)
        assert raised.value.status == 503
        with pytest.raises(EventsUnavailable):
            async with bus.subscribe("t"):
                pass  # pragma: no cover
        assert bus.subscription_count == 0
    finally:
        await bus.aclose()


# -- factory ----------------------------------------------------------------------------------


async def test_make_event_bus_follows_settings(settings_factory: Callable[..., Settings]) -> None:
    memory = make_event_bus(settings_factory(redis_url=None))
    assert isinstance(memory, MemoryEventBus)
    assert memory.backend == "memory"
    await memory.aclose()
    if TEST_REDIS_URL:
        settings = settings_factory(redis_url=TEST_REDIS_URL)
        redis_bus = make_event_bus(settings)
        assert isinstance(redis_bus, RedisEventBus)
        assert redis_bus.backend == "redis"
        assert redis_bus.prefix == settings.redis_key_prefix
        await redis_bus.aclose()


async def test_a_released_savepoint_is_not_the_commit(bus: Any, session: AsyncSession) -> None:
    async with bus.subscribe("orders:1") as subscription:
        await session.execute(text("SELECT 1"))
        publish_after_commit(session, bus, "orders:1", {"status": "filled"})
        async with session.begin_nested():
            await session.execute(text("SELECT 1"))
        await flush_after_commit()
        assert await subscription.get(timeout=QUIET) is None  # the savepoint is no commit
        await session.rollback()  # ... and the outer rollback drops the event
        await session.execute(text("SELECT 1"))
        await session.commit()
        await flush_after_commit()
        assert await subscription.get(timeout=QUIET) is None


async def _failing_savepoint(session: AsyncSession, bus: Any) -> None:
    async with session.begin_nested():
        publish_after_commit(session, bus, "orders:1", {"status": "inside"})
        raise RuntimeError("the savepoint fails")


async def test_events_of_a_rolled_back_savepoint_are_dropped(
    bus: Any, session: AsyncSession
) -> None:
    async with bus.subscribe("orders:1") as subscription:
        await session.execute(text("SELECT 1"))
        publish_after_commit(session, bus, "orders:1", {"status": "before"})
        with pytest.raises(RuntimeError, match="the savepoint fails"):
            await _failing_savepoint(session, bus)
        async with session.begin_nested():
            publish_after_commit(session, bus, "orders:1", {"status": "kept"})
        await session.commit()
        assert (await _next(subscription)).payload == {"status": "before"}
        assert (await _next(subscription)).payload == {"status": "kept"}
        await flush_after_commit()
        assert await subscription.get(timeout=QUIET) is None


@needs_redis
async def test_many_open_subscriptions_never_starve_publishing() -> None:
    assert TEST_REDIS_URL is not None
    bus = RedisEventBus(TEST_REDIS_URL, prefix=f"test-{uuid.uuid4().hex}")
    subscriptions = [bus.subscribe(f"topic:{n}") for n in range(100)]
    try:
        for subscription in subscriptions:
            await subscription.__aenter__()
        await bus.publish("topic:7", {"n": 7})  # the publisher has a client of its own
        event = await subscriptions[7].get(timeout=2)
        assert event is not None and event.payload == {"n": 7}
    finally:
        for subscription in subscriptions:
            await subscription.__aexit__(None, None, None)
        await bus.aclose()


# -- Redis: one shared pub/sub connection per bus ----------------------------------------------


def _channels(prefix: str, *topics: str) -> list[str]:
    return [f"{prefix}:events:{topic}" for topic in topics]


async def _numsub(prefix: str, *topics: str) -> dict[str, int]:
    """How many Redis connections are subscribed to each topic's channel."""
    assert TEST_REDIS_URL is not None
    admin = make_redis(TEST_REDIS_URL)
    try:
        counts = await admin.pubsub_numsub(*_channels(prefix, *topics))
    finally:
        await admin.aclose()
    return {channel.decode().rsplit(":events:", 1)[1]: count for channel, count in counts}


async def _until_numsub(prefix: str, expected: dict[str, int]) -> None:
    """Redis handles the UNSUBSCRIBE on its own time: poll, bounded by WAIT."""
    async with asyncio.timeout(WAIT):
        while await _numsub(prefix, *expected) != expected:  # noqa: ASYNC110
            await asyncio.sleep(0.01)


async def _until_closed(subscriptions: Iterable[Subscription]) -> None:
    async with asyncio.timeout(WAIT):
        while not all(subscription.closed for subscription in subscriptions):  # noqa: ASYNC110
            await asyncio.sleep(0.01)


class _Relay:
    """A TCP relay in front of the test Redis that a test can cut (every connection through
    it drops) or stall (bytes stop flowing both ways, the sockets stay open)."""

    def __init__(self) -> None:
        assert TEST_REDIS_URL is not None
        target = urlsplit(TEST_REDIS_URL)
        self._target = (target.hostname or "127.0.0.1", target.port or 6379)
        self._path = target.path
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._writers: list[asyncio.StreamWriter] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        port = self._server.sockets[0].getsockname()[1]
        return f"redis://127.0.0.1:{port}{self._path}"

    async def __aenter__(self) -> _Relay:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._server is not None
        self._server.close()
        self.cut()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(list(self._tasks))
        await self._server.wait_closed()

    def cut(self) -> None:
        for writer in self._writers:
            writer.transport.abort()
        self._writers.clear()

    def stall(self) -> None:
        self._flowing.clear()

    def resume(self) -> None:
        self._flowing.set()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream_reader, upstream_writer = await asyncio.open_connection(*self._target)
        self._writers += [writer, upstream_writer]
        for source, sink in ((reader, upstream_writer), (upstream_reader, writer)):
            task = asyncio.create_task(self._pipe(source, sink))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _pipe(self, source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        try:
            while data := await source.read(65536):
                await self._flowing.wait()
                sink.write(data)
                await sink.drain()
        except OSError:
            pass
        finally:
            sink.transport.abort()


@needs_redis
async def test_many_subscriptions_share_one_pubsub_connection() -> None:
    assert TEST_REDIS_URL is not None
    prefix = _prefix()
    bus = RedisEventBus(TEST_REDIS_URL, prefix=prefix)
    subscriptions = [bus.subscribe(f"topic:{n}", "common") for n in range(300)]
    try:
        # All at once, as WebSocket clients connecting together would.
        await asyncio.gather(*(subscription.__aenter__() for subscription in subscriptions))
        assert bus.subscription_count == 300
        # One connection subscribed to each channel, where one per subscription would be 300.
        topics = ["common", *(f"topic:{n}" for n in range(300))]
        assert await _numsub(prefix, *topics) == dict.fromkeys(topics, 1)
        # ... and it is one connection for all channels.
        admin = make_redis(TEST_REDIS_URL)
        try:
            clients = await admin.client_list(_type="pubsub")
        finally:
            await admin.aclose()
        assert len([client for client in clients if client["sub"] == "301"]) == 1

        # Subscribed on entry: an event published right away reaches every subscriber.
        await bus.publish("common", {"n": "all"})
        for subscription in subscriptions:
            assert (await _next(subscription)).payload == {"n": "all"}
        await bus.publish("topic:7", {"n": 7})
        assert (await _next(subscriptions[7])).payload == {"n": 7}
        assert await subscriptions[8].get(timeout=QUIET) is None
    finally:
        for subscription in subscriptions:
            await subscription.aclose()
        await bus.aclose()
    await _until_numsub(prefix, {"common": 0, "topic:7": 0})


@redis_only
async def test_the_last_subscriber_of_a_channel_leaving_unsubscribes_in_redis(
    make_bus: Callable[..., Any],
) -> None:
    prefix = _prefix()
    bus = make_bus(prefix=prefix)
    async with bus.subscribe("x") as other:
        async with bus.subscribe("x", "y"):
            assert await _numsub(prefix, "x", "y") == {"x": 1, "y": 1}
        # y lost its only subscriber, x still has one.
        await _until_numsub(prefix, {"x": 1, "y": 0})
        await bus.publish("x", {"n": 1})
        assert (await _next(other)).payload == {"n": 1}
    await _until_numsub(prefix, {"x": 0, "y": 0})

    # Leaving and joining a channel at the same moment: Redis ends up subscribed, and the
    # newcomer gets what is published once it is in.
    leaving, joining = bus.subscribe("x"), bus.subscribe("x")
    await leaving.__aenter__()
    await asyncio.gather(leaving.aclose(), joining.__aenter__())
    try:
        await bus.publish("x", {"n": 2})
        assert (await _next(joining)).payload == {"n": 2}
        assert await _numsub(prefix, "x") == {"x": 1}
    finally:
        await joining.aclose()
    await _until_numsub(prefix, {"x": 0})


@redis_only
async def test_a_slow_subscriber_overflows_alone_and_the_channel_stays(
    make_bus: Callable[..., Any],
) -> None:
    prefix = _prefix()
    bus = make_bus(prefix=prefix, max_queue=3)
    async with bus.subscribe("t") as slow, bus.subscribe("t") as fast:
        for n in range(5):
            await bus.publish("t", {"n": n})
            assert (await _next(fast)).payload == {"n": n}
        await _until_closed([slow])
        assert slow.overflowed
        assert not fast.closed
        # The fast subscriber still holds the channel: no UNSUBSCRIBE went out.
        await asyncio.sleep(QUIET)
        assert await _numsub(prefix, "t") == {"t": 1}
        await bus.publish("t", {"n": "after"})
        assert (await _next(fast)).payload == {"n": "after"}
    await _until_numsub(prefix, {"t": 0})


@redis_only
async def test_a_lost_connection_fails_every_subscription_and_the_next_subscribe_reconnects(
    make_bus: Callable[..., Any], captured_logs: Any
) -> None:
    prefix = _prefix()
    publisher = make_bus(prefix=prefix)  # another process, straight to Redis
    async with _Relay() as relay:
        bus = RedisEventBus(relay.url, prefix=prefix)
        try:
            async with (
                bus.subscribe("a") as first,
                bus.subscribe("a", "b") as second,
                bus.subscribe("b") as third,
            ):
                relay.cut()
                for subscription in (first, second, third):
                    with pytest.raises(EventsUnavailable):
                        await subscription.get(timeout=WAIT)
                    with pytest.raises(EventsUnavailable):
                        await anext(subscription)
                assert bus.subscription_count == 0
                [line] = captured_logs.events("event_connection_lost")
                assert line["subscriptions"] == 3

                # Nothing is left subscribed, and a new subscribe opens a new connection.
                await _until_numsub(prefix, {"a": 0, "b": 0})
                async with bus.subscribe("a") as again:
                    await publisher.publish("a", {"n": "again"})
                    assert (await _next(again)).payload == {"n": "again"}
                    assert await _numsub(prefix, "a") == {"a": 1}
        finally:
            await bus.aclose()


@redis_only
async def test_a_stalled_connection_fails_subscribe_within_the_timeout(
    make_bus: Callable[..., Any],
) -> None:
    prefix = _prefix()
    publisher = make_bus(prefix=prefix)
    async with _Relay() as relay:
        bus = RedisEventBus(relay.url, prefix=prefix, timeout=0.3)
        try:
            async with bus.subscribe("a") as first:
                relay.stall()
                loop = asyncio.get_running_loop()
                started = loop.time()
                with pytest.raises(EventsUnavailable, match="no answer"):
                    async with bus.subscribe("b"):
                        pass  # pragma: no cover
                assert loop.time() - started < 1.0
                # The stuck connection is dropped for everyone on it ...
                with pytest.raises(EventsUnavailable):
                    await first.get(timeout=WAIT)
            assert bus.subscription_count == 0
            # ... and the next subscribe starts on a fresh one.
            relay.resume()
            async with bus.subscribe("a") as again:
                await publisher.publish("a", {"n": 1})
                assert (await _next(again)).payload == {"n": 1}
            # A Redis that accepts but never answers fails the first subscribe in time too.
            relay.stall()
            fresh = RedisEventBus(relay.url, prefix=prefix, timeout=0.3)
            try:
                with pytest.raises(EventsUnavailable):
                    async with fresh.subscribe("a"):
                        pass  # pragma: no cover
                assert fresh.subscription_count == 0
            finally:
                await fresh.aclose()
        finally:
            await bus.aclose()


@redis_only
async def test_a_cancelled_subscriber_does_not_break_the_shared_connection(
    make_bus: Callable[..., Any],
) -> None:
    bus = make_bus()
    async with bus.subscribe("a") as staying:
        for _ in range(20):
            joining = asyncio.create_task(bus.subscribe("b").__aenter__())
            await asyncio.sleep(0)
            joining.cancel()
            await asyncio.wait([joining])
        await bus.publish("a", {"n": 1})
        assert (await _next(staying)).payload == {"n": 1}
        assert bus.subscription_count == 1


@needs_redis
async def test_closing_the_bus_closes_its_connection() -> None:
    assert TEST_REDIS_URL is not None
    prefix = _prefix()
    bus = RedisEventBus(TEST_REDIS_URL, prefix=prefix)
    subscription = bus.subscribe("a")
    await subscription.__aenter__()
    assert await _numsub(prefix, "a") == {"a": 1}
    await bus.aclose()
    with pytest.raises(SubscriptionClosed):
        await subscription.get(timeout=QUIET)
    assert not isinstance(subscription._error, EventsUnavailable)
    await _until_numsub(prefix, {"a": 0})
    with pytest.raises(EventsUnavailable):
        async with bus.subscribe("a"):
            pass  # pragma: no cover
