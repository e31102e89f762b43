"""Running the Alembic migrations from code: the CLI, `serve`'s auto-upgrade and the tests.

The migration scripts ship inside the package, so an installed TradeOS can upgrade a
database without a checkout or an alembic.ini.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from tradeos.core.db import create_engine

MIGRATIONS_DIR = Path(__file__).parent


def alembic_config(database_url: str, connection: Connection | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    # Stored in attributes, not the ini options: '%' in a password would upset ConfigParser.
    config.attributes["database_url"] = database_url
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config("")).get_current_head()
    assert head is not None
    return head


def upgrade(
    database_url: str, revision: str = "head", *, connection: Connection | None = None
) -> None:
    command.upgrade(alembic_config(database_url, connection), revision)


def downgrade(database_url: str, revision: str, *, connection: Connection | None = None) -> None:
    command.downgrade(alembic_config(database_url, connection), revision)


def current_revision(connection: Connection) -> str | None:
    """The revision a database is at (None for an empty one); works on a sync connection."""
    return MigrationContext.configure(connection).get_current_revision()


def migration_engine(database_url: str) -> AsyncEngine:
    """The engine migrations run on. On SQLite its foreign keys are off: batch mode rebuilds a
    table by copying and dropping it, and with foreign keys on that drop would cascade to (or
    be refused by) the rows that refer to it. check_foreign_keys() then verifies the result."""
    return create_engine(database_url, sqlite_foreign_keys=False)


def check_foreign_keys(connection: Connection) -> None:
    """Fail (and so roll back) a SQLite migration that left rows pointing at nothing."""
    if connection.dialect.name != "sqlite":
        return  # PostgreSQL checks every reference as the migration runs
    broken = connection.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
    if broken:
        tables = sorted({row[0] for row in broken})
        raise RuntimeError(f"migration left {len(broken)} broken references in {', '.join(tables)}")


def configure_context(**kwargs: Any) -> dict[str, Any]:
    """Options every migration context shares, online and offline (see env.py)."""
    # transactional_ddl: core.db emits BEGIN itself on SQLite, so a failed migration rolls back
    # whole there too.
    return {
        "render_as_batch": True,
        "compare_type": True,
        "transactional_ddl": True,
        "user_module_prefix": "tdb.",
        **kwargs,
    }
