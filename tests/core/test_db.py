"""The database layer: exact decimals, UTC timestamps, SQLite pragmas, the unit of work."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import orjson
import pytest
from fastapi import FastAPI
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel
from sqlalchemy import (
    Column,
    Integer,
    MetaData,
    String,
    Table,
    func,
    insert,
    select,
    text,
    type_coerce,
)
from sqlalchemy.exc import IntegrityError, StatementError

from tests.conftest import serve_app
from tests.factories import make_user, password_hash
from tradeos.accounts.models import User
from tradeos.app import create_app
from tradeos.config import Settings
from tradeos.core import db as db_module
from tradeos.core.db import (
    Database,
    Money,
    Quantity,
    UTCDateTime,
    bulk_insert,
    order_key,
    strip_trailing_zeros,
    to_exact_decimal,
    utc_text,
)
from tradeos.core.db import decimal_text as sql_decimal_text
from tradeos.core.deps import SessionDep
from tradeos.core.errors import Conflict
from tradeos.core.fields import PlainDecimal, decimal_text

# A scratch table outside the app's metadata: the column types are what is under test.
scratch_metadata = MetaData()
ledger = Table(
    "test_exact_ledger",
    scratch_metadata,
    Column("id", Integer, primary_key=True),
    Column("amount", Money()),
    Column("quantity", Quantity()),
    Column("at", UTCDateTime()),
)


@pytest.fixture
async def scratch(database: Database) -> AsyncIterator[Database]:
    async with database.engine.begin() as connection:
        await connection.run_sync(scratch_metadata.create_all)
    yield database
    async with database.engine.begin() as connection:
        await connection.run_sync(scratch_metadata.drop_all)


async def _round_trip(database: Database, column: str, value: object) -> object:
    async with database.engine.begin() as connection:
        row_id = (
            await connection.execute(insert(ledger).values({column: value}).returning(ledger.c.id))
        ).scalar_one()
    async with database.engine.connect() as connection:
        return (
            await connection.execute(select(ledger.c[column]).where(ledger.c.id == row_id))
        ).scalar_one()


@pytest.mark.parametrize(
    "value",
    [
        "12345678901.123456789012345678",
        "0.000000000000000001",
        "-0.1",
        "0",
        "99999999999999999999.999999999999999999",
    ],
)
@pytest.mark.parametrize("column", ["amount", "quantity"])
async def test_decimals_come_back_exactly(scratch: Database, column: str, value: str) -> None:
    stored = await _round_trip(scratch, column, Decimal(value))
    assert isinstance(stored, Decimal)
    assert stored == Decimal(value)
    assert format(stored, "f") == format(strip_trailing_zeros(Decimal(value)), "f")
    assert (
        format(stored, "f").rstrip("0").rstrip(".") == value.rstrip("0").rstrip(".") or value == "0"
    )


async def test_negative_zero_is_zero(scratch: Database) -> None:
    stored = await _round_trip(scratch, "amount", Decimal("-0.00"))
    assert str(stored) == "0"


async def test_exact_columns_order_numerically(scratch: Database) -> None:
    values = ["10", "9", "-5", "0.5", "-20", "100.25", "0.000000000000000001", "-0.1"]
    async with scratch.engine.begin() as connection:
        await connection.execute(insert(ledger), [{"amount": Decimal(v)} for v in values])
    async with scratch.engine.connect() as connection:
        ascending = (
            await connection.execute(select(ledger.c.amount).order_by(order_key(ledger.c.amount)))
        ).scalars()
        ordered = list(ascending)
    assert ordered == sorted(Decimal(v) for v in values)


async def test_a_float_is_refused(scratch: Database) -> None:
    with pytest.raises(StatementError, match="not float"):
        await _round_trip(scratch, "amount", 0.1)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (Decimal("0.0000000000000000001"), "does not fit"),  # 19 decimal places would be rounded
        (Decimal("123456789012345678901"), "does not fit"),  # 21 integer digits
        (Decimal("NaN"), "finite"),
        (Decimal("Infinity"), "finite"),
        (True, "not bool"),
    ],
)
async def test_values_that_cannot_be_stored_exactly_are_refused(
    scratch: Database, value: object, message: str
) -> None:
    with pytest.raises(StatementError, match=message):
        await _round_trip(scratch, "amount", value)


@given(
    st.decimals(
        min_value=Decimal("-99999999999999999999"),
        max_value=Decimal("99999999999999999999"),
        places=18,
        allow_nan=False,
        allow_infinity=False,
    )
)
@settings(max_examples=200, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_bind_conversion_is_exact_for_every_fitting_value(value: Decimal) -> None:
    assert to_exact_decimal(value) == value
    assert strip_trailing_zeros(Decimal(format(to_exact_decimal(value), "f"))) == value


def test_trailing_zeros_go_but_never_into_exponent_form() -> None:
    assert str(strip_trailing_zeros(Decimal("100.000000"))) == "100"
    assert str(strip_trailing_zeros(Decimal("1.500"))) == "1.5"
    assert str(strip_trailing_zeros(Decimal("-0.000"))) in ("0", "-0")


async def test_timestamps_are_utc_aware_on_the_way_out(scratch: Database) -> None:
    tokyo = timezone(timedelta(hours=9))
    moment = datetime(2026, 3, 1, 9, 30, 15, 123456, tzinfo=tokyo)
    stored = await _round_trip(scratch, "at", moment)
    assert isinstance(stored, datetime)
    assert stored.tzinfo is not None and stored.utcoffset() == timedelta(0)
    assert stored == moment
    assert stored == datetime(2026, 3, 1, 0, 30, 15, 123456, tzinfo=UTC)


async def test_naive_timestamps_are_refused(scratch: Database) -> None:
    with pytest.raises(StatementError, match="naive datetime"):
        await _round_trip(scratch, "at", datetime(2026, 3, 1, 9, 30))


async def test_sqlite_connections_use_wal_busy_timeout_and_foreign_keys(database: Database) -> None:
    if database.backend != "sqlite":
        pytest.skip("SQLite pragmas")
    async with database.engine.connect() as connection:
        assert (await connection.exec_driver_sql("PRAGMA journal_mode")).scalar() == "wal"
        assert (await connection.exec_driver_sql("PRAGMA foreign_keys")).scalar() == 1
        assert (await connection.exec_driver_sql("PRAGMA busy_timeout")).scalar() == 5000


async def test_postgresql_pool_pings_before_use(database: Database) -> None:
    if database.backend != "postgresql":
        pytest.skip("PostgreSQL pool")
    assert database.engine.pool._pre_ping is True  # type: ignore[attr-defined]
    assert (await database.ping()) >= 0


async def test_savepoints_work(database: Database) -> None:
    # SQLite needs our explicit BEGIN for this; PostgreSQL has it natively.
    async with database.sessionmaker() as session:
        await make_user(session, username="kept", email="kept@example.com")
        try:
            async with session.begin_nested():
                await make_user(session, username="dropped", email="dropped@example.com")
                raise RuntimeError("undo the inner block")
        except RuntimeError:
            pass
        await session.commit()
        names = (await session.scalars(select(User.username))).all()
    assert names == ["kept"]


# --- one session per request ---------------------------------------------------------------


def _new_user(username: str) -> User:
    return User(email=f"{username}@example.com", username=username, password_hash=password_hash())


def _unit_of_work_app(settings: Settings) -> FastAPI:
    app = create_app(settings, configure_logs=False)

    @app.post("/t/users/{username}")
    async def add(username: str, session: SessionDep) -> dict[str, str]:
        session.add(_new_user(username))
        return {"added": username}

    @app.post("/t/users/{username}/then-fail")
    async def add_then_fail(username: str, session: SessionDep) -> None:
        session.add(_new_user(username))
        await session.flush()
        raise Conflict("changed my mind")

    @app.post("/t/users/{username}/then-crash")
    async def add_then_crash(username: str, session: SessionDep) -> None:
        session.add(_new_user(username))
        await session.flush()
        raise RuntimeError("boom")

    @app.post("/t/users/{username}/after-reading")
    async def add_after_reading(username: str, session: SessionDep) -> dict[str, int]:
        # Read, yield to other requests, then write: the shape of most use cases.
        seen = len((await session.scalars(select(User.id))).all())
        await asyncio.sleep(0.01)
        session.add(_new_user(username))
        await session.flush()
        return {"seen": seen}

    return app


async def _usernames(database: Database) -> list[str]:
    async with database.sessionmaker() as session:
        return list((await session.scalars(select(User.username).order_by(User.username))).all())


async def test_a_request_commits_at_its_boundary(settings: Settings, database: Database) -> None:
    async with serve_app(_unit_of_work_app(settings)) as client:
        response = await client.post("/t/users/alice")
    assert response.status_code == 200
    assert await _usernames(database) == ["alice"]


@pytest.mark.parametrize(("suffix", "status"), [("then-fail", 409), ("then-crash", 500)])
async def test_a_failing_request_rolls_back(
    settings: Settings, database: Database, suffix: str, status: int
) -> None:
    async with serve_app(_unit_of_work_app(settings)) as client:
        response = await client.post(f"/t/users/bob/{suffix}")
    assert response.status_code == status
    assert await _usernames(database) == []


async def test_a_commit_that_fails_is_an_error_response_not_a_success(
    settings: Settings, database: Database
) -> None:
    async with serve_app(_unit_of_work_app(settings)) as client:
        assert (await client.post("/t/users/carol")).status_code == 200
        # Same username: the unique index fails at commit, which happens before the response.
        response = await client.post("/t/users/CAROL")
    assert response.status_code == 409
    assert response.headers["content-type"] == "application/problem+json"
    assert await _usernames(database) == ["carol"]


async def test_concurrent_read_then_write_requests_all_succeed(
    settings: Settings, database: Database
) -> None:
    names = [f"racer{n}" for n in range(12)]
    async with serve_app(_unit_of_work_app(settings)) as client:
        responses = await asyncio.gather(
            *(client.post(f"/t/users/{name}/after-reading") for name in names)
        )
    assert [response.status_code for response in responses] == [200] * len(names)
    assert await _usernames(database) == sorted(names)
    # Each request saw a consistent snapshot: every count from 0 to 11 exactly once on SQLite
    # (transactions queue); on PostgreSQL counts may repeat (they run side by side).
    assert all(0 <= response.json()["seen"] < len(names) for response in responses)


async def test_database_ping_reports_latency(database: Database) -> None:
    latency = await database.ping()
    assert 0 <= latency < 5000
    async with database.engine.connect() as connection:
        assert (await connection.execute(text("SELECT 1"))).scalar() == 1


# --- SQLite locking: one connection per process, BEGIN IMMEDIATE for writes ---------------


async def _insert_after_reading(database: Database, username: str) -> None:
    async with database.session() as session:
        await session.scalars(select(User.id))
        await asyncio.sleep(0.05)  # let the other "process" start its own unit of work
        session.add(_new_user(username))


async def test_writers_in_two_processes_wait_for_each_other(
    database_url: str, database: Database
) -> None:
    # Two engines on one database behave like two worker processes.
    first, second = Database(database_url), Database(database_url)
    try:
        await asyncio.gather(
            _insert_after_reading(first, "west"), _insert_after_reading(second, "east")
        )
    finally:
        await first.dispose()
        await second.dispose()
    assert await _usernames(database) == ["east", "west"]


async def test_a_read_only_unit_of_work_does_not_hold_up_writers(
    database_url: str, database: Database
) -> None:
    reader, writer = Database(database_url), Database(database_url)
    try:
        async with reader.session(write=False) as reading:
            await reading.scalars(select(User.id))  # transaction open, as in a slow GET
            async with writer.session() as writing:
                writing.add(_new_user("unblocked"))
    finally:
        await reader.dispose()
        await writer.dispose()
    assert await _usernames(database) == ["unblocked"]


async def test_a_nested_unit_of_work_is_refused_on_sqlite(database: Database) -> None:
    if database.backend != "sqlite":
        pytest.skip("SQLite has one connection per process")
    async with database.session(write=False):
        with pytest.raises(RuntimeError, match="already open"):
            async with database.session():
                pass


async def test_waiting_too_long_for_the_connection_is_a_503(
    settings: Settings, database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    if database.backend != "sqlite":
        pytest.skip("PostgreSQL has a pool of many connections")
    monkeypatch.setattr(db_module, "SQLITE_CONNECTION_WAIT_SECONDS", 0.2)
    app = _unit_of_work_app(settings)

    @app.post("/t/slow")
    async def slow(session: SessionDep) -> None:
        await session.scalars(select(User.id))
        await asyncio.sleep(1)

    async with serve_app(app) as client:
        slow_request = asyncio.create_task(client.post("/t/slow"))
        await asyncio.sleep(0.1)
        waiting = await client.post("/t/users/patient")
        assert (await slow_request).status_code == 200
    assert waiting.status_code == 503 and waiting.headers["retry-after"] == "2"
    assert waiting.headers["content-type"] == "application/problem+json"


async def test_statement_parameters_never_reach_errors(database: Database) -> None:
    async with database.session() as session:
        session.add(_new_user("visible-name"))
    with pytest.raises(IntegrityError) as caught:
        async with database.session() as session:
            session.add(_new_user("visible-name"))
    assert "visible-name" not in str(caught.value)
    assert "hidden" in str(caught.value)


def test_negative_zero_is_bound_without_its_sign() -> None:
    assert not to_exact_decimal(Decimal("-0.000")).is_signed()
    assert not to_exact_decimal(-0).is_signed()


# -- bulk inserts and text written by the database ---------------------------------------------

_AWKWARD_AMOUNTS = ["0.00000001", "100", "0", "-0.5", "12345678901.123456789012345678", "-0.00"]
_AWKWARD_TIMES = [
    datetime(2026, 3, 1, 9, 30, tzinfo=timezone(timedelta(hours=9))),
    datetime(2026, 3, 1, 0, 0, 0, 120, tzinfo=UTC),
    datetime(1999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
]


def _raw(column: str) -> object:
    # The value as the driver hands it over, before the column type's processing.
    return type_coerce(ledger.c[column], String).label(column)


async def test_a_bulk_insert_stores_exactly_what_an_orm_insert_stores(scratch: Database) -> None:
    rows = [(amount, amount, moment) for amount in _AWKWARD_AMOUNTS for moment in _AWKWARD_TIMES]
    async with scratch.session() as session:
        await session.execute(
            insert(ledger),
            [
                {"id": n, "amount": Decimal(a), "quantity": Decimal(q), "at": t}
                for n, (a, q, t) in enumerate(rows, start=1)
            ],
        )
        await bulk_insert(
            session,
            ledger,
            ["id", "amount", "quantity", "at"],
            [(n + 1000, Decimal(a), q, t) for n, (a, q, t) in enumerate(rows, start=1)],
        )
    async with scratch.engine.connect() as connection:
        stored = {
            row.id: (row.amount, row.quantity, row.at)
            for row in await connection.execute(
                select(ledger.c.id, _raw("amount"), _raw("quantity"), _raw("at"))
            )
        }
    assert len(stored) == 2 * len(rows)
    for n in range(1, len(rows) + 1):
        assert stored[n + 1000] == stored[n]


@pytest.mark.parametrize(
    ("row", "error", "message"),
    [
        ((1, 0.1, None, None), TypeError, "not float"),
        ((1, Decimal("0.0000000000000000001"), None, None), ValueError, "does not fit"),
        ((1, None, Decimal("NaN"), None), ValueError, "finite"),
        ((1, None, None, datetime(2026, 3, 1, 9, 30)), ValueError, "naive datetime"),
    ],
)
async def test_a_bulk_insert_refuses_what_the_column_types_refuse(
    scratch: Database, row: tuple[object, ...], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        async with scratch.session() as session:
            await bulk_insert(session, ledger, ["id", "amount", "quantity", "at"], [row])
    async with scratch.engine.connect() as connection:
        assert await connection.scalar(select(func.count()).select_from(ledger)) == 0


async def test_a_bulk_insert_is_rolled_back_with_its_unit_of_work(scratch: Database) -> None:
    async def insert_then_fail() -> None:
        async with scratch.session() as session:
            # The first statement of the unit of work: it must still be inside its transaction.
            await bulk_insert(session, ledger, ["id", "amount"], [(1, Decimal(1)), (2, 2)])
            raise RuntimeError("the unit of work fails after the insert")

    with pytest.raises(RuntimeError):
        await insert_then_fail()
    async with scratch.engine.connect() as connection:
        assert await connection.scalar(select(func.count()).select_from(ledger)) == 0


async def test_the_database_writes_decimals_and_times_as_the_api_writes_them(
    scratch: Database,
) -> None:
    class Shown(BaseModel):
        amount: PlainDecimal
        at: datetime

    rows = [
        {"id": n, "amount": Decimal(a), "at": t}
        for n, (a, t) in enumerate(
            ((a, t) for a in _AWKWARD_AMOUNTS for t in _AWKWARD_TIMES), start=1
        )
    ]
    async with scratch.engine.begin() as connection:
        await connection.execute(insert(ledger), rows)
    async with scratch.engine.connect() as connection:
        written = {
            row.id: {"amount": row.amount, "at": row.at}
            for row in await connection.execute(
                select(
                    ledger.c.id,
                    sql_decimal_text(ledger.c.amount).label("amount"),
                    utc_text(ledger.c.at).label("at"),
                )
            )
        }
    for row in rows:
        # Times come out of the database in UTC, as the API always gives them.
        expected = Shown(amount=strip_trailing_zeros(row["amount"]), at=row["at"].astimezone(UTC))
        assert written[row["id"]] == orjson.loads(expected.model_dump_json()), row


def test_decimals_go_out_in_plain_notation() -> None:
    assert decimal_text(Decimal("1E-8")) == "0.00000001"
    assert decimal_text(strip_trailing_zeros(Decimal("100.000"))) == "100"
    assert decimal_text(Decimal("-12.50")) == "-12.50"
