"""Backtests as a resource: checked requests queued as jobs, their stored results, reports.

Who sees what: a backtest is its owner's only; anyone else's id answers 404, as an absent one
does. A backtest of a strategy needs a strategy the caller may read (theirs or a public one).

The numeric work (`runner.run_formula`, `runner.optimize`) runs in the `backtest.run` job,
never in a request. What a GET or a report needs is stored when the job finishes: metrics, the
full trade list and an equity curve cut to `MAX_CURVE_POINTS`; the report re-reads the candles
for its price charts (a read, no simulation).

A large optimization is shared: one `backtest.run` job per `OPTIMIZE_PART_COMBINATIONS`
combinations (`request["parts"]`), each on whichever worker process takes it. Each part stores
its best rows on the backtest (`store_part`, under the row lock); the part that completes the
set merges them into the ranking the whole grid gives and the optimization succeeds. A failing
part fails it, and the parts still to run then store nothing. Its `job_id` is the first part's.

Daily quota: `Quota.BACKTESTS_PER_DAY` of the caller's plan counts their backtests and
optimizations created since 00:00 UTC, deleted ones too; one more is a 429 problem with
`Retry-After` (the seconds to the next midnight UTC).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import numpy as np
from sqlalchemy import ColumnElement, Select, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from tradeos.accounts import service as accounts
from tradeos.accounts.service import Principal
from tradeos.backtest import runner
from tradeos.backtest.engine import (
    TRADE_DTYPE,
    BacktestConfig,
    BacktestResult,
    FillTiming,
    Sizing,
)
from tradeos.backtest.metrics import Metrics
from tradeos.backtest.models import FINISHED, Backtest, BacktestKind, BacktestStatus
from tradeos.backtest.schemas import (
    MAX_BARS,
    MAX_CURVE_POINTS,
    MAX_TRADES_SHOWN,
    BacktestDetailOut,
    BacktestIn,
    BacktestOut,
    EquityPoint,
    GridRange,
    OptimizationRowOut,
    OptimizeIn,
    SizingMode,
    TradeOut,
)
from tradeos.billing.plans import Feature, Quota, plan_for
from tradeos.core.db import utcnow
from tradeos.core.errors import (
    Conflict,
    Forbidden,
    NotFound,
    RateLimited,
    ValidationFailed,
    field_error,
)
from tradeos.core.jobs import JobDefinition, JobQueue, JobRun, RunStatus
from tradeos.core.pagination import Ordering, Sorting
from tradeos.market import service as market
from tradeos.market.providers.base import MarketProvider
from tradeos.market.timeframes import Timeframe
from tradeos.strategies import service as strategies
from tradeos.strategies.formula import FormulaError
from tradeos.trading.fill_model import EXIT_REASONS, IntrabarRule

NOT_FOUND = "No such backtest."

# -- checking requests -----------------------------------------------------------------------


def _formula_errors(field: str, errors: Sequence[FormulaError]) -> ValidationFailed:
    count = len(errors)
    return ValidationFailed(
        f"The formula has {count} error{'s' if count != 1 else ''}.",
        errors=[
            {**field_error(field, str(e), "formula"), "line": e.line, "column": e.column}
            for e in errors
        ],
    )


async def _formula(
    session: AsyncSession, principal: Principal, body: BacktestIn | OptimizeIn
) -> tuple[str, dict[str, float | int], int | None, bool]:
    """The formula text, the parameter overrides (a strategy's saved ones under the body's),
    the strategy id and whether the caller owns that strategy; 422 unless exactly one of
    strategy_id and formula is given, or when the formula or the overrides are wrong."""
    if (body.strategy_id is None) == (body.formula is None):
        raise ValidationFailed(
            "Give exactly one of strategy_id and formula.",
            errors=[field_error("body.formula", "exactly one of strategy_id and formula")],
        )
    params: dict[str, float | int] = {}
    owned = False
    if body.strategy_id is not None:
        strategy = await strategies.get_visible(session, principal.user_id, body.strategy_id)
        text = strategy.formula
        params.update(strategy.default_params)
        owned = strategy.owner_id == principal.user_id
    else:
        assert body.formula is not None
        text = body.formula
        bare = strategies.FormulaCheck(text)
        if bare.errors:
            raise _formula_errors("body.formula", bare.errors)
    params.update(body.params)
    checked = strategies.FormulaCheck(text, params)
    if checked.param_errors:
        raise ValidationFailed(
            "params names something that is not a parameter of the formula.",
            errors=[
                field_error(f"body.params.{name}", message, "unknown_parameter")
                for name, message in checked.param_errors.items()
            ],
        )
    if checked.errors:
        raise _formula_errors("body.params", checked.errors)
    return text, params, body.strategy_id, owned


def _check_window(start: datetime, end: datetime, timeframe: Timeframe) -> int:
    if end <= start:
        raise ValidationFailed(
            "end is not after start: the time window is empty.",
            errors=[field_error("body.end", "must be after start")],
        )
    bars = math.ceil((end - start).total_seconds() / timeframe.seconds)
    if bars > MAX_BARS:
        raise ValidationFailed(
            f"The window holds {bars:,} bars of {timeframe}; at most {MAX_BARS:,} per "
            "instrument. Shorten it or use a coarser timeframe.",
            errors=[field_error("body.end", f"at most {MAX_BARS} bars after start", "too_long")],
        )
    return bars


async def _instruments(
    session: AsyncSession, symbols: Sequence[str], field: str
) -> tuple[list[str], list[Decimal]]:
    """Each symbol's instrument (symbol as stored, quantity step); 422 for an unknown one."""
    found: list[str] = []
    steps: list[Decimal] = []
    errors = []
    for number, text in enumerate(symbols):
        where = f"{field}.{number}" if field.endswith("symbols") else field
        try:
            instrument = await market.get_instrument(session, text)
        except NotFound:
            errors.append(field_error(where, f"no instrument {text[:40]!r}", "unknown_symbol"))
            continue
        if instrument.symbol in found:
            errors.append(field_error(where, f"{instrument.symbol} is given twice", "duplicate"))
            continue
        found.append(instrument.symbol)
        steps.append(instrument.quantity_step)
    if errors:
        raise ValidationFailed("Unknown or repeated symbols.", errors=errors)
    return found, steps


def _sizing(body: BacktestIn | OptimizeIn) -> dict[str, Any]:
    if body.sizing.mode is not SizingMode.FIXED and body.sizing.value > 100:
        raise ValidationFailed(
            "A percentage sizing is at most 100.",
            errors=[field_error("body.sizing.value", "at most 100 for this mode")],
        )
    return {"mode": body.sizing.mode.value, "value": body.sizing.value}


def _start_of_day(now: datetime) -> datetime:
    return now.replace(hour=0, minute=0, second=0, microsecond=0)


async def _within_quota(session: AsyncSession, principal: Principal) -> None:
    limit = plan_for(principal.tier).quota(Quota.BACKTESTS_PER_DAY)
    if limit is None:
        return
    await accounts.lock_owner(session, principal.user_id)
    now = utcnow()
    midnight = _start_of_day(now)
    count = await session.scalar(
        select(func.count())
        .select_from(Backtest)
        .where(Backtest.owner_id == principal.user_id, Backtest.created_at >= midnight)
    )
    if int(count or 0) >= limit:
        retry = math.ceil((midnight + timedelta(days=1) - now).total_seconds())
        raise RateLimited(
            f"Your plan ({principal.tier}) allows {limit} backtests a day (UTC). Try again "
            "after midnight UTC or upgrade your plan.",
            retry_after=max(1, retry),
            extra={"quota": Quota.BACKTESTS_PER_DAY.value, "limit": limit},
        )


def _common(
    body: BacktestIn | OptimizeIn, steps: Sequence[Decimal], formula: str, strategy_id: int | None
) -> dict[str, Any]:
    step = 1.0 if body.whole_units else float(min(steps))
    return {
        "strategy_id": strategy_id,
        "formula": formula,
        "timeframe": body.timeframe.value,
        "start": body.start.isoformat(),
        "end": body.end.isoformat(),
        "initial_cash": str(body.initial_cash),
        "commission": body.commission,
        "fixed_fee": body.fixed_fee,
        "min_fee": body.min_fee,
        "slippage_bps": body.slippage_bps,
        "fill": body.fill.value,
        "intrabar_rule": body.intrabar_rule.value,
        "sizing": _sizing(body),
        "whole_units": body.whole_units,
        "quantity_step": step,
        "allow_short": body.allow_short,
    }


async def _queue(
    session: AsyncSession,
    jobs: JobQueue,
    job: JobDefinition,
    principal: Principal,
    kind: BacktestKind,
    request: dict[str, Any],
    strategy_id: int | None,
    parts: int = 1,
) -> Backtest:
    await _within_quota(session, principal)
    backtest = Backtest(
        owner_id=principal.user_id,
        strategy_id=strategy_id,
        kind=kind.value,
        status=BacktestStatus.QUEUED.value,
        request=request,
        created_at=utcnow(),
    )
    session.add(backtest)
    await session.flush()
    runs = [
        await jobs.enqueue(
            session,
            job,
            {"backtest_id": backtest.id} if parts == 1 else {"backtest_id": backtest.id, "part": k},
            owner_id=principal.user_id,
        )
        for k in range(parts)
    ]
    backtest.job_id = runs[0].id
    await session.flush()
    return backtest


async def create_backtest(
    session: AsyncSession,
    jobs: JobQueue,
    job: JobDefinition,
    principal: Principal,
    body: BacktestIn,
) -> Backtest:
    """A checked backtest request, queued as `job`: 422 for a wrong formula, parameters,
    window or symbol; 403 for several symbols without multi-asset backtests; 429 over the
    daily quota."""
    formula, params, strategy_id, owned = await _formula(session, principal, body)
    _check_window(body.start, body.end, body.timeframe)
    if len(body.symbols) > 1 and not principal.has_feature(Feature.MULTI_ASSET_BACKTESTS):
        raise Forbidden(
            f"Your plan ({principal.tier}) backtests one instrument at a time. Upgrade for "
            "multi-asset backtests.",
            errors=[field_error("body.symbols", "one symbol on this plan", "forbidden")],
            extra={"required_feature": Feature.MULTI_ASSET_BACKTESTS.value},
        )
    symbols, steps = await _instruments(session, body.symbols, "body.symbols")
    request = {
        **_common(body, steps, formula, strategy_id),
        "symbols": symbols,
        "params": params,
        "strategy_owned": owned,
    }
    return await _queue(session, jobs, job, principal, BacktestKind.BACKTEST, request, strategy_id)


def _grid_values(name: str, spec: list[float | int] | GridRange) -> list[float]:
    if not isinstance(spec, GridRange):
        return [float(value) for value in spec]
    field = f"body.grid.{name}"
    if not spec.step > 0:
        raise ValidationFailed(
            "A grid step must be positive.", errors=[field_error(f"{field}.step", "must be > 0")]
        )
    if spec.stop < spec.start:
        raise ValidationFailed(
            "A grid range must not end before it starts.",
            errors=[field_error(f"{field}.stop", "must be at least start")],
        )
    # A hair of tolerance, so 0.1 steps reach their stop despite binary rounding.
    count = math.floor((spec.stop - spec.start) / spec.step + 1e-9) + 1
    if count > runner.MAX_COMBINATIONS:
        raise _too_many(count)
    return [float(spec.start + k * spec.step) for k in range(count)]


def _too_many(count: int) -> ValidationFailed:
    return ValidationFailed(
        f"{count:,} parameter combinations; at most {runner.MAX_COMBINATIONS:,}.",
        errors=[
            field_error("body.grid", f"at most {runner.MAX_COMBINATIONS} combinations", "too_many")
        ],
    )


# Combinations per job of an optimization: a larger grid is shared by several jobs, each
# on whichever worker process takes it.
OPTIMIZE_PART_COMBINATIONS = 1000


async def create_optimization(
    session: AsyncSession,
    jobs: JobQueue,
    job: JobDefinition,
    principal: Principal,
    body: OptimizeIn,
) -> Backtest:
    """A checked optimization request, queued as `job` (the same checks as a backtest's, and
    the grid's: names the formula declares, values it accepts, ≤ 10,000 combinations)."""
    formula, params, strategy_id, _ = await _formula(session, principal, body)
    grid = {name: _grid_values(name, spec) for name, spec in body.grid.items()}
    count = math.prod(len(values) for values in grid.values())
    if count > runner.MAX_COMBINATIONS:
        raise _too_many(count)
    checked = strategies.FormulaCheck(formula)
    unknown = [name for name in grid if name not in checked.parameters]
    if unknown:
        raise ValidationFailed(
            "grid names something that is not a parameter of the formula.",
            errors=[
                field_error(
                    f"body.grid.{name}",
                    f"unknown parameter '{name}' (parameters: "
                    f"{', '.join(checked.parameters) or 'none'})",
                    "unknown_parameter",
                )
                for name in unknown
            ],
        )
    for name, values in grid.items():  # each value must be one the formula accepts
        for value in sorted({min(values), max(values)}):
            tried = strategies.FormulaCheck(formula, {**params, name: value})
            if tried.errors or tried.param_errors:
                said = tried.errors[0].message if tried.errors else tried.param_errors[name]
                raise ValidationFailed(
                    f"{name} = {value:g} makes the formula invalid: {said}",
                    errors=[field_error(f"body.grid.{name}", said, "formula")],
                )
    # Overrides of parameters outside the grid: one value each, so `optimize` uses them.
    grid.update({name: [float(v)] for name, v in params.items() if name not in grid})
    _check_window(body.start, body.end, body.timeframe)
    symbols, steps = await _instruments(session, [body.symbol], "body.symbol")
    request = {
        **_common(body, steps, formula, strategy_id),
        "symbols": symbols,
        "params": params,
        "grid": grid,
        "objective": body.objective.value,
        "top": body.top,
        "parts": parts_of(count),
    }
    return await _queue(
        session, jobs, job, principal, BacktestKind.OPTIMIZE, request, strategy_id,
        parts=request["parts"],
    )  # fmt: skip


def parts_of(combinations: int) -> int:
    """How many jobs share an optimization of `combinations`: one per
    `OPTIMIZE_PART_COMBINATIONS`, so a large grid runs on several worker processes at once."""
    return max(1, math.ceil(combinations / OPTIMIZE_PART_COMBINATIONS))


# -- running (the job's side) ----------------------------------------------------------------


def config_of(request: Mapping[str, Any]) -> BacktestConfig:
    sizing = request["sizing"]
    mode = SizingMode(sizing["mode"])
    size = float(sizing["value"]) if mode is SizingMode.FIXED else float(sizing["value"]) / 100
    return BacktestConfig(
        initial_cash=float(request["initial_cash"]),
        commission=float(request["commission"]),
        # Requests stored before fees and the intrabar rule could be chosen ran with these.
        fixed_fee=float(request.get("fixed_fee", 0.0)),
        min_fee=float(request.get("min_fee", 0.0)),
        slippage_bps=float(request["slippage_bps"]),
        fill_at=FillTiming(request["fill"]),
        intrabar_rule=IntrabarRule(request.get("intrabar_rule", IntrabarRule.WORST.value)),
        sizing=Sizing(mode.value),
        size=size,
        quantity_step=float(request["quantity_step"]),
        allow_short=bool(request["allow_short"]),
    )


async def start(session: AsyncSession, backtest_id: int) -> dict[str, Any] | None:
    """Mark a queued (or interrupted) backtest running and return its request with its kind;
    None when it is gone, deleted or already finished: the job then does nothing."""
    backtest = await session.scalar(
        select(Backtest).where(Backtest.id == backtest_id).with_for_update()
    )
    if backtest is None or backtest.deleted_at is not None or backtest.status in FINISHED:
        return None
    if backtest.status != BacktestStatus.RUNNING.value:  # the first of its parts to start
        backtest.status = BacktestStatus.RUNNING.value
        backtest.started_at = utcnow()
    await session.flush()
    return {**backtest.request, "kind": backtest.kind}


async def load_candles(
    session: AsyncSession,
    provider: MarketProvider | None,
    symbols: Sequence[str],
    timeframe: Timeframe,
    start: datetime,
    end: datetime,
) -> list[runner.CandleArrays]:
    """Each instrument's closed bars opening in [start, end), as GET /market/candles and
    `tradeos backtest` read them: stored, resampled from a finer stored timeframe, or produced
    by the market provider."""
    found = []
    now = utcnow()
    for text in symbols:
        instrument = await market.get_instrument(session, text)
        window = market.candle_window(timeframe, start, end, MAX_BARS, now)
        series = await market.candles(session, provider, instrument, timeframe, *window, MAX_BARS)
        closed = [row.bar for row in series.bars if not row.partial]
        found.append(runner.CandleArrays.from_bars(instrument.symbol, closed))
    return found


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def backtest_result(run: runner.BacktestRun) -> dict[str, Any]:
    """What a succeeded backtest stores: the summary, every trade, and the equity curve cut to
    `MAX_CURVE_POINTS` (peaks and troughs kept) with its drawdown."""
    summary = run.as_dict(trades=False)
    times, equity = runner.downsample(run.open_time, run.equity, MAX_CURVE_POINTS)
    positions = np.searchsorted(run.open_time, times)
    drawdown = np.asarray(run.result.drawdown, dtype=np.float64)[positions]
    trades = [
        {
            key: (_finite(value) if isinstance(value, float) else value)
            for key, value in trade.as_dict().items()
        }
        for trade in run.trades()
    ]
    return {
        "bars": summary["bars"],
        "params": summary["params"],
        "final_equity": summary["final_equity"],
        "metrics": summary["metrics"],
        "trades": trades,
        "curve": {
            "time": [int(t) for t in times],
            "equity": [_finite(float(v)) for v in equity],
            "drawdown": [_finite(float(v)) for v in drawdown],
        },
    }


def optimization_result(bars: int, rows: Sequence[runner.OptimizationRow]) -> dict[str, Any]:
    return {"bars": bars, "top": [row.as_dict() for row in rows]}


async def store_result(session: AsyncSession, backtest_id: int, result: dict[str, Any]) -> bool:
    """Store a finished run's result, unless the backtest was deleted meanwhile (then nothing
    is stored: False). A backtest of the owner's own strategy records its total return as the
    strategy's performance."""
    backtest = await session.scalar(
        select(Backtest).where(Backtest.id == backtest_id).with_for_update()
    )
    if backtest is None or backtest.deleted_at is not None or backtest.status in FINISHED:
        return False
    if backtest.kind == BacktestKind.OPTIMIZE:
        best = result["top"][0]["metrics"] if result["top"] else {}
        total_return = best.get("total_return")
    else:
        total_return = result["metrics"].get("total_return")
    backtest.result = result
    backtest.total_return = None if total_return is None else Decimal(repr(total_return))
    backtest.status = BacktestStatus.SUCCEEDED.value
    backtest.finished_at = utcnow()
    backtest.error = None
    await session.flush()
    owned = backtest.request.get("strategy_owned")
    if (
        backtest.kind == BacktestKind.BACKTEST
        and owned
        and backtest.strategy_id is not None
        and backtest.total_return is not None
    ):
        await strategies.record_performance(session, backtest.strategy_id, backtest.total_return)
    return True


async def store_part(
    session: AsyncSession, backtest_id: int, part: int, bars: int, rows: list[dict[str, Any]]
) -> bool:
    """Store one part of a shared optimization (`runner.optimize(..., part=...)` rows as
    `as_part` dicts). The part that completes the set merges them (`runner.merge_ranked`) into
    the result the whole grid gives, and the optimization succeeds. False when it is gone,
    deleted or already finished (a part failed)."""
    backtest = await session.scalar(
        select(Backtest).where(Backtest.id == backtest_id).with_for_update()
    )
    if backtest is None or backtest.deleted_at is not None or backtest.status in FINISHED:
        return False
    request = backtest.request
    # A new dict, so the JSON column is seen as changed; a retried part replaces its own.
    stored = dict((backtest.result or {}).get("parts", {}))
    stored[str(part)] = rows
    if len(stored) < int(request["parts"]):
        backtest.result = {"parts": stored}
        await session.flush()
        return True
    top = runner.merge_ranked(stored.values(), request["objective"], int(request["top"]))
    return await store_result(session, backtest_id, {"bars": bars, "top": top})


async def store_failure(session: AsyncSession, backtest_id: int, error: str) -> bool:
    backtest = await session.scalar(
        select(Backtest).where(Backtest.id == backtest_id).with_for_update()
    )
    if backtest is None or backtest.deleted_at is not None or backtest.status in FINISHED:
        return False
    backtest.status = BacktestStatus.FAILED.value
    backtest.error = error[:2000]
    backtest.finished_at = utcnow()
    await session.flush()
    return True


# -- reading ---------------------------------------------------------------------------------

BACKTEST_SORT = Sorting(
    {"created": Backtest.created_at, "total_return": Backtest.total_return},
    default="-created",
    tie_breaker=Backtest.id,
)


def backtests_query(
    user_id: int,
    order: Ordering,
    *,
    strategy_id: int | None = None,
    status: BacktestStatus | None = None,
    kind: BacktestKind | None = None,
) -> Select[Any]:
    conditions: list[ColumnElement[bool]] = [
        Backtest.owner_id == user_id,
        Backtest.deleted_at.is_(None),
    ]
    if strategy_id is not None:
        conditions.append(Backtest.strategy_id == strategy_id)
    if status is not None:
        conditions.append(Backtest.status == status.value)
    if kind is not None:
        conditions.append(Backtest.kind == kind.value)
    query = select(Backtest).where(*conditions)
    if order.field == "total_return":  # the unfinished last, either way
        query = query.order_by(Backtest.total_return.is_(None))
    return query.order_by(*order.clauses)


async def get_own(session: AsyncSession, user_id: int, backtest_id: int) -> Backtest:
    backtest = await session.scalar(
        select(Backtest).where(
            Backtest.id == backtest_id,
            Backtest.owner_id == user_id,
            Backtest.deleted_at.is_(None),
        )
    )
    if backtest is None:
        raise NotFound(NOT_FOUND)
    return backtest


async def job_runs(session: AsyncSession, backtests: Sequence[Backtest]) -> dict[int, JobRun]:
    """The job runs of the backtests not finished yet, by id (for their progress)."""
    ids = [b.job_id for b in backtests if b.job_id is not None and b.status not in FINISHED]
    if not ids:
        return {}
    rows = await session.scalars(select(JobRun).where(JobRun.id.in_(ids)))
    return {run.id: run for run in rows}


def as_out(backtest: Backtest, run: JobRun | None) -> BacktestOut:
    status = BacktestStatus(backtest.status)
    error = backtest.error
    progress, message = 0, None
    if status is BacktestStatus.SUCCEEDED:
        progress = 100
    elif status not in FINISHED and int(backtest.request.get("parts", 1)) > 1:
        # Shared by several jobs: the parts stored so far say how far it is.
        parts = int(backtest.request["parts"])
        done = len((backtest.result or {}).get("parts", {}))
        progress, message = 100 * done // parts, f"{done} of {parts} parts done"
        if done or (run is not None and run.status == RunStatus.RUNNING):
            status = BacktestStatus.RUNNING
        if run is not None and run.status == RunStatus.FAILED:
            status = BacktestStatus.FAILED
            error = (run.error or "the job failed").strip().splitlines()[-1][:500]
    elif status not in FINISHED and run is not None:
        progress, message = run.progress, run.progress_message
        if run.status == RunStatus.FAILED:
            # The job gave up (a crash, a timeout) before it could say so here.
            status = BacktestStatus.FAILED
            error = (run.error or "the job failed").strip().splitlines()[-1][:500]
        elif run.status == RunStatus.RUNNING:
            status = BacktestStatus.RUNNING
    return BacktestOut(
        id=backtest.id,
        kind=BacktestKind(backtest.kind),
        status=status,
        progress=progress,
        progress_message=message,
        error=error,
        job_id=backtest.job_id,
        strategy_id=backtest.strategy_id,
        request={k: v for k, v in backtest.request.items() if k != "strategy_owned"},
        total_return=backtest.total_return,
        created_at=backtest.created_at,
        started_at=backtest.started_at,
        finished_at=backtest.finished_at,
    )


def as_detail(backtest: Backtest, run: JobRun | None) -> BacktestDetailOut:
    out = BacktestDetailOut(**as_out(backtest, run).model_dump())
    result = backtest.result
    if result is None or out.status is not BacktestStatus.SUCCEEDED:
        return out
    out.bars = result["bars"]
    if backtest.kind == BacktestKind.OPTIMIZE:
        out.top = [OptimizationRowOut(**row) for row in result["top"]]
        return out
    trades = result["trades"]
    curve = result["curve"]
    out.params = result["params"]
    out.final_equity = result["final_equity"]
    out.metrics = result["metrics"]
    out.trade_count = len(trades)
    out.trades_truncated = len(trades) > MAX_TRADES_SHOWN
    out.trades = [TradeOut.model_validate(trade) for trade in trades[:MAX_TRADES_SHOWN]]
    out.equity_curve = [
        EquityPoint(time=datetime.fromtimestamp(t, tz=UTC), equity=e, drawdown=d)
        for t, e, d in zip(curve["time"], curve["equity"], curve["drawdown"], strict=True)
    ]
    return out


async def delete_backtest(session: AsyncSession, backtest: Backtest) -> None:
    """Gone for its owner; a queued or running one is canceled, so its job stores nothing.
    The row stays, without its result, for the daily quota's count."""
    if backtest.status not in FINISHED:
        backtest.status = BacktestStatus.CANCELED.value
        backtest.finished_at = utcnow()
    backtest.deleted_at = utcnow()
    backtest.result = None
    await session.flush()


# -- reports ---------------------------------------------------------------------------------


def _nan(value: float | int | None) -> float | int:
    return math.nan if value is None else value


def stored_run(backtest: Backtest) -> runner.BacktestRun:
    """The stored result as a `BacktestRun` the report functions draw: the stored equity
    curve (its extremes kept), every trade and the metrics. Nothing is simulated again."""
    result = backtest.result
    assert result is not None
    request = backtest.request
    symbols = tuple(request["symbols"])
    curve = result["curve"]
    trades = np.zeros(len(result["trades"]), dtype=TRADE_DTYPE)
    for row, trade in zip(trades, result["trades"], strict=True):
        row["instrument"] = symbols.index(trade["symbol"])
        row["side"] = 1 if trade["side"] == "long" else -1
        row["entry_time"] = int(datetime.fromisoformat(trade["entry_time"]).timestamp())
        row["exit_time"] = int(datetime.fromisoformat(trade["exit_time"]).timestamp())
        for name in ("entry_price", "exit_price", "quantity", "fees", "pnl", "return"):
            row[name] = _nan(trade[name])
        row["exit_reason"] = EXIT_REASONS.index(trade["exit_reason"])
    config = config_of(request)
    engine_result = BacktestResult(
        open_time=np.asarray(curve["time"], dtype=np.int64),
        equity=np.asarray([_nan(v) for v in curve["equity"]], dtype=np.float64),
        held=np.zeros(len(curve["time"]), dtype=np.bool_),
        trades=trades,
        metrics=Metrics(**{name: _nan(value) for name, value in result["metrics"].items()}),  # type: ignore[arg-type]
        initial_cash=config.initial_cash,
    )
    return runner.BacktestRun(
        symbols=symbols,
        params=dict(result["params"]),
        config=config,
        result=engine_result,
        formula=request["formula"],
    )


def reportable(backtest: Backtest) -> None:
    """409 unless the backtest succeeded (and is a backtest, not an optimization)."""
    if backtest.kind != BacktestKind.BACKTEST:
        raise Conflict("An optimization has no report: GET it for its best parameter sets.")
    if backtest.status != BacktestStatus.SUCCEEDED or backtest.result is None:
        raise Conflict(
            f"The backtest is {backtest.status}: its report exists once it has succeeded."
        )


def report_title(backtest: Backtest) -> str:
    request = backtest.request
    return f"Backtest {backtest.id} · {', '.join(request['symbols'])} {request['timeframe']}"
