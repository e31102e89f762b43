"""The taskiq brokers jobs travel on: in-process (embedded) or Redis Streams.

Both carry one queue per priority and honour a `delay` label (taskiq's own in-memory and Redis
brokers ignore it, STACK.md), so a retry really waits on every broker. A message is only
`{run_id, token}`; the run's arguments stay in `job_runs`.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from typing import Any, Final

from taskiq import AsyncBroker
from taskiq.message import BrokerMessage

from tradeos.core.jobs.definitions import Priority

__all__ = ["EmbeddedBroker", "RedisJobBroker", "message_delay", "message_priority"]

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
