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
import functools
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, Protocol, runtime_checkable

import orjson
import structlog

from tradeos.config import Settings
from tradeos.core.errors import ServiceUnavailable
from tradeos.core.redis import REDIS_ERRORS, REQUEST_TIMEOUT_SECONDS
from tradeos.core.transactions import after_commit
from tradeos.core.transactions import flush_after_commit as flush_committed_actions

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
            if timeout is None:
                # No timeout scope per event: on a fan-out to 1,000 subscribers it costs more
                # than the rest of the bus (bench/RESULTS.md).
                event = await self._queue.get()
            else:
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


def _reason(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__


class _RedisSubscription(Subscription):
    """A share of its bus's pub/sub connection: its channels are counted there, and the
    connection's reader delivers into this subscription's bounded queue."""

    def __init__(self, bus: RedisEventBus, topics: tuple[str, ...], *, max_queue: int) -> None:
        super().__init__(topics, max_queue=max_queue)
        self._bus = bus
        self._channels: tuple[bytes, ...] = tuple(bus._channel(topic) for topic in topics)
        self._connection: _SharedPubSub | None = None  # while it counts there

    async def _open(self) -> None:
        self._bus._attach(self)
        connection: _SharedPubSub | None = None
        received = 0
        try:
            async with asyncio.timeout(self._bus.timeout):
                connection = await self._bus._shared_pubsub()
                received = connection.received
                await connection.join(self)
        except TimeoutError as exc:
            if connection is not None and connection.received == received:
                # Not a word from Redis while we waited: the connection is stuck, for every
                # subscriber on it. Drop it, so the next subscribe starts on a fresh one. (If
                # messages did arrive, the reader is merely behind: only this subscribe fails.)
                connection.lose(f"no answer within {self._bus.timeout:g} s")
            raise EventsUnavailable(
                f"cannot subscribe to events: no answer within {self._bus.timeout:g} s"
            ) from exc
        except REDIS_ERRORS as exc:
            raise EventsUnavailable(f"cannot subscribe to events: {_reason(exc)}") from exc

    def _leave(self) -> _SharedPubSub | None:
        """Leave the registry and the connection; the connection if some channel of ours lost
        its last subscriber there (so Redis should be told)."""
        self._bus._detach(self)
        connection, self._connection = self._connection, None
        if connection is not None and connection.leave(self):
            return connection
        return None

    def _detach(self) -> None:
        # Synchronous (an overflow or a lost connection closes us from the reader task): the
        # UNSUBSCRIBE goes out in the background.
        connection = self._leave()
        if connection is not None:
            connection.settle_soon()

    async def _release(self) -> None:
        connection = self._leave()
        if connection is not None:
            await connection.settle()


class _SharedPubSub:
    """The one pub/sub connection of a bus and the one task reading it, shared by all the
    bus's subscriptions.

    Channels are reference-counted: a channel is SUBSCRIBEd when its first local subscription
    arrives and UNSUBSCRIBEd when its last one leaves. Commands are never sent by the callers'
    tasks: a task of our own brings Redis in line with the local subscriptions (`_sync`),
    because a command cancelled half-way (a caller's timeout or cancellation) makes redis-py
    drop the connection under every subscriber. Redis confirms each channel of a SUBSCRIBE, in
    order, so a queue of futures per channel tells a subscriber when its channels are live.

    Any error on the connection fails every subscription on it with `EventsUnavailable`
    (events may have been lost: subscribers resynchronise), and the bus opens a new
    connection for the next subscribe."""

    def __init__(self, bus: RedisEventBus, pubsub: PubSub) -> None:
        self._bus = bus
        self._pubsub = pubsub
        self._prefix_length = len(bus._channel(""))
        self._subscribers: dict[bytes, set[_RedisSubscription]] = {}
        # Channels SUBSCRIBEd on the connection (confirmed or not) and not UNSUBSCRIBEd since.
        self._in_redis: set[bytes] = set()
        # Per channel, one future per SUBSCRIBE sent and not yet confirmed, oldest first.
        self._confirming: dict[bytes, deque[asyncio.Future[None]]] = {}
        self._lock = asyncio.Lock()  # one `_sync` at a time, so commands go out in order
        self._syncing: asyncio.Task[None] | None = None  # a `_sync` yet to look at channels
        self._tasks: set[asyncio.Task[None]] = set()
        self._down = False
        self.received = 0  # messages read so far: shows the connection is alive
        self._reader = asyncio.get_running_loop().create_task(
            self._read(), name="tradeos-events:reader"
        )

    @property
    def down(self) -> bool:
        return self._down

    # -- subscriptions joining and leaving --

    async def join(self, subscription: _RedisSubscription) -> None:
        """Count the subscription's channels here; return once Redis confirmed them all."""
        if subscription.closed:  # the bus closed while it waited for the connection
            return
        if self._down:  # pragma: no cover - the bus hands out live connections only
            raise EventsUnavailable("lost the event connection")
        subscription._connection = self
        for channel in subscription._channels:
            self._subscribers.setdefault(channel, set()).add(subscription)
        await self.settle()
        if self._down:
            raise EventsUnavailable("lost the event connection while subscribing")
        # The newest SUBSCRIBE of a channel is the one after any UNSUBSCRIBE of it; our
        # reference keeps the channel from being unsubscribed while we wait.
        waiting = [
            self._confirming[channel][-1]
            for channel in subscription._channels
            if self._confirming.get(channel)
        ]
        if waiting:
            # wait(), not await: a cancelled subscriber must not cancel a future others share.
            await asyncio.wait(waiting)
        if self._down:
            raise EventsUnavailable("lost the event connection while subscribing")

    def leave(self, subscription: _RedisSubscription) -> bool:
        """Uncount the subscription; True when a channel lost its last subscriber."""
        emptied = False
        for channel in subscription._channels:
            subscribers = self._subscribers.get(channel)
            if subscribers is None:
                continue
            subscribers.discard(subscription)
            if not subscribers:
                del self._subscribers[channel]
                emptied = True
        return emptied and not self._down

    def settle_soon(self) -> asyncio.Task[None]:
        """A task that brings Redis in line with the local subscriptions as they are when it
        runs: the pending one if it has not looked yet, else a new one."""
        task = self._syncing
        if task is None:
            task = self._syncing = asyncio.get_running_loop().create_task(
                self._sync(), name="tradeos-events:sync"
            )
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return task

    async def settle(self) -> None:
        """Wait until Redis is in line with the local subscriptions. Never raises: a failure
        takes the connection down (check `down`)."""
        # shield: the caller's cancellation must not cut a command in half.
        await asyncio.shield(self.settle_soon())

    async def _sync(self) -> None:
        task = asyncio.current_task()
        try:
            async with asyncio.timeout(self._bus.timeout), self._lock:
                if self._syncing is task:
                    self._syncing = None  # from here on, later changes need another run
                if self._down:
                    return
                subscribe = [
                    channel for channel in self._subscribers if channel not in self._in_redis
                ]
                unsubscribe = [
                    channel for channel in self._in_redis if channel not in self._subscribers
                ]
                if unsubscribe:
                    self._in_redis.difference_update(unsubscribe)
                    await self._send("UNSUBSCRIBE", *unsubscribe)
                if subscribe:
                    loop = asyncio.get_running_loop()
                    for channel in subscribe:
                        self._in_redis.add(channel)
                        self._confirming.setdefault(channel, deque()).append(loop.create_future())
                    await self._send("SUBSCRIBE", *subscribe)
        except TimeoutError:
            self.lose(f"no answer within {self._bus.timeout:g} s")
        except REDIS_ERRORS as exc:
            self.lose(_reason(exc))
        finally:
            if self._syncing is task:
                self._syncing = None

    async def _send(self, *command: str | bytes) -> None:
        connection = self._pubsub.connection
        if connection is None:
            raise ConnectionError("the event connection is closed")
        # No health check: its PING would read the reply beside our reader.
        await connection.send_command(*command, check_health=False)

    # -- the reader --

    async def _read(self) -> None:
        try:
            while True:
                message = await self._pubsub.get_message(timeout=None)
                self.received += 1
                if message is None:  # a health check answered
                    continue
                kind = message["type"]
                if kind == "message":
                    self._dispatch(message["channel"], message["data"])
                elif kind == "subscribe":
                    self._confirm(message["channel"])
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.lose(_reason(exc))

    def _dispatch(self, channel: bytes, data: bytes) -> None:
        subscribers = self._subscribers.get(channel)
        if not subscribers:  # its last subscriber left; the UNSUBSCRIBE is under way
            return
        topic = channel[self._prefix_length :].decode()
        # A copy of the set: an overflowing subscriber leaves it during the loop. Each
        # subscriber decodes its own payload, so none can change what another receives.
        for subscription in list(subscribers):
            try:
                payload = _decode(data)
            except ValueError:
                logger.warning("event_payload_invalid", topic=topic)
                return
            subscription._deliver(Event(topic, payload))

    def _confirm(self, channel: bytes) -> None:
        waiting = self._confirming.get(channel)
        if not waiting:  # pragma: no cover - Redis confirms only what was asked
            return
        future = waiting.popleft()
        if not waiting:
            del self._confirming[channel]
        if not future.done():
            future.set_result(None)

    # -- going down --

    def lose(self, reason: str) -> None:
        """The connection is lost or stuck: fail every subscription on it."""
        if self._down:
            return
        subscriptions = {s for subscribers in self._subscribers.values() for s in subscribers}
        logger.error(
            "event_connection_lost",
            subscriptions=len(subscriptions),
            channels=len(self._subscribers),
            error=reason,
        )
        self.shut_down()
        for subscription in subscriptions:
            subscription._fail(EventsUnavailable(f"lost the event subscription: {reason}"))

    def shut_down(self) -> None:
        """Stop reading and close the connection (in the background; the bus's `aclose`
        waits for it). Subscriptions still counted here are the caller's business."""
        if self._down:
            return
        self._down = True
        self._bus._forget(self)
        for waiting in self._confirming.values():
            for future in waiting:
                future.cancel()
        self._confirming.clear()
        self._subscribers.clear()
        self._in_redis.clear()
        self._reader.cancel()
        self._bus._track(
            asyncio.get_running_loop().create_task(
                self._disconnect(), name="tradeos-events:disconnect"
            )
        )

    async def _disconnect(self) -> None:
        # wait(), not await: the reader's cancellation is not ours to raise.
        await asyncio.wait([self._reader])
        with contextlib.suppress(*REDIS_ERRORS):
            await self._pubsub.aclose()  # type: ignore[no-untyped-call]
        # Syncs under way fail on the closed connection, or see `down` and stop.
        if self._tasks:
            await asyncio.wait(list(self._tasks))


class RedisEventBus:
    """Redis pub/sub: events reach subscribers in every process using the same Redis and key
    prefix. Delivery is at most once, to whoever is subscribed at publish time (pub/sub keeps
    nothing).

    All subscriptions of a bus share one pub/sub connection and one reader task (so a
    process with thousands of WebSocket clients holds one connection, not thousands); a lost
    connection fails them all with `EventsUnavailable`, and the next subscribe opens a new
    one. Publishing has its own client, so a busy subscriber connection never delays it."""

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
        self._redis: Redis = make_redis(url)  # holds the shared pub/sub connection
        self._publisher: Redis = make_redis(url)
        self._subscriptions: set[_RedisSubscription] = set()
        self._shared: _SharedPubSub | None = None
        self._connecting = asyncio.Lock()
        self._closing: set[asyncio.Task[None]] = set()
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
        shared, self._shared = self._shared, None
        if shared is not None:
            shared.shut_down()
        for subscription in list(self._subscriptions):
            subscription._fail(SubscriptionClosed("event bus closed"))
        while self._closing:
            await asyncio.wait(list(self._closing))
        await self._redis.aclose()
        await self._publisher.aclose()

    async def _shared_pubsub(self) -> _SharedPubSub:
        """The live shared connection, opened if there is none."""
        async with self._connecting:
            if self._closed:
                raise EventsUnavailable("the event bus is closed")
            if self._shared is None:
                pubsub = self._redis.pubsub()
                try:
                    await pubsub.connect()  # type: ignore[no-untyped-call]
                except BaseException:
                    with contextlib.suppress(*REDIS_ERRORS):
                        await pubsub.aclose()  # type: ignore[no-untyped-call]
                    raise
                self._shared = _SharedPubSub(self, pubsub)
            return self._shared

    def _forget(self, shared: _SharedPubSub) -> None:
        if self._shared is shared:
            self._shared = None

    def _track(self, task: asyncio.Task[None]) -> None:
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

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


def publish_after_commit(
    session: AsyncSession, bus: EventBus, topic: str, payload: Mapping[str, Any]
) -> None:
    """Publish once the session's transaction commits; drop it if the transaction rolls back
    (or the session closes without committing, or the savepoint it was asked in rolls back).
    Topic and payload are checked now, so a bad event fails the request rather than vanish
    after it; the payload is copied now, so later changes to it are not sent. Publish failures
    after the commit are logged, never raised: the commit has happened."""
    validate_topic(topic)
    data = encode_payload(payload)
    after_commit(session, functools.partial(_publish_committed, bus, topic, data))


async def _publish_committed(bus: EventBus, topic: str, data: bytes) -> None:
    try:
        await bus.publish(topic, _decode(data))
    except Exception as exc:
        logger.error("event_publish_failed", topic=topic, backend=bus.backend, error=repr(exc))


async def flush_after_commit() -> None:
    """Wait for the publishes (and other after-commit work) of sessions committed so far (at
    shutdown, before the bus closes; in tests)."""
    await flush_committed_actions()
