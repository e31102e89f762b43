"""Probes (/health, /ready, /live) and the API root (/api/v1/, /ping, /info).

/health reports each dependency with its latency; /ready answers 503 naming the dependency
that is down, so a load balancer stops sending traffic; /live only says the process runs.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, Literal

from fastapi import Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from tradeos import __version__
from tradeos.core.deps import SettingsDep
from tradeos.core.errors import problem_response
from tradeos.core.routing import APIRouter

CHECK_TIMEOUT_SECONDS = 2.0


class DependencyCheck(BaseModel):
    status: Literal["up", "down"]
    latency_ms: float
    error: str | None = None


class HealthReport(BaseModel):
    status: Literal["ok", "unavailable"]
    version: str
    checks: dict[str, DependencyCheck]


async def _timed(check: Callable[[], Awaitable[Any]]) -> DependencyCheck:
    started = time.perf_counter()
    error: str | None = None
    try:
        await asyncio.wait_for(check(), timeout=CHECK_TIMEOUT_SECONDS)
    except TimeoutError:
        error = f"no answer within {CHECK_TIMEOUT_SECONDS:g} s"
    except Exception as exc:
        # The class name says enough (connection refused, auth failed...) without leaking a URL.
        error = type(exc).__name__
    latency = round((time.perf_counter() - started) * 1000, 2)
    return DependencyCheck(status="down" if error else "up", latency_ms=latency, error=error)


async def check_dependencies(request: Request) -> dict[str, DependencyCheck]:
    """Check the database, and Redis when configured, concurrently."""
    checks: dict[str, Callable[[], Awaitable[Any]]] = {"database": request.app.state.database.ping}
    redis = getattr(request.app.state, "redis", None)
    if redis is not None:
        checks["redis"] = redis.ping
    results = await asyncio.gather(*(_timed(check) for check in checks.values()))
    return dict(zip(checks, results, strict=True))


probes = APIRouter(tags=["health"])


@probes.get("/health", response_model=HealthReport, responses={503: {"model": HealthReport}})
async def health(request: Request) -> JSONResponse:
    checks = await check_dependencies(request)
    healthy = all(check.status == "up" for check in checks.values())
    report = HealthReport(
        status="ok" if healthy else "unavailable", version=__version__, checks=checks
    )
    return JSONResponse(report.model_dump(mode="json"), status_code=200 if healthy else 503)


@probes.get("/ready", responses={503: {"description": "A dependency is down (problem+json)."}})
async def ready(request: Request) -> Any:
    checks = await check_dependencies(request)
    down = sorted(name for name, check in checks.items() if check.status == "down")
    if down:
        return problem_response(
            503,
            detail=f"Not ready: {', '.join(down)} {'is' if len(down) == 1 else 'are'} down.",
            extra={
                "down": down,
                "checks": {name: check.model_dump() for name, check in checks.items()},
            },
        )
    return {"status": "ready"}


@probes.get("/live")
async def live() -> dict[str, str]:
    return {"status": "alive"}


class Backends(BaseModel):
    database: str
    cache: str
    events: str
    broker: str


class ServiceInfo(BaseModel):
    name: str
    version: str
    environment: str
    backends: Backends


api_root = APIRouter(tags=["meta"])


@api_root.get("/")
async def api_index() -> dict[str, Any]:
    return {
        "name": "TradeOS",
        "version": __version__,
        "docs": "/docs",
        "redoc": "/redoc",
        "openapi": "/openapi.json",
        "info": "/api/v1/info",
    }


@api_root.get("/ping")
async def ping() -> dict[str, str]:
    return {"ping": "pong", "time": datetime.now(UTC).isoformat()}


@api_root.get("/info", response_model=ServiceInfo)
async def info(settings: SettingsDep) -> ServiceInfo:
    # Backend names only: a URL could carry a password.
    return ServiceInfo(
        name="TradeOS",
        version=__version__,
        environment=settings.environment,
        backends=Backends(
            database=settings.database_backend,
            cache=settings.cache_backend,
            events=settings.events_backend,
            broker=settings.broker_backend,
        ),
    )
