"""Jobs that keep the job machinery itself tidy."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import delete

from tradeos.core.db import utcnow
from tradeos.core.jobs.context import JobContext
from tradeos.core.jobs.definitions import Every, Priority, job
from tradeos.core.jobs.models import JobRun, JobWorker, RunStatus

# Workers not seen for this long leave the admin's list.
FORGET_WORKERS_AFTER = timedelta(days=1)


@job("jobs.prune_runs", priority=Priority.LOW, schedule=Every(hours=1), timeout=600)
async def prune_job_runs(ctx: JobContext) -> dict[str, int]:
    """Delete finished runs older than JOBS_KEEP_DAYS, and workers long gone."""
    now = utcnow()
    cutoff = now - timedelta(days=ctx.settings.jobs_keep_days)
    async with ctx.database.session() as session:
        runs = await session.execute(
            delete(JobRun).where(
                JobRun.status.in_((RunStatus.SUCCEEDED, RunStatus.FAILED)),
                JobRun.finished_at < cutoff,
            )
        )
        workers = await session.execute(
            delete(JobWorker).where(JobWorker.last_seen_at < now - FORGET_WORKERS_AFTER)
        )
    return {"runs_deleted": runs.rowcount, "workers_forgotten": workers.rowcount}  # type: ignore[attr-defined]
