"""Periodic jobs: the schedules declared with `@job(..., schedule=Every(...) | Cron(...))`.

Any number of schedulers may run (the `serve` process in embedded mode, `tradeos scheduler`
when scaled out, a second one for fail-over): each period fires once. Every scheduler computes
the same fire times, and a fire is a row in `job_runs` with the unique key `name@time`; the
scheduler whose insert wins sends the run, the others find the key taken and move on.

The JOB_SCHEDULES setting overrides declared schedules, or switches jobs off. The key stays
`name@time`: schedulers sharing the settings compute the same times, so each period still fires
once; and during a rolling change of the setting, a time both the old and the new schedule
share fires once too.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import TYPE_CHECKING

import structlog
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from tradeos.core.db import utcnow
from tradeos.core.jobs import runs
from tradeos.core.jobs.definitions import (
    JOBS,
    JobDefinition,
    Schedule,
    describe_schedule,
    parse_schedule,
)
from tradeos.core.jobs.models import JobRun

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession

    from tradeos.core.jobs.queue import JobQueue

__all__ = [
    "EffectiveSchedule",
    "ScheduledJob",
    "Scheduler",
    "check_job_schedules",
    "effective_schedules",
    "scheduled_jobs",
]

logger = structlog.get_logger("tradeos.scheduler")

# Module-level so tests can shorten it.
HEARTBEAT_SECONDS: float = 10.0


def scheduled_jobs() -> list[JobDefinition]:
    return sorted((d for d in JOBS.values() if d.schedule is not None), key=lambda d: d.name)


def schedule_key(definition: JobDefinition, fire_time: datetime) -> str:
    return f"{definition.name}@{fire_time.strftime('%Y-%m-%dT%H:%M:%SZ')}"


def check_job_schedules(
    overrides: Mapping[str, str], definitions: Sequence[JobDefinition] | None = None
) -> None:
    """Refuse JOB_SCHEDULES entries naming no periodic job (default: every declared one).

    Only a job declared with a schedule may be rescheduled: a declared schedule is its author
    saying the job makes sense periodically, with the arguments it is given then. Settings are
    read before the jobs are imported, so this runs where schedulers start, not in Settings.
    """
    declared = scheduled_jobs() if definitions is None else definitions
    periodic = sorted(d.name for d in declared if d.schedule is not None)
    problems = [_unknown_job(name) for name in sorted(set(overrides) - set(periodic))]
    if problems:
        raise ValueError(
            f"JOB_SCHEDULES {'; '.join(problems)}. "
            f"The periodic jobs are: {', '.join(periodic) or 'none'}"
        )


def _unknown_job(name: str) -> str:
    if name in JOBS:
        return f"names {name}, which is declared without a schedule and cannot be given one"
    return f"names {name}, which is not a declared job"


@dataclass(frozen=True)
class EffectiveSchedule:
    """A periodic job's schedule as it runs: as declared, or as JOB_SCHEDULES overrides it."""

    definition: JobDefinition
    schedule: Schedule | None  # None: switched off, never fires
    overridden: bool

    @property
    def declared(self) -> Schedule:
        assert self.definition.schedule is not None
        return self.definition.schedule


def effective_schedules(
    overrides: Mapping[str, str], definitions: Sequence[JobDefinition] | None = None
) -> list[EffectiveSchedule]:
    """Every periodic job of `definitions` (default: every declared one) with the schedule it
    runs on. Overrides naming no such job are left to `check_job_schedules` to refuse."""
    declared = scheduled_jobs() if definitions is None else definitions
    return [_effective(d, overrides) for d in declared if d.schedule is not None]


def _effective(definition: JobDefinition, overrides: Mapping[str, str]) -> EffectiveSchedule:
    if definition.name in overrides:
        schedule = parse_schedule(overrides[definition.name])
        return EffectiveSchedule(definition, schedule, overridden=True)
    return EffectiveSchedule(definition, definition.schedule, overridden=False)


@dataclass(frozen=True)
class ScheduledJob:
    name: str
    schedule: str  # the effective one; "off" when switched off
    declared_schedule: str
    overridden: bool  # by JOB_SCHEDULES
    queue: str
    next_run_at: datetime | None  # None when off
    last_run_at: datetime | None
    last_status: str | None


async def schedule_overview(
    session: AsyncSession, now: datetime, overrides: Mapping[str, str]
) -> list[ScheduledJob]:
    """Each periodic job with the schedule it runs on, its next fire time and how its latest
    run went."""
    overview = []
    for effective in effective_schedules(overrides):
        definition = effective.definition
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
                schedule=describe_schedule(effective.schedule),
                declared_schedule=effective.declared.describe(),
                overridden=effective.overridden,
                queue=definition.priority.value,
                next_run_at=effective.schedule.next_after(now) if effective.schedule else None,
                last_run_at=latest.created_at if latest else None,
                last_status=str(latest.status) if latest else None,
            )
        )
    return overview


class Scheduler:
    """Fires the schedules of `definitions` (default: every scheduled job) through `queue`, as
    the JOB_SCHEDULES setting overrides them; a ValueError names any override it cannot use."""

    def __init__(self, queue: JobQueue, definitions: list[JobDefinition] | None = None) -> None:
        self.queue = queue
        overrides = queue.settings.job_schedules
        check_job_schedules(overrides, definitions)
        plan = effective_schedules(overrides, definitions)
        # Each job carries the schedule it runs on; switched-off jobs are left out.
        self.definitions = [
            replace(e.definition, schedule=e.schedule) for e in plan if e.schedule is not None
        ]
        self.switched_off = [e.definition.name for e in plan if e.schedule is None]
        self.overridden = [
            e.definition.name for e in plan if e.overridden and e.schedule is not None
        ]
        self.worker_id = f"{queue.worker_id}:scheduler"

    async def run(self) -> None:
        """Until cancelled. A period missed while no scheduler ran is not caught up."""
        if self.overridden or self.switched_off:
            # Why a job runs other than its code says: the first thing to look for.
            logger.info(
                "schedules_from_settings", overridden=self.overridden, off=self.switched_off
            )
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
