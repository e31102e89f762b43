"""The event bus: in-process always; Redis pub/sub too when TEST_REDIS_URL is set (e.g.
redis://127.0.0.1:6379/15). Each test gets its own key prefix, so its channels are its own."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

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

NO_REDIS = "TEST_REDIS_URL is not set: the Redis event bus needs a real Redis to run against"
needs_redis = pytest.mark.skipif(TEST_REDIS_URL is None, reason=NO_REDIS)
WAIT = 2.0  # seconds an expected event may take
QUIET = 0.2  # seconds of silence that show an event is not coming


def _prefix() -> str:
    return f"test-{uuid.uuid4().hex}"


BACKENDS = ["memory", pytest.param("redis", marks=needs_redis)]


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


@pytest.mark.parametrize("make_bus", [pytest.param("redis", marks=needs_redis)], indirect=True)
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
        await bus.publish("topic:7", {"n": 7})  # each subscription holds a connection
        event = await subscriptions[7].get(timeout=2)
        assert event is not None and event.payload == {"n": 7}
    finally:
        for subscription in subscriptions:
            await subscription.__aexit__(None, None, None)
        await bus.aclose()
