"""/admin/queue/status, /admin/jobs and a failed run's retry, through the running app."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from tests.core import sample_jobs
from tests.factories import bearer, make_user, sign_in
from tradeos.accounts.models import AuditEvent, Role
from tradeos.config import Settings
from tradeos.core.db import utcnow
from tradeos.core.jobs import JobRun, RunStatus

API = "/api/v1"


@pytest.fixture
def settings(settings_factory: Callable[..., Settings]) -> Settings:
    # The app runs jobs itself, on whichever broker the suite runs with.
    return settings_factory(jobs_run_in_serve=True)


async def admin_headers(session: AsyncSession, settings: Settings) -> dict[str, str]:
    admin = await make_user(session, role=Role.ADMIN.value)
    headers = bearer(await sign_in(session, settings, admin))
    return headers


def a_run(name: str, status: RunStatus, **values: Any) -> JobRun:
    now = utcnow()
    defaults: dict[str, Any] = {
        "name": name,
        "queue": "default",
        "status": status,
        "arguments": {},
        "arguments_summary": "{}",
        "attempts": 3 if status == RunStatus.FAILED else 0,
        "max_attempts": 3,
        "token": "f" * 32,
        "created_at": now,
        "run_after": now,
        "updated_at": now,
    }
    if status in (RunStatus.FAILED, RunStatus.SUCCEEDED):
        defaults["finished_at"] = now
    defaults.update(values)
    return JobRun(**defaults)


async def wait_for_status(
    client: httpx.AsyncClient, headers: dict[str, str], run_id: int, status: str
) -> dict[str, Any]:
    async with asyncio.timeout(15):
        while True:
            response = await client.get(f"{API}/admin/jobs/{run_id}", headers=headers)
            assert response.status_code == 200, response.text
            if response.json()["status"] == status:
                body: dict[str, Any] = response.json()
                return body
            await asyncio.sleep(0.05)


async def test_an_admin_retries_a_failed_run_and_it_runs_again(
    client: httpx.AsyncClient, session: AsyncSession, settings: Settings
) -> None:
    headers = await admin_headers(session, settings)
    failed = a_run(
        sample_jobs.record.name,
        RunStatus.FAILED,
        arguments={"value": "again"},
        error="ValueError: boom",
    )
    done = a_run(sample_jobs.record.name, RunStatus.SUCCEEDED)
    session.add_all([failed, done])
    await session.commit()

    response = await client.post(f"{API}/admin/jobs/{failed.id}/retry", headers=headers)
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["status"], body["attempts"], body["finished_at"]) == ("queued", 0, None)

    finished = await wait_for_status(client, headers, failed.id, "succeeded")
    assert finished["attempts"] == 1
    assert finished["result_summary"] == '{"attempt":1,"value":"again"}'
    assert finished["error"] is None

    actions = (await session.scalars(select(AuditEvent.action))).all()
    await session.commit()
    assert "job_retried" in actions

    again = await client.post(f"{API}/admin/jobs/{done.id}/retry", headers=headers)
    assert again.status_code == 409
    assert "only a failed run" in again.json()["detail"]
    missing = await client.post(f"{API}/admin/jobs/999999/retry", headers=headers)
    assert missing.status_code == 404


async def test_runs_are_listed_filtered_and_sorted(
    client: httpx.AsyncClient, session: AsyncSession, settings: Settings
) -> None:
    headers = await admin_headers(session, settings)
    t0 = utcnow() - timedelta(hours=1)
    session.add_all(
        [
            a_run("sample.flaky", RunStatus.FAILED, created_at=t0),
            a_run("sample.flaky", RunStatus.FAILED, created_at=t0 + timedelta(minutes=1)),
            a_run("sample.record", RunStatus.FAILED, created_at=t0 + timedelta(minutes=2)),
            a_run("sample.record", RunStatus.SUCCEEDED, created_at=t0 + timedelta(minutes=3)),
        ]
    )
    await session.commit()

    listed = await client.get(
        f"{API}/admin/jobs", params={"status": "failed", "sort": "-created"}, headers=headers
    )
    assert listed.status_code == 200, listed.text
    page = listed.json()
    assert page["total"] == 3
    assert [item["name"] for item in page["items"]] == [
        "sample.record",
        "sample.flaky",
        "sample.flaky",
    ]
    by_name = await client.get(
        f"{API}/admin/jobs",
        params={"status": "failed", "name": "sample.flaky", "size": 1},
        headers=headers,
    )
    assert (by_name.json()["total"], len(by_name.json()["items"])) == (2, 1)
    bad = await client.get(f"{API}/admin/jobs", params={"status": "lost"}, headers=headers)
    assert bad.status_code == 422
    assert bad.headers["content-type"] == "application/problem+json"


async def _scheduled_low_runs(session: AsyncSession) -> int:
    """The low-queue runs the app's scheduler made so far, whatever became of them (a worker
    may take one between any two reads)."""
    await session.rollback()  # a fresh transaction: SQLite would show the last one's snapshot
    runs = await session.scalars(
        select(JobRun.id).where(JobRun.queue == "low", JobRun.name != "sample.low")
    )
    return len(runs.all())


async def test_queue_status_counts_runs_and_shows_schedules_and_workers(
    client: httpx.AsyncClient, session: AsyncSession, settings: Settings, app: FastAPI
) -> None:
    headers = await admin_headers(session, settings)
    later = utcnow() + timedelta(hours=1)
    session.add_all(
        [
            # Blocked from running for now: one waits out a delay, one is "running" elsewhere.
            a_run("sample.low", RunStatus.QUEUED, queue="low", run_after=later),
            a_run("sample.high", RunStatus.RUNNING, queue="high", worker_id="elsewhere"),
            a_run("sample.flaky", RunStatus.FAILED),
            a_run("sample.flaky", RunStatus.FAILED, finished_at=utcnow() - timedelta(days=2)),
            a_run("sample.record", RunStatus.SUCCEEDED),
        ]
    )
    await session.commit()

    # The app's scheduler may enqueue its every-minute low-priority job (portfolio.snapshot)
    # while this runs, and the app's worker may take it at any moment: the low queue's depth
    # counts at most the runs the scheduler made, never the delayed one above.
    response = await client.get(f"{API}/admin/queue/status", headers=headers)
    scheduled = await _scheduled_low_runs(session)
    assert response.status_code == 200, response.text
    status = response.json()
    assert status["backend"] == app.state.jobs.backend
    queues = {queue["name"]: queue for queue in status["queues"]}
    assert list(queues) == ["high", "default", "low"]
    assert queues["low"]["delayed"] == 1
    assert 0 <= queues["low"]["depth"] <= scheduled
    assert queues["high"]["running"] == 1
    assert queues["default"]["failed_last_24h"] == 1  # the one two days old is not counted
    assert queues["default"]["succeeded_last_24h"] == 1

    prune = next(job for job in status["scheduled"] if job["name"] == "jobs.prune_runs")
    assert prune["schedule"] == "every 3600 s"
    assert prune["next_run_at"] > utcnow().isoformat()[:19]
    workers = [worker for worker in status["workers"] if worker["kind"] == "worker"]
    assert any(w["alive"] and w["id"] == app.state.jobs.worker_id for w in workers)
    if app.state.jobs.backend == "redis":
        assert set(status["broker"]) == {"high", "default", "low", "delayed"}
    else:
        assert status["broker"] is None


async def test_a_plain_user_cannot_see_the_queues(
    client: httpx.AsyncClient, session: AsyncSession, settings: Settings
) -> None:
    user = await make_user(session)
    headers = bearer(await sign_in(session, settings, user))
    await session.commit()
    for path in ("/admin/queue/status", "/admin/jobs"):
        response = await client.get(f"{API}{path}", headers=headers)
        assert response.status_code == 403
