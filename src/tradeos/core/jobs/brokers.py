"""The taskiq brokers jobs travel on: in-process (embedded), Redis Streams, or RabbitMQ.

Each carries one queue per priority and honours a `delay` label (taskiq's own in-memory and
Redis brokers ignore it, STACK.md), so a retry really waits on every broker. A message is only
`{run_id, token}`; the run's arguments stay in `job_runs`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from typing import Any, Final

from taskiq import AckableMessage, AsyncBroker
from taskiq.message import BrokerMessage

from tradeos.core.jobs.definitions import Priority

__all__ = [
    "EmbeddedBroker",
    "RabbitJobBroker",
    "RedisJobBroker",
    "delay_bucket_ms",
    "message_delay",
    "message_priority",
]

PRIORITY_LABEL: Final = "priority"
DELAY_LABEL: Final = "delay"


def message_priority(message: BrokerMessage) -> Priority:
    try:
        return Priority(str(message.labels.get(PRIORITY_LABEL, Priority.DEFAULT)))
    except ValueError:
        return Priority.DEFAULT


def message_delay(message: BrokerMessage) -> float:
    try:
        return max(0.0, float(message.labels.get(DELAY_LABEL) or 0))
    except (TypeError, ValueError):
        return 0.0


class EmbeddedBroker(AsyncBroker):
    """Jobs inside this process: one priority queue (high before default before low, first in
    first out within a priority), read by taskiq's receiver with bounded concurrency. What is
    queued here is lost with the process, but not the runs: `job_runs` keeps them and they are
    sent again at the next start."""

    def __init__(self) -> None:
        super().__init__()
        self._queue: asyncio.PriorityQueue[tuple[int, int, bytes]] = asyncio.PriorityQueue()
        self._order = itertools.count()
        self._delayed: dict[int, asyncio.TimerHandle] = {}

    @property
    def depth(self) -> int:
        return self._queue.qsize()

    async def kick(self, message: BrokerMessage) -> None:
        item = (message_priority(message).rank, next(self._order), message.message)
        delay = message_delay(message)
        if delay <= 0:
            self._queue.put_nowait(item)
            return
        order = item[1]
        self._delayed[order] = asyncio.get_running_loop().call_later(
            delay, self._release_delayed, order, item
        )

    def _release_delayed(self, order: int, item: tuple[int, int, bytes]) -> None:
        self._delayed.pop(order, None)
        self._queue.put_nowait(item)

    async def listen(self) -> AsyncGenerator[bytes, None]:
        while True:
            _, _, data = await self._queue.get()
            yield data

    async def shutdown(self) -> None:
        for handle in self._delayed.values():
            handle.cancel()
        self._delayed.clear()
        await super().shutdown()


# Moves due delayed messages to their streams, atomically: with several workers promoting at
# once, each message is moved by exactly one. Members are "<stream>\n<message>".
_PROMOTE_DUE: Final = """
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
for _, member in ipairs(due) do
  redis.call('ZREM', KEYS[1], member)
  local split = string.find(member, '\\n', 1, true)
  redis.call('XADD', string.sub(member, 1, split - 1), '*', 'data', string.sub(member, split + 1))
end
return #due
"""
PROMOTE_BATCH: Final = 500


@functools.cache
def _make_stream_broker_class() -> type[Any]:
    # taskiq-redis is part of the [redis] extra: imported only when Redis is configured.
    from redis.asyncio import Redis
    from taskiq_redis import RedisStreamBroker

    class _RedisJobBroker(RedisStreamBroker):
        def __init__(
            self,
            url: str,
            *,
            prefix: str,
            consume: Sequence[Priority],
            redeliver_after_seconds: float,
            read_count: int,
            consumer_name: str,
        ) -> None:
            self.streams = {priority: f"{prefix}:jobs:{priority.value}" for priority in Priority}
            self.delayed_key = f"{prefix}:jobs:delayed"
            # Streams are read in this order, so each read hands over high-priority work first.
            consumed = [self.streams[p] for p in sorted(set(consume), key=lambda p: p.rank)]
            super().__init__(
                url,
                queue_name=consumed[0],
                additional_streams={stream: ">" for stream in consumed[1:]},
                consumer_group_name=f"{prefix}:jobs:workers",
                consumer_name=consumer_name,
                # Messages added before the group existed are delivered too.
                consumer_id="0",
                xread_block=1000,
                xread_count=read_count,
                idle_timeout=int(redeliver_after_seconds * 1000),
                unacknowledged_lock_timeout=30,
                socket_connect_timeout=5,
                health_check_interval=30,
                client_name=f"{prefix}:jobs",
            )
            self._promote: Any = None

        async def _declare_consumer_group(self) -> None:
            from redis.exceptions import ResponseError

            # Every priority's stream and group exist from the first start of any process.
            async with Redis(connection_pool=self.connection_pool) as redis:
                for stream in self.streams.values():
                    try:
                        await redis.xgroup_create(
                            stream, self.consumer_group_name, id="0", mkstream=True
                        )
                    except ResponseError as exc:
                        if "BUSYGROUP" not in str(exc):
                            raise

        async def kick(self, message: BrokerMessage) -> None:
            stream = self.streams[message_priority(message)]
            delay = message_delay(message)
            async with Redis(connection_pool=self.connection_pool) as redis:
                if delay > 0:
                    member = stream.encode() + b"\n" + message.message
                    await redis.zadd(self.delayed_key, {member: time.time() + delay})
                else:
                    await redis.xadd(stream, {b"data": message.message})

        async def promote_due(self) -> int:
            """Move delayed messages whose time has come into their streams."""
            async with Redis(connection_pool=self.connection_pool) as redis:
                if self._promote is None:
                    self._promote = redis.register_script(_PROMOTE_DUE)
                moved = await self._promote(
                    keys=[self.delayed_key], args=[time.time(), PROMOTE_BATCH], client=redis
                )
            return int(moved)

        def _ack_generator(self, id: str, queue_name: str) -> Callable[[], Awaitable[None]]:
            async def _ack() -> None:
                # Acknowledged and deleted: the run's record is in job_runs, and a stream that
                # only grows would need trimming, which could drop messages not yet read.
                async with (
                    Redis(connection_pool=self.connection_pool) as redis,
                    redis.pipeline(transaction=True) as pipe,
                ):
                    pipe.xack(queue_name, self.consumer_group_name, id)
                    pipe.xdel(queue_name, id)
                    await pipe.execute()

            return _ack

        async def depths(self) -> dict[str, int]:
            """Messages waiting in each priority's stream, and delayed ones."""
            async with (
                Redis(connection_pool=self.connection_pool) as redis,
                redis.pipeline(transaction=False) as pipe,
            ):
                for stream in self.streams.values():
                    pipe.xlen(stream)
                pipe.zcard(self.delayed_key)
                counts = await pipe.execute()
            depths = {p.value: int(n) for p, n in zip(self.streams, counts, strict=False)}
            depths["delayed"] = int(counts[-1])
            return depths

    return _RedisJobBroker


def RedisJobBroker(
    url: str,
    *,
    prefix: str,
    consume: Sequence[Priority] = tuple(Priority),
    redeliver_after_seconds: float = 900.0,
    read_count: int = 4,
    consumer_name: str,
) -> Any:
    """Redis Streams, one stream per priority, one consumer group for all workers; a message a
    worker took but never acknowledged (it died) is handed to another worker once it has been
    idle `redeliver_after_seconds`. Delayed messages wait in a sorted set until workers move
    them into their stream."""
    broker_class = _make_stream_broker_class()
    return broker_class(
        url,
        prefix=prefix,
        consume=consume,
        redeliver_after_seconds=redeliver_after_seconds,
        read_count=read_count,
        consumer_name=consumer_name,
    )


# A delayed message waits in a queue whose every message has the same time to live, then is
# dead-lettered to its priority's queue: RabbitMQ expires messages only at a queue's head, so
# one queue of mixed delays would hold a short delay behind a long one. Delays are rounded up
# to two significant digits, so few such queues exist; each disappears when unused.
DELAY_QUEUE_IDLE_MS: Final = 10 * 60 * 1000


def delay_bucket_ms(delay: float) -> int:
    """`delay` seconds in milliseconds, rounded up to two significant digits (at most 10%
    longer): 1.234 s -> 1300 ms."""
    ms = max(1, int(delay * 1000 + 0.999))
    scale = int(10 ** max(0, len(str(ms)) - 2))
    return -(-ms // scale) * scale


@functools.cache
def _make_rabbitmq_broker_class() -> type[Any]:
    # taskiq-aio-pika is the [rabbitmq] extra: imported only when RabbitMQ is configured.
    from aio_pika import DeliveryMode, Message
    from taskiq_aio_pika import AioPikaBroker
    from taskiq_aio_pika.exchange import Exchange
    from taskiq_aio_pika.queue import Queue, QueueType

    class _RabbitJobBroker(AioPikaBroker):
        def __init__(
            self, url: str, *, prefix: str, consume: Sequence[Priority], prefetch: int
        ) -> None:
            self.queue_names = {p: f"{prefix}.jobs.{p.value}" for p in Priority}
            self.exchange_name = f"{prefix}.jobs"
            consumed = sorted(set(consume), key=lambda p: p.rank)
            super().__init__(
                url,
                qos=prefetch,
                exchange=Exchange(name=self.exchange_name),
                task_queues=[
                    Queue(name=self.queue_names[p], type=QueueType.CLASSIC) for p in consumed
                ],
                dead_letter_queue=Queue(name=f"{prefix}.jobs.dead_letter", type=QueueType.CLASSIC),
                label_for_routing="amqp_queue",
                label_for_priority="amqp_priority",
            )
            self._every_queue = [
                Queue(name=name, type=QueueType.CLASSIC) for name in self.queue_names.values()
            ]
            self._delay_queues: set[str] = set()

        async def startup(self) -> None:
            await super().startup()
            # Every priority's queue exists, whichever this process consumes: a message sent
            # to a queue nobody declared yet would be dropped by the exchange.
            consumed, self._task_queues = self._task_queues, self._every_queue
            try:
                assert self.write_channel is not None
                await self._declare_queues(self.write_channel)
            finally:
                self._task_queues = consumed

        async def kick(self, message: BrokerMessage) -> None:
            assert self.write_channel is not None, "start the broker before sending"
            routing_key = self.queue_names[message_priority(message)]
            amqp_message = Message(
                body=message.message,
                headers={"task_id": message.task_id, "task_name": message.task_name},
                delivery_mode=DeliveryMode.PERSISTENT,
            )
            delay = message_delay(message)
            if delay <= 0:
                exchange = await self.write_channel.get_exchange(self.exchange_name, ensure=False)
                await exchange.publish(amqp_message, routing_key=routing_key)
                return
            delay_queue = await self._delay_queue_for(routing_key, delay_bucket_ms(delay))
            await self.write_channel.default_exchange.publish(amqp_message, routing_key=delay_queue)

        async def listen(self) -> AsyncGenerator[AckableMessage, None]:
            """Messages of every consumed queue, higher priorities first: each queue's
            consumer fills one buffer ordered by priority, and the receiver takes from it one
            message at a time as it has room (taskiq's own listener merges queues in arrival
            order)."""
            assert self.read_channel is not None, "start the broker as a worker first"
            await self.read_channel.set_qos(prefetch_count=self._qos)
            declared = await self._declare_queues(self.read_channel)
            rank_of = {name: priority.rank for priority, name in self.queue_names.items()}
            buffer: asyncio.PriorityQueue[tuple[int, int, Any]] = asyncio.PriorityQueue()
            order = itertools.count()

            def consumer(rank: int) -> Callable[[Any], Awaitable[None]]:
                async def on_message(message: Any) -> None:
                    buffer.put_nowait((rank, next(order), message))

                return on_message

            consumers = [
                (queue, await queue.consume(consumer(rank_of[queue.name]), **arguments))
                for queue, arguments in declared
            ]
            try:
                while True:
                    _, _, message = await buffer.get()
                    yield AckableMessage(data=message.body, ack=message.ack)
            finally:
                # Messages still buffered go back to RabbitMQ with this channel.
                for queue, tag in consumers:
                    with contextlib.suppress(Exception):
                        await queue.cancel(tag)

        async def _delay_queue_for(self, routing_key: str, ttl_ms: int) -> str:
            name = f"{routing_key}.delay.{ttl_ms}"
            if name not in self._delay_queues:
                assert self.write_channel is not None
                await self.write_channel.declare_queue(
                    name,
                    durable=True,
                    arguments={
                        "x-message-ttl": ttl_ms,
                        "x-dead-letter-exchange": self.exchange_name,
                        "x-dead-letter-routing-key": routing_key,
                        "x-expires": ttl_ms + DELAY_QUEUE_IDLE_MS,
                    },
                )
                self._delay_queues.add(name)
            return name

        async def depths(self) -> dict[str, int]:
            """Messages waiting in each priority's queue."""
            assert self.write_channel is not None
            depths = {}
            for priority, name in self.queue_names.items():
                queue = await self.write_channel.declare_queue(name, passive=True)
                depths[priority.value] = int(queue.declaration_result.message_count or 0)
            return depths

    return _RabbitJobBroker


def RabbitJobBroker(
    url: str, *, prefix: str, consume: Sequence[Priority] = tuple(Priority), prefetch: int = 4
) -> Any:
    """RabbitMQ: one durable queue per priority behind one exchange; a message is acknowledged
    once its run is recorded, and RabbitMQ hands the unacknowledged messages of a worker whose
    connection dies to another at once. Delays wait in per-delay TTL queues."""
    return _make_rabbitmq_broker_class()(url, prefix=prefix, consume=consume, prefetch=prefetch)
