"""Administration endpoints: /admin/users (find and manage accounts), /admin/audit (the
security log), /admin/queue/status and /admin/jobs (background jobs). Every route needs an
administrator with the `admin` scope."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from fastapi import Depends, Query

from tradeos.accounts import management, service
from tradeos.accounts.deps import AdminDep, ClientDep, get_admin
from tradeos.accounts.models import KycStatus, Role
from tradeos.accounts.service import Audit
from tradeos.admin.schemas import (
    AdminUserOut,
    AdminUserUpdate,
    AuditEventOut,
    JobRunOut,
    QueueStatusOut,
)
from tradeos.billing.plans import Tier
from tradeos.core.db import MAX_ROW_ID
from tradeos.core.deps import JobsDep, PageQuery, ResourceId, SessionDep
from tradeos.core.errors import NotFound, ValidationFailed, field_error
from tradeos.core.fields import Moment, NoNul
from tradeos.core.jobs import JobRun, Priority, RunStatus
from tradeos.core.jobs import status as job_status
from tradeos.core.jobs.status import RUN_SORT
from tradeos.core.pagination import Ordering, Page, paginate
from tradeos.core.routing import APIRouter

# Guarded here as well as per endpoint, so no route of this router can forget it.
admin = APIRouter(prefix="/admin", tags=["admin"], dependencies=[Depends(get_admin)])

UserSort = Annotated[Ordering, Depends(management.USER_SORT)]
UserId = Annotated[int | None, Query(ge=1, le=MAX_ROW_ID)]


@admin.get("/users")
async def list_users(
    _admin: AdminDep,
    session: SessionDep,
    paging: PageQuery,
    order: UserSort,
    search: Annotated[
        str | None,
        Query(max_length=100, description="Part of the email or username, any case."),
        NoNul,
    ] = None,
    role: Role | None = None,
    tier: Tier | None = None,
    status: Annotated[
        Literal["active", "inactive"] | None, Query(description="Account status.")
    ] = None,
    kyc_status: KycStatus | None = None,
) -> Page[AdminUserOut]:
    query = management.list_users_query(
        search=search,
        role=role,
        tier=tier,
        is_active=None if status is None else status == "active",
        kyc_status=kyc_status,
    )
    page = await paginate(session, query.order_by(*order.clauses), paging)
    return page.map(AdminUserOut.model_validate)


@admin.get("/users/{user_id}")
async def get_user(user_id: ResourceId, _admin: AdminDep, session: SessionDep) -> AdminUserOut:
    return AdminUserOut.model_validate(await service.get_user(session, user_id))


@admin.patch("/users/{user_id}")
async def update_user(
    user_id: ResourceId,
    body: AdminUserUpdate,
    actor: AdminDep,
    session: SessionDep,
    client: ClientDep,
) -> AdminUserOut:
    user = await management.admin_update_user(session, actor, user_id, body.changes(), client)
    return AdminUserOut.model_validate(user)


@admin.get("/audit")
async def list_audit_events(
    _admin: AdminDep,
    session: SessionDep,
    paging: PageQuery,
    actor_id: UserId = None,
    target_user_id: UserId = None,
    action: Audit | None = None,
    since: Annotated[
        Moment | None, Query(description="From this moment on (inclusive), with zone.")
    ] = None,
    until: Annotated[
        Moment | None, Query(description="Before this moment (exclusive), with zone.")
    ] = None,
) -> Page[AuditEventOut]:
    _check_window(since, until)
    query = management.audit_query(
        actor_id=actor_id, target_user_id=target_user_id, action=action, since=since, until=until
    )
    page = await paginate(session, query, paging)
    return page.map(AuditEventOut.model_validate)


def _check_window(since: datetime | None, until: datetime | None) -> None:
    if since is not None and until is not None and since > until:
        raise ValidationFailed(
            "since is after until: the time window is empty.",
            errors=[field_error("query.since", "must not be after until")],
        )


JobRunSort = Annotated[Ordering, Depends(RUN_SORT)]


@admin.get("/queue/status")
async def queue_status(_admin: AdminDep, session: SessionDep, jobs: JobsDep) -> QueueStatusOut:
    """Per queue: runs waiting, delayed and running, failures and successes of the last 24 h;
    scheduled jobs with their next run; the workers and schedulers seen."""
    status = await job_status.queue_status(session, jobs)
    return QueueStatusOut.model_validate(status)


@admin.get("/jobs")
async def list_jobs(
    _admin: AdminDep,
    session: SessionDep,
    paging: PageQuery,
    order: JobRunSort,
    status: RunStatus | None = None,
    name: Annotated[
        str | None,
        Query(max_length=100, description="The job's name, e.g. jobs.prune_runs."),
        NoNul,
    ] = None,
    queue: Priority | None = None,
    owner_id: UserId = None,
) -> Page[JobRunOut]:
    query = job_status.runs_query(status=status, name=name, queue=queue, owner_id=owner_id)
    page = await paginate(session, query.order_by(*order.clauses), paging)
    return page.map(JobRunOut.model_validate)


@admin.get("/jobs/{run_id}")
async def get_job(run_id: ResourceId, _admin: AdminDep, session: SessionDep) -> JobRunOut:
    run = await session.get(JobRun, run_id)
    if run is None:
        raise NotFound(f"No job run {run_id}.")
    return JobRunOut.model_validate(run)


@admin.post("/jobs/{run_id}/retry")
async def retry_job(
    run_id: ResourceId,
    actor: AdminDep,
    session: SessionDep,
    jobs: JobsDep,
    client: ClientDep,
) -> JobRunOut:
    """Queue a failed run again, with a fresh budget of attempts (409 if it has not failed)."""
    run = await jobs.retry_failed(session, run_id)
    service.record_audit(
        session,
        Audit.JOB_RETRIED,
        actor_id=actor.user_id,
        ip=client.ip,
        run_id=run.id,
        job=run.name,
    )
    return JobRunOut.model_validate(run)


routers = (admin,)
