"""Backtest endpoints: /backtests, /backtests/optimize, /backtests/{id} and its report."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated

import anyio
from fastapi import Depends, Query, Response, status

from tradeos.accounts.deps import ReaderDep, TraderDep
from tradeos.backtest import jobs as backtest_jobs
from tradeos.backtest import service
from tradeos.backtest.models import BacktestKind, BacktestStatus
from tradeos.backtest.schemas import (
    BacktestAccepted,
    BacktestDetailOut,
    BacktestIn,
    BacktestOut,
    OptimizeIn,
)
from tradeos.core.deps import JobsDep, PageQuery, ResourceId, SessionDep
from tradeos.core.pagination import Ordering, Page, paginate
from tradeos.core.routing import APIRouter
from tradeos.market.deps import ProviderDep
from tradeos.market.timeframes import Timeframe

backtests = APIRouter(prefix="/backtests", tags=["backtests"])

_QUEUED = (
    " Answers 202 with the backtest's id and its job's id; GET /backtests/{id} shows its "
    "progress and, once it has succeeded, its result. Plans allow `backtests_per_day` "
    "backtests and optimizations together (Free 10, Pro 200, Enterprise any number), counted "
    "from 00:00 UTC, deleted ones included: one more is a 429 problem with Retry-After. "
    "A `strategy_id` must name a strategy you may read (yours or a public one; 404 otherwise). "
    "The formula (or a strategy's formula with `params`) is checked first: each error is a "
    "422 `errors` entry with its line and column. The window must hold at most 200,000 bars "
    "of the timeframe (422)."
)


class ReportFormat(StrEnum):
    HTML = "html"
    PNG = "png"


@backtests.post("", status_code=status.HTTP_202_ACCEPTED, description="Queue a backtest." + _QUEUED)
async def create_backtest(
    body: BacktestIn, principal: TraderDep, session: SessionDep, jobs: JobsDep
) -> BacktestAccepted:
    backtest = await service.create_backtest(
        session, jobs, backtest_jobs.run_backtest, principal, body
    )
    return _accepted(backtest.id, BacktestKind.BACKTEST, backtest.job_id)


@backtests.post(
    "/optimize",
    status_code=status.HTTP_202_ACCEPTED,
    description="Queue an optimization: every combination of the `grid` (at most 10,000, "
    "422 beyond) on one instrument, its result the `top` best by `objective`. The grid runs "
    "in parallel threads inside one worker." + _QUEUED,
)
async def create_optimization(
    body: OptimizeIn, principal: TraderDep, session: SessionDep, jobs: JobsDep
) -> BacktestAccepted:
    backtest = await service.create_optimization(
        session, jobs, backtest_jobs.run_backtest, principal, body
    )
    return _accepted(backtest.id, BacktestKind.OPTIMIZE, backtest.job_id)


def _accepted(backtest_id: int, kind: BacktestKind, job_id: int | None) -> BacktestAccepted:
    assert job_id is not None
    return BacktestAccepted(id=backtest_id, kind=kind, status=BacktestStatus.QUEUED, job_id=job_id)


@backtests.get("")
async def list_backtests(
    principal: ReaderDep,
    session: SessionDep,
    paging: PageQuery,
    order: Annotated[Ordering, Depends(service.BACKTEST_SORT)],
    strategy_id: Annotated[int | None, Query(ge=1, le=2**63 - 1)] = None,
    status: BacktestStatus | None = None,
    kind: BacktestKind | None = None,
) -> Page[BacktestOut]:
    """Your backtests and optimizations (without their results), newest first unless `sort`
    says otherwise; `total_return` sorts the unfinished last either way."""
    query = service.backtests_query(
        principal.user_id, order, strategy_id=strategy_id, status=status, kind=kind
    )
    page = await paginate(session, query, paging)
    runs = await service.job_runs(session, page.items)
    return page.map(lambda b: service.as_out(b, runs.get(b.job_id or 0)))


# `:int`: only numbers are ids, so /backtests/optimize is never taken for one.
@backtests.get("/{backtest_id:int}")
async def get_backtest(
    backtest_id: ResourceId, principal: ReaderDep, session: SessionDep
) -> BacktestDetailOut:
    """A backtest of yours: status, progress, the request; once succeeded its metrics (NaN and
    infinities as null), trades (the first 10,000; `trades_truncated` says when there are
    more) and equity curve (at most 2,000 points, drawdown included); an optimization's `top`."""
    backtest = await service.get_own(session, principal.user_id, backtest_id)
    runs = await service.job_runs(session, [backtest])
    return service.as_detail(backtest, runs.get(backtest.job_id or 0))


@backtests.delete("/{backtest_id:int}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_backtest(
    backtest_id: ResourceId, principal: TraderDep, session: SessionDep
) -> None:
    """Delete a backtest of yours. A queued or running one is canceled: its job stores nothing.
    It still counts towards today's quota."""
    backtest = await service.get_own(session, principal.user_id, backtest_id)
    await service.delete_backtest(session, backtest)


@backtests.get(
    "/{backtest_id:int}/report",
    responses={
        200: {
            "content": {"text/html": {}, "image/png": {}},
            "description": "The self-contained HTML report, or the equity chart as PNG.",
        },
        409: {"description": "The backtest has not succeeded (or is an optimization)."},
    },
    response_class=Response,
)
async def get_report(
    backtest_id: ResourceId,
    principal: ReaderDep,
    session: SessionDep,
    provider: ProviderDep,
    format: ReportFormat = ReportFormat.HTML,
) -> Response:
    """A succeeded backtest's report: one HTML page that fetches nothing (metrics, equity,
    drawdown, each instrument's prices with its trades, the trade list), or with
    `format=png` the equity chart. 409 while it has not succeeded."""
    backtest = await service.get_own(session, principal.user_id, backtest_id)
    service.reportable(backtest)
    run = service.stored_run(backtest)
    from tradeos.backtest.report import html_report, png_equity_chart

    if format is ReportFormat.PNG:
        image = await anyio.to_thread.run_sync(png_equity_chart, run)
        return Response(image, media_type="image/png")
    request = backtest.request
    candles = await service.load_candles(
        session,
        provider,
        request["symbols"],
        Timeframe(request["timeframe"]),
        datetime.fromisoformat(request["start"]),
        datetime.fromisoformat(request["end"]),
    )
    title = service.report_title(backtest)
    page = await anyio.to_thread.run_sync(lambda: html_report(run, title=title, candles=candles))
    return Response(page, media_type="text/html")


routers = (backtests,)
