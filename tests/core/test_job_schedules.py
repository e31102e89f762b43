"""Periodic jobs' schedules from settings (JOB_SCHEDULES): read as operators write them, refused
when they name no periodic job, used by the scheduler (an override fires on its own period, an
`off` job never fires) and shown in the admin queue overview."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from typer.testing import CliRunner

from tests.core import sample_jobs
from tests.core.test_jobs import close_queue, make_queue
from tests.factories import bearer, make_user, sign_in
from tradeos.accounts.models import Role
from tradeos.app import create_app
from tradeos.cli import app as cli_app
from tradeos.config import Settings, get_settings
from tradeos.core.db import Database
from tradeos.core.jobs import Cron, Every, JobRun, Scheduler
from tradeos.core.jobs.definitions import parse_schedule
from tradeos.core.jobs.scheduler import check_job_schedules, effective_schedules, scheduled_jobs
from tradeos.core.logging import configure_logging

API = "/api/v1"
MOMENT = datetime(2026, 11, 21, 10, 7, 30, tzinfo=UTC)


# -- the settings' language -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "schedule"),
    [
        ("every 10m", Every(minutes=10)),
        ("every 30s", Every(seconds=30)),
        ("every 2h", Every(hours=2)),
        ("every 1d", Every(days=1)),
        ("  Every 15 M ", Every(minutes=15)),
        ("0 4 * * *", Cron("0 4 * * *")),
        ("30  3 * * MON", Cron("30 3 * * MON")),
        ("off", None),
        ("OFF", None),
    ],
)
def test_a_schedule_is_read_as_operators_write_it(text: str, schedule: Any) -> None:
    assert parse_schedule(text) == schedule


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("every 10x", "every <n><s|m|h|d>"),
        ("every ten minutes", "every <n><s|m|h|d>"),
        ("hourly", "five-field cron expression"),
        ("@daily", "five-field cron expression"),
        ("0 0 4 * * *", "five-field cron expression"),  # six fields: seconds are not offered
        ("", "or off"),
        ("every 0m", "at least 1m"),
        ("every 400d", "use a cron expression"),
        ("61 * * * *", "not a valid cron expression"),
        ("0 0 31 2 *", "never fire"),
    ],
)
def test_a_bad_schedule_says_what_is_wrong_and_what_is_accepted(text: str, fragment: str) -> None:
    with pytest.raises(ValueError, match=r"is not|never|longer") as caught:
        parse_schedule(text)
    message = str(caught.value)
    assert repr(text) in message
    assert fragment in message
    assert "\n" not in message


def test_an_override_changes_the_fire_times() -> None:
    every_ten = parse_schedule("every 10m")
    assert every_ten is not None
    # 10:07:30 -> 10:10 -> 10:20, where the declared five minutes would fire at 10:15.
    first = every_ten.next_after(MOMENT)
    assert first == datetime(2026, 11, 21, 10, 10, tzinfo=UTC)
    assert every_ten.next_after(first) == datetime(2026, 11, 21, 10, 20, tzinfo=UTC)
    daily = parse_schedule("0 4 * * *")
    assert daily is not None
    assert daily.next_after(MOMENT) == datetime(2026, 11, 22, 4, 0, tzinfo=UTC)


# -- names: only periodic jobs ----------------------------------------------------------------


def test_a_name_that_is_no_job_is_refused_with_the_periodic_jobs_listed() -> None:
    with pytest.raises(ValueError, match=r"market\.sync_top_listingz") as caught:
        check_job_schedules({"market.sync_top_listingz": "every 10m"})
    message = str(caught.value)
    assert "not a declared job" in message
    for definition in scheduled_jobs():
        assert definition.name in message
    assert "jobs.prune_runs" in message and "market.sync_top_listings" in message


def test_a_job_declared_without_a_schedule_cannot_be_given_one() -> None:
    with pytest.raises(ValueError, match=r"sample\.record, which is declared without a schedule"):
        check_job_schedules({"sample.record": "every 1m"})


def test_every_declared_periodic_job_may_be_overridden() -> None:
    overrides = {d.name: "off" for d in scheduled_jobs()}
    check_job_schedules(overrides)
    assert all(e.schedule is None and e.overridden for e in effective_schedules(overrides))


async def test_the_scheduler_refuses_an_unknown_name_when_built(
    settings_factory: Callable[..., Settings], database: Database
) -> None:
    settings = settings_factory(
        jobs_broker="memory", redis_url=None, job_schedules={"market.nope": "every 1m"}
    )
    queue = make_queue(settings, database)
    try:
        with pytest.raises(
            ValueError, match=r"market\.nope.*periodic jobs are: .*jobs\.prune_runs"
        ):
            Scheduler(queue)
    finally:
        await close_queue(queue)


async def test_the_scheduler_runs_each_job_on_its_effective_schedule(
    settings_factory: Callable[..., Settings], database: Database
) -> None:
    settings = settings_factory(
        jobs_broker="memory",
        redis_url=None,
        job_schedules={"jobs.prune_runs": "0 4 * * *", "market.sync_all_listings": "off"},
    )
    queue = make_queue(settings, database)
    try:
        scheduler = Scheduler(queue)
    finally:
        await close_queue(queue)
    runs_on = {d.name: d.schedule for d in scheduler.definitions}
    assert runs_on["jobs.prune_runs"] == Cron("0 4 * * *")
    assert "market.sync_all_listings" not in runs_on
    assert scheduler.switched_off == ["market.sync_all_listings"]
    assert scheduler.overridden == ["jobs.prune_runs"]
    # Jobs the setting does not name keep their declared schedule.
    declared = {d.name: d.schedule for d in scheduled_jobs()}
    untouched = set(declared) - {"jobs.prune_runs", "market.sync_all_listings"}
    assert untouched and all(runs_on[name] == declared[name] for name in untouched)


async def _scheduled_runs(database: Database, name: str) -> list[str]:
    async with database.session(write=False) as session:
        keys = await session.scalars(
            select(JobRun.schedule_key).where(JobRun.name == name).order_by(JobRun.schedule_key)
        )
        return [key for key in keys if key is not None]


async def _wait_for_fires(database: Database, name: str, count: int) -> None:
    async with asyncio.timeout(20):
        while True:
            if len(await _scheduled_runs(database, name)) >= count:
                return
            await asyncio.sleep(0.05)


async def test_an_override_fires_on_its_period_and_an_off_job_never_fires(
    settings_factory: Callable[..., Settings], database: Database, captured_logs: Any
) -> None:
    # Declared hourly, overridden to every second; declared every second, switched off. Two
    # schedulers share the settings, as a fail-over pair does.
    hourly = replace(sample_jobs.tick, schedule=Every(hours=1))
    every_second = replace(sample_jobs.record, schedule=Every(seconds=1))
    settings = settings_factory(
        jobs_broker="memory",
        redis_url=None,
        job_schedules={"sample.tick": "every 1s", "sample.record": "off"},
    )
    queues = [make_queue(settings, database) for _ in range(2)]
    for queue in queues:
        await queue.start_consuming()
    schedulers = [
        asyncio.create_task(Scheduler(queue, [hourly, every_second]).run()) for queue in queues
    ]
    try:
        await _wait_for_fires(database, "sample.tick", 3)
    finally:
        for task in schedulers:
            task.cancel()
        await asyncio.gather(*schedulers, return_exceptions=True)
        for queue in queues:
            await close_queue(queue)

    keys = await _scheduled_runs(database, "sample.tick")
    fire_times = [datetime.strptime(key, "sample.tick@%Y-%m-%dT%H:%M:%SZ") for key in keys]
    # Whole seconds apart (the override's period; declared hourly, it would have fired at most
    # once), each period fired once although both schedulers tried it.
    gaps = [(later - earlier).total_seconds() for earlier, later in itertools.pairwise(fire_times)]
    assert len(keys) >= 3 and all(gap >= 1 and gap.is_integer() for gap in gaps)
    assert len(captured_logs.events("schedule_fired")) == len(keys)
    assert len(captured_logs.events("schedule_already_fired")) >= 1
    # The job switched off would have fired at each of those seconds; it never did.
    assert await _scheduled_runs(database, "sample.record") == []
    [started] = captured_logs.events("schedules_from_settings")[:1]
    assert (started["overridden"], started["off"]) == (["sample.tick"], ["sample.record"])


# -- start-up ---------------------------------------------------------------------------------


async def test_the_app_refuses_to_start_with_an_unknown_name(
    settings_factory: Callable[..., Settings], database: Database
) -> None:
    app = create_app(
        settings_factory(job_schedules={"market.sync_top_listingz": "every 10m"}),
        configure_logs=False,
    )
    with pytest.raises(ValueError, match=r"market\.sync_top_listingz.*market\.sync_top_listings"):
        async with app.router.lifespan_context(app):
            pass  # pragma: no cover - start-up fails


@pytest.mark.parametrize("command", ["serve", "scheduler"])
def test_the_commands_refuse_an_unknown_name_in_one_line(
    command: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("LOG_LEVEL", "WARNING")
    # The scheduler needs a shared broker; nothing connects to it before the check.
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:1/0")
    monkeypatch.setenv("JOB_SCHEDULES", '{"market.nope": "off"}')
    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(cli_app, [command])
    finally:
        configure_logging("WARNING")
    assert result.exit_code == 2
    [line] = result.output.strip().splitlines()
    assert line.startswith("TradeOS cannot start: JOB_SCHEDULES names market.nope")
    assert "jobs.prune_runs" in line
    assert not (tmp_path / "data" / "tradeos.db").exists()  # refused before the database


# -- the admin overview -----------------------------------------------------------------------


@pytest.fixture
def settings(settings_factory: Callable[..., Settings]) -> Settings:
    return settings_factory(
        job_schedules={"jobs.prune_runs": "0 4 * * *", "market.sync_all_listings": "off"}
    )


async def test_the_admin_overview_shows_overrides_and_switched_off_jobs(
    client: httpx.AsyncClient, session: AsyncSession, settings: Settings, app: FastAPI
) -> None:
    admin = await make_user(session, role=Role.ADMIN.value)
    headers = bearer(await sign_in(session, settings, admin))
    await session.commit()

    response = await client.get(f"{API}/admin/queue/status", headers=headers)
    assert response.status_code == 200, response.text
    scheduled = {job["name"]: job for job in response.json()["scheduled"]}
    prune = scheduled["jobs.prune_runs"]
    assert (prune["schedule"], prune["declared_schedule"], prune["overridden"]) == (
        "cron 0 4 * * *",
        "every 3600 s",
        True,
    )
    assert prune["next_run_at"].endswith(("T04:00:00Z", "T04:00:00+00:00"))
    off = scheduled["market.sync_all_listings"]
    assert (off["schedule"], off["overridden"], off["next_run_at"]) == ("off", True, None)
    untouched = scheduled["market.sync_top_listings"]
    assert untouched["overridden"] is False
    assert untouched["schedule"] == untouched["declared_schedule"]
    assert untouched["next_run_at"] is not None


# -- the market jobs' declared schedules and sizes --------------------------------------------


def test_the_market_jobs_are_declared_periodic_on_their_schedules() -> None:
    declared = {d.name: d.schedule for d in scheduled_jobs()}
    top = declared["market.sync_top_listings"]
    every = declared["market.sync_all_listings"]
    candles = declared["market.sync_candles"]
    prune = declared["market.prune_price_history"]
    assert (top, every, candles) == (Every(minutes=5), Every(hours=1), Every(minutes=1))
    assert (top.period, every.period, candles.period) == (300, 3600, 60)
    assert prune == Cron("30 3 * * *")
    # When they fire, from 10:07:30 UTC.
    assert top.next_after(MOMENT) == datetime(2026, 11, 21, 10, 10, tzinfo=UTC)
    assert every.next_after(MOMENT) == datetime(2026, 11, 21, 11, 0, tzinfo=UTC)
    assert candles.next_after(MOMENT) == datetime(2026, 11, 21, 10, 8, tzinfo=UTC)
    # Daily at 03:30 UTC: tomorrow's, then the day after's.
    first = prune.next_after(MOMENT)
    assert first == datetime(2026, 11, 22, 3, 30, tzinfo=UTC)
    assert prune.next_after(first) == datetime(2026, 11, 23, 3, 30, tzinfo=UTC)
    # The sync an admin starts and the back-fill run on demand only.
    assert "market.sync_listings" not in declared
    assert "market.backfill_candles" not in declared


def test_the_market_data_settings_have_their_documented_defaults(
    settings_factory: Callable[..., Settings],
) -> None:
    settings = settings_factory()
    assert settings.listings_sync_top == 50
    assert settings.listings_sync_all == 200
    assert settings.price_history_keep_days == 365
    assert settings.market_cache_seconds == 300
    # And each may be set.
    tuned = settings_factory(
        listings_sync_top=10,
        listings_sync_all=20,
        price_history_keep_days=30,
        market_cache_seconds=60,
    )
    assert (
        tuned.listings_sync_top,
        tuned.listings_sync_all,
        tuned.price_history_keep_days,
        tuned.market_cache_seconds,
    ) == (10, 20, 30, 60)


def test_the_market_data_settings_are_read_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("LISTINGS_SYNC_TOP", "25")
    monkeypatch.setenv("LISTINGS_SYNC_ALL", "500")
    monkeypatch.setenv("PRICE_HISTORY_KEEP_DAYS", "90")
    monkeypatch.setenv("MARKET_CACHE_SECONDS", "30")
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert (
        settings.listings_sync_top,
        settings.listings_sync_all,
        settings.price_history_keep_days,
        settings.market_cache_seconds,
    ) == (25, 500, 90, 30)
