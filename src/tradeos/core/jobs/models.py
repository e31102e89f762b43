"""The tables behind jobs: one row per job run, one per process that runs or schedules jobs.

`job_runs` is the record of truth: a run's status survives restarts, the admin endpoints and
API resources (a backtest's progress) read it, and queued runs can always be sent again. The
broker only carries `(run_id, token)`; the arguments live here.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, BigInteger, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from tradeos.core.db import Base, IdPK, UTCDateTime, utcnow


class RunStatus(StrEnum):
    QUEUED = "queued"  # waiting for a worker (or for its retry delay to pass)
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"  # attempts exhausted, or it could not be queued; an admin may retry it


class JobRun(Base):
    __tablename__ = "job_runs"
    id: Mapped[IdPK]
    name: Mapped[str] = mapped_column(String(100))
    queue: Mapped[str] = mapped_column(String(20))
    status: Mapped[RunStatus] = mapped_column(String(20), default=RunStatus.QUEUED)
    # The keyword arguments the job is called with (JSON), and a short form for lists.
    arguments: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    arguments_summary: Mapped[str] = mapped_column(String(200), default="")
    # The user the run belongs to: its state changes go to that user's `jobs` channel. A plain
    # number, not a foreign key: core/ knows no domain's tables.
    owner_id: Mapped[int | None] = mapped_column(BigInteger)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    max_attempts: Mapped[int] = mapped_column(Integer)
    progress: Mapped[int] = mapped_column(Integer, default=0)
    progress_message: Mapped[str | None] = mapped_column(String(200))
    result_summary: Mapped[str | None] = mapped_column(Text)
    error: Mapped[str | None] = mapped_column(Text)
    # Each send of the run carries a fresh token; a message whose token is not the run's
    # current one is stale (the run was sent again since) and is skipped.
    token: Mapped[str] = mapped_column(String(32))
    # "name@fire time" for runs a schedule started: unique, so a period fires once however many
    # schedulers run.
    schedule_key: Mapped[str | None] = mapped_column(String(200), unique=True)
    worker_id: Mapped[str | None] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    run_after: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)

    __table_args__ = (
        # Queue status counts by (status, queue); the admin list filters by status and name.
        Index("ix_job_runs_status_queue", "status", "queue"),
        Index("ix_job_runs_name_created_at", "name", "created_at"),
        Index("ix_job_runs_finished_at", "finished_at"),
        Index("ix_job_runs_owner_id", "owner_id"),
    )


class JobWorker(Base):
    """A process that runs jobs (a worker, or `serve` in embedded mode) or schedules them; it
    writes `last_seen_at` every few seconds while it lives."""

    __tablename__ = "job_workers"
    id: Mapped[str] = mapped_column(String(100), primary_key=True)
    kind: Mapped[str] = mapped_column(String(20))  # "worker" | "scheduler"
    queues: Mapped[str] = mapped_column(String(100), default="")
    concurrency: Mapped[int] = mapped_column(Integer, default=0)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_seen_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
