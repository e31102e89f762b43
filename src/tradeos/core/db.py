"""The database: async engine and sessions, the declarative base, and exact column types.

SQLite (aiosqlite) is the embedded default; PostgreSQL (asyncpg) is the scaled-out choice.
Both go through the same models and the same Alembic migrations.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from decimal import Context, Decimal, Inexact, InvalidOperation
from typing import Annotated, Any, Final

from sqlalchemy import (
    BigInteger,
    DateTime,
    Dialect,
    Integer,
    MetaData,
    Numeric,
    String,
    Table,
    event,
    text,
)
from sqlalchemy.engine.interfaces import DBAPIConnection
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import DeclarativeBase, mapped_column
from sqlalchemy.pool import ConnectionPoolEntry, NullPool
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.functions import FunctionElement
from sqlalchemy.types import TypeDecorator, TypeEngine

from tradeos.core import sqlite_driver

# Constraint names are stable across backends, so Alembic can find and drop them later.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


# --------------------------------------------------------------------------- exact decimals

DECIMAL_PRECISION = 38
DECIMAL_SCALE = 18
_MAX_INTEGER_DIGITS = DECIMAL_PRECISION - DECIMAL_SCALE
_QUANTUM = Decimal(1).scaleb(-DECIMAL_SCALE)
# Width of the fixed-scale text on SQLite: sign + 20 integer digits + point + 18 decimals.
_SQLITE_TEXT_WIDTH = 1 + _MAX_INTEGER_DIGITS + 1 + DECIMAL_SCALE


# The default context has 28 digits, too few for NUMERIC(38,18); Inexact is trapped so a
# value that would need rounding is refused instead of silently changed. One shared context,
# passed explicitly: building one (or entering `localcontext`) per value was half the cost of
# writing candles. Only its flags ever change, and nothing reads them.
_EXACT = Context(prec=DECIMAL_PRECISION, traps=[InvalidOperation, Inexact])


def to_exact_decimal(value: object) -> Decimal:
    """Check and convert a value bound to an exact column. Floats are refused: not exact."""
    if type(value) is not Decimal:  # the common case skips the slower checks below
        value = _as_decimal(value)
    if not value.is_finite():
        raise ValueError(f"{value} is not a finite number")
    try:
        quantized = value.quantize(_QUANTUM, context=_EXACT)
    except (Inexact, InvalidOperation):
        raise ValueError(
            f"{value} does not fit NUMERIC({DECIMAL_PRECISION},{DECIMAL_SCALE}): at most "
            f"{_MAX_INTEGER_DIGITS} integer digits and {DECIMAL_SCALE} decimal places"
        ) from None
    # -0 is 0: PostgreSQL forgets the sign, so SQLite must too.
    return quantized.copy_abs() if quantized.is_zero() else quantized


def _as_decimal(value: object) -> Decimal:
    # bool is an int subclass, and a float is never exact: both are refused by name.
    if isinstance(value, bool) or not isinstance(value, Decimal | int | str):
        raise TypeError(
            f"exact decimal columns take Decimal, int or str, not {type(value).__name__}"
        )
    if isinstance(value, Decimal):  # a subclass
        return value
    try:
        return Decimal(value)
    except InvalidOperation:
        raise ValueError(f"{value!r} is not a decimal number") from None


def exact_text(value: object) -> str:
    """The fixed-scale text an exact column holds on SQLite: `12.5` -> `12.500…0` (18 places),
    never exponent notation."""
    exact = to_exact_decimal(value)
    text = str(exact)  # plain unless the value is tiny (1E-8); str is 3x faster than format
    return text if "E" not in text else format(exact, "f")


def strip_trailing_zeros(value: Decimal) -> Decimal:
    """`1.500000` -> `1.5`, `100.000` -> `100` (never `1E+2`): the same value, its shortest form."""
    if value.is_zero():
        return Decimal(0)
    normalized = value.normalize(context=_EXACT)
    exponent = normalized.as_tuple().exponent
    if isinstance(exponent, int) and exponent > 0:
        return normalized.quantize(Decimal(1))
    return normalized


class ExactDecimal(TypeDecorator[Decimal]):
    """A `Decimal` stored exactly on every backend.

    PostgreSQL: NUMERIC(38,18). SQLite has no exact numeric type (its NUMERIC is a binary
    float), so there the value is fixed-scale text. Consequence: on SQLite, do money
    arithmetic and sums in Python, not in SQL, and order through `order_key()`.
    """

    impl = Numeric(DECIMAL_PRECISION, DECIMAL_SCALE)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "sqlite":
            return dialect.type_descriptor(String(_SQLITE_TEXT_WIDTH))
        return dialect.type_descriptor(Numeric(DECIMAL_PRECISION, DECIMAL_SCALE, asdecimal=True))

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        if value is None:
            return None
        if dialect.name == "sqlite":
            return exact_text(value)
        return to_exact_decimal(value)

    def process_result_value(self, value: Any, dialect: Dialect) -> Decimal | None:
        if value is None:
            return None
        # Trimming the text is several times faster than Decimal.normalize(), and candle
        # reads load thousands of these per request.
        text = value if isinstance(value, str) else str(value)
        if "E" in text:
            return strip_trailing_zeros(Decimal(text))
        if "." in text:
            text = text.rstrip("0").rstrip(".")
        return Decimal(text) if text not in ("", "-0") else Decimal(0)

    @property
    def python_type(self) -> type[Decimal]:
        return Decimal


class Money(ExactDecimal):
    """An amount of a currency or asset: balances, prices, fees, PnL."""

    cache_ok = True


class Quantity(ExactDecimal):
    """A number of units: order and position sizes."""

    cache_ok = True


class numeric_order(FunctionElement[Decimal]):  # lower case: it reads as a SQL function
    """The ORDER BY key of an exact decimal column.

    PostgreSQL orders NUMERIC exactly. On SQLite the column is text, whose order is not
    numeric ("10" < "9"), so the key is the value as REAL there: numeric order, with values
    equal to ~15 significant digits tying (a tie-breaker column keeps pages stable).
    """

    inherit_cache = True
    type = Numeric()


@compiles(numeric_order)
def _numeric_order_default(element: numeric_order, compiler: SQLCompiler, **kw: Any) -> str:
    return compiler.process(element.clauses, **kw)


@compiles(numeric_order, "sqlite")
def _numeric_order_sqlite(element: numeric_order, compiler: SQLCompiler, **kw: Any) -> str:
    return f"CAST({compiler.process(element.clauses, **kw)} AS REAL)"


class decimal_text(FunctionElement[str]):  # lower case: it reads as a SQL function
    """An exact decimal column as the API writes it, made by the database: its shortest plain
    text (`100`, `0.5`, `0.00000001`). Reads of thousands of values skip Python's Decimal."""

    inherit_cache = True
    type = String()


@compiles(decimal_text)
def _decimal_text_default(element: decimal_text, compiler: SQLCompiler, **kw: Any) -> str:
    # NUMERIC(38,18) as text always has its 18 decimal places, so always a point to stop at.
    value = f"CAST({compiler.process(element.clauses, **kw)} AS TEXT)"
    return f"rtrim(rtrim({value}, '0'), '.')"


@compiles(decimal_text, "sqlite")
def _decimal_text_sqlite(element: decimal_text, compiler: SQLCompiler, **kw: Any) -> str:
    # The fixed-scale text ExactDecimal stores, with its point.
    return f"rtrim(rtrim({compiler.process(element.clauses, **kw)}, '0'), '.')"


class utc_text(FunctionElement[str]):  # lower case: it reads as a SQL function
    """A UTC time column as the API writes it, made by the database: `2026-01-02T03:04:05Z`,
    with `.ffffff` only when there are microseconds (as Pydantic writes it)."""

    inherit_cache = True
    type = String()


@compiles(utc_text)
def _utc_text_default(element: utc_text, compiler: SQLCompiler, **kw: Any) -> str:
    moment = f"({compiler.process(element.clauses, **kw)} AT TIME ZONE 'UTC')"
    return (
        f"to_char({moment}, 'YYYY-MM-DD\"T\"HH24:MI:SS') || CASE WHEN mod(CAST(date_part("
        f"'microseconds', {moment}) AS BIGINT), 1000000) = 0 THEN 'Z'"
        f" ELSE to_char({moment}, '.US\"Z\"') END"
    )


@compiles(utc_text, "sqlite")
def _utc_text_sqlite(element: utc_text, compiler: SQLCompiler, **kw: Any) -> str:
    # Stored as `2026-01-02 03:04:05.000000` (naive UTC).
    moment = compiler.process(element.clauses, **kw)
    return (
        f"substr({moment}, 1, 10) || 'T' || substr({moment}, 12, 8) || CASE WHEN"
        f" substr({moment}, 21) = '000000' THEN 'Z' ELSE substr({moment}, 20) || 'Z' END"
    )


def order_key(column: Any) -> Any:
    """What to ORDER BY for `column`: `numeric_order(column)` for exact decimals, else itself."""
    column_type = getattr(column, "type", None)
    return numeric_order(column) if isinstance(column_type, ExactDecimal) else column


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC timestamp on every backend; naive datetimes are refused."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        if value is None:
            return None
        utc = to_utc(value)
        # SQLite keeps no zone; store naive UTC there and attach UTC again on the way out.
        return utc.replace(tzinfo=None) if dialect.name == "sqlite" else utc

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        assert isinstance(value, datetime)
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


def utcnow() -> datetime:
    return datetime.now(UTC)


def to_utc(value: object) -> datetime:
    """Check a value bound to a UTC time column: a timezone-aware datetime, in UTC."""
    if not isinstance(value, datetime):
        raise TypeError(f"expected a datetime, got {type(value).__name__}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError("naive datetime refused: TradeOS stores timezone-aware UTC only")
    return value.astimezone(UTC)


# --------------------------------------------------------------------------- bulk writes


def _utc_naive_text(value: object) -> str:
    """A UTC time as SQLAlchemy's SQLite DATETIME stores it (`2026-01-02 03:04:05.000000`)."""
    if type(value) is not datetime or value.tzinfo is not UTC:  # the common case skips these
        value = to_utc(value)
    naive = value.replace(tzinfo=None)
    # str() is isoformat(" ") and 3x faster with timespec; it omits a zero microsecond.
    return str(naive) if naive.microsecond else f"{naive}.000000"


def _bulk_converter(column_type: TypeEngine[Any], dialect: Dialect) -> Any:
    """The function turning a Python value into what the driver's bulk path takes for a column
    of `column_type`, or None when the value goes as it is. Exact decimals go as their
    fixed-scale text on both backends (asyncpg's COPY reads NUMERIC from text exactly), so a
    converted row is plain text and numbers, cheap to send to another process."""
    if isinstance(column_type, ExactDecimal):
        return exact_text
    if isinstance(column_type, UTCDateTime):
        return _utc_naive_text if dialect.name == "sqlite" else to_utc
    return column_type.bind_processor(dialect)


def _convert(converter: Any, value: object) -> object:
    return value if value is None or converter is None else converter(value)


def bulk_row_converter(
    table: Table, columns: Sequence[str], dialect: Dialect
) -> Callable[[Sequence[Any]], tuple[Any, ...]]:
    """The function checking and converting one row (a value per name in `columns`) into what
    `bulk_insert(..., converted=True)` writes: exactly what the column types would bind, and
    errors (`ValueError`, `TypeError`) for what they would refuse."""
    converters = [_bulk_converter(table.c[name].type, dialect) for name in columns]

    def convert(row: Sequence[Any]) -> tuple[Any, ...]:
        return tuple(map(_convert, converters, row))

    return convert


async def bulk_insert(
    session: AsyncSession,
    table: Table,
    columns: Sequence[str],
    rows: Sequence[Sequence[Any]],
    *,
    converted: bool = False,
) -> None:
    """Insert many new rows through the driver's bulk path, in the session's transaction:
    PostgreSQL `COPY`, SQLite `executemany` of one prepared INSERT. Each row holds one value per
    name in `columns`; exact decimals and UTC times are checked and converted exactly as their
    column types would, so what lands is what an ORM insert would have written (`converted`:
    the rows went through `bulk_row_converter` already). Several times faster than
    SQLAlchemy's executemany, whose per-row parameter processing dominates."""
    if not rows:
        return
    await session.flush()  # pending ORM changes land first, in statement order
    connection = await session.connection()
    dialect = connection.dialect
    if converted:
        records = rows
    else:
        convert = bulk_row_converter(table, columns, dialect)
        records = [convert(row) for row in rows]
    if dialect.name == "postgresql":
        raw = await connection.get_raw_connection()
        driver = raw.driver_connection
        assert driver is not None
        if not driver.is_in_transaction():
            # SQLAlchemy begins lazily, on the first statement it runs: make sure COPY is
            # inside the session's transaction, so a rollback takes it back too.
            await connection.exec_driver_sql("SELECT 1")
        await driver.copy_records_to_table(
            table.name, schema_name=table.schema, columns=list(columns), records=records
        )
        return
    placeholders = ", ".join("?" for _ in columns)
    quoted = ", ".join(dialect.identifier_preparer.quote(name) for name in columns)
    statement = f"INSERT INTO {dialect.identifier_preparer.format_table(table)} ({quoted})"
    await connection.exec_driver_sql(f"{statement} VALUES ({placeholders})", list(records))


# An auto-incrementing primary key: BIGINT on PostgreSQL, INTEGER (the rowid) on SQLite.
BigIntPK = BigInteger().with_variant(Integer(), "sqlite")
# The largest id a 64-bit primary key can hold: path and query ids are bounded by it, so an
# absurd number is a 422, never a database overflow.
MAX_ROW_ID = 2**63 - 1
IdPK = Annotated[int, mapped_column(BigIntPK, primary_key=True, autoincrement=True)]


# --------------------------------------------------------------------------- engine


# Execution option saying how a SQLite transaction begins: IMMEDIATE (the default) or DEFERRED.
SQLITE_BEGIN = "tradeos_sqlite_begin"
# How long a unit of work waits for SQLite's one connection before answering 503.
SQLITE_CONNECTION_WAIT_SECONDS = 10

_open_session: ContextVar[Database | None] = ContextVar("tradeos_open_session", default=None)


def _configure_sqlite(engine: AsyncEngine, *, foreign_keys: bool) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: DBAPIConnection, _record: ConnectionPoolEntry) -> None:
        # The driver's own implicit BEGIN breaks SAVEPOINTs and transactional DDL; we emit
        # BEGIN ourselves (below), as SQLAlchemy's SQLite documentation recommends.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA busy_timeout=5000")
        cursor.execute(f"PRAGMA foreign_keys={'ON' if foreign_keys else 'OFF'}")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(connection: Any) -> None:
        # IMMEDIATE takes the write lock up front. A deferred transaction that reads and then
        # writes cannot wait for the lock when another connection wrote meanwhile (SQLite
        # fails it at once with "database is locked"); an immediate one waits up to
        # busy_timeout instead. Units of work that only read begin DEFERRED, so they never
        # hold up writers (WAL readers see a snapshot).
        mode = connection.get_execution_options().get(SQLITE_BEGIN, "IMMEDIATE")
        connection.exec_driver_sql(f"BEGIN {mode}")


# SQLite connections through `sqlite_driver`: one trip to aiosqlite's thread per statement.
_ONE_TRIP: Final = {"async_creator_fn": sqlite_driver.connect}


def create_engine(
    url: str, *, pool_size: int = 10, sqlite_foreign_keys: bool = True, sqlite_probe: bool = False
) -> AsyncEngine:
    """An async engine for `url` with the settings each backend needs.

    Statement parameters are never put into logs or error messages (hide_parameters): they
    can hold password hashes, token hashes and personal data.

    SQLite only: `sqlite_foreign_keys=False` is for migrations (batch mode rebuilds a table by
    dropping it, which would cascade to its children); `sqlite_probe=True` makes an unpooled
    engine whose reads never wait for the application's connection (health checks).
    """
    if url.startswith("sqlite"):
        if sqlite_probe:
            engine = create_async_engine(
                url,
                poolclass=NullPool,
                hide_parameters=True,
                execution_options={SQLITE_BEGIN: "DEFERRED"},
                connect_args=_ONE_TRIP,
            )
        else:
            # SQLite has one writer at a time. One connection per process queues units of
            # work in asyncio, which is fairer than many connections polling SQLite's lock:
            # the same throughput with a p99 ~12x lower (bench/RESULTS.md). So: keep
            # transactions short, and never hold a session across slow work (hashing, HTTP).
            engine = create_async_engine(
                url,
                pool_size=1,
                max_overflow=0,
                pool_timeout=SQLITE_CONNECTION_WAIT_SECONDS,
                hide_parameters=True,
                connect_args=_ONE_TRIP,
            )
        _configure_sqlite(engine, foreign_keys=sqlite_foreign_keys)
        return engine
    return create_async_engine(
        url,
        hide_parameters=True,
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_pre_ping=True,
        pool_recycle=1800,
    )


class Database:
    """The engine and session factories of one running application.

    `session()` is a unit of work that writes; `session(write=False)` one that only reads (on
    SQLite it does not take the write lock). Both work on either backend.
    """

    def __init__(self, url: str, *, pool_size: int = 10) -> None:
        self.engine = create_engine(url, pool_size=pool_size)
        self.sessionmaker = async_sessionmaker(self.engine, expire_on_commit=False, autoflush=False)
        self.read_sessionmaker = async_sessionmaker(
            self.engine.execution_options(**{SQLITE_BEGIN: "DEFERRED"}),
            expire_on_commit=False,
            autoflush=False,
        )
        self._probe = create_engine(url, sqlite_probe=True) if self.backend == "sqlite" else None

    @property
    def backend(self) -> str:
        return self.engine.dialect.name

    @asynccontextmanager
    async def session(self, *, write: bool = True) -> AsyncIterator[AsyncSession]:
        """A unit of work: committed when the block ends, rolled back if it raises."""
        if self.backend == "sqlite" and _open_session.get() is self:
            # The open session holds SQLite's one connection: a second would wait forever.
            raise RuntimeError("a unit of work is already open in this task: pass its session on")
        token = _open_session.set(self)
        maker = self.sessionmaker if write else self.read_sessionmaker
        try:
            async with maker() as session:
                try:
                    yield session
                    await session.commit()
                except BaseException:
                    await session.rollback()
                    raise
        finally:
            _open_session.reset(token)

    async def ping(self) -> float:
        """Check the database answers; returns the latency in milliseconds.

        On SQLite this reads the schema through its own connection, so a busy application
        connection does not make a healthy database look down.
        """
        started = time.perf_counter()
        engine = self._probe or self.engine
        query = "SELECT count(*) FROM sqlite_master" if self._probe else "SELECT 1"
        async with engine.connect() as connection:
            await connection.execute(text(query))
        return (time.perf_counter() - started) * 1000

    async def dispose(self) -> None:
        await self.engine.dispose()
        if self._probe is not None:
            await self._probe.dispose()
