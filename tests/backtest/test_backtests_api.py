"""Backtests over HTTP: queued as jobs, run to completion, stored, listed, deleted, reported,
and optimizations; their results equal the runner's on the same candles."""

from __future__ import annotations

import json
import math
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from tests.factories import bearer, make_user, sign_in
from tests.market.test_candle_sync import consuming_queue, finished
from tradeos.accounts.models import User
from tradeos.backtest import jobs as backtest_jobs
from tradeos.backtest import report, runner
from tradeos.backtest import service as backtest_service
from tradeos.backtest.engine import BacktestConfig, FillTiming, Sizing
from tradeos.backtest.models import Backtest
from tradeos.backtest.schemas import Objective
from tradeos.config import Settings
from tradeos.core.db import Database, utcnow
from tradeos.core.jobs import JobQueue, RunStatus
from tradeos.core.transactions import flush_after_commit
from tradeos.market import service as market
from tradeos.market.timeframes import Timeframe
from tradeos.trading.fill_model import IntrabarRule

API = "/api/v1"
# The formula language's own example, as tests/strategies/test_strategies_api.py uses it.
EXAMPLE = """fast = 10
slow = 20
entry_long  = crossover(sma(close, fast), sma(close, slow))
exit_long   = crossunder(sma(close, fast), sma(close, slow))
entry_short = crossunder(sma(close, fast), sma(close, slow))
exit_short  = crossover(sma(close, fast), sma(close, slow))
"""
# Tight levels on hourly bars: some bars reach both the stop and the target.
BRACKETED = EXAMPLE + "stop_loss = 0.004\ntake_profit = 0.004\n"
BROKEN = "fast = 10\nentry_long = crossover(sma(close, fast), smaa(close, 20))\n"
# 2,496 hourly bars: more than the 2,000 points an equity curve keeps.
START, END = datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 4, 15, tzinfo=UTC)
# Enough cash for whole bitcoins.
CASH = "1000000"
COMMISSION = 0.001

Headers = dict[str, str]


@pytest.fixture
def settings(settings_factory: Callable[..., Settings]) -> Settings:
    # The app only queues; the tests run the jobs on a queue of their own.
    return settings_factory(jobs_run_in_serve=False)


@pytest.fixture
async def queue(settings: Settings, database: Database) -> AsyncIterator[JobQueue]:
    # A key prefix of its own: on Redis it runs only the runs a test sends it, never the ones
    # the app queued, so each test says which job runs when.
    own = settings.model_copy(update={"redis_key_prefix": f"{settings.redis_key_prefix}-runner"})
    jobs = await consuming_queue(own, database)
    yield jobs
    await flush_after_commit()
    await jobs.aclose()
    await jobs.events.aclose()
    await jobs.cache.aclose()


async def signed_in(session: AsyncSession, settings: Settings, tier: str) -> tuple[User, Headers]:
    user = await make_user(session, tier=tier)
    headers = bearer(await sign_in(session, settings, user))
    await session.commit()
    return user, headers


@pytest.fixture
async def alice(session: AsyncSession, settings: Settings) -> tuple[User, Headers]:
    return await signed_in(session, settings, "pro")


@pytest.fixture
async def bob(session: AsyncSession, settings: Settings) -> tuple[User, Headers]:
    return await signed_in(session, settings, "pro")


def body(**overrides: Any) -> dict[str, Any]:
    values: dict[str, Any] = {
        "formula": EXAMPLE,
        "symbols": ["BTC-USD"],
        "timeframe": "1h",
        "start": START.isoformat(),
        "end": END.isoformat(),
        "initial_cash": CASH,
        "commission": COMMISSION,
    }
    values.update(overrides)
    return {name: value for name, value in values.items() if value is not None}


async def submit(
    client: httpx.AsyncClient, headers: Headers, path: str = "/backtests", **overrides: Any
) -> dict[str, Any]:
    response = await client.post(f"{API}{path}", headers=headers, json=body(**overrides))
    assert response.status_code == 202, response.text
    accepted: dict[str, Any] = response.json()
    return accepted


async def run_job(queue: JobQueue, backtest_id: int) -> dict[str, Any]:
    """The backtest's job, run to completion (a run of its own: the job is idempotent)."""
    run = await finished(queue, backtest_jobs.run_backtest, {"backtest_id": backtest_id})
    assert run.status == RunStatus.SUCCEEDED, run.error
    assert run.result_summary is not None
    summary: dict[str, Any] = json.loads(run.result_summary)
    return summary


async def get(client: httpx.AsyncClient, headers: Headers, backtest_id: int) -> dict[str, Any]:
    response = await client.get(f"{API}/backtests/{backtest_id}", headers=headers)
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


async def candles_of(app: FastAPI, database: Database, symbol: str) -> runner.CandleArrays:
    """The bars the market service gives for the window (the job reads them the same way)."""
    async with database.session(write=False) as session:
        instrument = await market.get_instrument(session, symbol)
        series = await market.candles(
            session, app.state.market.provider, instrument, Timeframe.H1, START, END, 200_000
        )
    bars = [row.bar for row in series.bars if not row.partial]
    return runner.CandleArrays.from_bars(instrument.symbol, bars)


CONFIG = BacktestConfig(initial_cash=float(CASH), commission=COMMISSION)


# -- a backtest, end to end ------------------------------------------------------------------


async def test_a_backtest_runs_as_a_job_and_equals_run_formula(
    client: httpx.AsyncClient, app: FastAPI, database: Database, queue: JobQueue, alice: Any
) -> None:
    _, headers = alice
    accepted = await submit(client, headers)
    assert accepted["status"] == "queued" and accepted["kind"] == "backtest"
    assert isinstance(accepted["job_id"], int)

    waiting = await get(client, headers, accepted["id"])
    assert (waiting["status"], waiting["progress"], waiting["metrics"]) == ("queued", 0, None)
    assert waiting["job_id"] == accepted["job_id"]
    assert waiting["request"]["symbols"] == ["BTC-USD"]
    assert waiting["request"]["initial_cash"] == CASH
    unfinished = await client.get(f"{API}/backtests/{accepted['id']}/report", headers=headers)
    assert unfinished.status_code == 409
    assert unfinished.headers["content-type"] == "application/problem+json"

    summary = await run_job(queue, accepted["id"])
    candles = await candles_of(app, database, "BTC-USD")
    assert summary["bars"] == len(candles) == 2496
    expected = runner.run_formula([candles], EXAMPLE, config=CONFIG)

    done = await get(client, headers, accepted["id"])
    assert (done["status"], done["progress"], done["error"]) == ("succeeded", 100, None)
    assert done["metrics"] == runner.metrics_dict(expected.metrics)
    assert done["metrics"]["trades"] > 0
    assert done["params"] == {"fast": 10, "slow": 20}
    assert done["final_equity"] == expected.final_equity
    assert Decimal(done["total_return"]) == Decimal(repr(expected.metrics.total_return))
    trades = expected.trades()
    assert done["trade_count"] == len(trades) == len(done["trades"])
    assert done["trades_truncated"] is False
    first = done["trades"][0]
    assert first["symbol"] == "BTC-USD" and first["side"] == trades[0].side
    assert first["entry_price"] == trades[0].entry_price
    assert first["pnl"] == trades[0].pnl and first["return"] == trades[0].return_
    assert first["exit_reason"] == trades[0].exit_reason
    assert datetime.fromisoformat(first["entry_time"]) == trades[0].entry_time
    curve = done["equity_curve"]
    assert 2 <= len(curve) <= 2000
    assert curve[0]["equity"] == float(expected.equity[0])
    assert curve[-1]["equity"] == expected.final_equity
    assert min(p["drawdown"] for p in curve) == pytest.approx(-expected.metrics.max_drawdown)
    times = [datetime.fromisoformat(p["time"]) for p in curve]
    assert times == sorted(times)


# Each request option, and the engine setting it must reach (the instrument's quantity step,
# read from the database, replaces None).
OPTIONS = [
    (
        {"fill": "close", "slippage_bps": 5, "allow_short": False, "params": {"fast": 5}},
        {"fill_at": FillTiming.CLOSE, "slippage_bps": 5.0, "allow_short": False},
        {"fast": 5},
    ),
    (
        {"sizing": {"mode": "percent_cash", "value": 40}, "whole_units": False},
        {"sizing": Sizing.PERCENT_CASH, "size": 0.4, "quantity_step": None},
        {},
    ),
    (
        {"sizing": {"mode": "fixed", "value": 3}, "params": {"slow": 30}},
        {"sizing": Sizing.FIXED, "size": 3.0},
        {"slow": 30},
    ),
    (
        {"formula": BRACKETED, "intrabar_rule": "best"},
        {"intrabar_rule": IntrabarRule.BEST},
        {},
    ),
    (
        {"fixed_fee": 25, "min_fee": 40},
        {"fixed_fee": 25.0, "min_fee": 40.0},
        {},
    ),
]


@pytest.mark.parametrize(("options", "engine_settings", "params"), OPTIONS)
async def test_each_option_of_a_request_reaches_the_engine(
    client: httpx.AsyncClient,
    app: FastAPI,
    database: Database,
    queue: JobQueue,
    alice: Any,
    options: dict[str, Any],
    engine_settings: dict[str, Any],
    params: dict[str, float],
) -> None:
    _, headers = alice
    accepted = await submit(client, headers, **options)
    await run_job(queue, accepted["id"])
    done = await get(client, headers, accepted["id"])
    assert done["status"] == "succeeded", done["error"]

    candles = await candles_of(app, database, "BTC-USD")
    if engine_settings.get("quantity_step", 1) is None:
        async with database.session(write=False) as session:
            instrument = await market.get_instrument(session, "BTC-USD")
        engine_settings = {**engine_settings, "quantity_step": float(instrument.quantity_step)}
    # Whole units unless the option says otherwise.
    wanted = {"quantity_step": 1.0, **engine_settings}
    config = BacktestConfig(initial_cash=float(CASH), commission=COMMISSION, **wanted)
    formula = options.get("formula", EXAMPLE)
    expected = runner.run_formula([candles], formula, params=params, config=config)
    assert done["final_equity"] == expected.final_equity
    assert done["metrics"] == runner.metrics_dict(expected.metrics)
    assert done["trade_count"] == len(expected.trades()) > 0
    # The option changed the run: with the defaults it comes out otherwise.
    default = runner.run_formula([candles], formula, config=CONFIG)
    assert expected.final_equity != default.final_equity


async def test_several_instruments_run_on_one_cash_balance_as_the_runner_does(
    client: httpx.AsyncClient, app: FastAPI, database: Database, queue: JobQueue, alice: Any
) -> None:
    _, headers = alice
    accepted = await submit(client, headers, symbols=["BTC-USD", "ETH-USD"])
    await run_job(queue, accepted["id"])
    done = await get(client, headers, accepted["id"])
    assert done["status"] == "succeeded", done["error"]

    both = [await candles_of(app, database, symbol) for symbol in ("BTC-USD", "ETH-USD")]
    expected = runner.run_formula(both, EXAMPLE, config=CONFIG)
    assert done["final_equity"] == expected.final_equity
    assert done["metrics"] == runner.metrics_dict(expected.metrics)
    trades = expected.trades()
    assert {trade["symbol"] for trade in done["trades"]} == {"BTC-USD", "ETH-USD"}
    assert done["trade_count"] == len(trades)


async def test_a_window_without_bars_fails_the_backtest_with_the_reason(
    client: httpx.AsyncClient, queue: JobQueue, alice: Any
) -> None:
    _, headers = alice
    later = utcnow() + timedelta(days=400)
    accepted = await submit(
        client, headers, start=later.isoformat(), end=(later + timedelta(days=1)).isoformat()
    )
    await run_job(queue, accepted["id"])
    failed = await get(client, headers, accepted["id"])
    assert failed["status"] == "failed"
    assert "no closed 1h bars of BTC-USD" in failed["error"]
    assert failed["metrics"] is None


# -- strategies ------------------------------------------------------------------------------


async def make_strategy(client: httpx.AsyncClient, headers: Headers, **values: Any) -> int:
    sent = {"name": "SMA cross", "formula": EXAMPLE, **values}
    response = await client.post(f"{API}/strategies", headers=headers, json=sent)
    assert response.status_code == 201, response.text
    return int(response.json()["id"])


async def test_a_backtest_of_a_strategy_records_its_owners_performance_only(
    client: httpx.AsyncClient, queue: JobQueue, alice: Any, bob: Any
) -> None:
    _, alice_headers = alice
    _, bob_headers = bob
    own = await make_strategy(client, alice_headers, default_params={"fast": 5})
    public = await make_strategy(client, bob_headers, is_public=True)
    private = await make_strategy(client, bob_headers)

    mine = await submit(client, alice_headers, formula=None, strategy_id=own)
    theirs = await submit(client, alice_headers, formula=None, strategy_id=public)
    hidden = await client.post(
        f"{API}/backtests", headers=alice_headers, json=body(formula=None, strategy_id=private)
    )
    assert hidden.status_code == 404
    absent = await client.post(
        f"{API}/backtests", headers=alice_headers, json=body(formula=None, strategy_id=private + 99)
    )
    assert absent.status_code == 404 and absent.json()["detail"] == hidden.json()["detail"]

    await run_job(queue, mine["id"])
    await run_job(queue, theirs["id"])
    mine_done = await get(client, alice_headers, mine["id"])
    assert mine_done["status"] == "succeeded"
    assert mine_done["strategy_id"] == own
    assert mine_done["params"] == {"fast": 5, "slow": 20}  # the strategy's saved override
    strategy = (await client.get(f"{API}/strategies/{own}", headers=alice_headers)).json()
    assert Decimal(strategy["performance"]) == Decimal(mine_done["total_return"])

    assert (await get(client, alice_headers, theirs["id"]))["status"] == "succeeded"
    untouched = (await client.get(f"{API}/strategies/{public}", headers=bob_headers)).json()
    assert untouched["performance"] is None  # someone else's run does not rate bob's strategy


# -- validation ------------------------------------------------------------------------------


async def refused(client: httpx.AsyncClient, headers: Headers, **overrides: Any) -> dict[str, Any]:
    response = await client.post(f"{API}/backtests", headers=headers, json=body(**overrides))
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    problem: dict[str, Any] = response.json()
    return problem


async def test_requests_are_checked_before_anything_is_queued(
    client: httpx.AsyncClient, session: AsyncSession, alice: Any
) -> None:
    _, headers = alice
    broken = await refused(client, headers, formula=BROKEN)
    assert [(e["field"], e["line"], e["column"]) for e in broken["errors"]] == [
        ("body.formula", 2, 42)
    ]
    assert "smaa" in broken["errors"][0]["message"]

    strategy = await make_strategy(client, headers)
    both = await refused(client, headers, strategy_id=strategy)
    assert both["errors"][0]["field"] == "body.formula"
    neither = await refused(client, headers, formula=None)
    assert "exactly one" in neither["detail"]

    backwards = await refused(client, headers, start=END.isoformat(), end=START.isoformat())
    assert backwards["errors"][0]["field"] == "body.end"
    year = datetime(2025, 1, 1, tzinfo=UTC)
    too_long = await refused(
        client,
        headers,
        timeframe="1m",
        start=year.isoformat(),
        end=(year + timedelta(days=365)).isoformat(),
    )
    assert "525,600 bars" in too_long["detail"] and "200,000" in too_long["detail"]

    commission = await refused(client, headers, commission=0.5)
    assert commission["errors"][0]["field"] == "body.commission"
    fee = await refused(client, headers, fixed_fee=-1)
    assert fee["errors"][0]["field"] == "body.fixed_fee"
    rule = await refused(client, headers, intrabar_rule="first")
    assert rule["errors"][0]["field"] == "body.intrabar_rule"
    cash = await refused(client, headers, initial_cash="0")
    assert cash["errors"][0]["field"] == "body.initial_cash"
    unknown = await refused(client, headers, params={"nope": 3})
    assert unknown["errors"][0]["field"] == "body.params.nope"
    short = await refused(client, headers, params={"fast": 1})
    assert {e["field"] for e in short["errors"]} == {"body.params"}
    assert all("line" in e for e in short["errors"])
    symbol = await refused(client, headers, symbols=["BTC-USD", "NOPE-USD"])
    assert symbol["errors"][0]["field"] == "body.symbols.1"
    sizing = await refused(client, headers, sizing={"mode": "percent_cash", "value": 150})
    assert sizing["errors"][0]["field"] == "body.sizing.value"

    assert await session.scalar(select(Backtest.id).limit(1)) is None


async def test_a_free_plan_backtests_one_symbol_at_a_time(
    client: httpx.AsyncClient, session: AsyncSession, settings: Settings, alice: Any
) -> None:
    _, free = await signed_in(session, settings, "free")
    response = await client.post(
        f"{API}/backtests", headers=free, json=body(symbols=["BTC-USD", "ETH-USD"])
    )
    assert response.status_code == 403
    assert response.json()["required_feature"] == "multi_asset_backtests"
    _, pro = alice
    await submit(client, pro, symbols=["BTC-USD", "ETH-USD"])


async def test_the_daily_quota_counts_todays_backtests_deleted_ones_too(
    client: httpx.AsyncClient, session: AsyncSession, settings: Settings
) -> None:
    user, headers = await signed_in(session, settings, "free")
    ids = [(await submit(client, headers))["id"] for _ in range(10)]
    over = await client.post(f"{API}/backtests", headers=headers, json=body())
    assert over.status_code == 429
    assert over.headers["content-type"] == "application/problem+json"
    problem = over.json()
    assert (problem["quota"], problem["limit"]) == ("backtests_per_day", 10)
    tomorrow = utcnow().replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(days=1)
    assert 0 < int(over.headers["Retry-After"]) <= (tomorrow - utcnow()).total_seconds() + 1

    assert (await client.delete(f"{API}/backtests/{ids[0]}", headers=headers)).status_code == 204
    again = await client.post(f"{API}/backtests/optimize", headers=headers, json=optimize_body())
    assert again.status_code == 429  # deleting does not give one back; optimizations count

    # Yesterday's do not count.
    await session.execute(
        update(Backtest)
        .where(Backtest.owner_id == user.id)
        .values(created_at=utcnow() - timedelta(days=1))
    )
    await session.commit()
    await submit(client, headers)


# -- lists, deletes ---------------------------------------------------------------------------


async def test_lists_show_only_your_own_filtered_and_newest_first(
    client: httpx.AsyncClient, queue: JobQueue, alice: Any, bob: Any
) -> None:
    _, alice_headers = alice
    _, bob_headers = bob
    strategy = await make_strategy(client, alice_headers)
    first = await submit(client, alice_headers)
    second = await submit(client, alice_headers, formula=None, strategy_id=strategy)
    theirs = await submit(client, bob_headers)
    await run_job(queue, first["id"])

    async def listed(headers: Headers, query: str = "") -> list[int]:
        response = await client.get(f"{API}/backtests{query}", headers=headers)
        assert response.status_code == 200, response.text
        return [item["id"] for item in response.json()["items"]]

    assert await listed(alice_headers) == [second["id"], first["id"]]
    assert await listed(bob_headers) == [theirs["id"]]
    assert await listed(alice_headers, f"?strategy_id={strategy}") == [second["id"]]
    assert await listed(alice_headers, "?status=succeeded") == [first["id"]]
    assert await listed(alice_headers, "?status=queued") == [second["id"]]
    assert await listed(alice_headers, "?sort=total_return") == [first["id"], second["id"]]
    assert await listed(alice_headers, "?kind=optimize") == []
    page = (await client.get(f"{API}/backtests?size=1", headers=alice_headers)).json()
    assert (page["total"], page["pages"], len(page["items"])) == (2, 2, 1)
    item = page["items"][0]
    assert item["status"] == "queued" and "metrics" not in item

    for path in ("", "/report"):
        foreign = await client.get(f"{API}/backtests/{theirs['id']}{path}", headers=alice_headers)
        assert foreign.status_code == 404
    assert (
        await client.delete(f"{API}/backtests/{theirs['id']}", headers=alice_headers)
    ).status_code == 404


async def test_deleting_a_backtest(
    client: httpx.AsyncClient, database: Database, queue: JobQueue, alice: Any
) -> None:
    _, headers = alice
    done = await submit(client, headers)
    await run_job(queue, done["id"])
    assert (
        await client.delete(f"{API}/backtests/{done['id']}", headers=headers)
    ).status_code == 204
    assert (await client.get(f"{API}/backtests/{done['id']}", headers=headers)).status_code == 404
    assert (
        await client.delete(f"{API}/backtests/{done['id']}", headers=headers)
    ).status_code == 404
    listed = (await client.get(f"{API}/backtests", headers=headers)).json()
    assert listed["total"] == 0

    # Queued, then deleted: its job, when it comes, stores nothing.
    queued = await submit(client, headers)
    assert (
        await client.delete(f"{API}/backtests/{queued['id']}", headers=headers)
    ).status_code == 204
    assert await run_job(queue, queued["id"]) == {"skipped": "deleted or finished"}

    # Running, then deleted: its result is not stored either.
    running = await submit(client, headers)
    async with database.session() as session:
        assert await backtest_service.start(session, running["id"]) is not None
    assert (
        await client.delete(f"{API}/backtests/{running['id']}", headers=headers)
    ).status_code == 204
    async with database.session() as session:
        result = {"metrics": {"total_return": 0.1}, "bars": 1}
        assert await backtest_service.store_result(session, running["id"], result) is False

    async with database.session(write=False) as session:
        rows = (await session.scalars(select(Backtest).order_by(Backtest.id))).all()
        assert [(row.status, row.result) for row in rows] == [
            ("succeeded", None),
            ("canceled", None),
            ("canceled", None),
        ]
        assert all(row.deleted_at is not None for row in rows)


# -- reports ---------------------------------------------------------------------------------


async def test_the_report_as_html_and_png(
    client: httpx.AsyncClient, queue: JobQueue, alice: Any
) -> None:
    _, headers = alice
    accepted = await submit(client, headers)
    await run_job(queue, accepted["id"])
    done = await get(client, headers, accepted["id"])

    page = await client.get(f"{API}/backtests/{accepted['id']}/report", headers=headers)
    assert page.status_code == 200, page.text
    assert page.headers["content-type"].startswith("text/html")
    text = page.text
    assert text.startswith("<!DOCTYPE html>")
    for external in ("http://", "https://", "<script", "<link", "src=", "url("):
        assert external not in text.lower()
    assert "BTC-USD" in text and "<svg" in text
    for name in ("total_return", "sharpe", "max_drawdown", "win_rate"):
        assert report.format_metric(name, _number(done["metrics"][name])) in text

    image = await client.get(f"{API}/backtests/{accepted['id']}/report?format=png", headers=headers)
    assert image.status_code == 200
    assert image.headers["content-type"] == "image/png"
    assert image.content.startswith(b"\x89PNG\r\n\x1a\n")


def _number(value: float | int | None) -> float | int:
    return math.nan if value is None else value


# -- optimization ----------------------------------------------------------------------------


def optimize_body(**overrides: Any) -> dict[str, Any]:
    values: dict[str, Any] = {
        **body(symbols=None),
        "symbol": "BTC-USD",
        "grid": {"fast": [5, 10, 15], "slow": {"start": 20, "stop": 40, "step": 10}},
        "objective": "sharpe",
        "top": 4,
    }
    values.update(overrides)
    return values


async def test_an_optimization_returns_the_top_parameter_sets_of_the_runner(
    client: httpx.AsyncClient, app: FastAPI, database: Database, queue: JobQueue, alice: Any
) -> None:
    _, headers = alice
    response = await client.post(f"{API}/backtests/optimize", headers=headers, json=optimize_body())
    assert response.status_code == 202, response.text
    accepted = response.json()
    assert (accepted["kind"], accepted["status"]) == ("optimize", "queued")
    await run_job(queue, accepted["id"])

    done = await get(client, headers, accepted["id"])
    assert done["status"] == "succeeded" and done["kind"] == "optimize"
    candles = await candles_of(app, database, "BTC-USD")
    expected = runner.optimize(
        candles,
        EXAMPLE,
        {"fast": [5, 10, 15], "slow": [20, 30, 40]},
        objective="sharpe",
        top=4,
        config=CONFIG,
    )
    assert done["top"] == [json.loads(json.dumps(row.as_dict())) for row in expected]
    sharpes = [row["metrics"]["sharpe"] for row in done["top"]]
    assert sharpes == sorted(sharpes, reverse=True)
    assert [row["rank"] for row in done["top"]] == [1, 2, 3, 4]
    assert Decimal(done["total_return"]) == Decimal(repr(expected[0].metrics.total_return))
    listed = (await client.get(f"{API}/backtests?kind=optimize", headers=headers)).json()
    assert [item["id"] for item in listed["items"]] == [accepted["id"]]
    report_of = await client.get(f"{API}/backtests/{accepted['id']}/report", headers=headers)
    assert report_of.status_code == 409


async def test_an_optimization_request_is_checked(
    client: httpx.AsyncClient, session: AsyncSession, alice: Any
) -> None:
    _, headers = alice

    async def problem(**overrides: Any) -> dict[str, Any]:
        response = await client.post(
            f"{API}/backtests/optimize", headers=headers, json=optimize_body(**overrides)
        )
        assert response.status_code == 422, response.text
        found: dict[str, Any] = response.json()
        return found

    big = {"fast": {"start": 2, "stop": 200, "step": 1}, "slow": list(range(21, 81))}
    too_many = await problem(grid=big)
    assert "11,940 parameter combinations" in too_many["detail"]
    assert too_many["errors"][0]["field"] == "body.grid"
    assert (await problem(grid={"fast": {"start": 2, "stop": 1e6, "step": 1}}))["errors"][0][
        "field"
    ] == "body.grid"
    objective = await problem(objective="happiness")
    assert objective["errors"][0]["field"] == "body.objective"
    unknown = await problem(grid={"nope": [1, 2]})
    assert unknown["errors"][0]["field"] == "body.grid.nope"
    invalid = await problem(grid={"fast": [1, 5]})
    assert invalid["errors"][0]["field"] == "body.grid.fast"
    top = await problem(top=51)
    assert top["errors"][0]["field"] == "body.top"
    assert await session.scalar(select(Backtest.id).limit(1)) is None


def test_the_objectives_are_the_runners_metrics() -> None:
    assert tuple(objective.value for objective in Objective) == runner.METRIC_NAMES
