"""Background jobs: declared once with `@job`, enqueued with `JobQueue.enqueue`, run by taskiq
in `serve` (embedded) or `tradeos worker` processes (Redis Streams), recorded in `job_runs`.

    from tradeos.core.jobs import JobContext, Priority, job

    @job("backtest.run", priority=Priority.LOW, timeout=1800)
    async def run_backtest(ctx: JobContext, backtest_id: int) -> dict[str, int]:
        await ctx.progress(50, "halfway")
        ...

    run = await jobs.enqueue(session, run_backtest, {"backtest_id": 7}, owner_id=user.id)
"""

from tradeos.core.jobs.context import JobContext
from tradeos.core.jobs.definitions import (
    JOBS,
    Cron,
    Every,
    JobDefinition,
    Priority,
    job,
    on_worker_start,
)
from tradeos.core.jobs.models import JobRun, JobWorker, RunStatus
from tradeos.core.jobs.queue import JobQueue
from tradeos.core.jobs.scheduler import Scheduler

__all__ = [
    "JOBS",
    "Cron",
    "Every",
    "JobContext",
    "JobDefinition",
    "JobQueue",
    "JobRun",
    "JobWorker",
    "Priority",
    "RunStatus",
    "Scheduler",
    "job",
    "on_worker_start",
]
