"""Migrations: up from empty, down to base, up again, and the models match the migrations."""

from __future__ import annotations

import uuid
import warnings
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.operations import Operations
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Column, String, inspect, text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from tradeos import migrations as db_migrations
from tradeos.migrations import check_foreign_keys, configure_context, migration_engine
from tradeos.models import Base


@pytest.fixture
async def empty_database(
    database_url: str, tmp_path: Path
) -> AsyncIterator[tuple[str, AsyncEngine]]:
    """An empty database on the backend under test: a new SQLite file or PostgreSQL schema."""
    if database_url.startswith("sqlite"):
        url = f"sqlite+aiosqlite:///{tmp_path / 'empty.db'}"
        engine = migration_engine(url)
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


# Every revision the users table has lived through: the case-insensitive unique indexes must
# hold at each (a downgrade that rebuilds the table on SQLite could silently drop them).
@pytest.mark.parametrize("revision", ["head", "0001"])
async def test_case_insensitive_unique_indexes_exist(
    empty_database: tuple[str, AsyncEngine], revision: str
) -> None:
    url, engine = empty_database
    await _migrate(engine, url, "up", "head")
    if revision != "head":
        await _migrate(engine, url, "down", revision)
    insert = text(
        "INSERT INTO users"
        " (email, username, password_hash, role, is_active, created_at, updated_at)"
        " VALUES (:email, :username, 'x', 'user', true, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"
    )
    async with engine.begin() as connection:
        await connection.execute(insert, {"email": "Ann@Example.com", "username": "ann"})
    for clash in (
        {"email": "ann@example.com", "username": "ann2"},
        {"email": "other@example.com", "username": "ANN"},
    ):
        with pytest.raises(Exception, match=r"(?i)unique"):
            async with engine.begin() as connection:
                await connection.execute(insert, clash)


def test_there_is_one_head() -> None:
    from alembic.script import ScriptDirectory

    heads = ScriptDirectory.from_config(db_migrations.alembic_config("")).get_heads()
    assert len(heads) == 1


async def test_constraints_are_named_by_the_convention(
    empty_database: tuple[str, AsyncEngine],
) -> None:
    url, engine = empty_database
    await _migrate(engine, url, "up", "head")

    def names(connection: Connection) -> tuple[str | None, set[str]]:
        inspector = inspect(connection)
        indexes = set()
        if connection.dialect.name == "postgresql":  # SQLite cannot reflect expression indexes
            indexes = {index["name"] for index in inspector.get_indexes("users")}
        return inspector.get_pk_constraint("users")["name"], indexes

    async with engine.connect() as connection:
        primary_key, indexes = await connection.run_sync(names)
    assert primary_key == "pk_users"
    if engine.dialect.name == "postgresql":
        assert {"uq_users_email_lower", "uq_users_username_lower"} <= indexes


def _parent_and_children(connection: Connection) -> None:
    connection.exec_driver_sql("CREATE TABLE parents (id INTEGER PRIMARY KEY, name TEXT)")
    connection.exec_driver_sql(
        "CREATE TABLE children (id INTEGER PRIMARY KEY,"
        " parent_id INTEGER REFERENCES parents (id) ON DELETE CASCADE)"
    )
    connection.exec_driver_sql("INSERT INTO parents (id, name) VALUES (1, 'p')")
    connection.exec_driver_sql("INSERT INTO children (id, parent_id) VALUES (1, 1), (2, 1)")


def _rebuild_parents(connection: Connection) -> int:
    # What render_as_batch produces for SQLite: copy the table, drop the old one, rename.
    operations = Operations(MigrationContext.configure(connection))
    with operations.batch_alter_table("parents", recreate="always") as batch:
        batch.add_column(Column("note", String(20)))
    check_foreign_keys(connection)
    return int(connection.exec_driver_sql("SELECT count(*) FROM children").scalar_one())


async def test_sqlite_batch_migrations_keep_child_rows(tmp_path: Path) -> None:
    engine = migration_engine(f"sqlite+aiosqlite:///{tmp_path / 'batch.db'}")
    try:
        async with engine.begin() as connection:
            await connection.run_sync(_parent_and_children)
        async with engine.begin() as connection:
            assert await connection.run_sync(_rebuild_parents) == 2
    finally:
        await engine.dispose()


async def test_a_migration_that_breaks_references_is_refused(tmp_path: Path) -> None:
    engine = migration_engine(f"sqlite+aiosqlite:///{tmp_path / 'broken.db'}")
    try:
        async with engine.begin() as connection:
            await connection.run_sync(_parent_and_children)

        async def orphan_the_children() -> None:
            async with engine.begin() as connection:
                await connection.exec_driver_sql("DELETE FROM parents")
                await connection.run_sync(check_foreign_keys)

        with pytest.raises(RuntimeError, match="2 broken references in children"):
            await orphan_the_children()
        async with engine.connect() as connection:  # rolled back: the parent is still there
            assert (await connection.exec_driver_sql("SELECT count(*) FROM parents")).scalar() == 1
    finally:
        await engine.dispose()


async def test_emails_stored_before_0002_are_lower_cased(
    empty_database: tuple[str, AsyncEngine],
) -> None:
    url, engine = empty_database
    await _migrate(engine, url, "up", "0001")
    async with engine.begin() as connection:
        await connection.execute(
            text(
                "INSERT INTO users"
                " (email, username, password_hash, role, is_active, created_at, updated_at)"
                " VALUES ('Ölaf@Example.COM', 'olaf', 'x', 'user', true,"
                " CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"
            )
        )
    await _migrate(engine, url, "up", "head")
    async with engine.connect() as connection:
        stored = await connection.scalar(text("SELECT email FROM users"))
    assert stored == "ölaf@example.com"
