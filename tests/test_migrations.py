"""Migrations: up from empty, down to base, up again, and the models match the migrations."""

from __future__ import annotations

import uuid
import warnings
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from tradeos import migrations as db_migrations
from tradeos.core.db import create_engine
from tradeos.migrations import configure_context
from tradeos.models import Base


@pytest.fixture
async def empty_database(
    database_url: str, tmp_path: Path
) -> AsyncIterator[tuple[str, AsyncEngine]]:
    """An empty database on the backend under test: a new SQLite file or PostgreSQL schema."""
    if database_url.startswith("sqlite"):
        url = f"sqlite+aiosqlite:///{tmp_path / 'empty.db'}"
        engine = create_engine(url)
        yield url, engine
        await engine.dispose()
        return
    schema = f"migration_test_{uuid.uuid4().hex[:10]}"
    admin = create_async_engine(database_url)
    async with admin.begin() as connection:
        await connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    engine = create_async_engine(
        database_url, connect_args={"server_settings": {"search_path": schema}}
    )
    try:
        yield database_url, engine
    finally:
        await engine.dispose()
        async with admin.begin() as connection:
            await connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        await admin.dispose()


def _tables(connection: Connection) -> set[str]:
    return set(inspect(connection).get_table_names()) - {"alembic_version"}


async def _migrate(engine: AsyncEngine, url: str, direction: str, revision: str) -> None:
    step = db_migrations.upgrade if direction == "up" else db_migrations.downgrade
    async with engine.begin() as connection:
        await connection.run_sync(lambda sync: step(url, revision, connection=sync))


async def _state(engine: AsyncEngine) -> tuple[str | None, set[str]]:
    async with engine.connect() as connection:
        return (
            await connection.run_sync(db_migrations.current_revision),
            await connection.run_sync(_tables),
        )


async def test_upgrade_downgrade_upgrade(empty_database: tuple[str, AsyncEngine]) -> None:
    url, engine = empty_database
    model_tables = set(Base.metadata.tables)

    assert await _state(engine) == (None, set())
    await _migrate(engine, url, "up", "head")
    assert await _state(engine) == (db_migrations.head_revision(), model_tables)

    await _migrate(engine, url, "down", "base")
    assert await _state(engine) == (None, set())

    await _migrate(engine, url, "up", "head")
    assert await _state(engine) == (db_migrations.head_revision(), model_tables)


async def test_models_match_the_migrations(empty_database: tuple[str, AsyncEngine]) -> None:
    url, engine = empty_database
    await _migrate(engine, url, "up", "head")

    def differences(connection: Connection) -> list[object]:
        context = MigrationContext.configure(connection, opts=configure_context())
        with warnings.catch_warnings():
            # SQLite cannot reflect expression indexes; the migration creates them by hand.
            warnings.filterwarnings("ignore", message=".*expression-based index.*")
            return list(compare_metadata(context, Base.metadata))

    async with engine.connect() as connection:
        diff = await connection.run_sync(differences)
    assert diff == [], f"models and migrations differ: {diff}"


async def test_case_insensitive_unique_indexes_exist(
    empty_database: tuple[str, AsyncEngine],
) -> None:
    url, engine = empty_database
    await _migrate(engine, url, "up", "head")
    insert = text(
        "INSERT INTO users"
        " (email, username, password_hash, role, is_active, created_at, updated_at)"
        " VALUES (:email, :username, 'x', 'user', true, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"
    )
    async with engine.begin() as connection:
        await connection.execute(insert, {"email": "Ann@Example.com", "username": "ann"})
    with pytest.raises(Exception, match=r"(?i)unique"):
        async with engine.begin() as connection:
            await connection.execute(insert, {"email": "ann@example.com", "username": "ann2"})


def test_there_is_one_head() -> None:
    from alembic.script import ScriptDirectory

    heads = ScriptDirectory.from_config(db_migrations.alembic_config("")).get_heads()
    assert len(heads) == 1
