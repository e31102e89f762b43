"""Background jobs: run, retried with real delays, timed out, failed, prioritised, recorded in
job_runs, sent only after commit, and never lost when a worker dies or the process restarts.

Each behaviour runs on the in-process broker and, when TEST_REDIS_URL is set, on Redis Streams
with the jobs run by a separate `tradeos worker` process.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, update

from tests.conftest import TEST_AMQP_URL, TEST_REDIS_URL
from tests.core import sample_jobs
from tradeos.config import Settings
from tradeos.core.cache import make_cache
from tradeos.core.db import Database, utcnow
from tradeos.core.events import make_event_bus
from tradeos.core.jobs import Every, JobQueue, JobRun, JobWorker, RunStatus, Scheduler
from tradeos.core.jobs import queue as queue_module
from tradeos.core.storage import make_storage
from tradeos.core.transactions import flush_after_commit

REPO_ROOT = Path(__file__).resolve().parents[2]
needs_redis = pytest.mark.skipif(not TEST_REDIS_URL, reason="needs TEST_REDIS_URL")
needs_rabbitmq = pytest.mark.skipif(not TEST_AMQP_URL, reason="needs TEST_AMQP_URL")


# -- fixtures ---------------------------------------------------------------------------------


class WorkerProcess:
    """`tradeos worker` in a process of its own, sharing the test's database and broker."""

    def __init__(
        self, database_url: str, prefix: str, data_dir: Path, broker: str = "redis"
    ) -> None:
        self.env = {
            **os.environ,
            "PYTHONPATH": str(REPO_ROOT),
            "ENVIRONMENT": "test",
            "DATA_DIR": str(data_dir),
            "DATABASE_URL": database_url,
            "REDIS_URL": TEST_REDIS_URL or "",
            "REDIS_KEY_PREFIX": prefix,
            "LOG_LEVEL": "WARNING",
            "JOBS_BROKER": broker,
            "RABBITMQ_URL": TEST_AMQP_URL or "",
        }
        self.process: subprocess.Popen[str] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tradeos",
                "worker",
                "--module",
                "tests.core.sample_jobs",
                "--concurrency",
                "1",
            ],
            env=self.env,
            cwd=REPO_ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        assert self.process.stdout is not None
        deadline = time.monotonic() + 30
        for line in self.process.stdout:
            if line.startswith("TradeOS worker"):
                return
            if time.monotonic() > deadline:  # pragma: no cover - diagnostic
                break
        raise AssertionError(f"the worker did not start (exit code {self.process.poll()})")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(sig)
            self.process.wait(timeout=20)
        self.process = None


@pytest.fixture(scope="module")
def module_prefix() -> str:
    return f"test-jobs-{uuid.uuid4().hex[:12]}"


@pytest.fixture(scope="module")
def worker_process(
    database_url: str, module_prefix: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[WorkerProcess]:
    worker = WorkerProcess(database_url, module_prefix, tmp_path_factory.mktemp("worker"))
    worker.start()
    yield worker
    worker.stop()


@pytest.fixture(scope="module")
def rabbitmq_worker_process(
    database_url: str, module_prefix: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[WorkerProcess]:
    worker = WorkerProcess(
        database_url, module_prefix, tmp_path_factory.mktemp("rabbit"), broker="rabbitmq"
    )
    worker.start()
    yield worker
    worker.stop()


def make_queue(settings: Settings, database: Database, **options: Any) -> JobQueue:
    return JobQueue(
        settings,
        database=database,
        events=make_event_bus(settings),
        cache=make_cache(settings),
        storage=make_storage(settings),
        **options,
    )


async def close_queue(queue: JobQueue) -> None:
    await flush_after_commit()
    await queue.aclose()
    await queue.events.aclose()
    await queue.cache.aclose()


@pytest.fixture(
    params=[
        "memory",
        pytest.param("redis", marks=needs_redis),
        pytest.param("rabbitmq", marks=needs_rabbitmq),
    ]
)
async def jobs(
    request: pytest.FixtureRequest,
    settings_factory: Callable[..., Settings],
    database: Database,
    module_prefix: str,
) -> AsyncIterator[JobQueue]:
    """A queue whose jobs run: in this process (memory), or in a `tradeos worker` (redis,
    rabbitmq)."""
    if request.param == "memory":
        settings = settings_factory(jobs_broker="memory", redis_url=None)
        queue = make_queue(settings, database, concurrency=1)
        await queue.start_consuming()
    elif request.param == "redis":
        request.getfixturevalue("worker_process")
        settings = settings_factory(jobs_broker="redis", redis_key_prefix=module_prefix)
        queue = make_queue(settings, database)
        await queue.start()
    else:
        request.getfixturevalue("rabbitmq_worker_process")
        settings = settings_factory(
            jobs_broker="rabbitmq", rabbitmq_url=TEST_AMQP_URL, redis_key_prefix=module_prefix
        )
        queue = make_queue(settings, database)
        await queue.start()
    yield queue
    await close_queue(queue)


async def wait_for(
    database: Database,
    run_id: int,
    *statuses: RunStatus,
    within: float = 15.0,
) -> JobRun:
    async with asyncio.timeout(within):
        while True:
            async with database.session(write=False) as session:
                run = await session.get(JobRun, run_id)
            assert run is not None
            if run.status in statuses:
                return run
            await asyncio.sleep(0.05)


# -- running, retrying, timing out ------------------------------------------------------------


async def test_a_job_runs_and_its_run_is_recorded(jobs: JobQueue, database: Database) -> None:
    run = await jobs.enqueue_now(sample_jobs.record, {"value": 7}, owner_id=3)
    assert (run.status, run.attempts, run.queue) == (RunStatus.QUEUED, 0, "default")
    assert run.arguments_summary == '{"value":7}'

    done = await wait_for(database, run.id, RunStatus.SUCCEEDED, RunStatus.FAILED)
    assert done.status == RunStatus.SUCCEEDED
    assert done.result_summary == '{"attempt":1,"value":7}'
    assert (done.attempts, done.progress, done.error, done.owner_id) == (1, 100, None, 3)
    assert done.started_at is not None and done.finished_at is not None
    assert done.created_at <= done.started_at <= done.finished_at


async def test_a_failing_job_is_retried_after_real_delays(
    jobs: JobQueue, database: Database
) -> None:
    # Fails twice; backoff 0.5 s then 1 s: the third attempt cannot start before 1.5 s.
    run = await jobs.enqueue_now(sample_jobs.flaky, {"fail_times": 2})
    waiting = await wait_for(database, run.id, RunStatus.QUEUED, within=5)
    while waiting.attempts < 1:
        waiting = await wait_for(database, run.id, RunStatus.QUEUED)
    assert waiting.error is not None and "ValueError: attempt 1 failed" in waiting.error
    assert waiting.run_after > waiting.updated_at  # waiting out its backoff

    done = await wait_for(database, run.id, RunStatus.SUCCEEDED, RunStatus.FAILED)
    assert done.status == RunStatus.SUCCEEDED
    assert done.attempts == 3
    assert done.result_summary == '{"attempt":3}'
    assert done.finished_at is not None
    assert done.finished_at - done.created_at >= timedelta(seconds=1.5)


async def test_a_job_that_keeps_failing_ends_failed_with_its_error(
    jobs: JobQueue, database: Database
) -> None:
    run = await jobs.enqueue_now(sample_jobs.flaky, {"fail_times": 99})
    done = await wait_for(database, run.id, RunStatus.SUCCEEDED, RunStatus.FAILED)
    assert done.status == RunStatus.FAILED
    assert (done.attempts, done.max_attempts) == (3, 3)
    assert done.error is not None and "ValueError: attempt 3 failed" in done.error
    assert done.finished_at is not None


async def test_a_job_past_its_timeout_is_stopped_and_ends_failed(
    jobs: JobQueue, database: Database
) -> None:
    started = time.monotonic()
    run = await jobs.enqueue_now(sample_jobs.slow, {"seconds": 30})
    done = await wait_for(database, run.id, RunStatus.SUCCEEDED, RunStatus.FAILED)
    assert done.status == RunStatus.FAILED
    assert done.attempts == 2
    assert done.error is not None and "timeout of 0.5 s" in done.error
    assert time.monotonic() - started < 10  # stopped, not slept through


async def test_progress_is_recorded_and_sent_to_the_owners_jobs_channel(
    jobs: JobQueue, database: Database
) -> None:
    if jobs.backend != "memory" and jobs.events.backend != "redis":
        pytest.skip("events reach another process only through Redis")
    async with jobs.events.subscribe("user:42:jobs", "user:43:jobs") as events:
        run = await jobs.enqueue_now(sample_jobs.progress, {"hold": 1.0}, owner_id=42)
        async with asyncio.timeout(10):
            while True:
                async with database.session(write=False) as session:
                    current = await session.get(JobRun, run.id)
                assert current is not None
                if current.progress == 50:
                    break
                await asyncio.sleep(0.05)
        assert (current.status, current.progress_message) == (RunStatus.RUNNING, "halfway")
        await wait_for(database, run.id, RunStatus.SUCCEEDED)

        seen = []
        async with asyncio.timeout(5):
            while not seen or seen[-1]["status"] != "succeeded":
                event = await events.get()
                assert event is not None
                assert event.topic == "user:42:jobs"  # nothing for anybody else
                seen.append(event.payload)
    assert [(e["status"], e.get("progress")) for e in seen] == [
        ("queued", 0),
        ("running", None),
        ("running", 50),
        ("succeeded", 100),
    ]
    assert {e["id"] for e in seen} == {run.id}


async def test_higher_priorities_run_first(jobs: JobQueue, database: Database) -> None:
    # One job at a time: while it runs, a low, a default and a high one queue up.
    blocker = await jobs.enqueue_now(sample_jobs.progress, {"hold": 1.0})
    await wait_for(database, blocker.id, RunStatus.RUNNING)
    low = await jobs.enqueue_now(sample_jobs.low, {"label": "low"})
    default = await jobs.enqueue_now(sample_jobs.record, {"value": "default"})
    high = await jobs.enqueue_now(sample_jobs.high, {"label": "high"})
    finished = [
        await wait_for(database, run.id, RunStatus.SUCCEEDED) for run in (low, default, high)
    ]
    starts = {run.queue: run.started_at for run in finished}
    assert starts["high"] < starts["default"] < starts["low"]


# -- after commit -----------------------------------------------------------------------------


async def test_a_job_is_sent_only_after_its_transaction_commits(
    jobs: JobQueue, database: Database
) -> None:
    with pytest.raises(RuntimeError, match="changed my mind"):  # noqa: PT012
        async with database.session() as session:
            await jobs.enqueue(session, sample_jobs.record, {"value": "no"})
            raise RuntimeError("changed my mind")
    async with database.session() as session:
        kept = await jobs.enqueue(session, sample_jobs.record, {"value": "yes"})
    await wait_for(database, kept.id, RunStatus.SUCCEEDED)
    await asyncio.sleep(0.2)
    async with database.session(write=False) as session:
        runs = (await session.scalars(select(JobRun))).all()
    assert [(run.arguments_summary, run.status) for run in runs] == [
        ('{"value":"yes"}', RunStatus.SUCCEEDED)
    ]


async def test_bad_arguments_are_refused_where_the_job_is_asked_for(
    jobs: JobQueue, database: Database
) -> None:
    async with database.session() as session:
        with pytest.raises(ValueError, match="JSON values"):
            await jobs.enqueue(session, sample_jobs.record, {"value": object()})
        with pytest.raises(ValueError, match="pass ids"):
            await jobs.enqueue(session, sample_jobs.record, {"value": "x" * 20_000})
        with pytest.raises(ValueError, match="not a declared job"):
            await jobs.enqueue(session, replace(sample_jobs.record, name="sample.other"))


# -- nothing lost -----------------------------------------------------------------------------


async def test_runs_still_queued_at_start_up_are_sent_again(
    settings_factory: Callable[..., Settings], database: Database
) -> None:
    settings = settings_factory(jobs_broker="memory", redis_url=None)
    # A process that queued a job and stopped before running it.
    first = make_queue(settings, database)
    await first.start()
    run = await first.enqueue_now(sample_jobs.record, {"value": "kept"})
    await close_queue(first)
    # And one that died in the middle of a run.
    async with database.session() as session:
        interrupted = JobRun(
            name="sample.record",
            queue="default",
            status=RunStatus.RUNNING,
            arguments={"value": "interrupted"},
            attempts=1,
            max_attempts=2,
            token="a" * 32,
            worker_id="gone:1:abc",
        )
        session.add(interrupted)

    second = make_queue(settings, database)
    await second.start_consuming()
    try:
        done = await wait_for(database, run.id, RunStatus.SUCCEEDED)
        assert done.result_summary == '{"attempt":1,"value":"kept"}'
        resumed = await wait_for(database, interrupted.id, RunStatus.SUCCEEDED)
        assert resumed.attempts == 2
        assert resumed.result_summary == '{"attempt":2,"value":"interrupted"}'
    finally:
        await close_queue(second)


async def test_a_stale_message_does_not_run_a_run_again(jobs: JobQueue, database: Database) -> None:
    run = await jobs.enqueue_now(sample_jobs.record, {"value": 1})
    done = await wait_for(database, run.id, RunStatus.SUCCEEDED)
    # The same message delivered again (at-least-once), and one with an old token.
    await jobs.send(run.id, run.name, run.queue, run.token)
    await jobs.send(run.id, run.name, run.queue, "0" * 32)
    await asyncio.sleep(0.5)
    async with database.session(write=False) as session:
        again = await session.get(JobRun, run.id)
    assert again is not None
    assert (again.attempts, again.finished_at) == (1, done.finished_at)


@pytest.mark.parametrize(
    "broker",
    [pytest.param("redis", marks=needs_redis), pytest.param("rabbitmq", marks=needs_rabbitmq)],
)
async def test_a_job_whose_worker_dies_is_run_by_another_worker(
    settings_factory: Callable[..., Settings],
    database: Database,
    database_url: str,
    tmp_path: Path,
    broker: str,
) -> None:
    prefix = f"test-jobs-{uuid.uuid4().hex[:12]}"
    settings = settings_factory(
        jobs_broker=broker, redis_key_prefix=prefix, rabbitmq_url=TEST_AMQP_URL
    )
    queue = make_queue(settings, database)
    await queue.start()
    doomed = WorkerProcess(database_url, prefix, tmp_path / "doomed", broker)
    doomed.start()
    try:
        run = await queue.enqueue_now(sample_jobs.sleepy, {"seconds": 60})
        running = await wait_for(database, run.id, RunStatus.RUNNING)
        doomed.stop(signal.SIGKILL)  # no clean-up, no acknowledgement
        # Time passes: the dead worker's heartbeat grows old.
        async with database.session() as session:
            await session.execute(
                update(JobWorker)
                .where(JobWorker.id == running.worker_id)
                .values(last_seen_at=utcnow() - timedelta(minutes=10))
            )
            await session.execute(
                update(JobRun).where(JobRun.id == run.id).values(arguments={"seconds": 0.1})
            )
        rescuer = WorkerProcess(database_url, prefix, tmp_path / "rescuer", broker)
        rescuer.start()
        try:
            done = await wait_for(database, run.id, RunStatus.SUCCEEDED, RunStatus.FAILED)
        finally:
            rescuer.stop()
        assert done.status == RunStatus.SUCCEEDED
        assert done.attempts == 2
        assert done.worker_id != running.worker_id
    finally:
        doomed.stop()
        await close_queue(queue)


async def test_a_stopping_worker_hands_its_run_back_uncounted(
    settings_factory: Callable[..., Settings],
    database: Database,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(queue_module, "SHUTDOWN_GRACE_SECONDS", 0.2)
    settings = settings_factory(jobs_broker="memory", redis_url=None)
    queue = make_queue(settings, database)
    await queue.start_consuming()
    run = await queue.enqueue_now(sample_jobs.sleepy, {"seconds": 60})
    await wait_for(database, run.id, RunStatus.RUNNING)
    started = time.monotonic()
    await close_queue(queue)
    assert time.monotonic() - started < 5
    async with database.session(write=False) as session:
        handed_back = await session.get(JobRun, run.id)
    assert handed_back is not None
    assert (handed_back.status, handed_back.attempts) == (RunStatus.QUEUED, 0)


# -- schedules --------------------------------------------------------------------------------


async def test_a_schedule_fires_once_per_period_with_two_schedulers(
    settings_factory: Callable[..., Settings], database: Database, captured_logs: Any
) -> None:
    every_second = replace(sample_jobs.tick, schedule=Every(seconds=1))
    settings = settings_factory(jobs_broker="memory", redis_url=None)
    queues = [make_queue(settings, database) for _ in range(2)]
    for queue in queues:
        await queue.start_consuming()
    schedulers = [asyncio.create_task(Scheduler(queue, [every_second]).run()) for queue in queues]
    started = utcnow()
    await asyncio.sleep(3.5)
    for task in schedulers:
        task.cancel()
    await asyncio.gather(*schedulers, return_exceptions=True)
    ended = utcnow()
    for queue in queues:
        await close_queue(queue)

    async with database.session(write=False) as session:
        fired = (await session.execute(select(JobRun.schedule_key, JobRun.status))).all()
    keys = sorted(key for key, _ in fired)
    periods = [
        every_second.schedule.next_after(started + timedelta(seconds=n))  # type: ignore[union-attr]
        for n in range(5)
    ]
    key_of = {p: f"sample.tick@{p:%Y-%m-%dT%H:%M:%SZ}" for p in periods}
    # Every period that surely passed fired, each once, and nothing else fired.
    surely = [key_of[p] for p in periods if p <= ended - timedelta(seconds=0.5)]
    assert set(surely) <= set(keys) <= set(key_of.values())
    assert len(surely) >= 3
    # Both schedulers tried each period; one of them found it taken.
    won = len(captured_logs.events("schedule_fired"))
    lost = len(captured_logs.events("schedule_already_fired"))
    assert won == len(keys)
    assert lost >= len(surely)
    assert {status for _, status in fired} <= {RunStatus.SUCCEEDED, RunStatus.QUEUED}


def test_schedules_compute_the_same_fire_times_everywhere() -> None:
    from datetime import UTC, datetime

    from tradeos.core.jobs import Cron

    moment = datetime(2026, 11, 21, 10, 7, 30, tzinfo=UTC)
    assert Every(minutes=5).next_after(moment) == datetime(2026, 11, 21, 10, 10, tzinfo=UTC)
    assert Every(hours=1).next_after(moment) == datetime(2026, 11, 21, 11, 0, tzinfo=UTC)
    assert Cron("0 3 * * *").next_after(moment) == datetime(2026, 11, 22, 3, 0, tzinfo=UTC)
    with pytest.raises(ValueError, match="cron"):
        Cron("every tuesday")
    with pytest.raises(ValueError, match="at least one second"):
        Every()


def test_backoff_is_exponential_and_capped() -> None:
    definition = replace(sample_jobs.flaky, backoff=2, max_backoff=10)
    assert [definition.retry_delay(n) for n in (1, 2, 3, 4, 5)] == [2, 4, 8, 10, 10]


async def test_heartbeats_make_workers_visible(jobs: JobQueue, database: Database) -> None:
    if jobs.backend != "memory":
        pytest.skip("the worker process writes its heartbeat every 10 s")
    async with database.session(write=False) as session:
        workers = (await session.scalars(select(JobWorker))).all()
    assert any(w.kind == "worker" and w.queues == "high,default,low" for w in workers)


def test_module_constants_exist() -> None:
    # Tests shorten these; keep them module-level.
    assert queue_module.HEARTBEAT_SECONDS > 0
    assert queue_module.WORKER_GONE_AFTER_SECONDS > queue_module.HEARTBEAT_SECONDS


async def test_a_run_that_cannot_be_claimed_is_sent_again_later(
    settings_factory: Callable[..., Settings],
    database: Database,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from tradeos.core.jobs import runs

    real_claim = runs.claim
    failures = []

    async def claim_once_failing(*args: Any, **kwargs: Any) -> Any:
        if not failures:
            failures.append(1)
            raise ConnectionError("database unreachable")
        return await real_claim(*args, **kwargs)

    monkeypatch.setattr(runs, "claim", claim_once_failing)
    monkeypatch.setattr(queue_module, "CLAIM_RETRY_SECONDS", 0.2)
    settings = settings_factory(jobs_broker="memory", redis_url=None)
    queue = make_queue(settings, database)
    await queue.start_consuming()
    try:
        run = await queue.enqueue_now(sample_jobs.record, {"value": "later"})
        done = await wait_for(database, run.id, RunStatus.SUCCEEDED)
    finally:
        await close_queue(queue)
    assert failures == [1]
    assert done.attempts == 1
