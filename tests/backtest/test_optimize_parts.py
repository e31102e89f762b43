"""An optimization grid shared by several jobs (one per part, on whichever worker takes it):
through the API, the parts' rankings merge into what one `runner.optimize` over the whole
grid gives; and the pure merge, unit-tested against the whole grid."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select

from tests.backtest.test_backtests_api import (
    API,
    CONFIG,
    EXAMPLE,
    alice,
    candles_of,
    get,
    optimize_body,
    queue,
    settings,
)
from tests.backtest.test_runner import SMA_CROSS, walk
from tests.market.test_candle_sync import finished
from tradeos.backtest import jobs as backtest_jobs
from tradeos.backtest import runner
from tradeos.backtest import service as backtest_service
from tradeos.backtest.engine import BacktestConfig
from tradeos.core.db import Database
from tradeos.core.jobs import JobQueue, JobRun, RunStatus

__all__ = ["alice", "queue", "settings"]  # fixtures, used by name


async def run_part(queue: JobQueue, backtest_id: int, part: int) -> dict[str, Any]:
    run = await finished(
        queue, backtest_jobs.run_backtest, {"backtest_id": backtest_id, "part": part}
    )
    assert run.status == RunStatus.SUCCEEDED, run.error
    assert run.result_summary is not None
    summary: dict[str, Any] = json.loads(run.result_summary)
    return summary


async def test_a_large_grid_runs_as_parts_and_merges_into_the_whole_ranking(
    client: httpx.AsyncClient,
    app: FastAPI,
    database: Database,
    queue: JobQueue,
    alice: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _, headers = alice
    monkeypatch.setattr(backtest_service, "OPTIMIZE_PART_COMBINATIONS", 4)
    response = await client.post(f"{API}/backtests/optimize", headers=headers, json=optimize_body())
    assert response.status_code == 202, response.text
    accepted = response.json()
    backtest_id = accepted["id"]

    # Nine combinations, at most four a job: three jobs queued, one per part.
    async with database.session(write=False) as session:
        runs = list(
            await session.scalars(
                select(JobRun).where(JobRun.name == "backtest.run").order_by(JobRun.id)
            )
        )
    assert [run.arguments for run in runs] == [
        {"backtest_id": backtest_id, "part": part} for part in range(3)
    ]
    assert accepted["job_id"] == runs[0].id

    assert (await run_part(queue, backtest_id, 2))["part"] == 2
    await run_part(queue, backtest_id, 0)
    halfway = await get(client, headers, backtest_id)
    assert halfway["status"] == "running" and halfway["top"] is None
    assert (halfway["progress"], halfway["progress_message"]) == (66, "2 of 3 parts done")

    await run_part(queue, backtest_id, 1)
    done = await get(client, headers, backtest_id)
    assert done["status"] == "succeeded" and done["progress"] == 100
    expected = runner.optimize(
        await candles_of(app, database, "BTC-USD"),
        EXAMPLE,
        {"fast": [5, 10, 15], "slow": [20, 30, 40]},
        objective="sharpe",
        top=4,
        config=CONFIG,
    )
    assert done["top"] == [json.loads(json.dumps(row.as_dict())) for row in expected]
    # A part run again (a retry) finds the optimization finished and changes nothing.
    assert await run_part(queue, backtest_id, 1) == {"skipped": "deleted or finished"}
    assert (await get(client, headers, backtest_id))["top"] == done["top"]


@pytest.mark.parametrize("objective", ["max_drawdown", "sortino", "trades"])
def test_parts_merged_rank_as_the_whole_grid(objective: str) -> None:
    candles = walk(400, 17)
    grid = {"fast": [3, 5, 8, 13], "slow": [20, 30, 40]}
    config = BacktestConfig(commission=0.001, quantity_step=0)
    whole = runner.optimize(candles, SMA_CROSS, grid, objective=objective, top=5, config=config)
    parts = [
        [
            row.as_part()
            for row in runner.optimize(
                candles, SMA_CROSS, grid, objective=objective, top=5, config=config, part=(k, 3)
            )
        ]
        for k in range(3)
    ]
    assert [len(p) for p in parts] == [4, 4, 4]
    assert runner.merge_ranked(parts, objective, 5) == [row.as_dict() for row in whole]
    assert runner.part_bounds(12, 2, 3) == (8, 12)
    with pytest.raises(runner.OptimizationError):
        runner.part_bounds(12, 3, 3)
