"""create_app(): the FastAPI application, its lifespan, middleware and routers."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import structlog
from fastapi import FastAPI
from fastapi.middleware.gzip import GZipMiddleware

from tradeos import __version__
from tradeos.accounts.kyc_router import routers as kyc_routers
from tradeos.accounts.lockout import LoginGuard
from tradeos.accounts.router import routers as accounts_routers
from tradeos.admin.router import routers as admin_routers
from tradeos.backtest.router import routers as backtest_routers
from tradeos.billing.router import routers as billing_routers
from tradeos.config import Settings, get_settings
from tradeos.core.cache import make_cache
from tradeos.core.db import Database
from tradeos.core.errors import install_error_handlers
from tradeos.core.events import flush_after_commit, make_event_bus
from tradeos.core.jobs import JobQueue, Scheduler
from tradeos.core.jobs.scheduler import check_job_schedules
from tradeos.core.logging import RequestContextMiddleware, configure_logging
from tradeos.core.metrics import install_metrics
from tradeos.core.middleware import (
    BodyLimitMiddleware,
    ErrorBoundaryMiddleware,
    HeadAsGetMiddleware,
    ProblemCORSMiddleware,
)
from tradeos.core.openapi import install_problem_openapi
from tradeos.core.ratelimit import RateLimiter, RateLimitHeadersMiddleware
from tradeos.core.redis import make_redis
from tradeos.core.routing import APIRouter, JSONRoute
from tradeos.core.status import api_root, probes
from tradeos.core.storage import make_storage
from tradeos.core.transactions import flush_after_commit as flush_committed_actions
from tradeos.jobs import JOBS
from tradeos.market import startup as market_startup
from tradeos.market.router import routers as market_routers
from tradeos.notifications.gateway import routers as gateway_routers
from tradeos.notifications.router import routers as notifications_routers
from tradeos.portfolio.router import routers as portfolio_routers
from tradeos.risk.router import routers as risk_routers
from tradeos.strategies.router import routers as strategies_routers
from tradeos.trading import closing, facade, state_router
from tradeos.trading.execution import RestingOrderWatcher
from tradeos.trading.router import routers as trading_routers

API_PREFIX = "/api/v1"
GZIP_MINIMUM_BYTES = 1024
KYC_UPLOAD_PATH = f"{API_PREFIX}/auth/kyc/upload"
# Room for the multipart framing and form fields around an uploaded file.
MULTIPART_OVERHEAD_BYTES = 64 * 1024

logger = structlog.get_logger("tradeos.app")
# How long shutdown waits for each background task (scheduler, live feed, order watcher).
BACKGROUND_STOP_SECONDS = 10.0


def _api_router() -> APIRouter:
    """Every versioned endpoint. Domain routers are included here as they are built."""
    api = APIRouter(prefix=API_PREFIX)
    api.include_router(api_root)
    for router in (
        *accounts_routers,
        *kyc_routers,
        *admin_routers,
        *billing_routers,
        *notifications_routers,
        *gateway_routers,
        *market_routers,
        *strategies_routers,
        *backtest_routers,
        *closing.routers,  # before GET /positions/{symbol}: it answers /close-all
        *trading_routers,
        *risk_routers,
        *state_router.routers,
        *facade.routers,
        *portfolio_routers,
    ):
        api.include_router(router)
    return api


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings: Settings = app.state.settings
    # Every process refuses a JOB_SCHEDULES naming no periodic job, scheduler or not, before
    # opening anything: a typo must not leave a job quietly on its old schedule.
    check_job_schedules(settings.job_schedules)
    app.state.database = Database(settings.sqlalchemy_url, pool_size=settings.database_pool_size)
    app.state.redis = make_redis(settings.redis_url) if settings.redis_url else None
    app.state.rate_limiter = RateLimiter.from_settings(settings)
    # Lockout counters are security state: always the exact moving window, never disabled.
    app.state.login_guard = LoginGuard(
        RateLimiter(
            strategy="moving-window",
            redis_url=settings.redis_url,
            key_prefix=f"{settings.redis_key_prefix}:security",
            fail_open=False,
        ),
        settings,
    )
    app.state.storage = make_storage(settings)
    app.state.cache = make_cache(settings)
    app.state.events = make_event_bus(settings)
    app.state.jobs = jobs = JobQueue(
        settings,
        database=app.state.database,
        events=app.state.events,
        cache=app.state.cache,
        storage=app.state.storage,
    )
    scheduler: asyncio.Task[None] | None = None
    if settings.runs_jobs_in_serve:
        # Embedded: this process runs the jobs and the schedules (DESIGN.md).
        await jobs.start_consuming()
        scheduler = asyncio.create_task(Scheduler(jobs).run(), name="tradeos-scheduler")
    else:
        await jobs.start()
    app.state.market = market_startup.make(settings, app.state.metrics_registry)
    await market_startup.prepare(app.state.database, app.state.market, jobs)
    live: asyncio.Task[None] | None = None
    feed = market_startup.live_feed(settings, app.state.market, app.state.events)
    watcher: asyncio.Task[None] | None = None
    if settings.runs_jobs_in_serve and feed is not None:
        # Once per deployment, like the schedules: here when embedded.
        live = asyncio.create_task(feed.run(), name="tradeos-live-feed")
        # Resting orders fill on the feed's ticks (trading/execution.py).
        resting = RestingOrderWatcher(
            app.state.database, app.state.events, settings, lambda: app.state.market.provider
        )
        watcher = asyncio.create_task(resting.run(), name="tradeos-order-watcher")
    logger.info(
        "startup",
        version=__version__,
        environment=settings.environment,
        database=settings.safe_database_url,
        cache=settings.cache_backend,
        jobs=settings.broker_backend,
        jobs_here=settings.runs_jobs_in_serve,
        declared_jobs=len(JOBS),
    )
    try:
        yield
    finally:
        for background in (scheduler, live, watcher):
            if background is not None:
                background.cancel()
                # Bounded: a task that swallowed its cancel must not hold the shutdown forever.
                done, _ = await asyncio.wait([background], timeout=BACKGROUND_STOP_SECONDS)
                if not done:
                    logger.error("background_task_did_not_stop", task=background.get_name())
        # Jobs and events of requests committed just before shutdown still go out.
        await flush_committed_actions()
        await jobs.aclose()
        await app.state.market.aclose()
        await flush_after_commit()
        await app.state.events.aclose()
        await app.state.cache.aclose()
        await app.state.storage.aclose()
        await app.state.login_guard.limiter.aclose()
        await app.state.rate_limiter.aclose()
        if app.state.redis is not None:
            await app.state.redis.aclose()
        await app.state.database.dispose()
        logger.info("shutdown")


def create_app(settings: Settings | None = None, *, configure_logs: bool = True) -> FastAPI:
    settings = settings or get_settings()
    if configure_logs:
        configure_logging(settings.log_level, json=settings.is_production, sql=settings.debug)
    app = FastAPI(
        title="TradeOS",
        version=__version__,
        summary="Trading platform backend: market data, strategies, backtests, paper trading.",
        debug=False,  # never render tracebacks to clients, whatever DEBUG says
        lifespan=_lifespan,
        docs_url="/docs",
        redoc_url="/redoc",
        openapi_url="/openapi.json",
    )
    app.router.route_class = JSONRoute
    app.state.settings = settings
    install_error_handlers(app)
    install_problem_openapi(app)

    app.include_router(probes)
    app.include_router(_api_router())
    _install_middleware(app, settings)
    return app


def _install_middleware(app: FastAPI, settings: Settings) -> None:
    # Each add wraps everything added before it, so this reads innermost first. The outcome,
    # outermost first: request context -> error boundary -> HEAD -> CORS -> GZip -> metrics
    # -> body limit -> rate-limit headers -> error boundary -> routing (see core/middleware.py).
    app.add_middleware(ErrorBoundaryMiddleware)
    app.add_middleware(RateLimitHeadersMiddleware)
    app.add_middleware(
        BodyLimitMiddleware,
        max_body_bytes=settings.max_request_body_bytes,
        # A KYC document may be larger than any JSON body; the endpoint checks the file itself.
        path_limits={KYC_UPLOAD_PATH: settings.kyc_max_upload_bytes + MULTIPART_OVERHEAD_BYTES},
    )
    install_metrics(app)
    app.add_middleware(GZipMiddleware, minimum_size=GZIP_MINIMUM_BYTES)
    if settings.cors_origins:
        app.add_middleware(
            ProblemCORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_credentials="*" not in settings.cors_origins,
            allow_methods=["*"],
            allow_headers=["*"],
            expose_headers=["X-Request-ID"],
        )
    app.add_middleware(HeadAsGetMiddleware)
    app.add_middleware(ErrorBoundaryMiddleware)
    app.add_middleware(RequestContextMiddleware)


# The cyclic garbage collector's young-generation threshold for a serving process (Python's
# default is 700). A WebSocket fan-out keeps thousands of small containers alive at once; at
# the default, young collections during the fan-out promote them until a full collection of a
# server holding 1,000 connections (~300 ms) lands on an event. bench/RESULTS.md measures it.
SERVE_GC_YOUNG_THRESHOLD = 20_000


def app_factory() -> Any:
    """Entry point for `uvicorn --factory tradeos.app:app_factory` (used by `tradeos serve`)."""
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(SERVE_GC_YOUNG_THRESHOLD, older, oldest)
    return create_app()
