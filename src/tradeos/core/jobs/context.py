"""What a running job is given: its run, the platform's ports, and a way to report progress."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tradeos.config import Settings
    from tradeos.core.cache import Cache
    from tradeos.core.db import Database
    from tradeos.core.events import EventBus
    from tradeos.core.jobs.queue import JobQueue
    from tradeos.core.storage import FileStorage


@dataclass
class JobContext:
    run_id: int
    name: str
    attempt: int  # 1 for the first attempt
    max_attempts: int
    owner_id: int | None
    queue: JobQueue
    _token: str

    @property
    def settings(self) -> Settings:
        return self.queue.settings

    @property
    def database(self) -> Database:
        """Open short units of work with `ctx.database.session()`; never hold one across slow
        work (on SQLite it holds the process's only connection)."""
        return self.queue.database

    @property
    def events(self) -> EventBus:
        return self.queue.events

    @property
    def cache(self) -> Cache:
        return self.queue.cache

    @property
    def storage(self) -> FileStorage:
        return self.queue.storage

    async def progress(self, percent: int, message: str | None = None) -> None:
        """Record how far the run is (0–100, with an optional short message); the owner's
        `jobs` channel hears of it."""
        await self.queue.report_progress(self, percent, message)

    def __repr__(self) -> str:  # the token stays out of logs
        return f"JobContext(run_id={self.run_id}, name={self.name!r}, attempt={self.attempt})"
