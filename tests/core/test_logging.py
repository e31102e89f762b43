"""Logging: correlation ids, one access line per request, secrets never logged."""

from __future__ import annotations

import io
import json
import logging
from datetime import UTC, datetime
from decimal import Decimal
from uuid import UUID

import pytest
import structlog
from fastapi import FastAPI, Request
from sqlalchemy import text

from tests.conftest import CapturedLogs, serve_app
from tradeos.app import create_app
from tradeos.config import Settings
from tradeos.core.logging import configure_logging, redact_text

JWT = "eyJhbGciOiJIUS1NiJ9.eyJzdWIiOiI0MiJ9.c2lnbmF0dXJlLXNpZ25hdHVyZQ"
API_KEY = "trd_live_9f8e7d6c5b4a3f2e1d0c"
PASSWORD = "Tr0ub4dor&3-horse"
SECRETS = (JWT, API_KEY, PASSWORD, "session-cookie-value-123", "refresh-abc-456", "dbpass789")

log = structlog.get_logger("tests.logging")


def _app(settings: Settings) -> FastAPI:
    app = create_app(settings, configure_logs=False)

    @app.get("/t/orders/{order_id}")
    async def read_order(order_id: int, request: Request) -> dict[str, int]:
        request.state.user_id = 42  # what authentication will set
        log.info("order_read", order_id=order_id)
        return {"order_id": order_id}

    @app.post("/t/login")
    async def login(request: Request) -> dict[str, bool]:
        body = await request.json()
        log.info("login_attempt", username=body["username"], password=body["password"], form=body)
        log.info("headers_seen", headers=dict(request.headers))
        log.info(f"user sent Authorization: Bearer {JWT} and key {API_KEY}")
        log.warning("database_url", url="postgresql://trader:dbpass789@db:5432/tradeos")
        return {"ok": True}

    @app.get("/t/leak")
    async def leak() -> None:
        raise RuntimeError(f"upstream rejected token={JWT}")

    return app


@pytest.mark.parametrize("given", ["abc-123", "A.b_C-9", "x" * 64])
async def test_a_well_formed_request_id_is_kept(
    settings: Settings, database: object, given: str
) -> None:
    async with serve_app(_app(settings)) as client:
        response = await client.get("/api/v1/ping", headers={"X-Request-ID": given})
    assert response.headers["x-request-id"] == given


@pytest.mark.parametrize("given", ["", "x" * 65, "has space", "semi;colon", "ünïcode", "a\tb"])
async def test_a_malformed_request_id_is_replaced(
    settings: Settings, database: object, given: str
) -> None:
    async with serve_app(_app(settings)) as client:
        response = await client.get("/api/v1/ping", headers={"X-Request-ID": given.encode("utf-8")})
    generated = response.headers["x-request-id"]
    assert generated != given and len(generated) == 32


async def test_every_line_of_a_request_carries_its_id_and_one_access_line_is_written(
    settings: Settings, database: object, captured_logs: CapturedLogs
) -> None:
    async with serve_app(_app(settings)) as client:
        response = await client.get("/t/orders/7?verbose=1", headers={"X-Request-ID": "req-77"})
        await client.get("/api/v1/ping")
    assert response.status_code == 200
    [order_line] = captured_logs.events("order_read")
    assert order_line["request_id"] == "req-77" and order_line["order_id"] == 7
    access = [line for line in captured_logs.events("request") if line["request_id"] == "req-77"]
    assert len(access) == 1
    [line] = access
    assert line["method"] == "GET"
    assert line["route"] == "/t/orders/{order_id}"
    assert line["path"] == "/t/orders/7"  # no query string: it may carry secrets
    assert line["status"] == 200
    assert isinstance(line["duration_ms"], float) and line["duration_ms"] >= 0
    assert line["user_id"] == 42
    others = [entry for entry in captured_logs.events("request") if entry["request_id"] != "req-77"]
    assert len(others) == 1 and others[0]["user_id"] is None
    # Context does not leak out of a request.
    assert structlog.contextvars.get_contextvars().get("request_id") is None


async def test_secrets_never_reach_a_log_line(
    settings: Settings, database: object, captured_logs: CapturedLogs
) -> None:
    headers = {
        "Authorization": f"Bearer {JWT}",
        "X-API-Key": API_KEY,
        "Cookie": "session=session-cookie-value-123",
    }
    async with serve_app(_app(settings)) as client:
        ok = await client.post(
            "/t/login",
            json={"username": "alice", "password": PASSWORD, "refresh_token": "refresh-abc-456"},
            headers=headers,
        )
        crashed = await client.get(f"/t/leak?api_key={API_KEY}", headers=headers)
    assert ok.status_code == 200 and crashed.status_code == 500
    text = captured_logs.text
    assert "login_attempt" in text and "alice" in text and "unhandled_error" in text
    for secret in SECRETS:
        assert secret not in text, f"{secret!r} was logged"
    [attempt] = captured_logs.events("login_attempt")
    assert attempt["password"] == "[REDACTED]"
    assert attempt["form"]["refresh_token"] == "[REDACTED]"
    [seen] = captured_logs.events("headers_seen")
    assert seen["headers"]["authorization"] == "[REDACTED]"
    assert seen["headers"]["x-api-key"] == "[REDACTED]"
    assert seen["headers"]["cookie"] == "[REDACTED]"


@pytest.mark.parametrize(
    "text",
    [
        "refreshing the token because it expired",
        "Basic validation failed",
        "digest mismatch on pk_accounts and pk_positions",
        "GET http://host:8000/p@x returned 404",
        "compass bypass passenger passive",
        "order 42 filled 1.5 BTC-USD at 2026-11-21T06:00:00Z",
    ],
)
def test_ordinary_text_stays_readable(text: str) -> None:
    assert redact_text(text) == text


def test_ordinary_keys_and_values_stay_readable(captured_logs: CapturedLogs) -> None:
    log.info(
        "fill",
        compass="north",
        bypass_cache=True,
        max_tokens=512,
        tokens_used=17,
        price=Decimal("12.50"),
        at=datetime(2026, 11, 21, 6, 0, tzinfo=UTC),
        order_id=UUID("12345678-1234-5678-1234-567812345678"),
    )
    [line] = captured_logs.events("fill")
    assert line["compass"] == "north" and line["bypass_cache"] is True
    assert line["max_tokens"] == 512 and line["tokens_used"] == 17
    assert line["price"] == "12.50"
    assert line["at"] == "2026-11-21T06:00:00+00:00"
    assert line["order_id"] == "12345678-1234-5678-1234-567812345678"


def test_secret_keys_are_masked_whatever_the_value_type(captured_logs: CapturedLogs) -> None:
    log.info(
        "typed",
        password=123456789,
        otp=654321,
        api_key=UUID("12345678-1234-5678-1234-567812345678"),
        refreshToken="camel-rt-1",
        client_secret=b"bytes-cs-2",
    )
    [line] = captured_logs.events("typed")
    for key in ("password", "otp", "api_key", "refreshToken", "client_secret"):
        assert line[key] == "[REDACTED]", key


def test_secrets_in_any_shape_of_event_are_masked(captured_logs: CapturedLogs) -> None:
    log.info(
        "shapes",
        asgi_headers=[(b"authorization", b"Bearer abc.def.ghi"), (b"cookie", b"session=COOKIE1")],
        header_pairs=[("x-api-key", "sk_live_KEY3KEY3"), ("accept", "application/json")],
        password_confirm="pw-confirm-1",
        new_password2="pw-new-2",
        pwd="pw-short-3",
        otp_code="314159",
        nested={"user": {"credentials": {"password": "pw-nested-4"}}},
    )
    text = captured_logs.text
    for secret in (
        "abc.def.ghi",
        "COOKIE1",
        "KEY3KEY3",
        "pw-confirm-1",
        "pw-new-2",
        "pw-short-3",
        "314159",
        "pw-nested-4",
    ):
        assert secret not in text, secret
    [line] = captured_logs.events("shapes")
    assert ["accept", "application/json"] in line["header_pairs"]  # the harmless stay readable


def test_objects_are_logged_as_redacted_text(captured_logs: CapturedLogs, tmp_path) -> None:  # type: ignore[no-untyped-def]
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None,
        data_dir=tmp_path,
        database_url="postgresql://trader:db-pw-5@db/tradeos",
        redis_url="redis://:redis-pw-6@cache:6379/0",
    )
    log.info("config_loaded", settings=settings)
    assert "db-pw-5" not in captured_logs.text and "redis-pw-6" not in captured_logs.text
    assert "db-pw-5" not in repr(settings) and "redis-pw-6" not in repr(settings)
    assert "postgresql" in captured_logs.text  # still useful for diagnosis


def test_library_log_records_are_redacted_too() -> None:
    stream = io.StringIO()
    configure_logging("INFO", json=True, stream=stream)
    try:
        logging.getLogger("uvicorn.error").warning("client sent Authorization: Bearer %s", JWT)
    finally:
        configure_logging("WARNING")
    line = json.loads(stream.getvalue())
    assert JWT not in stream.getvalue()
    assert line["logger"] == "uvicorn.error"
    assert line["event"] == "client sent Authorization: [REDACTED]"


@pytest.mark.parametrize(
    ("text", "leaked"),
    [
        ("Authorization: Basic dXNlcjpwYXNz", "dXNlcjpwYXNz"),
        ("redis://:sup3rs3cret@cache:6379/0", "sup3rs3cret"),
        ("GET /x?token=abc123&x=1", "abc123"),
        (f"key {API_KEY} used", API_KEY),
        ("Authorization: Token TOK8TOK8TOK8", "TOK8TOK8TOK8"),
        ("X-Api-Key: sk_live_KEY9KEY9", "KEY9KEY9"),
        ("upstream said: sk_live_51HxYzAbCdEf", "51HxYzAbCdEf"),
        ("Cookie: session=COOKIE1; theme=dark", "COOKIE1"),
        ("stored $argon2id$v=19$m=65536,t=3,p=4$c2FsdA$aGFzaA", "aGFzaA"),
        ("POST https://idp/x?client_secret=CS123456&grant=1", "CS123456"),
        ("refresh_token=RT123456 access_token=AT123456", "T123456"),
        ('{"password": "hunter22hunter", "user": "ada"}', "hunter22hunter"),
        ("secret: hunter22hunter", "hunter22hunter"),
        ("x_api_key=XK123456", "XK123456"),
        (f"decoded {JWT} fine", JWT),
        ("Bearer abcdefgh12345678", "abcdefgh12345678"),
    ],
)
def test_secret_looking_text_is_masked(text: str, leaked: str) -> None:
    assert leaked not in redact_text(text)


def test_production_writes_json_lines_and_development_a_console_format() -> None:
    json_stream, console_stream = io.StringIO(), io.StringIO()
    try:
        configure_logging("INFO", json=True, stream=json_stream)
        log.info("fill_applied", quantity="1.5")
        configure_logging("INFO", json=False, stream=console_stream)
        log.info("fill_applied", quantity="1.5")
    finally:
        configure_logging("WARNING")
    record = json.loads(json_stream.getvalue())
    assert record["event"] == "fill_applied" and record["level"] == "info" and "timestamp" in record
    console = console_stream.getvalue()
    assert "fill_applied" in console and "quantity=1.5" in console
    with pytest.raises(json.JSONDecodeError):
        json.loads(console)


def test_log_level_filters(captured_logs: CapturedLogs) -> None:
    configure_logging("WARNING", json=True, stream=captured_logs.stream)
    log.info("too_quiet")
    log.warning("loud_enough")
    assert [line["event"] for line in captured_logs.lines()] == ["loud_enough"]


async def test_debug_logs_sql_through_the_redacting_handler(
    database, captured_logs: CapturedLogs
) -> None:  # type: ignore[no-untyped-def]
    configure_logging("INFO", json=True, sql=True, stream=captured_logs.stream)
    async with database.engine.connect() as connection:
        await connection.execute(text("SELECT :note AS note"), {"note": f"Bearer {JWT}"})
    configure_logging("INFO", json=True, sql=False, stream=captured_logs.stream)
    async with database.engine.connect() as connection:
        await connection.execute(text("SELECT 'quiet' AS after_debug"))
    sql_lines = [
        line for line in captured_logs.lines() if line["logger"].startswith("sqlalchemy.engine")
    ]
    assert any("SELECT" in line["event"] and "AS note" in line["event"] for line in sql_lines)
    assert not any("after_debug" in line["event"] for line in sql_lines)
    assert JWT not in captured_logs.text
