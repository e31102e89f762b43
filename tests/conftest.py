"""Shared fixtures: the test database, settings, the app and an HTTP client over ASGI.

The suite runs on the embedded backends (a SQLite file, in-process everything) unless
TEST_DATABASE_URL / TEST_REDIS_URL point at PostgreSQL / Redis; then the same tests run there.
The database is migrated once per session with the real Alembic migrations; each test that
touches it gets empty tables afterwards.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from tradeos import migrations as db_migrations
from tradeos.app import create_app
from tradeos.config import Settings, get_settings, normalize_database_url
from tradeos.core.db import Database
from tradeos.core.logging import configure_logging
from tradeos.models import Base

TEST_DATABASE_URL = os.environ.get("TEST_DATABASE_URL") or None
TEST_REDIS_URL = os.environ.get("TEST_REDIS_URL") or None
# RabbitMQ, for the job tests that run on it (only those: it is one job broker among three).
TEST_AMQP_URL = os.environ.get("TEST_AMQP_URL") or None

configure_logging("WARNING")


def pytest_report_header() -> list[str]:
    database = "postgresql (TEST_DATABASE_URL)" if TEST_DATABASE_URL else "sqlite (embedded)"
    cache = "redis (TEST_REDIS_URL)" if TEST_REDIS_URL else "in-process"
    return [f"tradeos backends: database={database}, cache/events={cache}"]


@pytest.fixture(scope="session", autouse=True)
def _job_processes_warmed_up() -> None:
    """A process that runs jobs warms numeric code up in a background thread as it starts
    (core.jobs `on_worker_start`). In the suite that happens once, here, before any test, so no
    test shares the machine, or its memory measurements, with a compiling thread."""
    import tradeos.jobs  # noqa: F401 - registers every hook
    from tradeos.core.jobs import queue

    asyncio.run(queue._run_worker_start_hooks())


@pytest.fixture(autouse=True)
def _isolated_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """No test reads the developer's .env or a cached settings object, or writes outside tmp."""
    for name in Settings.model_fields:
        monkeypatch.delenv(name.upper(), raising=False)
    monkeypatch.chdir(tmp_path)
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


class CapturedLogs:
    """The JSON log lines written while a test runs."""

    def __init__(self) -> None:
        self.stream = io.StringIO()

    @property
    def text(self) -> str:
        return self.stream.getvalue()

    def lines(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.text.splitlines() if line.strip()]

    def events(self, name: str) -> list[dict[str, Any]]:
        return [line for line in self.lines() if line.get("event") == name]


@pytest.fixture
def captured_logs() -> Iterator[CapturedLogs]:
    captured = CapturedLogs()
    configure_logging("DEBUG", json=True, stream=captured.stream)
    yield captured
    configure_logging("WARNING")


@pytest.fixture(scope="session")
def database_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    if TEST_DATABASE_URL:
        return normalize_database_url(TEST_DATABASE_URL)
    return f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('db') / 'tradeos-test.db'}"


@pytest.fixture(scope="session")
async def migrated_database(database_url: str) -> AsyncIterator[Database]:
    # Alembic's env.py runs its own event loop, so migrations run in a thread.
    await asyncio.to_thread(db_migrations.upgrade, database_url)
    database = Database(database_url)
    yield database
    await database.dispose()


async def _empty_all_tables(database: Database) -> None:
    async with database.engine.begin() as connection:
        tables = list(reversed(Base.metadata.sorted_tables))
        if database.backend == "postgresql":
            names = ", ".join(f'"{table.name}"' for table in tables)
            if names:
                await connection.execute(text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))
        else:
            for table in tables:
                await connection.execute(table.delete())


@pytest.fixture
async def database(migrated_database: Database) -> AsyncIterator[Database]:
    """The migrated test database; emptied after the test, whatever it wrote."""
    yield migrated_database
    await _empty_all_tables(migrated_database)


@pytest.fixture
async def session(database: Database) -> AsyncIterator[AsyncSession]:
    """A session for arranging and checking data directly; the test commits what it needs."""
    async with database.sessionmaker() as db_session:
        yield db_session


@pytest.fixture
def settings_factory(tmp_path: Path, database_url: str) -> Callable[..., Settings]:
    def make(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "environment": "test",
            "data_dir": tmp_path / "data",
            "database_url": database_url,
            "redis_url": TEST_REDIS_URL,
            # Each test's Redis keys (rate-limit counters, lockouts) are its own.
            "redis_key_prefix": f"test-{uuid.uuid4().hex}",
            # Generous, so tests that sign in many times are not limited; the rate-limit
            # tests set the limits they check.
            "rate_limit_auth": "10000/minute",
        }
        values.update(overrides)
        return Settings(_env_file=None, **values)  # type: ignore[call-arg]

    return make


@pytest.fixture
def settings(settings_factory: Callable[..., Settings]) -> Settings:
    return settings_factory()


@pytest.fixture
def app(settings: Settings, database: Database) -> FastAPI:
    return create_app(settings, configure_logs=False)


@asynccontextmanager
async def serve_app(app: FastAPI, **client_options: Any) -> AsyncIterator[httpx.AsyncClient]:
    """Run the app's lifespan and give an HTTP client talking to it in-process."""
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://testserver", **client_options
        ) as client:
            yield client


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with serve_app(app) as http:
        yield http


# -- S3, mocked (moto) -----------------------------------------------------------------------

TEST_BUCKET = "tradeos-test-documents"
TEST_REGION = "us-east-1"


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Any]:
    """A mocked AWS with fake credentials (never the developer's) and one bucket."""
    from moto import mock_aws

    boto3 = pytest.importorskip("boto3")
    for name in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_SESSION_TOKEN", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", TEST_REGION)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    with mock_aws():
        client = boto3.client("s3", region_name=TEST_REGION)
        client.create_bucket(Bucket=TEST_BUCKET)
        yield client
        client.close()
