"""Every error answers application/problem+json, never a trace."""

from __future__ import annotations

import pytest
from fastapi import FastAPI
from pydantic import BaseModel, Field
from sqlalchemy import text
from sqlalchemy.exc import DataError, DBAPIError, OperationalError

from tests.conftest import TEST_DATABASE_URL, CapturedLogs, serve_app
from tradeos.accounts.models import User
from tradeos.app import create_app
from tradeos.config import Settings
from tradeos.core import errors
from tradeos.core.deps import SessionDep

PROBLEM = "application/problem+json"
ERROR_CLASSES = [
    errors.BadRequest,
    errors.Unauthorized,
    errors.Forbidden,
    errors.NotFound,
    errors.MethodNotAllowed,
    errors.Conflict,
    errors.PayloadTooLarge,
    errors.UnsupportedMediaType,
    errors.ValidationFailed,
    errors.RateLimited,
    errors.InternalError,
    errors.ServiceUnavailable,
]


class OrderDraft(BaseModel):
    symbol: str = Field(min_length=1)
    quantity: int = Field(gt=0)
    legs: list[int] = []


class UndefinedTable(Exception):
    sqlstate = "42P01"


def _app(settings: Settings) -> FastAPI:
    app = create_app(settings, configure_logs=False)

    @app.get("/t/raise/{name}")
    async def raise_named(name: str) -> None:
        error_class = getattr(errors, name)
        kwargs = {"retry_after": 30} if error_class is errors.RateLimited else {}
        raise error_class(f"{name} happened", **kwargs)

    @app.post("/t/orders")
    async def create_order(draft: OrderDraft) -> OrderDraft:
        return draft

    @app.get("/t/crash")
    async def crash() -> None:
        raise RuntimeError("internal detail: secret table trades_v2 at /srv/app.py")

    @app.post("/t/users/nameless")
    async def break_not_null(session: SessionDep) -> None:
        session.add(User(email="x@example.com", username=None, password_hash="x"))  # type: ignore[arg-type]
        await session.flush()

    @app.get("/t/value-out-of-range")
    async def value_out_of_range() -> None:
        raise DataError("INSERT INTO orders ...", {}, Exception("numeric field overflow"))

    @app.get("/t/not-a-number")
    async def not_a_number(session: SessionDep) -> None:
        # PostgreSQL refuses this (SQLSTATE 22P02); asyncpg reports it as a plain DBAPIError.
        await session.execute(text("SELECT CAST('twelve' AS INTEGER)"))

    @app.get("/t/broken-query")
    async def broken_query() -> None:
        # How asyncpg's errors arrive: a plain DBAPIError carrying the SQLSTATE.
        raise DBAPIError("SELECT * FROM no_such_table", {}, UndefinedTable())

    @app.get("/t/database-busy")
    async def database_busy() -> None:
        raise OperationalError("UPDATE accounts ...", {}, Exception("database is locked"))

    return app


def assert_problem(response, status: int) -> dict:  # type: ignore[no-untyped-def]
    assert response.status_code == status
    assert response.headers["content-type"] == PROBLEM
    body = response.json()
    assert body["status"] == status
    assert body["type"].startswith("urn:tradeos:problem:")
    assert body["title"] and body["detail"]
    assert body["request_id"] == response.headers["x-request-id"]
    return body


@pytest.mark.parametrize("error_class", ERROR_CLASSES, ids=lambda cls: cls.__name__)
async def test_each_error_class_renders_its_status(
    settings: Settings, database: object, error_class: type
) -> None:
    async with serve_app(_app(settings)) as client:
        response = await client.get(f"/t/raise/{error_class.__name__}")
    body = assert_problem(response, error_class.status)
    assert body["detail"] == f"{error_class.__name__} happened"
    if error_class is errors.Unauthorized:
        assert response.headers["www-authenticate"].startswith("Bearer")
    if error_class is errors.RateLimited:
        assert response.headers["retry-after"] == "30"


async def test_unknown_route_is_a_404_problem(client) -> None:  # type: ignore[no-untyped-def]
    assert_problem(await client.get("/api/v1/no-such-thing"), 404)


async def test_wrong_method_is_a_405_problem(client) -> None:  # type: ignore[no-untyped-def]
    response = await client.delete("/api/v1/ping")
    assert_problem(response, 405)
    assert response.headers["allow"] == "GET, HEAD"


async def test_field_errors_have_paths(settings: Settings, database: object) -> None:
    async with serve_app(_app(settings)) as client:
        response = await client.post(
            "/t/orders", json={"symbol": "", "quantity": -1, "legs": [1, "x"]}
        )
    body = assert_problem(response, 422)
    fields = {error["field"] for error in body["errors"]}
    assert fields == {"body.symbol", "body.quantity", "body.legs.1"}
    assert all(error["message"] for error in body["errors"])


@pytest.mark.parametrize("payload", [b"{not json", b'{"symbol": "BTC-USD", ', b"\xff\xfe"])
async def test_malformed_json_is_a_400_problem(
    settings: Settings, database: object, payload: bytes
) -> None:
    async with serve_app(_app(settings)) as client:
        response = await client.post(
            "/t/orders", content=payload, headers={"content-type": "application/json"}
        )
    assert assert_problem(response, 400)["title"] == "Malformed JSON body"


async def test_a_body_that_is_not_json_is_a_415_problem(
    settings: Settings, database: object
) -> None:
    async with serve_app(_app(settings)) as client:
        response = await client.post(
            "/t/orders", content=b"symbol=BTC", headers={"content-type": "text/plain"}
        )
        ok = await client.post(
            "/t/orders",
            json={"symbol": "BTC-USD", "quantity": 1},
            headers={"content-type": "application/json; charset=utf-8"},
        )
        unlabelled = await client.post("/t/orders", content=b'{"symbol": "BTC-USD", "quantity": 1}')
    assert "application/json" in assert_problem(response, 415)["detail"]
    assert "text/plain" in response.json()["detail"]
    assert "Content-Type" in assert_problem(unlabelled, 415)["detail"]
    assert ok.status_code == 200


async def test_a_body_over_the_limit_is_a_413_problem(settings_factory, database: object) -> None:  # type: ignore[no-untyped-def]
    app = _app(settings_factory(max_request_body_bytes=2048))
    async with serve_app(app) as client:
        big = {"symbol": "X" * 5000, "quantity": 1}
        declared = await client.post("/t/orders", json=big)

        async def chunks():  # type: ignore[no-untyped-def]
            yield b'{"symbol": "'
            for _ in range(10):
                yield b"X" * 500
            yield b'", "quantity": 1}'

        streamed = await client.post(
            "/t/orders", content=chunks(), headers={"content-type": "application/json"}
        )
        fits = await client.post("/t/orders", json={"symbol": "X" * 1000, "quantity": 1})
    assert_problem(declared, 413)
    assert "content-length" not in {name.lower() for name in streamed.request.headers}
    assert_problem(streamed, 413)
    assert fits.status_code == 200


async def test_a_bug_that_breaks_a_constraint_is_a_500_not_a_conflict(
    settings: Settings, database: object, captured_logs: CapturedLogs
) -> None:
    async with serve_app(_app(settings)) as client:
        response = await client.post("/t/users/nameless")
    assert_problem(response, 500)
    [logged] = captured_logs.events("unhandled_error")
    assert "IntegrityError" in logged["exception"]


async def test_a_value_the_database_refuses_is_a_422_and_logged(
    settings: Settings, database: object, captured_logs: CapturedLogs
) -> None:
    async with serve_app(_app(settings)) as client:
        response = await client.get("/t/value-out-of-range")
    assert "cannot be stored" in assert_problem(response, 422)["detail"]
    assert "numeric field overflow" not in response.text
    [logged] = captured_logs.events("database_refused_value")
    assert "DataError" in logged["exception"]


@pytest.mark.skipif(TEST_DATABASE_URL is None, reason="SQLite casts text to 0 without complaint")
async def test_a_value_postgresql_refuses_is_a_422(settings: Settings, database: object) -> None:
    async with serve_app(_app(settings)) as client:
        response = await client.get("/t/not-a-number")
    assert "cannot be stored" in assert_problem(response, 422)["detail"]


async def test_other_database_errors_stay_500s(settings: Settings, database: object) -> None:
    async with serve_app(_app(settings)) as client:
        response = await client.get("/t/broken-query")
    assert_problem(response, 500)


async def test_a_busy_or_unreachable_database_is_a_503_to_retry(
    settings: Settings, database: object
) -> None:
    async with serve_app(_app(settings)) as client:
        response = await client.get("/t/database-busy")
    assert_problem(response, 503)
    assert response.headers["retry-after"] == "2"
    assert "UPDATE accounts" not in response.text


@pytest.mark.parametrize("content_type", [";;;==", "text/plain", "application/xml; charset=utf-8"])
async def test_415_names_what_was_sent(
    settings: Settings, database: object, content_type: str
) -> None:
    async with serve_app(_app(settings)) as client:
        response = await client.post(
            "/t/orders", content=b"x", headers={"content-type": content_type}
        )
    detail = assert_problem(response, 415)["detail"]
    assert "not ." not in detail and detail.startswith("Send the body as application/json")


async def test_an_unhandled_exception_is_a_bare_500_and_its_trace_is_logged(
    settings: Settings, database: object, captured_logs: CapturedLogs
) -> None:
    async with serve_app(_app(settings)) as client:
        response = await client.get("/t/crash")
    body = assert_problem(response, 500)
    assert "trades_v2" not in response.text and "Traceback" not in response.text
    assert "RuntimeError" not in response.text
    [logged] = captured_logs.events("unhandled_error")
    assert logged["level"] == "error"
    assert (
        "Traceback" in logged["exception"]
        and "RuntimeError: internal detail" in logged["exception"]
    )
    assert logged["request_id"] == body["request_id"]
