"""Probes, the API root, docs, metrics, CORS and compression."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
from fastapi import FastAPI
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import text

from tests.conftest import TEST_REDIS_URL, serve_app
from tradeos import __version__
from tradeos import app as app_module
from tradeos.app import create_app
from tradeos.config import Settings
from tradeos.core import middleware as middleware_module
from tradeos.core import status as status_module
from tradeos.core.deps import SessionDep

PROBLEM = "application/problem+json"


async def test_health_reports_each_dependency_with_latency(client) -> None:  # type: ignore[no-untyped-def]
    response = await client.get("/health")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok" and body["version"] == __version__
    expected = {"database", "redis"} if TEST_REDIS_URL else {"database"}
    assert set(body["checks"]) == expected
    for check in body["checks"].values():
        assert check["status"] == "up" and check["latency_ms"] >= 0


async def test_ready_and_live_answer_when_all_is_up(client) -> None:  # type: ignore[no-untyped-def]
    assert (await client.get("/ready")).json() == {"status": "ready"}
    assert (await client.get("/live")).json() == {"status": "alive"}


async def test_a_dead_database_makes_ready_503_naming_it(
    settings_factory: Callable[..., Settings], database: object, tmp_path: Any
) -> None:
    unreachable = f"sqlite+aiosqlite:///{tmp_path}/no/such/dir/x.db"
    async with serve_app(
        create_app(settings_factory(database_url=unreachable), configure_logs=False)
    ) as client:
        ready = await client.get("/ready")
        health = await client.get("/health")
        live = await client.get("/live")
    assert ready.status_code == 503 and ready.headers["content-type"] == PROBLEM
    assert ready.json()["down"] == ["database"]
    assert "database" in ready.json()["detail"]
    assert health.status_code == 503 and health.json()["checks"]["database"]["status"] == "down"
    assert live.status_code == 200  # the process itself is fine


async def test_a_dead_redis_makes_ready_503_naming_it(
    settings_factory: Callable[..., Settings], database: object
) -> None:
    settings = settings_factory(redis_url="redis://127.0.0.1:1/0")  # nothing listens on port 1
    async with serve_app(create_app(settings, configure_logs=False)) as client:
        ready = await client.get("/ready")
        health = await client.get("/health")
    assert ready.status_code == 503 and ready.json()["down"] == ["redis"]
    assert health.json()["checks"]["database"]["status"] == "up"
    assert health.json()["checks"]["redis"]["status"] == "down"


async def test_api_root_and_ping(client) -> None:  # type: ignore[no-untyped-def]
    root = await client.get("/api/v1/")
    assert (
        root.status_code == 200
        and root.json()["name"] == "TradeOS"
        and root.json()["docs"] == "/docs"
    )
    ping = await client.get("/api/v1/ping")
    assert ping.json()["ping"] == "pong"


async def test_info_names_backends_but_never_a_secret(
    settings_factory: Callable[..., Settings], database: object, database_url: str
) -> None:
    # A password in the database URL must not come back; on SQLite the URL has none, so add Redis's.
    settings = settings_factory(
        redis_url="redis://:r3dis-pa55word@127.0.0.1:1/0",
        jwt_secret_key="x" * 8 + "Qw9!zR2#kL5$mN8^pT1&",
    )
    async with serve_app(create_app(settings, configure_logs=False)) as client:
        body = (await client.get("/api/v1/info")).json()
    assert (
        body["name"] == "TradeOS"
        and body["version"] == __version__
        and body["environment"] == "test"
    )
    assert body["backends"] == {
        "database": "postgresql" if "postgresql" in database_url else "sqlite",
        "cache": "redis",
        "events": "redis",
        "broker": "redis",
    }
    text = str(body)
    assert "r3dis-pa55word" not in text and "Qw9!zR2" not in text and "://" not in text


async def test_info_on_the_embedded_default(client) -> None:  # type: ignore[no-untyped-def]
    backends = (await client.get("/api/v1/info")).json()["backends"]
    expected = "redis" if TEST_REDIS_URL else "memory"
    assert backends["cache"] == expected and backends["broker"] == expected


async def test_openapi_and_docs_are_served(client) -> None:  # type: ignore[no-untyped-def]
    spec = (await client.get("/openapi.json")).json()
    assert spec["info"]["title"] == "TradeOS"
    assert "/api/v1/info" in spec["paths"] and "/health" in spec["paths"]
    assert "swagger" in (await client.get("/docs")).text.lower()
    assert "redoc" in (await client.get("/redoc")).text.lower()


def _app_with_templated_route(settings: Settings) -> FastAPI:
    app = create_app(settings, configure_logs=False)

    @app.get("/api/v1/t/orders/{order_id}")
    async def order(order_id: int) -> dict[str, int]:
        return {"order_id": order_id}

    return app


def _sample(metrics_text: str, name: str, **labels: str) -> float:
    for family in text_string_to_metric_families(metrics_text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return sample.value
    raise AssertionError(f"no {name} sample with {labels}")


async def test_metrics_count_requests_by_route_template_method_and_status(
    settings: Settings, database: object
) -> None:
    async with serve_app(_app_with_templated_route(settings)) as client:
        for order_id in (1, 2, 3):
            await client.get(f"/api/v1/t/orders/{order_id}")
        await client.get("/api/v1/t/orders/not-a-number")
        await client.get("/api/v1/unknown/path/123")
        text = (await client.get("/metrics")).text
    route = "/api/v1/t/orders/{order_id}"
    assert _sample(text, "http_requests_total", handler=route, method="GET", status="200") == 3
    assert _sample(text, "http_requests_total", handler=route, method="GET", status="422") == 1
    assert (
        _sample(
            text, "http_request_duration_seconds_count", handler=route, method="GET", status="200"
        )
        == 3
    )
    assert (
        _sample(
            text,
            "http_request_duration_seconds_bucket",
            handler=route,
            method="GET",
            status="200",
            le="+Inf",
        )
        == 3
    )
    assert (
        "/api/v1/t/orders/1" not in text and "/api/v1/unknown/path/123" not in text
    )  # never raw paths


async def test_cors_allows_configured_origins_only(
    settings_factory: Callable[..., Settings], database: object
) -> None:
    settings = settings_factory(cors_origins="https://app.example.com")

    def preflight(origin: str) -> dict[str, str]:
        return {"Origin": origin, "Access-Control-Request-Method": "GET"}

    async with serve_app(create_app(settings, configure_logs=False)) as client:
        allowed = await client.options("/api/v1/ping", headers=preflight("https://app.example.com"))
        refused = await client.options(
            "/api/v1/ping", headers=preflight("https://evil.example.net")
        )
        other = await client.get("/api/v1/ping", headers={"Origin": "https://evil.example.net"})
    assert allowed.status_code == 200
    assert allowed.headers["access-control-allow-origin"] == "https://app.example.com"
    assert "access-control-allow-origin" not in other.headers
    # A refused preflight is a problem document too, not Starlette's plain text.
    assert refused.status_code == 400
    assert refused.headers["content-type"] == PROBLEM
    assert "Disallowed CORS origin" in refused.json()["detail"]


async def test_head_is_answered_wherever_get_is(client) -> None:  # type: ignore[no-untyped-def]
    for path in ("/health", "/live", "/api/v1/ping", "/openapi.json"):
        get = await client.get(path)
        head = await client.head(path)
        assert head.status_code == 200, path
        assert head.content == b""
        assert head.headers["content-type"] == get.headers["content-type"]
    missing = await client.head("/api/v1/nothing-here")
    assert missing.status_code == 404 and missing.content == b""
    # HEAD is answered, not documented as an operation of its own.
    paths = (await client.get("/openapi.json")).json()["paths"]
    assert all("head" not in operations for operations in paths.values())


def _failing_app(settings: Settings) -> FastAPI:
    app = create_app(settings, configure_logs=False)

    @app.get("/api/v1/t/crash")
    async def crash() -> None:
        raise RuntimeError("boom")

    @app.post("/api/v1/t/echo")
    async def echo(payload: dict[str, str]) -> dict[str, str]:
        return payload

    return app


async def test_errors_carry_cors_headers_and_are_counted(
    settings_factory: Callable[..., Settings], database: object
) -> None:
    settings = settings_factory(cors_origins="https://app.example.com", max_request_body_bytes=1024)
    origin = {"Origin": "https://app.example.com"}
    async with serve_app(_failing_app(settings)) as client:
        crashed = await client.get("/api/v1/t/crash", headers=origin)
        too_big = await client.post("/api/v1/t/echo", json={"x": "y" * 2000}, headers=origin)
        metrics = (await client.get("/metrics")).text
    for response, status in ((crashed, 500), (too_big, 413)):
        assert response.status_code == status
        assert response.headers["content-type"] == PROBLEM
        assert response.headers["access-control-allow-origin"] == "https://app.example.com"
    assert _sample(metrics, "http_requests_total", handler="/api/v1/t/crash", status="500") == 1
    assert _sample(metrics, "http_requests_total", handler="/api/v1/t/echo", status="413") == 1


async def test_large_responses_are_gzipped_small_ones_not(client) -> None:  # type: ignore[no-untyped-def]
    large = await client.get("/openapi.json", headers={"Accept-Encoding": "gzip"})
    small = await client.get("/api/v1/ping", headers={"Accept-Encoding": "gzip"})
    assert (
        large.headers["content-encoding"] == "gzip" and large.json()["info"]["title"] == "TradeOS"
    )
    assert "content-encoding" not in small.headers


@pytest.mark.parametrize(
    ("environment", "json_lines"), [("production", True), ("development", False)]
)
def test_production_logs_json_lines(
    settings_factory: Callable[..., Settings],
    monkeypatch: pytest.MonkeyPatch,
    environment: str,
    json_lines: bool,
) -> None:
    calls: list[dict[str, Any]] = []
    monkeypatch.setattr(
        app_module, "configure_logging", lambda level, **kw: calls.append({"level": level, **kw})
    )
    strong = "Zq7-Lm2Vx9pT4wYb1Kc6HdJ3sFg0AqR8"
    create_app(
        settings_factory(environment=environment, jwt_secret_key=strong, log_level="warning")
    )
    assert calls == [{"level": "WARNING", "json": json_lines, "sql": False}]


async def test_health_stays_up_while_a_request_holds_the_connection(
    settings: Settings, database: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(status_module, "CHECK_TIMEOUT_SECONDS", 0.5)
    app = create_app(settings, configure_logs=False)

    @app.post("/api/v1/t/slow")
    async def slow(session: SessionDep) -> None:
        await session.execute(text("SELECT 1"))
        await asyncio.sleep(1.5)  # a slow unit of work holds SQLite's one connection

    async with serve_app(app) as client:
        slow_request = asyncio.create_task(client.post("/api/v1/t/slow"))
        await asyncio.sleep(0.1)
        ready = await client.get("/ready")
        await slow_request
    assert ready.status_code == 200, ready.text


async def test_a_dependency_that_hangs_is_reported_down_in_time(
    settings: Settings, database: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(status_module, "CHECK_TIMEOUT_SECONDS", 0.2)

    class HangingRedis:
        async def ping(self) -> None:
            await asyncio.sleep(60)

        async def aclose(self) -> None:
            pass

    app = create_app(settings, configure_logs=False)
    async with serve_app(app) as client:
        app.state.redis = HangingRedis()
        ready = await client.get("/ready")
    assert ready.status_code == 503
    assert ready.json()["checks"]["redis"]["error"] == "no answer within 0.2 s"


async def test_a_failing_middleware_is_still_a_problem(
    settings: Settings, database: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(self: object, scope: object, receive: object, send: object) -> None:
        raise RuntimeError("middleware bug")

    monkeypatch.setattr(middleware_module.BodyLimitMiddleware, "__call__", broken)
    async with serve_app(create_app(settings, configure_logs=False)) as client:
        response = await client.get("/api/v1/ping")
    assert response.status_code == 500
    assert response.headers["content-type"] == PROBLEM
    assert response.json()["request_id"] == response.headers["x-request-id"]


async def test_any_origin_never_gets_credentials(
    settings_factory: Callable[..., Settings], database: object
) -> None:
    async with serve_app(
        create_app(settings_factory(cors_origins="*"), configure_logs=False)
    ) as client:
        response = await client.get("/api/v1/ping", headers={"Origin": "https://any.example.org"})
    assert response.headers["access-control-allow-origin"] == "*"
    assert "access-control-allow-credentials" not in response.headers


async def test_head_sends_the_headers_get_sends(client) -> None:  # type: ignore[no-untyped-def]
    gzip = {"Accept-Encoding": "gzip"}
    get = await client.get("/openapi.json", headers=gzip)
    head = await client.head("/openapi.json", headers=gzip)
    for name in ("content-type", "content-encoding", "content-length", "vary"):
        assert head.headers.get(name) == get.headers.get(name), name
