"""aiosqlite with one trip to its thread per statement.

aiosqlite runs the sqlite3 connection in a thread of its own; every call is a trip there and
back (queue the call, wake the thread, wake the event loop with the result). SQLAlchemy's
aiosqlite adapter makes three or four trips per statement: create a cursor, execute, fetch the
rows, close the cursor. Each trip costs more CPU than a small statement itself, and an order
runs about fifteen statements.

`connect` makes an `aiosqlite.Connection` whose cursors do the whole statement in one trip:
execute, fetch every row, note the description, row count and last row id, close. Fetching
then reads what the trip brought back. SQLAlchemy buffers a result's rows the same way on
this driver, so nothing is held longer than before. Everything else (commit, rollback, the
thread, errors) is aiosqlite's own.
"""

from __future__ import annotations

import sqlite3
from collections import deque
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import aiosqlite

Row = tuple[Any, ...]
_Outcome = tuple[Any, int, int | None, list[Row]]


def _run_statement(
    connection: sqlite3.Connection, sql: str, parameters: Any, many: bool
) -> _Outcome:
    """In aiosqlite's thread: the whole statement, its rows fetched, its cursor closed."""
    cursor = connection.cursor()
    try:
        if many:
            cursor.executemany(sql, parameters)
        else:
            cursor.execute(sql, parameters)
        rows = cursor.fetchall() if cursor.description is not None else []
        return cursor.description, cursor.rowcount, cursor.lastrowid, rows
    finally:
        cursor.close()


class OneTripCursor:
    """The part of `aiosqlite.Cursor` SQLAlchemy uses, one trip per execute."""

    def __init__(self, connection: OneTripConnection) -> None:
        self._connection = connection
        self.description: Any = None
        self.rowcount = -1
        self.lastrowid: int | None = None
        self.arraysize = 1
        self._rows: deque[Row] = deque()

    async def __aenter__(self) -> OneTripCursor:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.close()

    async def execute(self, sql: str, parameters: Any = ()) -> OneTripCursor:
        return await self._run(sql, parameters, many=False)

    async def executemany(self, sql: str, parameters: Iterable[Any]) -> OneTripCursor:
        return await self._run(sql, parameters, many=True)

    async def _run(self, sql: str, parameters: Any, *, many: bool) -> OneTripCursor:
        connection = self._connection
        # `_execute` is aiosqlite's one primitive: run a call in its thread, await the result.
        outcome: _Outcome = await connection._execute(  # type: ignore[no-untyped-call]
            _run_statement, connection._conn, sql, parameters, many
        )
        self.description, self.rowcount, self.lastrowid, rows = outcome
        self._rows = deque(rows)
        return self

    async def fetchone(self) -> Row | None:
        return self._rows.popleft() if self._rows else None

    async def fetchmany(self, size: int | None = None) -> list[Row]:
        count = min(self.arraysize if size is None else size, len(self._rows))
        return [self._rows.popleft() for _ in range(count)]

    async def fetchall(self) -> Sequence[Row]:
        rows = list(self._rows)
        self._rows.clear()
        return rows

    async def close(self) -> None:
        self._rows.clear()  # the sqlite3 cursor was closed in its trip


class OneTripConnection(aiosqlite.Connection):
    """An aiosqlite connection whose cursors make one trip per statement."""

    def cursor(self) -> OneTripCursor:  # type: ignore[override]
        return OneTripCursor(self)


def connect(database: str | Path, **kwargs: Any) -> OneTripConnection:
    """`aiosqlite.connect` with `OneTripConnection`: SQLAlchemy's `async_creator_fn`."""
    location = str(database)

    def connector() -> sqlite3.Connection:
        opened: sqlite3.Connection = sqlite3.connect(location, **kwargs)
        return opened

    connection = OneTripConnection(connector, iter_chunk_size=64)
    connection._thread.daemon = True  # as SQLAlchemy does for aiosqlite's own connections
    return connection
