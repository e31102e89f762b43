"""Periodic jobs: the schedules declared with `@job(..., schedule=Every(...) | Cron(...))`.

Any number of schedulers may run (the `serve` process in embedded mode, `tradeos scheduler`
when scaled out, a second one for fail-over): each period fires once. Every scheduler computes
the same fire times, and a fire is a row in `job_runs` with the unique key `name@time`; the
scheduler whose insert wins sends the run, the others find the key taken and move on.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

import structlog
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from tradeos.core.db import utcnow
from tradeos.core.jobs import runs
from tradeos.core.jobs.definitions import JOBS, JobDefinition
from tradeos.core.jobs.models import JobRun

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession

    from tradeos.core.jobs.queue import JobQueue

__all__ = ["ScheduledJob", "Scheduler", "scheduled_jobs"]

logger = structlog.get_logger("tradeos.scheduler")

# Module-level so tests can shorten it.
HEARTBEAT_SECONDS: float = 10.0


def scheduled_jobs() -> list[JobDefinition]:
    return sorted((d for d in JOBS.values() if d.schedule is not None), key=lambda d: d.name)


def schedule_key(definition: JobDefinition, fire_time: datetime) -> str:
    return f"{definition.name}@{fire_time.strftime('%Y-%m-%dT%H:%M:%SZ')}"


@dataclass(frozen=True)
class ScheduledJob:
    name: str
    schedule: str
    queue: str
    next_run_at: datetime
    last_run_at: datetime | None
    last_status: str | None


async def schedule_overview(session: AsyncSession, now: datetime) -> list[ScheduledJob]:
    """Each scheduled job with its next fire time and how its latest run went."""
    overview = []
    for definition in scheduled_jobs():
        assert definition.schedule is not None
        latest = (
            await session.execute(
                select(JobRun.created_at, JobRun.status)
                .where(JobRun.name == definition.name, JobRun.schedule_key.is_not(None))
                .order_by(JobRun.id.desc())
                .limit(1)
            )
        ).one_or_none()
        overview.append(
            ScheduledJob(
                name=definition.name,
                schedule=definition.schedule.describe(),
                queue=definition.priority.value,
                next_run_at=definition.schedule.next_after(now),
                last_run_at=latest.created_at if latest else None,
                last_status=str(latest.status) if latest else None,
            )
        )
    return overview


class Scheduler:
    """Fires the schedules of `definitions` (default: every scheduled job) through `queue`."""

    def __init__(self, queue: JobQueue, definitions: list[JobDefinition] | None = None) -> None:
        self.queue = queue
        self.definitions = definitions if definitions is not None else scheduled_jobs()
        self.worker_id = f"{queue.worker_id}:scheduler"

    async def run(self) -> None:
        """Until cancelled. A period missed while no scheduler ran is not caught up."""
        if not self.definitions:
            logger.info("scheduler_idle", reason="no scheduled jobs")
        beat = asyncio.get_running_loop().create_task(self._heartbeat_loop())
        try:
            now = utcnow()
            upcoming = {d.name: self._next(d, now) for d in self.definitions}
            by_name = {d.name: d for d in self.definitions}
            while upcoming:
                fire_time = min(upcoming.values())
                wait = (fire_time - utcnow()).total_seconds()
                if wait > 0:
                    await asyncio.sleep(wait)
                for name, due in list(upcoming.items()):
                    if due <= fire_time:
                        definition = by_name[name]
                        await self._fire_safely(definition, due)
                        upcoming[name] = self._next(definition, max(due, utcnow()))
            await asyncio.Event().wait()
        finally:
            beat.cancel()
            await asyncio.wait([beat])

    @staticmethod
    def _next(definition: JobDefinition, after: datetime) -> datetime:
        assert definition.schedule is not None
        return definition.schedule.next_after(after)

    async def _fire_safely(self, definition: JobDefinition, fire_time: datetime) -> None:
        try:
            await self.fire(definition, fire_time)
        except Exception as exc:  # a broken database must not end the scheduler
            logger.error("schedule_fire_failed", job=definition.name, error=repr(exc))

    async def fire(self, definition: JobDefinition, fire_time: datetime) -> JobRun | None:
        """Start the run of one period, unless another scheduler already did."""
        key = schedule_key(definition, fire_time)
        try:
            async with self.queue.database.session() as session:
                run = runs.new_run(
                    definition, dict(definition.schedule_arguments), schedule_key=key
                )
                session.add(run)
                await session.flush()
                self.queue.send_after_commit(session, run.id, run.name, run.queue, run.token)
        except IntegrityError:
            logger.debug("schedule_already_fired", key=key)
            return None
        logger.info("schedule_fired", key=key, run_id=run.id)
        return run

    async def _heartbeat_loop(self) -> None:
        while True:
            try:
                async with self.queue.database.session() as session:
                    await runs.heartbeat(
                        session, self.worker_id, kind="scheduler", queues="", concurrency=0
                    )
            except Exception as exc:
                logger.warning("scheduler_heartbeat_failed", error=repr(exc))
            await asyncio.sleep(HEARTBEAT_SECONDS)
