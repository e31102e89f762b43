"""What administrators see of the job machinery: queue status, and the runs themselves."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import Select, select

from tradeos.core.db import utcnow
from tradeos.core.jobs import queue as queue_module
from tradeos.core.jobs import runs
from tradeos.core.jobs.definitions import Priority
from tradeos.core.jobs.models import JobRun, JobWorker, RunStatus
from tradeos.core.jobs.scheduler import ScheduledJob, schedule_overview
from tradeos.core.pagination import Sorting
from tradeos.core.redis import REDIS_ERRORS

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession

    from tradeos.core.jobs.queue import JobQueue

__all__ = ["RUN_SORT", "QueueCounts", "QueueStatus", "WorkerSeen", "queue_status", "runs_query"]

RUN_SORT = Sorting(
    {
        "created": JobRun.created_at,
        "updated": JobRun.updated_at,
        "name": JobRun.name,
        "attempts": JobRun.attempts,
    },
    default="-created",
    tie_breaker=JobRun.id,
)
# Workers seen within this window are listed.
WORKERS_LISTED_FOR = timedelta(hours=24)


def runs_query(
    *,
    status: RunStatus | None = None,
    name: str | None = None,
    queue: Priority | None = None,
    owner_id: int | None = None,
) -> Select[JobRun]:
    query = select(JobRun)
    if status is not None:
        query = query.where(JobRun.status == status)
    if name is not None:
        query = query.where(JobRun.name == name)
    if queue is not None:
        query = query.where(JobRun.queue == queue.value)
    if owner_id is not None:
        query = query.where(JobRun.owner_id == owner_id)
    return query


@dataclass(frozen=True)
class QueueCounts:
    name: str
    depth: int  # queued and due now
    delayed: int  # queued, waiting for a retry delay or a requested delay
    running: int
    failed_last_24h: int
    succeeded_last_24h: int


@dataclass(frozen=True)
class WorkerSeen:
    id: str
    kind: str
    queues: list[str]
    concurrency: int
    started_at: datetime
    last_seen_at: datetime
    alive: bool


@dataclass(frozen=True)
class QueueStatus:
    backend: str
    queues: list[QueueCounts]
    scheduled: list[ScheduledJob]
    workers: list[WorkerSeen]
    broker: dict[str, int] | None  # messages held by Redis per stream; None in-process


async def queue_status(session: AsyncSession, jobs: JobQueue) -> QueueStatus:
    now = utcnow()
    day_ago = now - timedelta(hours=24)
    queued = JobRun.status == RunStatus.QUEUED
    due = await runs.count_by(session, queued, JobRun.run_after <= now)
    delayed = await runs.count_by(session, queued, JobRun.run_after > now)
    running = await runs.count_by(session, JobRun.status == RunStatus.RUNNING)
    failed = await runs.count_by(
        session, JobRun.status == RunStatus.FAILED, JobRun.finished_at >= day_ago
    )
    succeeded = await runs.count_by(
        session, JobRun.status == RunStatus.SUCCEEDED, JobRun.finished_at >= day_ago
    )
    queues = [
        QueueCounts(
            name=priority.value,
            depth=due.get(priority.value, 0),
            delayed=delayed.get(priority.value, 0),
            running=running.get(priority.value, 0),
            failed_last_24h=failed.get(priority.value, 0),
            succeeded_last_24h=succeeded.get(priority.value, 0),
        )
        for priority in Priority
    ]
    return QueueStatus(
        backend=jobs.backend,
        queues=queues,
        scheduled=await schedule_overview(session, now, jobs.settings.job_schedules),
        workers=await _workers(session, now),
        broker=await _broker_depths(jobs),
    )


async def _workers(session: AsyncSession, now: datetime) -> list[WorkerSeen]:
    rows = await session.scalars(
        select(JobWorker)
        .where(JobWorker.last_seen_at >= now - WORKERS_LISTED_FOR)
        .order_by(JobWorker.kind, JobWorker.started_at)
    )
    alive_since = now - timedelta(seconds=queue_module.WORKER_GONE_AFTER_SECONDS)
    return [
        WorkerSeen(
            id=worker.id,
            kind=worker.kind,
            queues=[q for q in worker.queues.split(",") if q],
            concurrency=worker.concurrency,
            started_at=worker.started_at,
            last_seen_at=worker.last_seen_at,
            alive=worker.last_seen_at >= alive_since,
        )
        for worker in rows
    ]


async def _broker_depths(jobs: JobQueue) -> dict[str, int] | None:
    depths: Any = getattr(jobs.broker, "depths", None)
    if depths is None:
        return None
    try:
        result: dict[str, int] = await depths()
    except REDIS_ERRORS:
        return None  # the status page still answers while Redis is down
    return result
