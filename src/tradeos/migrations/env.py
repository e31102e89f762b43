"""Alembic environment: async engine, SQLite batch mode, constraint naming from the models."""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy.engine import Connection

from tradeos.migrations import check_foreign_keys, configure_context, migration_engine
from tradeos.models import Base

config = context.config
target_metadata = Base.metadata


def _run(connection: Connection) -> None:
    context.configure(connection=connection, **configure_context(target_metadata=target_metadata))
    with context.begin_transaction():
        context.run_migrations()
        check_foreign_keys(connection)  # before commit: a broken reference undoes the migration


async def _run_async(url: str) -> None:
    engine = migration_engine(url)
    try:
        async with engine.connect() as connection:
            await connection.run_sync(_run)
            await connection.commit()
    finally:
        await engine.dispose()


def run_migrations_offline() -> None:
    context.configure(
        url=config.attributes["database_url"],
        literal_binds=True,
        **configure_context(target_metadata=target_metadata),
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:  # called with a connection already open (tests, run_sync)
        _run(connection)
    else:
        asyncio.run(_run_async(config.attributes["database_url"]))


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
