"""The event bus port: `publish(topic, payload)` and `subscribe(*topics)`.

One way to publish an event (DESIGN.md). Settings pick the adapter:

- `MemoryEventBus` (embedded): fan-out inside this process.
- `RedisEventBus` (REDIS_URL set): Redis pub/sub, so an event published by one process reaches
  subscribers in every process. Channels are `{prefix}:events:{topic}`.

Topics are plain strings ("tickers:BTC-USD", "user:42:notifications"): 1..200 printable
characters, no whitespace. Payloads are JSON objects (orjson types); every subscriber gets its
own freshly decoded dict, on either backend, so what a subscriber receives is always plain JSON
(a datetime arrives as an ISO string) and mutating it affects nobody else.

A subscriber is never allowed to slow the publisher or the other subscribers: each subscription
buffers into a bounded queue, and one that falls behind until its queue is full is closed on
the spot; its next read raises `SubscriptionOverflow` (events were lost: resynchronise, e.g.
close the WebSocket and let the client reconnect).

Events a request asks for go out after its commit and are dropped on rollback:
`publish_after_commit(session, bus, topic, payload)`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, Protocol, runtime_checkable

import orjson
import structlog
from sqlalchemy import event as sa_event
from sqlalchemy.orm import Session, SessionTransaction

from tradeos.config import Settings
from tradeos.core.errors import ServiceUnavailable
from tradeos.core.redis import REDIS_ERRORS, REQUEST_TIMEOUT_SECONDS

if TYPE_CHECKING:
    from redis.asyncio import Redis
    from redis.asyncio.client import PubSub
    from sqlalchemy.ext.asyncio import AsyncSession

__all__ = [
    "DEFAULT_MAX_QUEUE",
    "Event",
    "EventBus",
    "EventsUnavailable",
    "MemoryEventBus",
    "RedisEventBus",
    "Subscription",
    "SubscriptionClosed",
    "SubscriptionOverflow",
    "flush_after_commit",
    "make_event_bus",
    "publish_after_commit",
]

DEFAULT_MAX_QUEUE: Final = 1000
MAX_TOPIC_LENGTH: Final = 200
# Redis calls sit on the request path: a stalled Redis must fail the publish, not hang it.

logger = structlog.get_logger("tradeos.events")


# -- values and errors ------------------------------------------------------------------------


@dataclass(frozen=True)
class Event:
    topic: str
    payload: dict[str, Any]


class EventsUnavailable(ServiceUnavailable):
    """The event transport (Redis) cannot be reached. Callers decide whether that matters."""

    slug = "events-unavailable"
    title = "Event bus unavailable"


class SubscriptionClosed(Exception):
    """Reading from a subscription that has been closed (context exited, bus closed)."""


class SubscriptionOverflow(SubscriptionClosed):
    """The subscriber fell behind, its queue filled up, and it was disconnected: events lost."""


def validate_topic(topic: str) -> str:
    if not isinstance(topic, str):
        raise ValueError(f"event topic must be a string, not {type(topic).__name__}")
    if not 1 <= len(topic) <= MAX_TOPIC_LENGTH:
        raise ValueError(f"event topic must be 1 to {MAX_TOPIC_LENGTH} characters long")
    if not topic.isprintable() or any(char.isspace() for char in topic):
        raise ValueError(
            f"event topic must not contain whitespace or control characters: {topic!r}"
        )
    return topic


def encode_payload(payload: Mapping[str, Any]) -> bytes:
    """The payload as JSON bytes, or ValueError saying why it cannot be."""
    if not isinstance(payload, Mapping):
        raise ValueError(f"event payload must be a mapping, not {type(payload).__name__}")
    try:
        return orjson.dumps(dict(payload))
    except TypeError as exc:  # orjson.JSONEncodeError is a TypeError
        raise ValueError(
            f"event payload is not JSON-serialisable ({exc}); send plain JSON values "
            "(Decimal as str, for instance)"
        ) from exc


def _decode(data: bytes) -> dict[str, Any]:
    payload = orjson.loads(data)
    if not isinstance(payload, dict):
        raise ValueError("event payload is not a JSON object")
    return payload


# -- the port ---------------------------------------------------------------------------------


@runtime_checkable
class EventBus(Protocol):
    backend: str  # "memory" | "redis"

    async def publish(self, topic: str, payload: Mapping[str, Any]) -> None: ...

    def subscribe(self, *topics: str) -> Subscription: ...

    async def aclose(self) -> None: ...


class Subscription:
    """Events of some topics, in publish order: an async context manager (subscribed while
    inside it) and an async iterator of `Event`.

        async with bus.subscribe("tickers:BTC-USD") as subscription:
            async for event in subscription: ...

    The iterator ends when the subscription or its bus is closed, and raises
    `SubscriptionOverflow` if the subscriber fell behind and was disconnected."""

    def __init__(self, topics: tuple[str, ...], *, max_queue: int) -> None:
        self.topics: frozenset[str] = frozenset(topics)
        # `None` is the wake-up put in when the subscription closes under a waiting reader.
        self._queue: asyncio.Queue[Event | None] = asyncio.Queue(maxsize=max_queue)
        self._started = False
        self._closed = False
        self._error: SubscriptionClosed | EventsUnavailable | None = None

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def overflowed(self) -> bool:
        return isinstance(self._error, SubscriptionOverflow)

    async def __aenter__(self) -> Subscription:
        if self._started:
            raise RuntimeError("a subscription can be entered only once")
        self._started = True
        try:
            await self._open()
        except BaseException:
            self._mark_closed(None)
            await self._release()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Unsubscribe; idempotent."""
        self._mark_closed(None)
        await self._release()

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> Event:
        try:
            event = await self.get()
        except SubscriptionOverflow:
            raise
        except SubscriptionClosed:
            raise StopAsyncIteration from None
        assert event is not None  # no timeout: only an event or an exception ends the wait
        return event

    async def get(self, timeout: float | None = None) -> Event | None:  # noqa: ASYNC109
        """The next event; None when none arrives within `timeout` seconds. Raises
        `SubscriptionOverflow` (a `SubscriptionClosed`) if the subscriber was disconnected for
        falling behind, `SubscriptionClosed` once closed, `EventsUnavailable` if the
        connection to Redis was lost for good."""
        if not self._started:
            raise RuntimeError("enter the subscription first: `async with bus.subscribe(...)`")
        self._raise_if_closed()
        try:
            async with asyncio.timeout(timeout):
                event = await self._queue.get()
        except TimeoutError:
            return None
        if event is None:
            self._raise_if_closed()
            raise SubscriptionClosed("subscription closed")  # pragma: no cover - defensive
        return event

    # -- for the adapters --

    def _deliver(self, event: Event) -> None:
        """Queue one event without ever waiting; a full queue disconnects this subscriber."""
        if self._closed:
            return
        try:
            self._queue.put_nowait(event)
        except asyncio.QueueFull:
            logger.warning(
                "event_subscriber_overflow",
                topics=sorted(self.topics),
                max_queue=self._queue.maxsize,
            )
            self._fail(
                SubscriptionOverflow(
                    f"subscriber fell {self._queue.maxsize} events behind and was disconnected"
                )
            )

    def _fail(self, error: SubscriptionClosed | EventsUnavailable) -> None:
        """Close from the publishing side (overflow, lost connection, bus closing)."""
        self._mark_closed(error)
        self._detach()

    def _mark_closed(self, error: SubscriptionClosed | EventsUnavailable | None) -> None:
        if self._closed:
            return
        self._closed = True
        self._error = error
        # Drop what is buffered (nobody will read it) and wake a reader waiting on empty.
        while not self._queue.empty():
            self._queue.get_nowait()
        self._queue.put_nowait(None)

    def _raise_if_closed(self) -> None:
        if self._closed:
            if self._error is not None:
                raise self._error
            raise SubscriptionClosed("subscription closed")

    async def _open(self) -> None:
        raise NotImplementedError

    def _detach(self) -> None:
        """Leave the bus's registry (synchronous part of closing)."""
        raise NotImplementedError

    async def _release(self) -> None:
        """Leave the bus and free what the subscription holds; idempotent."""
        self._detach()


# -- in process -------------------------------------------------------------------------------


class _MemorySubscription(Subscription):
    def __init__(self, bus: MemoryEventBus, topics: tuple[str, ...], *, max_queue: int) -> None:
        super().__init__(topics, max_queue=max_queue)
        self._bus = bus

    async def _open(self) -> None:
        self._bus._attach(self)

    def _detach(self) -> None:
        self._bus._detach(self)


class MemoryEventBus:
    """Fan-out inside this process (the embedded default)."""

    backend = "memory"

    def __init__(self, *, max_queue: int = DEFAULT_MAX_QUEUE) -> None:
        if max_queue < 1:
            raise ValueError("max_queue must be at least 1")
        self.max_queue = max_queue
        self._by_topic: dict[str, set[_MemorySubscription]] = {}
        self._subscriptions: set[_MemorySubscription] = set()
        self._closed = False

    @property
    def subscription_count(self) -> int:
        return len(self._subscriptions)

    async def publish(self, topic: str, payload: Mapping[str, Any]) -> None:
        validate_topic(topic)
        data = encode_payload(payload)
        if self._closed:
            raise EventsUnavailable("the event bus is closed")
        # A copy of the set: an overflowing subscriber leaves the registry during the loop.
        for subscription in list(self._by_topic.get(topic, ())):
            subscription._deliver(Event(topic, _decode(data)))

    def subscribe(self, *topics: str) -> Subscription:
        return _MemorySubscription(self, _check_topics(topics), max_queue=self.max_queue)

    async def aclose(self) -> None:
        self._closed = True
        for subscription in list(self._subscriptions):
            subscription._fail(SubscriptionClosed("event bus closed"))

    def _attach(self, subscription: _MemorySubscription) -> None:
        if self._closed:
            raise EventsUnavailable("the event bus is closed")
        self._subscriptions.add(subscription)
        for topic in subscription.topics:
            self._by_topic.setdefault(topic, set()).add(subscription)

    def _detach(self, subscription: _MemorySubscription) -> None:
        self._subscriptions.discard(subscription)
        for topic in subscription.topics:
            subscribers = self._by_topic.get(topic)
            if subscribers is not None:
                subscribers.discard(subscription)
                if not subscribers:
                    del self._by_topic[topic]


def _check_topics(topics: tuple[str, ...]) -> tuple[str, ...]:
    if not topics:
        raise ValueError("subscribe to at least one topic")
    return tuple(dict.fromkeys(validate_topic(topic) for topic in topics))


# -- Redis pub/sub ----------------------------------------------------------------------------


class _RedisSubscription(Subscription):
    """One pub/sub connection, read by one task into the bounded queue."""

    def __init__(self, bus: RedisEventBus, topics: tuple[str, ...], *, max_queue: int) -> None:
        super().__init__(topics, max_queue=max_queue)
        self._bus = bus
        self._topic_of: dict[bytes, str] = {bus._channel(topic): topic for topic in topics}
        self._pubsub: PubSub | None = None
        self._reader: asyncio.Task[None] | None = None
        self._released = False

    async def _open(self) -> None:
        self._bus._attach(self)
        self._pubsub = self._bus._redis.pubsub()
        try:
            async with asyncio.timeout(self._bus.timeout):
                await self._pubsub.subscribe(*self._topic_of)
                # SUBSCRIBE is confirmed asynchronously, once per channel: wait for every
                # confirmation, so an event published after __aenter__ returns is received.
                pending = set(self._topic_of)
                while pending:
                    message = await self._pubsub.get_message(timeout=self._bus.timeout)
                    if message is not None and message["type"] == "subscribe":
                        pending.discard(message["channel"])
        except REDIS_ERRORS as exc:
            raise EventsUnavailable(f"cannot subscribe to events: {exc}") from exc
        self._reader = asyncio.get_running_loop().create_task(
            self._read(self._pubsub), name=f"tradeos-events:{','.join(sorted(self.topics))}"
        )

    async def _read(self, pubsub: PubSub) -> None:
        try:
            while not self._closed:
                message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=None)
                if message is None or message["type"] != "message":
                    continue
                topic = self._topic_of.get(message["channel"])
                if topic is None:  # pragma: no cover - only subscribed channels arrive
                    continue
                try:
                    payload = _decode(message["data"])
                except ValueError:
                    logger.warning("event_payload_invalid", topic=topic)
                    continue
                self._deliver(Event(topic, payload))
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            logger.error("event_subscription_lost", topics=sorted(self.topics), error=repr(exc))
            self._fail(EventsUnavailable(f"lost the event subscription: {exc}"))
        finally:
            if self._closed:
                # Overflowed or failed: give the connection back now, not when the owner exits.
                await self._release()

    def _detach(self) -> None:
        self._bus._detach(self)

    async def _release(self) -> None:
        self._detach()
        if self._released:
            return
        self._released = True
        reader, self._reader = self._reader, None
        pubsub, self._pubsub = self._pubsub, None
        try:
            if reader is not None and reader is not asyncio.current_task():
                reader.cancel()
                # wait(), not await: the reader's cancellation is not the caller's to raise,
                # while a cancellation of the caller still propagates.
                await asyncio.wait([reader])
        finally:
            if pubsub is not None:
                # The connection is dropped either way.
                with contextlib.suppress(*REDIS_ERRORS):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]


class RedisEventBus:
    """Redis pub/sub: events reach subscribers in every process using the same Redis and key
    prefix. Delivery is at most once, to whoever is subscribed at publish time (pub/sub keeps
    nothing)."""

    backend = "redis"

    def __init__(
        self,
        url: str,
        *,
        prefix: str = "tradeos",
        max_queue: int = DEFAULT_MAX_QUEUE,
        timeout: float = REQUEST_TIMEOUT_SECONDS,
    ) -> None:
        from tradeos.core.redis import make_redis

        if max_queue < 1:
            raise ValueError("max_queue must be at least 1")
        self.prefix = prefix
        self.max_queue = max_queue
        self.timeout = timeout
        # Subscriptions each hold a connection of their own while they live; publishing has its
        # own client, so many open subscriptions can never starve publishes (each pool allows
        # 100 connections).
        self._redis: Redis = make_redis(url)
        self._publisher: Redis = make_redis(url)
        self._subscriptions: set[_RedisSubscription] = set()
        self._closed = False

    @property
    def subscription_count(self) -> int:
        return len(self._subscriptions)

    def _channel(self, topic: str) -> bytes:
        return f"{self.prefix}:events:{topic}".encode()

    async def publish(self, topic: str, payload: Mapping[str, Any]) -> None:
        validate_topic(topic)
        data = encode_payload(payload)
        if self._closed:
            raise EventsUnavailable("the event bus is closed")
        try:
            async with asyncio.timeout(self.timeout):
                await self._publisher.publish(self._channel(topic), data)
        except REDIS_ERRORS as exc:
            raise EventsUnavailable(f"cannot publish the event: {exc}") from exc

    def subscribe(self, *topics: str) -> Subscription:
        return _RedisSubscription(self, _check_topics(topics), max_queue=self.max_queue)

    async def aclose(self) -> None:
        self._closed = True
        for subscription in list(self._subscriptions):
            subscription._fail(SubscriptionClosed("event bus closed"))
            await subscription._release()
        await self._redis.aclose()
        await self._publisher.aclose()

    def _attach(self, subscription: _RedisSubscription) -> None:
        if self._closed:
            raise EventsUnavailable("the event bus is closed")
        self._subscriptions.add(subscription)

    def _detach(self, subscription: _RedisSubscription) -> None:
        self._subscriptions.discard(subscription)


def make_event_bus(settings: Settings) -> EventBus:
    """Redis pub/sub when REDIS_URL is set, in-process otherwise."""
    if settings.redis_url:
        return RedisEventBus(settings.redis_url, prefix=settings.redis_key_prefix)
    return MemoryEventBus()


# -- after commit -----------------------------------------------------------------------------

_PENDING_KEY: Final = "tradeos.events.pending"
_LISTENING_KEY: Final = "tradeos.events.listening"
_SAVEPOINT_MARKS_KEY: Final = "tradeos.events.savepoint_marks"
# Publishing tasks, referenced until done: the loop keeps only weak references to tasks.
_publishing: set[asyncio.Task[None]] = set()


def publish_after_commit(
    session: AsyncSession, bus: EventBus, topic: str, payload: Mapping[str, Any]
) -> None:
    """Publish once the session's transaction commits; drop it if the transaction rolls back
    (or the session closes without committing). Topic and payload are checked now, so a bad
    event fails the request rather than vanish after it; the payload is copied now, so later
    changes to it are not sent. Publish failures after the commit are logged, never raised:
    the commit has happened."""
    validate_topic(topic)
    data = encode_payload(payload)
    sync_session = session.sync_session
    if not sync_session.info.get(_LISTENING_KEY):
        sa_event.listen(sync_session, "after_commit", _after_commit)
        sa_event.listen(sync_session, "after_soft_rollback", _after_soft_rollback)
        sa_event.listen(sync_session, "after_transaction_end", _after_transaction_end)
        sa_event.listen(sync_session, "after_transaction_create", _after_transaction_create)
        sync_session.info[_LISTENING_KEY] = True
    pending: list[tuple[EventBus, str, bytes]] = sync_session.info.setdefault(_PENDING_KEY, [])
    pending.append((bus, topic, data))


def _after_commit(session: Session) -> None:
    # SQLAlchemy also reports a released savepoint as a commit; only the outermost counts.
    if session.in_nested_transaction():
        return
    pending: list[tuple[EventBus, str, bytes]] = session.info.pop(_PENDING_KEY, [])
    if not pending:
        return
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        logger.error("events_dropped_no_event_loop", count=len(pending))
        return
    # One task per commit publishes its events in order.
    task = loop.create_task(_publish_all(pending), name="tradeos-events:after-commit")
    _publishing.add(task)
    task.add_done_callback(_publishing.discard)


def _after_transaction_create(session: Session, transaction: SessionTransaction) -> None:
    # Remember how many events were queued when a savepoint began, to drop what it queued if it
    # rolls back.
    if transaction.nested:
        marks: dict[int, int] = session.info.setdefault(_SAVEPOINT_MARKS_KEY, {})
        marks[id(transaction)] = len(session.info.get(_PENDING_KEY, []))


def _after_soft_rollback(session: Session, previous_transaction: SessionTransaction) -> None:
    if previous_transaction.parent is None:
        session.info.pop(_PENDING_KEY, None)
    elif previous_transaction.nested:
        marks: dict[int, int] = session.info.get(_SAVEPOINT_MARKS_KEY, {})
        mark = marks.pop(id(previous_transaction), None)
        pending = session.info.get(_PENDING_KEY)
        if mark is not None and pending is not None:
            del pending[mark:]


def _after_transaction_end(session: Session, transaction: SessionTransaction) -> None:
    # The outermost transaction ended without a commit (after a commit the list is already
    # gone): close() without commit, for instance. Nothing carries over to the next one.
    if transaction.parent is None:
        session.info.pop(_PENDING_KEY, None)
        session.info.pop(_SAVEPOINT_MARKS_KEY, None)


async def _publish_all(pending: list[tuple[EventBus, str, bytes]]) -> None:
    for bus, topic, data in pending:
        try:
            await bus.publish(topic, _decode(data))
        except Exception as exc:
            logger.error("event_publish_failed", topic=topic, backend=bus.backend, error=repr(exc))


async def flush_after_commit() -> None:
    """Wait for the publishes scheduled by committed sessions so far (at shutdown, before the
    bus closes; in tests)."""
    while _publishing:
        await asyncio.gather(*list(_publishing), return_exceptions=True)
