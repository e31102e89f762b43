"""Job throughput: no-op jobs per second in-process and through Redis with one worker.

    python bench/job_throughput.py [--jobs 2000] [--repeat 2]
        [--database-url postgresql://postgres@127.0.0.1:5432/postgres]
        [--redis-url redis://127.0.0.1:6379/14] [--concurrency 4,16] [--breakdown 300]
        [--log-level WARNING]

N runs of a no-op job (`bench.noop`, declared below) are enqueued; the clock runs from the
first enqueue until all N are `succeeded` in job_runs (polled every 10 ms on a connection of
the bench's own). Each variant is compared with bare taskiq measured in the same run:

- embedded: a `JobQueue` on the in-process broker, consuming in this process as `serve` does
  (JOBS_CONCURRENCY 4), on a migrated SQLite file in a temporary folder; two ways to enqueue:
  `one commit` (N `enqueue` calls in one unit of work) and `enqueue_now each` (N units of
  work, one after the other). Baseline: taskiq's `InMemoryBroker`, a no-op task, N `.kiq()`
  then `broker.wait_all()`: no TradeOS code, no database.
- redis (with --redis-url): one `tradeos worker --module bench.job_throughput --concurrency C`
  process; this process enqueues the N runs in one unit of work on the Redis job broker
  (`start()` only, not consuming). Baseline: taskiq-redis's `RedisStreamBroker` (its
  defaults), a no-op task that INCRs a Redis counter, consumed by one worker process running
  taskiq's receiver with C tasks at once (`run_receiver_task`); N `.kiq()`, the clock stops
  when the counter reaches N.

With --database-url (PostgreSQL; the URL of a database to connect to, e.g. `postgres`) every
TradeOS variant runs on PostgreSQL too, in a database the bench creates and drops. Redis keys
all carry a unique prefix and are deleted at the end; temporary files go with their folder.

Besides jobs/s, each run reports the CPU time per job of the process that ran the jobs (this
one when embedded, the worker's with Redis): on a shared machine it moves far less than wall
time. --breakdown N times the steps of one run (enqueue INSERT, claim, succeed, a bare unit of
work, and claim/succeed with their UPDATE built once) N times each, one after the other.
Logs go to stderr at --log-level (WARNING: at INFO, taskiq and TradeOS each log every job).
Prints each run, then markdown tables; the figures go to bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import math
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tradeos.core.jobs import JobContext, job

REPO_ROOT = Path(__file__).resolve().parents[1]
POLL_SECONDS = 0.01
WORKER_START_SECONDS = 60.0
EMBEDDED_CONCURRENCY = 4  # JOBS_CONCURRENCY's default: what `serve` runs jobs with


@job("bench.noop", max_attempts=1)
async def noop(ctx: JobContext) -> None:
    """Does nothing: what is measured is the job system around it."""


# -- databases ----------------------------------------------------------------------------------


@dataclass
class Target:
    """A migrated database the TradeOS variants run on; job_runs is emptied before each run."""

    backend: str  # "sqlite" | "postgresql"
    url: str  # SQLAlchemy URL with the async driver

    async def empty_job_runs(self) -> None:
        from sqlalchemy import text

        async with self._engine().begin() as connection:
            if self.backend == "postgresql":
                await connection.execute(text("TRUNCATE job_runs RESTART IDENTITY"))
            else:
                await connection.execute(text("DELETE FROM job_runs"))

    async def counts(self) -> dict[str, int]:
        from sqlalchemy import text

        async with self._engine().connect() as connection:
            rows = await connection.execute(
                text("SELECT status, count(*) FROM job_runs GROUP BY status")
            )
            return {status: count for status, count in rows.all()}

    def _engine(self) -> Any:
        # A plain engine of the bench's own, one connection: polling does not queue behind
        # the application's connection (on SQLite, WAL readers never wait for the writer).
        if self._cached_engine is None:
            from sqlalchemy.ext.asyncio import create_async_engine

            self._cached_engine = create_async_engine(self.url, pool_size=1, max_overflow=0)
        return self._cached_engine

    async def dispose(self) -> None:
        if self._cached_engine is not None:
            await self._cached_engine.dispose()
            self._cached_engine = None

    _cached_engine: Any = field(default=None, repr=False)


async def _migrate(url: str) -> None:
    from tradeos import migrations

    # Alembic's env.py runs its own event loop, so migrations run in a thread.
    await asyncio.to_thread(migrations.upgrade, url)


@contextlib.asynccontextmanager
async def sqlite_target(folder: Path) -> AsyncIterator[Target]:
    target = Target("sqlite", f"sqlite+aiosqlite:///{folder / 'jobs.db'}")
    await _migrate(target.url)
    try:
        yield target
    finally:
        await target.dispose()


@contextlib.asynccontextmanager
async def postgres_target(server_url: str) -> AsyncIterator[Target]:
    """A database of its own on the server `server_url` points at, dropped at the end."""
    import asyncpg
    from sqlalchemy.engine import make_url

    from tradeos.config import normalize_database_url

    name = f"tradeos_bench_{uuid.uuid4().hex[:12]}"
    server = make_url(server_url).set(drivername="postgresql")
    admin = await asyncpg.connect(server.render_as_string(hide_password=False))
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        target = Target(
            "postgresql",
            normalize_database_url(server.set(database=name).render_as_string(hide_password=False)),
        )
        try:
            await _migrate(target.url)
            yield target
        finally:
            await target.dispose()
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


async def wait_succeeded(target: Target, jobs: int, timeout: float) -> None:  # noqa: ASYNC109
    """Poll job_runs until `jobs` runs have succeeded; fail fast if one failed."""
    async with asyncio.timeout(timeout):
        while True:
            counts = await target.counts()
            if counts.get("failed"):
                raise RuntimeError(f"runs failed: {counts}")
            if counts.get("succeeded", 0) >= jobs:
                return
            await asyncio.sleep(POLL_SECONDS)


@dataclass(frozen=True)
class Timing:
    jobs: int
    seconds: float  # first enqueue -> all done
    sent: float  # first enqueue -> all enqueued and on the broker
    cpu: float  # CPU seconds of the process that ran the jobs, meanwhile

    @property
    def rate(self) -> float:
        return self.jobs / self.seconds

    @property
    def cpu_ms_per_job(self) -> float:
        return self.cpu / self.jobs * 1000


class Stopwatch:
    """Wall time from the first enqueue, and the CPU time of the process running the jobs
    (`cpu`: this process's, or a worker's): less disturbed by other load than wall time."""

    def __init__(self, jobs: int, cpu: Callable[[], float]) -> None:
        self.jobs = jobs
        self.cpu = cpu
        self.cpu_started = cpu()
        self.started = time.perf_counter()
        self.sent = math.nan

    def all_sent(self) -> None:
        self.sent = time.perf_counter() - self.started

    def stop(self) -> Timing:
        seconds = time.perf_counter() - self.started
        return Timing(self.jobs, seconds, self.sent, self.cpu() - self.cpu_started)


# -- TradeOS --------------------------------------------------------------------------------------


def _settings(data_dir: Path, database_url: str, **overrides: Any) -> Any:
    from tradeos.config import Settings

    values: dict[str, Any] = {
        "environment": "test",
        "data_dir": data_dir,
        "database_url": database_url,
        "redis_url": None,
        "jobs_broker": "memory",
        "jobs_concurrency": EMBEDDED_CONCURRENCY,
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


@contextlib.asynccontextmanager
async def job_queue(settings: Any, *, consuming: bool) -> AsyncIterator[Any]:
    """A JobQueue with the ports `serve` and `tradeos worker` give it."""
    from tradeos.core.cache import make_cache
    from tradeos.core.db import Database
    from tradeos.core.events import make_event_bus
    from tradeos.core.jobs import JobQueue
    from tradeos.core.storage import make_storage
    from tradeos.core.transactions import flush_after_commit

    database = Database(settings.sqlalchemy_url, pool_size=settings.database_pool_size)
    queue = JobQueue(
        settings,
        database=database,
        events=make_event_bus(settings),
        cache=make_cache(settings),
        storage=make_storage(settings),
    )
    try:
        if consuming:
            await queue.start_consuming()
        else:
            await queue.start()
        yield queue
    finally:
        await flush_after_commit()
        await queue.aclose()
        await queue.events.aclose()
        await queue.cache.aclose()
        await queue.storage.aclose()
        await database.dispose()


async def enqueue_all(queue: Any, jobs: int, style: str) -> None:
    if style == "one commit":
        async with queue.database.session() as session:
            for _ in range(jobs):
                await queue.enqueue(session, noop)
    else:
        for _ in range(jobs):
            await queue.enqueue_now(noop)


async def tradeos_embedded(target: Target, data_dir: Path, jobs: int, style: str) -> Timing:
    from tradeos.core.transactions import flush_after_commit

    await target.empty_job_runs()
    settings = _settings(data_dir, target.url)
    async with job_queue(settings, consuming=True) as queue:
        watch = Stopwatch(jobs, time.process_time)
        await enqueue_all(queue, jobs, style)
        await flush_after_commit()  # the sends that follow the commit(s)
        watch.all_sent()
        await wait_succeeded(target, jobs, timeout=60 + jobs / 10)
        return watch.stop()


async def tradeos_redis(
    target: Target,
    data_dir: Path,
    jobs: int,
    redis_url: str,
    prefix: str,
    worker_cpu: Callable[[], float],
) -> Timing:
    from tradeos.core.transactions import flush_after_commit

    await target.empty_job_runs()
    settings = _settings(
        data_dir, target.url, redis_url=redis_url, redis_key_prefix=prefix, jobs_broker="redis"
    )
    async with job_queue(settings, consuming=False) as queue:
        watch = Stopwatch(jobs, worker_cpu)
        await enqueue_all(queue, jobs, "one commit")
        await flush_after_commit()  # the N messages are on Redis
        watch.all_sent()
        await wait_succeeded(target, jobs, timeout=60 + jobs / 10)
        return watch.stop()


# -- bare taskiq ----------------------------------------------------------------------------------


async def taskiq_in_memory(jobs: int) -> Timing:
    from taskiq import InMemoryBroker

    broker = InMemoryBroker()

    @broker.task(task_name="bench_noop")
    async def noop_task() -> None:
        return None

    await broker.startup()
    try:
        watch = Stopwatch(jobs, time.process_time)
        for _ in range(jobs):
            await noop_task.kiq()
        watch.all_sent()
        await broker.wait_all()
        return watch.stop()
    finally:
        await broker.shutdown()


def _baseline_broker(redis_url: str, prefix: str) -> Any:
    from taskiq_redis import RedisStreamBroker

    return RedisStreamBroker(
        redis_url,
        queue_name=f"{prefix}:baseline",
        consumer_group_name=f"{prefix}:baseline-workers",
    )


async def _baseline_worker(redis_url: str, prefix: str, concurrency: int) -> None:
    """Run as `python bench/job_throughput.py _baseline-worker URL PREFIX C`."""
    from redis.asyncio import Redis
    from taskiq.api import run_receiver_task

    broker = _baseline_broker(redis_url, prefix)
    redis = Redis.from_url(redis_url)

    @broker.task(task_name="bench_noop")
    async def noop_task() -> None:
        await redis.incr(f"{prefix}:done")

    await broker.startup()
    print("baseline worker ready", flush=True)
    await run_receiver_task(broker, max_async_tasks=concurrency)


async def taskiq_redis(
    jobs: int, redis_url: str, prefix: str, worker_cpu: Callable[[], float]
) -> Timing:
    from redis.asyncio import Redis

    broker = _baseline_broker(redis_url, prefix)

    @broker.task(task_name="bench_noop")
    async def noop_task() -> None:
        return None

    redis = Redis.from_url(redis_url)
    await redis.delete(f"{prefix}:done")
    await broker.startup()
    try:
        watch = Stopwatch(jobs, worker_cpu)
        for _ in range(jobs):
            await noop_task.kiq()
        watch.all_sent()
        async with asyncio.timeout(60 + jobs / 10):
            while True:
                if int(await redis.get(f"{prefix}:done") or 0) >= jobs:
                    break
                await asyncio.sleep(POLL_SECONDS)
        return watch.stop()
    finally:
        await broker.shutdown()
        await redis.aclose()


# -- worker processes -----------------------------------------------------------------------------


class WorkerProcess:
    """A worker in a process of its own; its output is drained (the last lines kept for
    diagnostics) so a full pipe never blocks it."""

    def __init__(self, command: list[str], env: dict[str, str], cwd: Path, ready: str) -> None:
        self.command = command
        self.env = env
        self.cwd = cwd
        self.ready = ready
        self.lines: collections.deque[str] = collections.deque(maxlen=40)
        self.process: subprocess.Popen[str] | None = None
        self.ready_seen = False

    def start(self) -> None:
        self.process = subprocess.Popen(  # noqa: S603 - our own interpreter and arguments
            self.command,
            env=self.env,
            cwd=self.cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.ready_seen = False
        settled = threading.Event()  # ready, or its output ended (it exited)
        threading.Thread(target=self._drain, args=(settled,), daemon=True).start()
        settled.wait(WORKER_START_SECONDS)
        if not self.ready_seen or self.process.poll() is not None:
            self.stop()
            output = "".join(self.lines)
            raise RuntimeError(f"worker did not start: {self.command}\n{output}")

    def _drain(self, settled: threading.Event) -> None:
        assert self.process is not None and self.process.stdout is not None
        try:
            for line in self.process.stdout:
                self.lines.append(line)
                if line.startswith(self.ready):
                    self.ready_seen = True
                    settled.set()
        finally:
            settled.set()

    def cpu_seconds(self) -> float:
        """User + system CPU time of the worker so far (Linux /proc; NaN elsewhere)."""
        assert self.process is not None
        try:
            stat = Path(f"/proc/{self.process.pid}/stat").read_text()
        except OSError:
            return math.nan
        fields = stat.rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None


def _clean_environment() -> dict[str, str]:
    """This environment without TradeOS settings (no developer .env values leak in)."""
    from tradeos.config import Settings

    names = {name.upper() for name in Settings.model_fields}
    return {key: value for key, value in os.environ.items() if key not in names}


def tradeos_worker(
    target: Target, data_dir: Path, redis_url: str, prefix: str, concurrency: int, log_level: str
) -> WorkerProcess:
    env = _clean_environment()
    env.update(
        PYTHONPATH=os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")])),
        ENVIRONMENT="test",
        LOG_LEVEL=log_level,
        DATA_DIR=str(data_dir),
        DATABASE_URL=target.url,
        REDIS_URL=redis_url,
        REDIS_KEY_PREFIX=prefix,
    )
    command = [sys.executable, "-m", "tradeos", "worker", "--module", "bench.job_throughput"]
    command += ["--concurrency", str(concurrency)]
    # The working directory is the temporary one: no .env of the checkout is read.
    return WorkerProcess(command, env, data_dir, "TradeOS worker")


def baseline_worker(redis_url: str, prefix: str, concurrency: int, folder: Path) -> WorkerProcess:
    command = [sys.executable, __file__, "_baseline-worker", redis_url, prefix, str(concurrency)]
    return WorkerProcess(command, dict(os.environ), folder, "baseline worker ready")


async def delete_redis_keys(redis_url: str, prefix: str) -> int:
    """Every key the variant wrote: its own prefix, and taskiq-redis's autoclaim locks, which
    are named after the consumer group (so they hold the prefix too)."""
    from redis.asyncio import Redis

    redis = Redis.from_url(redis_url)
    try:
        keys = [key async for key in redis.scan_iter(match=f"*{prefix}*", count=1000)]
        if keys:
            await redis.delete(*keys)
        return len(keys)
    finally:
        await redis.aclose()


# -- where a run's time goes (--breakdown) -----------------------------------------------------

BREAKDOWN_ROUNDS = 3


def _prebuilt_statements() -> tuple[Any, Any]:
    """runs.claim's and runs.succeed's UPDATEs built once, with bound parameters, and without
    the ORM's synchronize_session step (the session holds no JobRun to synchronize)."""
    from sqlalchemy import bindparam, update

    from tradeos.core.jobs.models import JobRun, RunStatus

    current = (JobRun.id == bindparam("run_id")) & (JobRun.token == bindparam("run_token"))
    claim = (
        update(JobRun)
        .where(current, JobRun.status.in_((RunStatus.QUEUED, RunStatus.RUNNING)))
        .values(
            status=RunStatus.RUNNING,
            attempts=JobRun.attempts + 1,
            started_at=bindparam("now"),
            worker_id=bindparam("worker"),
            updated_at=bindparam("now"),
        )
        .returning(
            JobRun.id,
            JobRun.name,
            JobRun.arguments,
            JobRun.attempts,
            JobRun.max_attempts,
            JobRun.owner_id,
        )
        .execution_options(synchronize_session=False)
    )
    succeed = (
        update(JobRun)
        .where(current, JobRun.status == RunStatus.RUNNING)
        .values(
            status=RunStatus.SUCCEEDED,
            progress=100,
            result_summary=None,
            error=None,
            finished_at=bindparam("now"),
            updated_at=bindparam("now"),
        )
        .execution_options(synchronize_session=False)
    )
    return claim, succeed


async def breakdown(target: Target, units: int) -> list[tuple[str, float, float]]:
    """Wall and CPU µs per step of a run, each step `units` times one after the other (no
    concurrency, no broker): the enqueue INSERT, a bare unit of work, runs.claim and
    runs.succeed in their own unit of work as the worker runs them, and the same two UPDATEs
    built once without session synchronization. Median of BREAKDOWN_ROUNDS rounds."""
    from sqlalchemy import text

    from tradeos.core.db import Database, utcnow
    from tradeos.core.jobs import runs

    claim_once, succeed_once = _prebuilt_statements()
    database = Database(target.url)

    async def queued(count: int) -> list[Any]:
        async with database.session() as session:
            created = []
            for _ in range(count):
                run = runs.new_run(noop, {})
                session.add(run)
                await session.flush()
                created.append(run)
        return created

    async def claimed(count: int) -> list[Any]:
        taken = []
        for run in await queued(count):
            async with database.session() as session:
                taken.append(await runs.claim(session, run.id, run.token, "bench"))
        return taken

    async def bare(_: Any) -> None:
        async with database.session() as session:
            await session.execute(text("SELECT 1"))

    async def claim(run: Any) -> None:
        async with database.session() as session:
            await runs.claim(session, run.id, run.token, "bench")

    async def succeed(claimed_run: Any) -> None:
        async with database.session() as session:
            await runs.succeed(session, claimed_run, None)

    async def claim_prebuilt(run: Any) -> None:
        values = {"run_id": run.id, "run_token": run.token, "now": utcnow(), "worker": "bench"}
        async with database.session() as session:
            (await session.execute(claim_once, values)).one()

    async def succeed_prebuilt(claimed_run: Any) -> None:
        values = {"run_id": claimed_run.id, "run_token": claimed_run.token, "now": utcnow()}
        async with database.session() as session:
            await session.execute(succeed_once, values)

    async def no_items(count: int) -> list[Any]:
        return [None] * count

    steps: list[tuple[str, Callable[[int], Awaitable[list[Any]]], Any]] = [
        ("unit of work: SELECT 1, commit", no_items, bare),
        ("runs.claim in its unit of work", queued, claim),
        ("runs.succeed in its unit of work", claimed, succeed),
        ("claim: UPDATE built once, no session sync", queued, claim_prebuilt),
        ("succeed: UPDATE built once, no session sync", claimed, succeed_prebuilt),
    ]
    figures: dict[str, list[tuple[float, float]]] = {"enqueue: INSERT per run, one commit": []}
    try:
        await target.empty_job_runs()
        for _ in range(BREAKDOWN_ROUNDS):
            wall, cpu = time.perf_counter(), time.process_time()
            await queued(units)
            figures["enqueue: INSERT per run, one commit"].append(
                ((time.perf_counter() - wall) / units, (time.process_time() - cpu) / units)
            )
            for label, prepare, step in steps:
                items = await prepare(units)
                wall, cpu = time.perf_counter(), time.process_time()
                for item in items:
                    await step(item)
                figures.setdefault(label, []).append(
                    ((time.perf_counter() - wall) / units, (time.process_time() - cpu) / units)
                )
    finally:
        await database.dispose()
    return [
        (
            label,
            statistics.median(w for w, _ in values) * 1e6,
            statistics.median(c for _, c in values) * 1e6,
        )
        for label, values in figures.items()
    ]


# -- driver ---------------------------------------------------------------------------------------


@dataclass
class Row:
    variant: str
    runs: list[Timing] = field(default_factory=list)
    baseline: str | None = None  # the variant this one is compared with


class Bench:
    def __init__(self, arguments: argparse.Namespace, folder: Path) -> None:
        self.jobs: int = arguments.jobs
        self.repeat: int = arguments.repeat
        self.redis_url: str | None = arguments.redis_url
        self.log_level: str = arguments.log_level
        self.folder = folder
        self.rows: list[Row] = []
        self.steps: dict[str, list[tuple[str, float, float]]] = {}  # --breakdown, by backend

    async def measure(self, row: Row, run: Callable[[], Awaitable[Timing]]) -> None:
        for attempt in range(self.repeat):
            timing = await run()
            row.runs.append(timing)
            print(
                f"{row.variant}: run {attempt + 1}: {timing.rate:,.0f} jobs/s; all "
                f"{timing.jobs} done after {timing.seconds:.2f} s, enqueued and sent after "
                f"{timing.sent:.2f} s; consumer CPU {timing.cpu_ms_per_job:.2f} ms/job",
                flush=True,
            )
        self.rows.append(row)

    async def embedded(self, targets: list[Target]) -> None:
        base = Row("taskiq InMemoryBroker, no database (baseline)")
        await self.measure(base, lambda: taskiq_in_memory(self.jobs))
        for target in targets:
            for style in ("one commit", "enqueue_now each"):
                row = Row(f"embedded, {target.backend}, {style}", baseline=base.variant)
                await self.measure(
                    row,
                    lambda t=target, s=style: tradeos_embedded(t, self.folder, self.jobs, s),
                )

    async def redis(self, targets: list[Target], concurrency: int) -> None:
        assert self.redis_url is not None
        url = self.redis_url
        base = Row(f"taskiq-redis RedisStreamBroker, 1 worker × {concurrency} (baseline)")
        base_prefix = f"bench-jobs-{uuid.uuid4().hex[:12]}"
        base_worker = baseline_worker(url, base_prefix, concurrency, self.folder)
        await self.with_worker(
            base_worker,
            base_prefix,
            lambda: self.measure(
                base,
                lambda: taskiq_redis(self.jobs, url, base_prefix, base_worker.cpu_seconds),
            ),
        )
        for target in targets:
            row = Row(f"redis, {target.backend}, 1 worker × {concurrency}", baseline=base.variant)
            prefix = f"bench-jobs-{uuid.uuid4().hex[:12]}"
            worker = tradeos_worker(target, self.folder, url, prefix, concurrency, self.log_level)
            await self.with_worker(
                worker,
                prefix,
                lambda t=target, p=prefix, r=row, w=worker: self.measure(
                    r, lambda: tradeos_redis(t, self.folder, self.jobs, url, p, w.cpu_seconds)
                ),
            )

    async def with_worker(
        self, worker: WorkerProcess, prefix: str, body: Callable[[], Awaitable[None]]
    ) -> None:
        assert self.redis_url is not None
        try:
            await asyncio.to_thread(worker.start)
            try:
                await body()
            finally:
                await asyncio.to_thread(worker.stop)
        finally:
            await delete_redis_keys(self.redis_url, prefix)


async def main(arguments: argparse.Namespace) -> Bench:
    from tradeos.core.logging import configure_logging

    configure_logging(arguments.log_level)
    with tempfile.TemporaryDirectory(prefix="tradeos-bench-jobs-") as folder:
        bench = Bench(arguments, Path(folder))
        async with contextlib.AsyncExitStack() as stack:
            targets = [await stack.enter_async_context(sqlite_target(Path(folder)))]
            if arguments.database_url:
                targets.append(
                    await stack.enter_async_context(postgres_target(arguments.database_url))
                )
            await bench.embedded(targets)
            if arguments.redis_url:
                for concurrency in (int(n) for n in arguments.concurrency.split(",")):
                    await bench.redis(targets, concurrency)
            for target in targets if arguments.breakdown else []:
                bench.steps[target.backend] = await breakdown(target, arguments.breakdown)
    return bench


def print_tables(bench: Bench, arguments: argparse.Namespace) -> None:
    def mean(values: list[float]) -> float:
        return sum(values) / len(values)

    rows = bench.rows
    by_name = {row.variant: row for row in rows}
    print()
    print(f"{arguments.jobs} no-op jobs per run, {arguments.repeat} run(s) per variant")
    print("| variant | jobs/s | vs baseline | consumer CPU ms/job |")
    print("|---|---|---|---|")
    for row in rows:
        rates = " / ".join(f"{t.rate:,.0f}" for t in row.runs)
        cpu = " / ".join(f"{t.cpu_ms_per_job:.2f}" for t in row.runs)
        share = ""
        if row.baseline is not None:
            base = by_name[row.baseline].runs
            ratio = mean([t.rate for t in row.runs]) / mean([t.rate for t in base])
            share = f"{ratio:.1%}"
        print(f"| {row.variant} | {rates} | {share} | {cpu} |")
    if bench.steps:
        print()
        print(f"Per run, {arguments.breakdown} one after the other; µs (median of rounds)")
        print("| step | " + " | ".join(f"{b} wall / CPU" for b in bench.steps) + " |")
        print("|---|" + "---|" * len(bench.steps))
        for index, (label, _, _) in enumerate(next(iter(bench.steps.values()))):
            cells = [
                f"{steps[index][1]:,.0f} / {steps[index][2]:,.0f}" for steps in bench.steps.values()
            ]
            print(f"| {label} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "_baseline-worker":
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(_baseline_worker(sys.argv[2], sys.argv[3], int(sys.argv[4])))
        sys.exit(0)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=2000, help="no-op jobs per run")
    parser.add_argument("--repeat", type=int, default=2, help="runs per variant")
    parser.add_argument(
        "--database-url",
        help="a PostgreSQL server (postgresql://user@host:port/db) to also run on, in a "
        "database the bench creates and drops",
    )
    parser.add_argument("--redis-url", help="Redis for the one-worker variants (redis://…/db)")
    parser.add_argument(
        "--concurrency", default="4,16", help="comma-separated jobs at once of the worker"
    )
    parser.add_argument("--log-level", default="WARNING", help="TradeOS log level")
    parser.add_argument(
        "--breakdown",
        type=int,
        default=0,
        metavar="UNITS",
        help="also time each step of a run UNITS times on every database (e.g. 300)",
    )
    parsed = parser.parse_args()
    print_tables(asyncio.run(main(parsed)), parsed)
