"""The candle sync of tracked instruments: a first run back-fills the history, a second changes
nothing, a deleted stretch is found and filled again, a corrected bar is updated, one failing
instrument does not stop the others, stretches a provider has no bars for are not asked for on
every run, and cached reads see what a sync wrote. Also the listing syncs' configured sizes, and
price history retention."""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from prometheus_client import CollectorRegistry, Counter
from sqlalchemy import delete, func, select

from tests.conftest import CapturedLogs
from tests.factories import bearer, make_user, sign_in
from tradeos.config import Settings
from tradeos.core.cache import make_cache
from tradeos.core.db import Database, utcnow
from tradeos.core.events import make_event_bus
from tradeos.core.jobs import JobDefinition, JobQueue, JobRun, RunStatus
from tradeos.core.storage import make_storage
from tradeos.core.transactions import flush_after_commit
from tradeos.market import jobs as market_jobs
from tradeos.market import service
from tradeos.market.models import Candle, CryptoListing, Instrument, PriceSnapshot
from tradeos.market.providers.base import (
    AssetClass,
    Bar,
    InstrumentSpec,
    Listing,
    ProviderError,
    Tick,
)
from tradeos.market.providers.registry import Listings, MarketData
from tradeos.market.providers.sim import SimProvider
from tradeos.market.timeframes import Timeframe

NOW = datetime(2026, 3, 4, 12, 0, 30, tzinfo=UTC)  # the bar of 12:00 is open
LAST_MINUTE = datetime(2026, 3, 4, 11, 59, tzinfo=UTC)  # the newest closed 1m bar
MINUTE, HOUR = timedelta(minutes=1), timedelta(hours=1)
# One day back from NOW: 1m bars from 12:01 yesterday to 11:59 today, 1h bars from 13:00.
DAY_OF_MINUTES, DAY_OF_HOURS = 1439, 23
SYMBOLS = ("AAA-USD", "BBB-USD")


class FakeExchange:
    """A market whose bars are a function of their open time, up to the open bar at NOW. It
    can fail for some symbols, have no bars for some minutes, or correct a bar's close."""

    name = "fake"
    page_limit = 500

    def __init__(self) -> None:
        self.failing: set[str] = set()
        self.without_bars: set[datetime] = set()
        self.corrected: dict[datetime, Decimal] = {}
        self.requests: list[tuple[str, Timeframe, datetime, datetime]] = []

    async def instruments(self) -> Sequence[InstrumentSpec]:
        return [
            InstrumentSpec(
                symbol, symbol, AssetClass.CRYPTO, symbol[:3], "USD", Decimal("0.01"), Decimal(1)
            )
            for symbol in SYMBOLS
        ]

    async def candles(
        self, symbol: str, timeframe: Timeframe, start: datetime, end: datetime
    ) -> Sequence[Bar]:
        self.requests.append((symbol, timeframe, start, end))
        if symbol in self.failing:
            raise ProviderError(f"fake: {symbol} is unavailable (HTTP 503)")
        opened = timeframe.floor(start)
        opened = opened if opened == start else opened + timeframe.delta
        bars = []
        while opened < end and opened <= NOW:
            if opened not in self.without_bars:
                bars.append(self.bar(opened))
            opened += timeframe.delta
        return bars

    def bar(self, opened: datetime) -> Bar:
        price = Decimal(100) + Decimal(int(opened.timestamp()) // 60 % 1000) / 100
        close = self.corrected.get(opened, price + Decimal("0.5"))
        return Bar(opened, price, price + 1, price - 1, close, Decimal(10))

    async def ticker(self, symbol: str) -> Tick:
        price = self.bar(NOW).close
        return Tick(symbol, NOW, price, price, price)

    def asked(self, symbol: str, timeframe: Timeframe) -> list[tuple[datetime, datetime]]:
        return [(s, e) for name, tf, s, e in self.requests if (name, tf) == (symbol, timeframe)]


@pytest.fixture
def settings(settings_factory: Callable[..., Settings]) -> Settings:
    return settings_factory(
        jobs_broker="memory",
        jobs_run_in_serve=False,
        market_tracked_symbols=",".join(SYMBOLS),
        market_sync_timeframes="1m,1h",
        market_backfill_days=1,
    )


@pytest.fixture(autouse=True)
def frozen_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    # The sync's "now": runs in the same test see the same closed bars.
    monkeypatch.setattr(market_jobs, "utcnow", lambda: NOW)


@pytest.fixture
def exchange() -> FakeExchange:
    return FakeExchange()


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


def shared_market(exchange: FakeExchange, registry: CollectorRegistry) -> MarketData:
    failures = Counter("failures", "", ["provider", "operation"], registry=registry)
    return MarketData(exchange, Listings(SimProvider(), None), failures)


async def consuming_queue(settings: Settings, database: Database, **ports: Any) -> JobQueue:
    queue = JobQueue(
        settings,
        database=database,
        events=ports.get("events") or make_event_bus(settings),
        cache=ports.get("cache") or make_cache(settings),
        storage=ports.get("storage") or make_storage(settings),
        concurrency=1,
    )
    await queue.start_consuming()
    return queue


@pytest.fixture
async def queue(
    settings: Settings, database: Database, exchange: FakeExchange, registry: CollectorRegistry
) -> AsyncIterator[JobQueue]:
    """A queue running jobs in this process, its market jobs on the fake exchange."""
    jobs = await consuming_queue(settings, database)
    market_jobs.share(jobs, shared_market(exchange, registry))
    yield jobs
    await flush_after_commit()
    await jobs.aclose()
    await jobs.events.aclose()
    await jobs.cache.aclose()


async def finished(
    queue: JobQueue, definition: JobDefinition, arguments: dict[str, Any] | None = None
) -> JobRun:
    run = await queue.enqueue_now(definition, arguments or {})
    async with asyncio.timeout(30):
        while True:
            async with queue.database.session(write=False) as session:
                current = await session.get(JobRun, run.id)
            assert current is not None
            if current.status in (RunStatus.SUCCEEDED, RunStatus.FAILED):
                return current
            await asyncio.sleep(0.05)


async def sync(queue: JobQueue) -> dict[str, Any]:
    run = await finished(queue, market_jobs.sync_candles)
    assert run.status == RunStatus.SUCCEEDED, run.error
    assert run.result_summary is not None
    result: dict[str, Any] = json.loads(run.result_summary)
    return result


async def stored_times(database: Database, symbol: str, timeframe: Timeframe) -> list[datetime]:
    async with database.session(write=False) as session:
        rows = await session.scalars(
            select(Candle.open_time)
            .join(Instrument, Instrument.id == Candle.instrument_id)
            .where(Instrument.symbol == symbol, Candle.timeframe == timeframe.value)
            .order_by(Candle.open_time)
        )
        return list(rows)


def counts(result: dict[str, Any]) -> tuple[int, int, int]:
    return result["inserted"], result["updated"], result["gaps"]


# -- back-fill and idempotence ----------------------------------------------------------------


async def test_the_first_run_back_fills_and_the_second_changes_nothing(
    queue: JobQueue, database: Database, exchange: FakeExchange
) -> None:
    first = await sync(queue)
    assert first["instruments"] == 2
    assert first["timeframes"] == ["1m", "1h"]
    assert first["inserted"] == 2 * (DAY_OF_MINUTES + DAY_OF_HOURS)
    assert "failed" not in first
    minutes = await stored_times(database, "AAA-USD", Timeframe.M1)
    assert len(minutes) == DAY_OF_MINUTES
    assert minutes[0] == NOW.replace(second=0) - timedelta(days=1) + MINUTE
    assert minutes[-1] == LAST_MINUTE  # the open bar of 12:00 is never stored
    assert all(b - a == MINUTE for a, b in itertools.pairwise(minutes))
    hours = await stored_times(database, "BBB-USD", Timeframe.H1)
    assert (len(hours), hours[-1]) == (DAY_OF_HOURS, NOW.replace(minute=0, second=0) - HOUR)
    # At most `page_limit` bars a request: 1,439 minutes take three.
    assert len(exchange.asked("AAA-USD", Timeframe.M1)) == 3

    exchange.requests.clear()
    second = await sync(queue)
    assert counts(second) == (0, 0, 0)
    # Only the newest closed bars are asked for again (an exchange may still correct them).
    assert exchange.asked("AAA-USD", Timeframe.M1) == [(LAST_MINUTE - MINUTE, LAST_MINUTE + MINUTE)]
    assert second["unchanged"] == second["fetched"] == 2 * 2 * 2
    assert len(await stored_times(database, "AAA-USD", Timeframe.M1)) == DAY_OF_MINUTES


async def test_a_deleted_stretch_is_found_and_filled_exactly(
    queue: JobQueue, database: Database, exchange: FakeExchange
) -> None:
    await sync(queue)
    lost_from, lost_to = NOW.replace(second=0) - 20 * HOUR, NOW.replace(second=0) - 19 * HOUR
    async with database.session() as session:
        instrument = await service.get_instrument(session, "AAA-USD")
        await session.execute(
            delete(Candle).where(
                Candle.instrument_id == instrument.id,
                Candle.timeframe == Timeframe.M1.value,
                Candle.open_time >= lost_from,
                Candle.open_time < lost_to,
            )
        )
    exchange.requests.clear()

    result = await sync(queue)

    assert counts(result) == (60, 0, 1)
    assert (lost_from, lost_to) in exchange.asked("AAA-USD", Timeframe.M1)
    assert exchange.asked("BBB-USD", Timeframe.M1) == [
        (LAST_MINUTE - MINUTE, NOW.replace(second=0))
    ]
    minutes = await stored_times(database, "AAA-USD", Timeframe.M1)
    assert len(minutes) == DAY_OF_MINUTES
    assert lost_from in minutes and lost_to - MINUTE in minutes


async def test_a_bar_the_provider_corrected_is_updated(
    queue: JobQueue, database: Database, exchange: FakeExchange
) -> None:
    await sync(queue)
    exchange.corrected[LAST_MINUTE] = Decimal("123.45")

    result = await sync(queue)

    assert counts(result) == (0, 2, 0)  # the minute, for each instrument
    async with database.session(write=False) as session:
        closes = await session.scalars(
            select(Candle.close).where(
                Candle.timeframe == Timeframe.M1.value, Candle.open_time == LAST_MINUTE
            )
        )
        assert list(closes) == [Decimal("123.45")] * 2


async def test_a_failing_instrument_does_not_stop_the_others(
    queue: JobQueue,
    database: Database,
    exchange: FakeExchange,
    registry: CollectorRegistry,
    captured_logs: CapturedLogs,
) -> None:
    exchange.failing.add("AAA-USD")

    result = await sync(queue)

    assert result["failures"] == 2
    assert set(result["failed"]) == {"AAA-USD 1m", "AAA-USD 1h"}
    assert "unavailable (HTTP 503)" in result["failed"]["AAA-USD 1m"]
    assert result["inserted"] == DAY_OF_MINUTES + DAY_OF_HOURS
    assert await stored_times(database, "AAA-USD", Timeframe.M1) == []
    assert len(await stored_times(database, "BBB-USD", Timeframe.M1)) == DAY_OF_MINUTES
    failures = registry.get_sample_value(
        "failures_total", {"provider": "fake", "operation": "candles"}
    )
    assert failures == 2.0
    logged = captured_logs.events("candle_sync_failed")
    assert {(line["symbol"], line["timeframe"]) for line in logged} == {
        ("AAA-USD", "1m"),
        ("AAA-USD", "1h"),
    }

    # Back again: the next run back-fills it.
    exchange.failing.clear()
    again = await sync(queue)
    assert again["inserted"] == DAY_OF_MINUTES + DAY_OF_HOURS
    assert "failed" not in again


async def test_a_stretch_without_bars_is_not_asked_for_on_every_run(
    queue: JobQueue, database: Database, exchange: FakeExchange
) -> None:
    quiet = NOW.replace(second=0) - 10 * HOUR + 5 * MINUTE  # 02:05 to 02:19, no hour's start
    exchange.without_bars.update(quiet + n * MINUTE for n in range(15))
    first = await sync(queue)
    assert first["inserted"] == 2 * (DAY_OF_MINUTES + DAY_OF_HOURS - 15)

    exchange.requests.clear()
    second = await sync(queue)

    # The 15 minutes are still missing, but known to be missing at the provider.
    assert counts(second) == (0, 0, 0)
    assert exchange.asked("AAA-USD", Timeframe.M1) == [(LAST_MINUTE - MINUTE, LAST_MINUTE + MINUTE)]


async def test_symbols_the_provider_does_not_list_are_reported(
    settings_factory: Callable[..., Settings],
    database: Database,
    exchange: FakeExchange,
    registry: CollectorRegistry,
) -> None:
    settings = settings_factory(
        jobs_broker="memory", market_tracked_symbols="AAAUSD,ZZZ-USD", market_backfill_days=1
    )
    jobs = await consuming_queue(settings, database)
    market_jobs.share(jobs, shared_market(exchange, registry))
    try:
        result = await sync(jobs)
    finally:
        await flush_after_commit()
        await jobs.aclose()
        await jobs.cache.aclose()
    # AAAUSD is AAA-USD spelt without its dash.
    assert result["instruments"] == 1
    assert result["failed"] == {"ZZZ-USD": "fake does not list it"}
    assert len(await stored_times(database, "AAA-USD", Timeframe.M1)) == DAY_OF_MINUTES


# -- progress, cached reads, the worker's own providers ---------------------------------------


async def test_progress_names_each_instrument_and_timeframe(queue: JobQueue) -> None:
    async with queue.events.subscribe("user:77:jobs") as events:
        run = await queue.enqueue_now(market_jobs.sync_candles, {}, owner_id=77)
        messages = []
        async with asyncio.timeout(30):
            while True:
                event = await events.get()
                assert event is not None
                if event.payload["status"] in ("succeeded", "failed"):
                    break
                if event.payload.get("progress_message"):
                    messages.append((event.payload["progress"], event.payload["progress_message"]))
    assert event.payload["status"] == "succeeded"
    assert event.payload["id"] == run.id
    assert messages == [
        (25, f"AAA-USD 1m: {DAY_OF_MINUTES} new bars"),
        (50, f"AAA-USD 1h: {DAY_OF_HOURS} new bars"),
        (75, f"BBB-USD 1m: {DAY_OF_MINUTES} new bars"),
        (99, f"BBB-USD 1h: {DAY_OF_HOURS} new bars"),
    ]


async def test_a_cached_candles_read_sees_what_a_sync_wrote(
    app: FastAPI,
    client: httpx.AsyncClient,
    settings: Settings,
    exchange: FakeExchange,
    registry: CollectorRegistry,
) -> None:
    database: Database = app.state.database
    async with database.session() as session:
        await service.upsert_instruments(session, await exchange.instruments(), exchange.name)
        user = await make_user(session)
        headers = bearer(await sign_in(session, settings, user))
    params = {
        "timeframe": "1h",
        "start": (NOW - 6 * HOUR).isoformat(),
        "end": NOW.replace(minute=0, second=0).isoformat(),
    }
    before = await client.get("/api/v1/market/candles/AAA-USD", params=params, headers=headers)
    assert before.status_code == 200, before.text
    assert before.json()["candles"] == []  # nothing stored yet; and now cached

    # The jobs share the API's cache, as every process on one deployment does.
    jobs = await consuming_queue(settings, database, cache=app.state.cache, events=app.state.events)
    market_jobs.share(jobs, shared_market(exchange, registry))
    try:
        result = await sync(jobs)
    finally:
        await flush_after_commit()
        await jobs.aclose()
    assert result["inserted"] > 0

    after = await client.get("/api/v1/market/candles/AAA-USD", params=params, headers=headers)
    body = after.json()
    assert body["source"] == "stored"
    assert [datetime.fromisoformat(c["time"]) for c in body["candles"]] == [
        NOW.replace(minute=0, second=0) - n * HOUR for n in range(5, 0, -1)
    ]


async def test_without_shared_providers_a_run_makes_its_own(
    settings_factory: Callable[..., Settings], database: Database
) -> None:
    # As a `tradeos worker` runs it: the providers come from the settings, for this run. Sim
    # instruments are not tracked by default, but may be named.
    settings = settings_factory(
        jobs_broker="memory",
        market_tracked_symbols="BTC-USD",
        market_sync_timeframes="1h",
        market_backfill_days=1,
    )
    jobs = await consuming_queue(settings, database)
    try:
        result = await sync(jobs)
    finally:
        await flush_after_commit()
        await jobs.aclose()
        await jobs.cache.aclose()
    assert (result["instruments"], result["inserted"]) == (1, DAY_OF_HOURS)
    async with database.session(write=False) as session:
        btc = await service.get_instrument(session, "BTC-USD")
        sources = await session.scalars(
            select(Candle.source).where(Candle.instrument_id == btc.id).distinct()
        )
        assert (btc.provider, list(sources)) == ("sim", ["sim"])


async def test_nothing_is_tracked_by_default_on_the_simulated_market(
    settings_factory: Callable[..., Settings], database: Database
) -> None:
    jobs = await consuming_queue(settings_factory(jobs_broker="memory"), database)
    try:
        assert await sync(jobs) == {"instruments": 0}
    finally:
        await flush_after_commit()
        await jobs.aclose()
        await jobs.cache.aclose()


# -- on demand --------------------------------------------------------------------------------


async def test_a_back_fill_on_demand_reaches_further(
    queue: JobQueue, database: Database, exchange: FakeExchange
) -> None:
    run = await finished(
        queue, market_jobs.backfill_candles, {"symbol": "bbbusd", "timeframe": "1h", "days": 3}
    )
    assert run.status == RunStatus.SUCCEEDED, run.error
    assert run.result_summary is not None
    assert json.loads(run.result_summary)["inserted"] == 3 * 24 - 1
    assert await stored_times(database, "AAA-USD", Timeframe.H1) == []

    exchange.failing.add("BBB-USD")
    failed = await finished(
        queue, market_jobs.backfill_candles, {"symbol": "BBB-USD", "timeframe": "1m"}
    )
    assert failed.status == RunStatus.FAILED
    assert failed.error is not None and "unavailable (HTTP 503)" in failed.error

    for bad in ({"symbol": "BBB-USD", "timeframe": "2h"}, {"symbol": "BBB-USD", "days": 0}):
        refused = await finished(queue, market_jobs.backfill_candles, bad)
        assert refused.status == RunStatus.FAILED


# -- gaps in stored history -------------------------------------------------------------------


async def test_candle_gaps_are_stretches_of_whole_missing_bars(database: Database) -> None:
    t0 = datetime(2026, 3, 2, tzinfo=UTC)
    exchange = FakeExchange()
    stored = [n for n in range(10) if n not in (0, 3, 4, 7)]
    async with database.session() as session:
        await service.upsert_instruments(session, await exchange.instruments(), exchange.name)
        instrument = await service.get_instrument(session, "AAA-USD")
        bars = [exchange.bar(t0 + n * MINUTE) for n in stored]
        # A bar off the minute boundaries fills no minute's place.
        bars.append(exchange.bar(t0 + 7.5 * MINUTE))
        await service.upsert_candles(session, instrument.id, Timeframe.M1, bars, "fake")

    async def gaps(start: datetime, end: datetime) -> list[tuple[datetime, datetime]]:
        async with database.session(write=False) as session:
            return await service.candle_gaps(session, instrument.id, Timeframe.M1, start, end)

    def at(minutes: float) -> datetime:
        return t0 + minutes * MINUTE

    assert await gaps(at(0), at(10)) == [(at(0), at(1)), (at(3), at(5)), (at(7), at(8))]
    # Window ends between boundaries: whole bars, the one open at `end` included.
    assert await gaps(at(0.5), at(12.5)) == [(at(3), at(5)), (at(7), at(8)), (at(10), at(13))]
    assert await gaps(at(1), at(3)) == []  # every bar there: answered by counting
    assert await gaps(at(5), at(5)) == []
    assert await gaps(at(8), at(3)) == []
    async with database.session(write=False) as session:
        count = await session.scalar(select(func.count()).select_from(Candle))
    assert count == len(stored) + 1


# -- listing syncs ----------------------------------------------------------------------------


class FakeCoinGecko:
    name = "coingecko"

    def __init__(self) -> None:
        self.asked: list[int] = []

    async def listings(self, limit: int) -> Sequence[Listing]:
        self.asked.append(limit)
        return await SimProvider().listings(limit)


async def test_the_listing_syncs_fetch_the_configured_sizes_from_held_providers(
    settings_factory: Callable[..., Settings], database: Database
) -> None:
    settings = settings_factory(jobs_broker="memory", listings_sync_top=3, listings_sync_all=4)
    coingecko = FakeCoinGecko()
    jobs = await consuming_queue(settings, database)
    market_jobs.share(jobs, MarketData(SimProvider(), Listings(coingecko, SimProvider())))
    try:
        top = await finished(jobs, market_jobs.sync_top_listings)
        every = await finished(jobs, market_jobs.sync_all_listings)
        # An admin's sync naming the provider the process holds already: no new client.
        named = await finished(
            jobs, market_jobs.sync_listings, {"limit": 2, "provider": "coingecko"}
        )
    finally:
        await flush_after_commit()
        await jobs.aclose()
        await jobs.cache.aclose()
    assert coingecko.asked == [3, 4, 2]
    for run, size in ((top, 3), (every, 4), (named, 2)):
        assert run.status == RunStatus.SUCCEEDED, run.error
        assert run.result_summary is not None
        assert json.loads(run.result_summary)["fetched"] == size


# -- price history retention ------------------------------------------------------------------


async def snapshots_aged(database: Database, days_ago: Sequence[int]) -> datetime:
    """A listing with one price snapshot `days_ago` days before now for each; returns now."""
    now = utcnow()
    async with database.session() as session:
        listing = CryptoListing(symbol="OLD", name="Old Coin", categories=[], source="sim")
        session.add(listing)
        await session.flush()
        for days in days_ago:
            session.add(
                PriceSnapshot(
                    listing_id=listing.id, time=now - timedelta(days=days), price=Decimal(days)
                )
            )
    return now


async def snapshot_prices(database: Database) -> list[Decimal]:
    async with database.session(write=False) as session:
        return list(await session.scalars(select(PriceSnapshot.price).order_by(PriceSnapshot.time)))


async def test_price_history_older_than_a_year_is_pruned(
    queue: JobQueue, settings: Settings, database: Database
) -> None:
    assert settings.price_history_keep_days == 365  # PRICE_HISTORY_KEEP_DAYS by default
    await snapshots_aged(database, [10, 364, 366, 400])

    run = await finished(queue, market_jobs.prune_price_history)

    assert run.status == RunStatus.SUCCEEDED, run.error
    assert run.result_summary is not None
    assert json.loads(run.result_summary) == {"deleted": 2}
    # The prices are the snapshots' ages in days: those of 364 and 10 days ago remain.
    assert await snapshot_prices(database) == [Decimal(364), Decimal(10)]

    again = await finished(queue, market_jobs.prune_price_history)
    assert again.result_summary is not None
    assert json.loads(again.result_summary) == {"deleted": 0}
    assert len(await snapshot_prices(database)) == 2


async def test_price_history_is_kept_as_long_as_the_settings_say(
    settings_factory: Callable[..., Settings], database: Database
) -> None:
    settings = settings_factory(jobs_broker="memory", price_history_keep_days=30)
    await snapshots_aged(database, [1, 29, 31, 364])
    jobs = await consuming_queue(settings, database)
    try:
        run = await finished(jobs, market_jobs.prune_price_history)
    finally:
        await flush_after_commit()
        await jobs.aclose()
        await jobs.cache.aclose()
    assert run.status == RunStatus.SUCCEEDED, run.error
    assert run.result_summary is not None
    assert json.loads(run.result_summary) == {"deleted": 2}
    assert await snapshot_prices(database) == [Decimal(29), Decimal(1)]
