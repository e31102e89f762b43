"""FastAPI dependencies that know no domain: settings, the request's database session, paging.

The getters are `async def` though they never await: FastAPI runs a plain `def` dependency in
a worker thread, and a thread hop per dependency was a measurable part of a small read's cost
(bench/RESULTS.md, candles' fourth measurement)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Path, Request
from sqlalchemy.ext.asyncio import AsyncSession

from tradeos.config import Settings
from tradeos.core.db import MAX_ROW_ID, Database
from tradeos.core.events import EventBus
from tradeos.core.jobs import JobQueue
from tradeos.core.pagination import PageQuery as PageQuery
from tradeos.core.storage import FileStorage


async def get_settings(request: Request) -> Settings:
    settings = request.app.state.settings
    assert isinstance(settings, Settings)
    return settings


async def get_database(request: Request) -> Database:
    database = request.app.state.database
    assert isinstance(database, Database)
    return database


async def get_storage(request: Request) -> FileStorage:
    """The file storage port (set up by the app's lifespan)."""
    storage: FileStorage = request.app.state.storage
    return storage


async def _request_session(request: Request) -> AsyncIterator[AsyncSession]:
    """The request's one unit of work: committed when the endpoint returns, rolled back on error.

    Declared with scope="function" so the commit happens *before* the response is sent: a
    client that sees a 2xx can rely on the change being stored. GET, HEAD and OPTIONS only
    read (HTTP says so), so their unit of work does not take SQLite's write lock.
    """
    writes = request.method not in ("GET", "HEAD", "OPTIONS")
    async with (await get_database(request)).session(write=writes) as session:
        yield session


SettingsDep = Annotated[Settings, Depends(get_settings)]
DatabaseDep = Annotated[Database, Depends(get_database)]
SessionDep = Annotated[AsyncSession, Depends(_request_session, scope="function")]
StorageDep = Annotated[FileStorage, Depends(get_storage)]

# A row id in a path: bounded, so an absurd number is a 422, not a database overflow.
ResourceId = Annotated[int, Path(ge=1, le=MAX_ROW_ID, description="The resource's id.")]


async def get_events(request: Request) -> EventBus:
    events: EventBus = request.app.state.events
    return events


EventsDep = Annotated[EventBus, Depends(get_events)]


async def get_jobs(request: Request) -> JobQueue:
    """The job queue: `await jobs.enqueue(session, some_job, {...})`."""
    jobs: JobQueue = request.app.state.jobs
    return jobs


JobsDep = Annotated[JobQueue, Depends(get_jobs)]
