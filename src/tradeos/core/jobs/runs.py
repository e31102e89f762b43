"""Reading and writing `job_runs`: every change of a run's state is one short statement.

Changes are conditional on the run's token, so a stale or duplicate message (at-least-once
delivery) can never overwrite the state of a run that has been sent again since.
"""

from __future__ import annotations

import secrets
import traceback
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final

import orjson
from sqlalchemy import func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from tradeos.core.db import utcnow
from tradeos.core.jobs.definitions import JobDefinition
from tradeos.core.jobs.models import JobRun, JobWorker, RunStatus

MAX_ARGUMENTS_BYTES: Final = 16 * 1024
MAX_RESULT_CHARS: Final = 2000
MAX_ERROR_CHARS: Final = 4000
SUMMARY_CHARS: Final = 200
MAX_PROGRESS_MESSAGE: Final = 200


def _update() -> Any:
    # No session holds JobRun objects while these run: nothing to synchronise, which saves the
    # ORM's per-statement bookkeeping (a measurable share of a no-op job's cost).
    return update(JobRun).execution_options(synchronize_session=False)


def new_token() -> str:
    return secrets.token_hex(16)


def encode_arguments(arguments: dict[str, Any]) -> dict[str, Any]:
    """The arguments as plain JSON (checked now, so a bad call fails where it is made)."""
    try:
        data = orjson.dumps(arguments)
    except TypeError as exc:
        raise ValueError(
            f"job arguments must be JSON values (Decimal as str, datetime as ISO text): {exc}"
        ) from exc
    if len(data) > MAX_ARGUMENTS_BYTES:
        raise ValueError(
            f"job arguments take {len(data)} bytes, at most {MAX_ARGUMENTS_BYTES}: pass ids, "
            "not data"
        )
    decoded: dict[str, Any] = orjson.loads(data)
    return decoded


def _shorten(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def summarize(value: Any, limit: int) -> str:
    try:
        text = orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()
    except TypeError:
        text = repr(value)
    return _shorten(text, limit)


def describe_error(error: BaseException) -> str:
    """The exception and the last frames of its traceback: enough to act on, bounded."""
    lines = traceback.format_exception(error)
    text = "".join(lines[-6:]).strip()
    return text[-MAX_ERROR_CHARS:]


def new_run(
    definition: JobDefinition,
    arguments: dict[str, Any],
    *,
    owner_id: int | None = None,
    schedule_key: str | None = None,
    run_after: datetime | None = None,
) -> JobRun:
    encoded = encode_arguments(arguments)
    now = utcnow()
    return JobRun(
        name=definition.name,
        queue=definition.priority.value,
        status=RunStatus.QUEUED,
        arguments=encoded,
        arguments_summary=summarize(encoded, SUMMARY_CHARS),
        owner_id=owner_id,
        attempts=0,
        max_attempts=definition.max_attempts,
        progress=0,
        token=new_token(),
        schedule_key=schedule_key,
        created_at=now,
        run_after=run_after or now,
        updated_at=now,
    )


@dataclass(frozen=True)
class ClaimedRun:
    id: int
    name: str
    arguments: dict[str, Any]
    attempts: int
    max_attempts: int
    owner_id: int | None
    token: str


def _current(run_id: int, token: str) -> Any:
    return (JobRun.id == run_id) & (JobRun.token == token)


async def claim(
    session: AsyncSession, run_id: int, token: str, worker_id: str
) -> ClaimedRun | None:
    """Mark the run running and count the attempt; None when the message is stale (another
    token) or the run already ended. A run still `running` under the same token is taken
    over: its worker died before acknowledging the message, which was then redelivered."""
    now = utcnow()
    row = (
        await session.execute(
            _update()
            .where(
                _current(run_id, token),
                JobRun.status.in_((RunStatus.QUEUED, RunStatus.RUNNING)),
            )
            .values(
                status=RunStatus.RUNNING,
                attempts=JobRun.attempts + 1,
                started_at=now,
                worker_id=worker_id,
                updated_at=now,
            )
            .returning(
                JobRun.id,
                JobRun.name,
                JobRun.arguments,
                JobRun.attempts,
                JobRun.max_attempts,
                JobRun.owner_id,
            )
        )
    ).one_or_none()
    if row is None:
        return None
    return ClaimedRun(
        id=row.id,
        name=row.name,
        arguments=row.arguments or {},
        attempts=row.attempts,
        max_attempts=row.max_attempts,
        owner_id=row.owner_id,
        token=token,
    )


async def succeed(session: AsyncSession, run: ClaimedRun, result: Any) -> bool:
    now = utcnow()
    changed = await session.execute(
        _update()
        .where(_current(run.id, run.token), JobRun.status == RunStatus.RUNNING)
        .values(
            status=RunStatus.SUCCEEDED,
            progress=100,
            result_summary=None if result is None else summarize(result, MAX_RESULT_CHARS),
            error=None,
            finished_at=now,
            updated_at=now,
        )
    )
    return bool(changed.rowcount)  # type: ignore[attr-defined]


async def retry_later(
    session: AsyncSession, run: ClaimedRun, error: str, delay: float
) -> str | None:
    """Queue the run again after `delay` seconds; returns its new token."""
    now = utcnow()
    token = new_token()
    changed = await session.execute(
        _update()
        .where(_current(run.id, run.token), JobRun.status == RunStatus.RUNNING)
        .values(
            status=RunStatus.QUEUED,
            error=error,
            token=token,
            run_after=now + timedelta(seconds=delay),
            worker_id=None,
            updated_at=now,
        )
    )
    return token if changed.rowcount else None  # type: ignore[attr-defined]


async def fail(session: AsyncSession, run_id: int, token: str, error: str) -> bool:
    now = utcnow()
    changed = await session.execute(
        _update()
        .where(
            _current(run_id, token),
            JobRun.status.in_((RunStatus.QUEUED, RunStatus.RUNNING)),
        )
        .values(status=RunStatus.FAILED, error=error, finished_at=now, updated_at=now)
    )
    return bool(changed.rowcount)  # type: ignore[attr-defined]


async def release(session: AsyncSession, run: ClaimedRun) -> str | None:
    """Hand an interrupted run back to the queue (its worker is stopping); the attempt it
    was on does not count. Returns the new token."""
    now = utcnow()
    token = new_token()
    changed = await session.execute(
        _update()
        .where(_current(run.id, run.token), JobRun.status == RunStatus.RUNNING)
        .values(
            status=RunStatus.QUEUED,
            attempts=JobRun.attempts - 1,
            token=token,
            worker_id=None,
            run_after=now,
            updated_at=now,
        )
    )
    return token if changed.rowcount else None  # type: ignore[attr-defined]


async def set_progress(
    session: AsyncSession, run_id: int, token: str, percent: int, message: str | None
) -> bool:
    changed = await session.execute(
        _update()
        .where(_current(run_id, token), JobRun.status == RunStatus.RUNNING)
        .values(progress=percent, progress_message=message, updated_at=utcnow())
    )
    return bool(changed.rowcount)  # type: ignore[attr-defined]


@dataclass(frozen=True)
class Resend:
    """A queued run to send (again) with a fresh token."""

    id: int
    name: str
    queue: str
    token: str
    run_after: datetime
    owner_id: int | None


async def take_orphans(
    session: AsyncSession, *, live_workers: set[str], include_queued: bool
) -> list[Resend]:
    """Runs to send again: `running` ones whose worker is gone (it died mid-job), and, when
    `include_queued`, every queued one (the embedded queue lived in a process that ended).
    Each gets a new token, so any old message for it is stale."""
    orphaned = (JobRun.status == RunStatus.RUNNING) & or_(
        JobRun.worker_id.is_(None), JobRun.worker_id.not_in(sorted(live_workers) or [""])
    )
    condition = or_(orphaned, JobRun.status == RunStatus.QUEUED) if include_queued else orphaned
    rows = (
        await session.execute(select(JobRun).where(condition).order_by(JobRun.id).with_for_update())
    ).scalars()
    resends = []
    now = utcnow()
    for run in rows:
        if run.status == RunStatus.RUNNING:
            # Its attempt ended with its worker: it counts, and the run waits its backoff.
            run.error = f"worker {run.worker_id or 'unknown'} stopped during attempt {run.attempts}"
            run.status = RunStatus.QUEUED
            run.worker_id = None
        run.token = new_token()
        run.updated_at = now
        resends.append(Resend(run.id, run.name, run.queue, run.token, run.run_after, run.owner_id))
    await session.flush()
    return resends


async def requeue_failed(session: AsyncSession, run_id: int) -> JobRun | None:
    """An admin's retry of a failed run: queued again with a fresh budget of attempts."""
    run = await session.get(JobRun, run_id, with_for_update=True)
    if run is None:
        return None
    if run.status != RunStatus.FAILED:
        return run
    now = utcnow()
    run.status = RunStatus.QUEUED
    run.attempts = 0
    run.progress = 0
    run.progress_message = None
    run.token = new_token()
    run.run_after = now
    run.finished_at = None
    run.started_at = None
    run.worker_id = None
    run.updated_at = now
    await session.flush()
    return run


# -- workers ----------------------------------------------------------------------------------


async def heartbeat(
    session: AsyncSession, worker_id: str, *, kind: str, queues: str, concurrency: int
) -> None:
    now = utcnow()
    changed = await session.execute(
        update(JobWorker).where(JobWorker.id == worker_id).values(last_seen_at=now)
    )
    if not changed.rowcount:  # type: ignore[attr-defined]
        session.add(
            JobWorker(
                id=worker_id,
                kind=kind,
                queues=queues,
                concurrency=concurrency,
                started_at=now,
                last_seen_at=now,
            )
        )
        await session.flush()


async def live_worker_ids(session: AsyncSession, since: datetime) -> set[str]:
    rows = await session.scalars(select(JobWorker.id).where(JobWorker.last_seen_at >= since))
    return set(rows)


async def count_by(session: AsyncSession, *conditions: Any) -> dict[str, int]:
    rows = await session.execute(
        select(JobRun.queue, func.count()).where(*conditions).group_by(JobRun.queue)
    )
    return {queue: count for queue, count in rows.all()}
