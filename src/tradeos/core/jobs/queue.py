"""`JobQueue`: the one way to enqueue a job, and the machinery that runs them.

    run = await jobs.enqueue(session, sync_candles, {"symbol": "BTC-USD"}, owner_id=user.id)

`enqueue` writes the run to `job_runs` in the caller's unit of work and sends it only after
that commits (nothing is sent if it rolls back). Where jobs run is configuration: in the `serve`
process on the embedded broker, or in `tradeos worker` processes on Redis Streams.

A run's life: queued -> running -> succeeded, or, when an attempt raises or outlives the job's
timeout, queued again after an exponential backoff (the broker really waits) until its attempts
are used up -> failed, with the error kept. An admin may send a failed run again. A run whose
worker died mid-attempt is sent again (at-least-once delivery): by Redis, which hands an
unacknowledged message to another worker, and by the next worker or `serve` to start, which
sends again the runs of workers no longer seen.
"""

from __future__ import annotations

import asyncio
import functools
import os
import secrets
import socket
import time
from collections.abc import Coroutine, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Final

import structlog
from taskiq import AsyncBroker
from taskiq.receiver import Receiver

from tradeos.core.db import utcnow
from tradeos.core.errors import Conflict, NotFound
from tradeos.core.jobs import runs
from tradeos.core.jobs.brokers import (
    DELAY_LABEL,
    PRIORITY_LABEL,
    EmbeddedBroker,
    RabbitJobBroker,
    RedisJobBroker,
)
from tradeos.core.jobs.context import JobContext
from tradeos.core.jobs.definitions import JOBS, WORKER_START_HOOKS, JobDefinition, Priority
from tradeos.core.jobs.models import JobRun, RunStatus
from tradeos.core.redis import REDIS_ERRORS
from tradeos.core.transactions import after_commit, flush_after_commit

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession

    from tradeos.config import Settings
    from tradeos.core.cache import Cache
    from tradeos.core.db import Database
    from tradeos.core.events import EventBus
    from tradeos.core.storage import FileStorage

__all__ = ["JobQueue"]

logger = structlog.get_logger("tradeos.jobs")

# The `on_worker_start` hooks this process has run (once each, whatever the number of queues).
_HOOKS_RUN: set[Any] = set()


async def _run_worker_start_hooks() -> None:
    """Each registered `on_worker_start` hook not run yet in this process, in a thread, one
    after the other."""
    for hook in list(WORKER_START_HOOKS):
        if hook in _HOOKS_RUN:
            continue
        _HOOKS_RUN.add(hook)
        name = getattr(hook, "__qualname__", repr(hook))
        started = time.perf_counter()
        try:
            await asyncio.to_thread(hook)
        except Exception as exc:
            logger.warning("worker_start_hook_failed", hook=name, error=repr(exc))
        else:
            seconds = round(time.perf_counter() - started, 3)
            logger.info("worker_start_hook_done", hook=name, seconds=seconds)


# Module-level so tests can shorten them.
HEARTBEAT_SECONDS: float = 10.0
# A worker not seen for this long is gone: its running runs are sent again.
WORKER_GONE_AFTER_SECONDS: float = 60.0
PROMOTE_INTERVAL_SECONDS: float = 0.5
# A run that could not be claimed (database down) is tried again this much later.
CLAIM_RETRY_SECONDS: float = 5.0
# On stop, running jobs get this long to finish before they are interrupted and handed back.
SHUTDOWN_GRACE_SECONDS: float = 10.0
# Redis hands a message over only after it has been idle longer than any job may run.
REDELIVERY_MARGIN_SECONDS: Final = 60.0
MAX_RECEIVER_BACKOFF_SECONDS: Final = 5.0


class JobQueue:
    def __init__(
        self,
        settings: Settings,
        *,
        database: Database,
        events: EventBus,
        cache: Cache,
        storage: FileStorage,
        consume: Sequence[Priority] = tuple(Priority),
        concurrency: int | None = None,
    ) -> None:
        if not consume:
            raise ValueError("consume at least one queue")
        self.settings = settings
        self.database = database
        self.events = events
        self.cache = cache
        self.storage = storage
        self.backend = settings.broker_backend  # "memory" | "redis" | "rabbitmq"
        self.consume = tuple(sorted(set(consume), key=lambda p: p.rank))
        self.concurrency = concurrency or settings.jobs_concurrency
        self.worker_id = f"{socket.gethostname()[:60]}:{os.getpid()}:{secrets.token_hex(3)}"
        self.broker: AsyncBroker = self._make_broker()
        self._registered: set[str] = set()
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._releasing: set[asyncio.Future[None]] = set()
        self._running: set[asyncio.Task[Any]] = set()
        self._stopping = asyncio.Event()
        self._started = False

    # -- set-up -------------------------------------------------------------------------------

    def _make_broker(self) -> AsyncBroker:
        if self.backend == "memory":
            return EmbeddedBroker()
        if self.backend == "rabbitmq":
            assert self.settings.rabbitmq_url, "the RabbitMQ job broker needs RABBITMQ_URL"
            rabbit: AsyncBroker = RabbitJobBroker(
                self.settings.rabbitmq_url.get_secret_value(),
                # The deployment's one naming prefix, so deployments can share a RabbitMQ too.
                prefix=self.settings.redis_key_prefix,
                consume=self.consume,
                prefetch=self.concurrency,
            )
            return rabbit
        assert self.settings.redis_url, "the Redis job broker needs REDIS_URL"
        longest = max((d.timeout for d in JOBS.values()), default=0.0)
        broker: AsyncBroker = RedisJobBroker(
            self.settings.redis_url,
            prefix=self.settings.redis_key_prefix,
            consume=self.consume,
            redeliver_after_seconds=max(
                self.settings.jobs_redeliver_after_seconds, longest + REDELIVERY_MARGIN_SECONDS
            ),
            read_count=self.concurrency,
            consumer_name=self.worker_id,
        )
        return broker

    def _register_jobs(self) -> None:
        for name in JOBS:
            if name not in self._registered:
                self.broker.register_task(self._task_for(name), task_name=name)
                self._registered.add(name)

    def _task_for(self, name: str) -> Any:
        async def run_job(run_id: int, token: str) -> None:
            await self._execute(name, run_id, token)

        run_job.__name__ = run_job.__qualname__ = name.replace(".", "_")
        return run_job

    async def start(self) -> None:
        """Ready to send jobs (every process that enqueues calls this). An unreachable Redis
        does not stop the start: sends fail (and are recorded) until it is back."""
        self._register_jobs()
        try:
            await self.broker.startup()
        except (*REDIS_ERRORS, *_amqp_errors()) as exc:
            logger.warning("job_broker_unreachable", backend=self.backend, error=repr(exc))
        self._started = True

    async def start_consuming(self) -> None:
        """Also run jobs in this process: `serve` in embedded mode, `tradeos worker`. With the
        database or Redis down, it starts anyway and catches up when they are back."""
        if not self._started:
            # Consuming brokers open their reading side at start-up (RabbitMQ).
            self.broker.is_worker_process = True
            await self.start()
        elif self.backend == "rabbitmq" and not self.broker.is_worker_process:
            raise RuntimeError("call start_consuming() instead of start() to consume RabbitMQ")
        # In the background: a first start compiles for some seconds, and the process must
        # answer meanwhile. A job that comes first compiles what it needs itself.
        self._spawn("worker-start-hooks", _run_worker_start_hooks())
        recovered = await self._recover()
        self._spawn("receiver", self._receive())
        self._spawn("heartbeat", self._heartbeat_loop(recovered=recovered))
        if self.backend == "redis":
            self._spawn("promoter", self._promote_loop())
        logger.info(
            "job_worker_started",
            worker=self.worker_id,
            backend=self.backend,
            queues=[p.value for p in self.consume],
            concurrency=self.concurrency,
        )

    @property
    def consuming(self) -> bool:
        return "receiver" in self._tasks

    def _spawn(self, name: str, coroutine: Coroutine[Any, Any, None]) -> None:
        self._tasks[name] = asyncio.get_running_loop().create_task(
            coroutine, name=f"tradeos-jobs:{name}"
        )

    async def aclose(self) -> None:
        """Stop: take no more jobs, give running ones SHUTDOWN_GRACE_SECONDS to finish, hand
        the rest back to the queue (their attempt uncounted), then close the broker."""
        receiver = self._tasks.pop("receiver", None)
        if receiver is not None:
            self._stopping.set()
            await asyncio.wait([receiver], timeout=SHUTDOWN_GRACE_SECONDS)
            receiver.cancel()
            for running in list(self._running):
                running.cancel()
            await asyncio.wait([receiver, *self._running])
            if self._releasing:
                await asyncio.wait(list(self._releasing))
            # Handed-back runs are sent again (Redis) before the broker closes.
            await flush_after_commit()
        for name in ("promoter", "heartbeat"):
            task = self._tasks.pop(name, None)
            if task is not None:
                task.cancel()
                await asyncio.wait([task])
        if self._started:
            self._started = False
            await self.broker.shutdown()

    # -- sending ------------------------------------------------------------------------------

    async def enqueue(
        self,
        session: AsyncSession,
        definition: JobDefinition,
        arguments: Mapping[str, Any] | None = None,
        *,
        owner_id: int | None = None,
        delay: float = 0.0,
    ) -> JobRun:
        """Record a run of `definition` in the caller's unit of work and send it once that
        commits. `arguments` are JSON values (ids, not data); `owner_id` is the user whose
        `jobs` channel follows the run; `delay` holds it back that many seconds."""
        if JOBS.get(definition.name) is not definition:
            raise ValueError(f"{definition.name!r} is not a declared job")
        if delay < 0:
            raise ValueError("delay must not be negative")
        run = runs.new_run(
            definition,
            dict(arguments or {}),
            owner_id=owner_id,
            run_after=utcnow() + timedelta(seconds=delay),
        )
        session.add(run)
        await session.flush()
        self._announce(session, run.owner_id, _run_event(run))
        self.send_after_commit(session, run.id, run.name, run.queue, run.token, delay)
        return run

    async def enqueue_now(
        self,
        definition: JobDefinition,
        arguments: Mapping[str, Any] | None = None,
        *,
        owner_id: int | None = None,
        delay: float = 0.0,
    ) -> JobRun:
        """`enqueue` in a unit of work of its own (outside requests: CLI, jobs, schedules)."""
        async with self.database.session() as session:
            return await self.enqueue(
                session, definition, arguments, owner_id=owner_id, delay=delay
            )

    def send_after_commit(
        self,
        session: AsyncSession,
        run_id: int,
        name: str,
        queue: str,
        token: str,
        delay: float = 0.0,
    ) -> None:
        after_commit(
            session, functools.partial(self._send_or_fail, run_id, name, queue, token, delay)
        )

    async def send(
        self, run_id: int, name: str, queue: str, token: str, delay: float = 0.0
    ) -> None:
        """Put one message for the run on the broker (the run is already recorded)."""
        task = self.broker.find_task(name)
        if task is None:
            raise LookupError(f"no job named {name!r} in this process")
        labels: dict[str, Any] = {PRIORITY_LABEL: queue}
        if delay > 0:
            labels[DELAY_LABEL] = round(delay, 3)
        await task.kicker().with_labels(**labels).kiq(run_id=run_id, token=token)

    async def _send_or_fail(
        self, run_id: int, name: str, queue: str, token: str, delay: float
    ) -> None:
        try:
            await self.send(run_id, name, queue, token, delay)
        except Exception as exc:
            # Committed but not sent: recorded as failed, so it is seen and can be retried.
            logger.error("job_send_failed", run_id=run_id, job=name, error=repr(exc))
            async with self.database.session() as session:
                await runs.fail(session, run_id, token, f"could not be queued: {exc!r}")

    async def requeue_orphans(self) -> int:
        """Send again the runs whose worker is gone; in embedded mode, every queued run too
        (the in-process queue ended with the process that held it)."""
        since = utcnow() - timedelta(seconds=WORKER_GONE_AFTER_SECONDS)
        now = utcnow()
        async with self.database.session() as session:
            live = await runs.live_worker_ids(session, since) | {self.worker_id}
            resends = await runs.take_orphans(
                session, live_workers=live, include_queued=self.backend == "memory"
            )
            for run in resends:
                delay = max(0.0, (run.run_after - now).total_seconds())
                self.send_after_commit(session, run.id, run.name, run.queue, run.token, delay)
        if resends:
            logger.info("job_runs_requeued", count=len(resends), worker=self.worker_id)
        return len(resends)

    async def retry_failed(self, session: AsyncSession, run_id: int) -> JobRun:
        """An admin's retry: a failed run is queued again with a fresh budget of attempts."""
        run = await runs.requeue_failed(session, run_id)
        if run is None:
            raise NotFound(f"No job run {run_id}.")
        if run.status != RunStatus.QUEUED or run.attempts != 0:
            raise Conflict(f"Job run {run_id} is {run.status}; only a failed run can be retried.")
        self._announce(session, run.owner_id, _run_event(run))
        self.send_after_commit(session, run.id, run.name, run.queue, run.token)
        return run

    # -- running ------------------------------------------------------------------------------

    async def _execute(self, name: str, run_id: int, token: str) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._running.add(task)
        try:
            await self._attempt(name, run_id, token)
        finally:
            self._running.discard(task)

    async def _attempt(self, name: str, run_id: int, token: str) -> None:
        try:
            async with self.database.session() as session:
                claimed = await runs.claim(session, run_id, token, self.worker_id)
                if claimed is not None:
                    self._announce(
                        session, claimed.owner_id, _event(claimed, RunStatus.RUNNING, name=name)
                    )
        except Exception as exc:
            # The database is unreachable: this message is acknowledged when we return, so
            # the run is sent again for later rather than left queued with no message.
            logger.warning("job_claim_failed", run_id=run_id, job=name, error=repr(exc))
            await self.send(run_id, name, _queue_of(name), token, CLAIM_RETRY_SECONDS)
            return
        if claimed is None:
            logger.info("job_message_stale", run_id=run_id, job=name)
            return
        definition = JOBS.get(name)
        if definition is None:  # pragma: no cover - tasks are registered from JOBS
            await self._finish_failed(claimed, name, f"no job named {name!r} in this worker")
            return
        log = logger.bind(job=name, run_id=run_id, attempt=claimed.attempts)
        context = JobContext(
            run_id=run_id,
            name=name,
            attempt=claimed.attempts,
            max_attempts=claimed.max_attempts,
            owner_id=claimed.owner_id,
            queue=self,
            _token=token,
        )
        deadline = asyncio.timeout(definition.timeout)
        try:
            async with deadline:
                result = await definition.function(context, **claimed.arguments)
        except Exception as exc:
            if _being_cancelled():
                # Cancelled in the middle of a database call, which then failed its own way.
                self._hand_back(claimed, name)
                raise asyncio.CancelledError from exc
            if isinstance(exc, TimeoutError) and deadline.expired():
                error = f"TimeoutError: ran past the job's timeout of {definition.timeout:g} s"
            else:
                error = runs.describe_error(exc)
            log.warning("job_attempt_failed", error=error.splitlines()[-1][:300])
            await self._after_failure(definition, claimed, error)
            return
        except asyncio.CancelledError:
            self._hand_back(claimed, name)
            raise
        async with self.database.session() as session:
            if await runs.succeed(session, claimed, result):
                self._announce(
                    session, claimed.owner_id, _event(claimed, RunStatus.SUCCEEDED, name=name)
                )
        log.info("job_succeeded")

    def _hand_back(self, claimed: runs.ClaimedRun, name: str) -> None:
        """This process is stopping mid-run: the run goes back to the queue, its attempt
        uncounted. In a task of its own, which aclose() awaits: nothing more can be awaited
        in a task being cancelled."""
        release = asyncio.ensure_future(self._release(claimed, name))
        self._releasing.add(release)
        release.add_done_callback(self._releasing.discard)

    async def _after_failure(
        self, definition: JobDefinition, claimed: runs.ClaimedRun, error: str
    ) -> None:
        if claimed.attempts >= claimed.max_attempts:
            await self._finish_failed(claimed, definition.name, error)
            return
        delay = definition.retry_delay(claimed.attempts)
        async with self.database.session() as session:
            token = await runs.retry_later(session, claimed, error, delay)
            if token is not None:
                self._announce(
                    session,
                    claimed.owner_id,
                    _event(claimed, RunStatus.QUEUED, name=definition.name, error=error),
                )
                self.send_after_commit(
                    session, claimed.id, definition.name, definition.priority, token, delay
                )

    async def _finish_failed(self, claimed: runs.ClaimedRun, name: str, error: str) -> None:
        async with self.database.session() as session:
            if await runs.fail(session, claimed.id, claimed.token, error):
                self._announce(
                    session,
                    claimed.owner_id,
                    _event(claimed, RunStatus.FAILED, name=name, error=error),
                )
        logger.error("job_failed", job=name, run_id=claimed.id, attempts=claimed.attempts)

    async def _release(self, claimed: runs.ClaimedRun, name: str) -> None:
        try:
            async with self.database.session() as session:
                token = await runs.release(session, claimed)
                if token is not None and self.backend != "memory":
                    # Redis keeps it for the other workers; the embedded queue ends with this
                    # process, and the next start sends queued runs again.
                    self.send_after_commit(session, claimed.id, name, _queue_of(name), token)
        except Exception as exc:
            logger.error("job_release_failed", run_id=claimed.id, error=repr(exc))

    async def report_progress(self, context: JobContext, percent: int, message: str | None) -> None:
        if isinstance(percent, bool) or not isinstance(percent, int) or not 0 <= percent <= 100:
            raise ValueError("progress is a whole percentage from 0 to 100")
        text = (message or "").strip()[: runs.MAX_PROGRESS_MESSAGE] or None
        async with self.database.session() as session:
            updated = await runs.set_progress(
                session, context.run_id, context._token, percent, text
            )
            if updated:
                self._announce(
                    session,
                    context.owner_id,
                    {
                        "id": context.run_id,
                        "name": context.name,
                        "status": RunStatus.RUNNING.value,
                        "progress": percent,
                        "progress_message": text,
                    },
                )

    def _announce(
        self, session: AsyncSession, owner_id: int | None, payload: dict[str, Any]
    ) -> None:
        """Tell the run's owner (their `jobs` channel) once the change commits. Queued with the
        sends, in order: a client never hears "running" before "queued"."""
        if owner_id is None:
            return
        topic = f"user:{owner_id}:jobs"
        after_commit(session, functools.partial(self._publish, topic, dict(payload)))

    async def _publish(self, topic: str, payload: dict[str, Any]) -> None:
        try:
            await self.events.publish(topic, payload)
        except Exception as exc:  # the state change stands; a lost event is only a lost hint
            logger.warning("job_event_not_published", topic=topic, error=repr(exc))

    # -- background loops ---------------------------------------------------------------------

    async def _receive(self) -> None:
        """taskiq's receiver over our broker, restarted (with a growing pause) if the broker
        fails, e.g. while Redis is unreachable."""
        pause = 0.5
        prepare: Any = getattr(self.broker, "_declare_consumer_group", None)
        with ThreadPoolExecutor(max_workers=1) as executor:
            while True:
                receiver = Receiver(
                    broker=self.broker,
                    executor=executor,
                    validate_params=True,
                    max_async_tasks=self.concurrency,
                    max_prefetch=0,
                    propagate_exceptions=True,
                    run_startup=False,
                    wait_tasks_timeout=SHUTDOWN_GRACE_SECONDS,
                )
                try:
                    if prepare is not None:
                        await prepare()  # the streams' consumer group, if Redis was down
                    await receiver.listen(self._stopping)
                    return
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    logger.error("job_receiver_failed", error=repr(exc), retry_in=pause)
                    await asyncio.sleep(pause)
                    pause = min(pause * 2, MAX_RECEIVER_BACKOFF_SECONDS)

    async def _heartbeat(self) -> None:
        async with self.database.session() as session:
            await runs.heartbeat(
                session,
                self.worker_id,
                kind="worker",
                queues=",".join(p.value for p in self.consume),
                concurrency=self.concurrency,
            )

    async def _recover(self) -> bool:
        """Announce this worker and take over the runs of the gone; False if the database
        could not be reached (the heartbeat loop tries again)."""
        try:
            await self._heartbeat()
            await self.requeue_orphans()
        except Exception as exc:
            logger.warning("job_recovery_postponed", error=repr(exc))
            return False
        return True

    async def _heartbeat_loop(self, *, recovered: bool) -> None:
        while True:
            await asyncio.sleep(HEARTBEAT_SECONDS)
            if not recovered:
                recovered = await self._recover()
                continue
            try:
                await self._heartbeat()
            except Exception as exc:
                logger.warning("job_heartbeat_failed", error=repr(exc))

    async def _promote_loop(self) -> None:
        promote = self.broker.promote_due  # type: ignore[attr-defined]
        while True:
            try:
                await promote()
                await asyncio.sleep(PROMOTE_INTERVAL_SECONDS)
            except Exception as exc:
                logger.warning("job_promote_failed", error=repr(exc))
                await asyncio.sleep(MAX_RECEIVER_BACKOFF_SECONDS)

    async def wait_idle(self, timeout: float = 10.0) -> None:  # noqa: ASYNC109
        """Wait until no run is queued or running (tests, `tradeos` one-off commands)."""
        async with asyncio.timeout(timeout):
            while True:
                async with self.database.session(write=False) as session:
                    counts = await runs.count_by(
                        session, JobRun.status.in_((RunStatus.QUEUED, RunStatus.RUNNING))
                    )
                if not counts:
                    return
                await asyncio.sleep(0.05)


def _queue_of(name: str) -> Priority:
    """The queue a job's runs go to (default for a job this process does not know)."""
    definition = JOBS.get(name)
    return definition.priority if definition is not None else Priority.DEFAULT


def _amqp_errors() -> tuple[type[Exception], ...]:
    try:
        from aiormq.exceptions import AMQPError
    except ImportError:  # the RabbitMQ extra is not installed
        return ()
    return (AMQPError,)


def _being_cancelled() -> bool:
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


def _run_event(run: JobRun) -> dict[str, Any]:
    return {
        "id": run.id,
        "name": run.name,
        "status": str(run.status),
        "attempts": run.attempts,
        "max_attempts": run.max_attempts,
        "progress": run.progress,
    }


def _event(
    claimed: runs.ClaimedRun, status: RunStatus, *, name: str, error: str | None = None
) -> dict[str, Any]:
    event: dict[str, Any] = {
        "id": claimed.id,
        "name": name,
        "status": status.value,
        "attempts": claimed.attempts,
        "max_attempts": claimed.max_attempts,
    }
    if status == RunStatus.SUCCEEDED:
        event["progress"] = 100
    if error is not None:
        event["error"] = error.splitlines()[-1][:300]
    return event
