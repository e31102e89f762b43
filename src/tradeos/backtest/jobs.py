"""The backtest job: load the candles, run the formula (or the optimization grid) in a worker
thread, store the result.

Idempotent: a run finds the backtest gone, deleted (canceled) or already finished and does
nothing; a result is stored only if the backtest is still there and unfinished when it is
written, so a backtest deleted meanwhile keeps nothing. A formula that cannot run on the
candles, or a window without bars, fails the backtest at once (another attempt would fail the
same way); anything else is retried, and the last attempt's failure is written on the backtest.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import anyio

from tradeos.backtest import runner, service
from tradeos.backtest.models import BacktestKind
from tradeos.core.jobs import JobContext, Priority, job, on_worker_start
from tradeos.market.providers.registry import make_market_data
from tradeos.market.timeframes import Timeframe
from tradeos.strategies.formula import EvaluationError, InvalidFormula


@on_worker_start
def warm_up_backtests() -> None:
    """Compile (or load from numba's cache) the backtest engine and the formula indicators as
    a job process starts, so no job or request pays for it."""
    runner.warm_up()


@job("backtest.run", priority=Priority.LOW, timeout=1800, max_attempts=2, backoff=10)
async def run_backtest(
    ctx: JobContext, backtest_id: int, part: int | None = None
) -> dict[str, Any]:
    """Run backtest `backtest_id` (a backtest or an optimization) and store its result; with
    `part`, one part of an optimization's grid shared by several jobs (`service.store_part`:
    the last part to finish stores the merged ranking)."""
    async with ctx.database.session() as session:
        request = await service.start(session, backtest_id)
    if request is None:
        return {"skipped": "deleted or finished"}
    try:
        return await _run(ctx, backtest_id, request, part)
    except (InvalidFormula, EvaluationError, ValueError) as error:
        # The formula, the parameters or the candles: the same on every attempt.
        async with ctx.database.session() as session:
            await service.store_failure(session, backtest_id, str(error))
        return {"failed": str(error)[:300]}
    except Exception as error:
        if ctx.attempt >= ctx.max_attempts:
            async with ctx.database.session() as session:
                await service.store_failure(
                    session, backtest_id, f"{type(error).__name__}: {error}"
                )
        raise


async def _run(
    ctx: JobContext, backtest_id: int, request: dict[str, Any], part: int | None
) -> dict[str, Any]:
    timeframe = Timeframe(request["timeframe"])
    start = datetime.fromisoformat(request["start"])
    end = datetime.fromisoformat(request["end"])
    await ctx.progress(10, "loading candles")
    market = make_market_data(ctx.settings)
    try:
        async with ctx.database.session(write=False) as session:
            candles = await service.load_candles(
                session, market.provider, request["symbols"], timeframe, start, end
            )
    finally:
        await market.aclose()
    for instrument in candles:
        if len(instrument) == 0:
            raise runner.BacktestInputError(
                f"no closed {timeframe} bars of {instrument.symbol} from {start} to {end}"
            )
    bars = max(len(instrument) for instrument in candles)
    config = service.config_of(request)
    if request["kind"] == BacktestKind.OPTIMIZE and part is not None:
        parts = int(request["parts"])
        await ctx.progress(30, f"optimizing part {part + 1} of {parts} over {bars:,} bars")
        rows = await anyio.to_thread.run_sync(
            lambda: runner.optimize(
                candles[0],
                request["formula"],
                {name: list(values) for name, values in request["grid"].items()},
                objective=request["objective"],
                top=request["top"],
                config=config,
                part=(part, parts),
            )
        )
        await ctx.progress(90, "storing")
        async with ctx.database.session() as session:
            stored = await service.store_part(
                session, backtest_id, part, len(candles[0]), [row.as_part() for row in rows]
            )
        if not stored:
            return {"skipped": "deleted or failed while running"}
        return {"backtest_id": backtest_id, "part": part, "bars": len(candles[0])}
    if request["kind"] == BacktestKind.OPTIMIZE:
        await ctx.progress(30, f"optimizing over {bars:,} bars")
        rows = await anyio.to_thread.run_sync(
            lambda: runner.optimize(
                candles[0],
                request["formula"],
                {name: list(values) for name, values in request["grid"].items()},
                objective=request["objective"],
                top=request["top"],
                config=config,
            )
        )
        result = service.optimization_result(len(candles[0]), rows)
    else:
        await ctx.progress(30, f"running over {bars:,} bars")
        run = await anyio.to_thread.run_sync(
            lambda: runner.run_formula(
                candles, request["formula"], params=request["params"], config=config
            )
        )
        result = service.backtest_result(run)
    await ctx.progress(90, "storing")
    async with ctx.database.session() as session:
        stored = await service.store_result(session, backtest_id, result)
    if not stored:
        return {"skipped": "deleted while running"}
    return {"backtest_id": backtest_id, "bars": result["bars"]}
