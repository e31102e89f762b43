"""Market endpoints end to end on the default sim provider: instruments, candles (produced,
stored, resampled), tickers, crypto listings and their sync."""

from __future__ import annotations

import asyncio
import itertools
import json
import socket
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest
import respx
from fastapi import FastAPI
from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from tests.factories import bearer, make_user, sign_in
from tradeos.accounts.models import Role
from tradeos.config import Settings
from tradeos.core.db import Database, strip_trailing_zeros
from tradeos.market import router as market_router
from tradeos.market import service
from tradeos.market.models import Candle, CryptoListing, Instrument
from tradeos.market.providers.base import Bar
from tradeos.market.providers.sim import CATALOGUE, SimProvider
from tradeos.market.schemas import CandleOut, CandlesOut
from tradeos.market.timeframes import Timeframe

API = "/api/v1"


@pytest.fixture
def settings(settings_factory: Callable[..., Settings]) -> Settings:
    # The app runs the listing sync it queues at start-up, on whichever broker the suite uses.
    return settings_factory(jobs_run_in_serve=True)


async def reader(session: AsyncSession, settings: Settings, **values: Any) -> dict[str, str]:
    user = await make_user(session, **values)
    headers = bearer(await sign_in(session, settings, user))
    await session.commit()
    return headers


async def test_the_sim_instruments_are_listed_and_filtered(
    client: httpx.AsyncClient, session: AsyncSession, settings: Settings
) -> None:
    headers = await reader(session, settings)
    listed = await client.get(f"{API}/market/instruments", params={"size": 100}, headers=headers)
    assert listed.status_code == 200, listed.text
    symbols = [item["symbol"] for item in listed.json()["items"]]
    for symbol in ("BTC-USD", "ETH-USD", "EUR-USD", "USD-JPY", "XAU-USD", "AAPL", "SPY"):
        assert symbol in symbols
    assert symbols == sorted(symbols)
    btc = next(item for item in listed.json()["items"] if item["symbol"] == "BTC-USD")
    assert (btc["asset_class"], btc["base"], btc["quote"], btc["provider"]) == (
        "crypto",
        "BTC",
        "USD",
        "sim",
    )
    assert Decimal(btc["tick_size"]) == Decimal("0.01")

    forex = await client.get(
        f"{API}/market/instruments", params={"asset_class": "forex"}, headers=headers
    )
    assert {item["asset_class"] for item in forex.json()["items"]} == {"forex"}
    searched = await client.get(
        f"{API}/market/instruments", params={"search": "bitco"}, headers=headers
    )
    assert [item["symbol"] for item in searched.json()["items"]] == ["BTC-USD"]


async def test_sim_candles_are_produced_on_demand(
    client: httpx.AsyncClient, session: AsyncSession, settings: Settings
) -> None:
    headers = await reader(session, settings)
    response = await client.get(
        f"{API}/market/candles/BTC-USD", params={"timeframe": "1h", "limit": 300}, headers=headers
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["symbol"], body["timeframe"], body["source"]) == ("BTC-USD", "1h", "sim")
    candles = body["candles"]
    assert len(candles) == 300
    times = [datetime.fromisoformat(c["time"]) for c in candles]
    assert times == sorted(times)
    assert all(t.minute == 0 and t.second == 0 for t in times)
    assert all(b - a == timedelta(hours=1) for a, b in itertools.pairwise(times))
    assert [c["partial"] for c in candles[-1:]] == [True]
    assert not any(c["partial"] for c in candles[:-1])
    for c in candles:
        assert Decimal(c["low"]) <= min(Decimal(c["open"]), Decimal(c["close"]))
        assert Decimal(c["high"]) >= max(Decimal(c["open"]), Decimal(c["close"]))

    # A year of hourly history, and other spellings of the symbol.
    start = (datetime.now(UTC) - timedelta(days=365)).isoformat()
    year = await client.get(
        f"{API}/market/candles/btcusd",
        params={"timeframe": "1h", "start": start, "limit": 5000},
        headers=headers,
    )
    assert year.status_code == 200
    assert len(year.json()["candles"]) == 5000
    weekly = await client.get(
        f"{API}/market/candles/BTC%2FUSD", params={"timeframe": "1w", "limit": 3}, headers=headers
    )
    assert [datetime.fromisoformat(c["time"]).weekday() for c in weekly.json()["candles"]] == [
        0
    ] * 3


@pytest.mark.parametrize(
    ("path", "params", "status", "field"),
    [
        ("/market/candles/NOPE-USD", {}, 404, None),
        ("/market/candles/BTC-USD", {"timeframe": "2h"}, 422, "query.timeframe"),
        ("/market/candles/BTC-USD", {"limit": 5001}, 422, "query.limit"),
        (
            "/market/candles/BTC-USD",
            {"start": "2026-01-02T00:00:00Z", "end": "2026-01-01T00:00:00Z"},
            422,
            "query.start",
        ),
        ("/market/ticker/NOPE", {}, 404, None),
        ("/cryptocurrencies/NOPE", {}, 404, None),
    ],
)
async def test_bad_requests_get_clear_problems(
    client: httpx.AsyncClient,
    session: AsyncSession,
    settings: Settings,
    path: str,
    params: dict[str, Any],
    status: int,
    field: str | None,
) -> None:
    headers = await reader(session, settings)
    response = await client.get(f"{API}{path}", params=params, headers=headers)
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    if field is not None:
        assert field in [error["field"] for error in response.json()["errors"]]


async def test_stored_candles_win_and_coarser_ones_are_resampled(
    client: httpx.AsyncClient, session: AsyncSession, settings: Settings, database: Database
) -> None:
    headers = await reader(session, settings)
    instrument = Instrument(
        symbol="ACME",
        name="Acme Corp",
        asset_class="equity",
        base="ACME",
        quote="USD",
        tick_size=Decimal("0.01"),
        quantity_step=Decimal("1"),
        provider="csv",
    )
    session.add(instrument)
    await session.commit()
    t0 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)  # a Monday
    # 90 minutes: one whole hour and half of the next.
    bars = [
        Bar(
            t0 + timedelta(minutes=n),
            Decimal(100 + n),
            Decimal(101 + n),
            Decimal(99 + n),
            Decimal("100.5") + n,
            Decimal(10),
        )
        for n in range(90)
    ]
    async with database.session() as writing:
        first = await service.upsert_candles(writing, instrument.id, Timeframe.M1, bars, "csv")
    async with database.session() as writing:
        again = await service.upsert_candles(writing, instrument.id, Timeframe.M1, bars, "csv")
    assert (first.inserted, again.inserted, again.updated, again.unchanged) == (90, 0, 0, 90)

    params = {
        "timeframe": "1h",
        "start": t0.isoformat(),
        "end": (t0 + timedelta(hours=3)).isoformat(),
    }
    hourly = await client.get(f"{API}/market/candles/acme", params=params, headers=headers)
    assert hourly.status_code == 200, hourly.text
    body = hourly.json()
    assert body["source"] == "resampled:1m"
    assert [
        (c["open"], c["high"], c["low"], c["close"], c["volume"], c["partial"])
        for c in body["candles"]
    ] == [
        ("100", "160", "99", "159.5", "600", False),
        # Half an hour of minutes only, but the hour ended long ago: the bar is final, not
        # partial (partial means still forming; missing minutes will never arrive by waiting).
        ("160", "190", "159", "189.5", "300", False),
    ]
    minutes = await client.get(
        f"{API}/market/candles/ACME", params={**params, "timeframe": "1m"}, headers=headers
    )
    assert minutes.json()["source"] == "stored"
    assert len(minutes.json()["candles"]) == 90
    ticker = await client.get(f"{API}/market/ticker/ACME", headers=headers)
    assert ticker.status_code == 200
    assert ticker.json()["last"] == "189.5"


async def test_stored_candles_are_sent_exactly_as_the_candles_model_writes_them(
    client: httpx.AsyncClient, session: AsyncSession, settings: Settings, database: Database
) -> None:
    """The endpoint sends stored bars as text the database writes: it must be what the
    CandlesOut model would write for the same bars, awkward values included."""
    headers = await reader(session, settings)
    instrument = Instrument(
        symbol="SATS-USD",
        name="Satoshis",
        asset_class="crypto",
        base="SATS",
        quote="USD",
        tick_size=Decimal("0.00000001"),
        quantity_step=Decimal("1"),
        provider="csv",
    )
    session.add(instrument)
    await session.commit()
    t0 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
    prices = ["0.00000001", "100", "0", "12345678901234567890.123456789012345678", "1.10"]
    bars = [
        Bar(t0 + timedelta(minutes=n), *(Decimal(p) for p in prices[n:] + prices[:n]))
        for n in range(len(prices))
    ]
    async with database.session() as writing:
        await service.upsert_candles(writing, instrument.id, Timeframe.M1, bars, "csv")
    params = {"timeframe": "1m", "end": (t0 + timedelta(hours=1)).isoformat()}
    sent = await client.get(f"{API}/market/candles/SATS-USD", params=params, headers=headers)
    assert sent.status_code == 200, sent.text
    assert sent.headers["content-type"] == "application/json"
    expected = CandlesOut(
        symbol="SATS-USD",
        timeframe="1m",
        source="stored",
        candles=[
            CandleOut(
                time=bar.open_time,
                # What reading the bar back gives: the stored value, trailing zeros gone.
                open=strip_trailing_zeros(bar.open),
                high=strip_trailing_zeros(bar.high),
                low=strip_trailing_zeros(bar.low),
                close=strip_trailing_zeros(bar.close),
                volume=strip_trailing_zeros(bar.volume),
                partial=False,
            )
            for bar in bars
        ],
    )
    assert sent.json() == json.loads(expected.model_dump_json())
    assert sent.json()["candles"][0]["open"] == "0.00000001"
    assert sent.json()["candles"][0]["time"] == "2026-01-05T09:00:00Z"
    # Cached (the request had an `end`): the second answer is the same.
    again = await client.get(f"{API}/market/candles/SATS-USD", params=params, headers=headers)
    assert again.json() == sent.json()


async def test_the_ticker_moves_and_has_a_day_of_statistics(
    client: httpx.AsyncClient,
    session: AsyncSession,
    settings: Settings,
    market_clock: MarketClock,
) -> None:
    headers = await reader(session, settings)
    response = await client.get(f"{API}/market/ticker/ETH-USD", headers=headers)
    assert response.status_code == 200, response.text
    ticker = response.json()
    assert ticker["source"] == "sim"
    assert ticker["time"] == "2026-11-21T12:00:30Z"
    last, bid, ask = (Decimal(ticker[k]) for k in ("last", "bid", "ask"))
    assert bid < last < ask
    # The day's statistics are those of the last 24 hourly candles, the current one included.
    day = await client.get(
        f"{API}/market/candles/ETH-USD", params={"timeframe": "1h", "limit": 24}, headers=headers
    )
    hours = day.json()["candles"]
    assert len(hours) == 24
    assert datetime.fromisoformat(hours[0]["time"]) == datetime(2026, 11, 20, 13, tzinfo=UTC)
    assert hours[-1]["close"] == ticker["last"]
    open_24h = Decimal(hours[0]["open"])
    assert Decimal(ticker["open_24h"]) == open_24h
    assert Decimal(ticker["high_24h"]) == max(Decimal(c["high"]) for c in hours)
    assert Decimal(ticker["low_24h"]) == min(Decimal(c["low"]) for c in hours)
    assert Decimal(ticker["low_24h"]) <= last <= Decimal(ticker["high_24h"])
    volume = sum((Decimal(c["volume"]) for c in hours), Decimal(0))
    assert volume > 0
    assert Decimal(ticker["volume_24h"]) == volume
    assert Decimal(ticker["change_24h"]) == last - open_24h
    percent = ((last - open_24h) / open_24h * 100).quantize(Decimal("0.01"))
    assert Decimal(ticker["change_24h_percent"]) == percent
    assert (Decimal(ticker["change_24h"]) > 0) == (Decimal(ticker["change_24h_percent"]) > 0)

    market_clock.advance(timedelta(seconds=5))
    moved = (await client.get(f"{API}/market/ticker/ETH-USD", headers=headers)).json()
    assert moved["time"] == "2026-11-21T12:00:35Z"
    assert moved["last"] != ticker["last"]


async def wait_for_listings(client: httpx.AsyncClient, headers: dict[str, str]) -> list[Any]:
    async with asyncio.timeout(20):
        while True:
            response = await client.get(f"{API}/cryptocurrencies", headers=headers)
            assert response.status_code == 200, response.text
            if response.json()["items"]:
                items: list[Any] = response.json()["items"]
                return items
            await asyncio.sleep(0.1)


async def test_listings_are_synced_at_start_and_served(
    client: httpx.AsyncClient, session: AsyncSession, settings: Settings
) -> None:
    headers = await reader(session, settings)
    items = await wait_for_listings(client, headers)
    assert [item["symbol"] for item in items][:2] == ["BTC", "ETH"]
    caps = [Decimal(item["market_cap"]) for item in items]
    assert caps == sorted(caps, reverse=True)
    assert {item["source"] for item in items} == {"sim"}
    assert [item["rank"] for item in items] == list(range(1, len(items) + 1))

    by_price = await client.get(
        f"{API}/cryptocurrencies", params={"sort_by": "price", "order": "asc"}, headers=headers
    )
    prices = [Decimal(item["price"]) for item in by_price.json()["items"]]
    assert prices == sorted(prices)
    filtered = await client.get(
        f"{API}/cryptocurrencies", params={"symbol_filter": "et"}, headers=headers
    )
    assert [item["symbol"] for item in filtered.json()["items"]] == ["ETH"]
    big = await client.get(
        f"{API}/cryptocurrencies",
        params={"min_market_cap": str(caps[1])},
        headers=headers,
    )
    assert [item["symbol"] for item in big.json()["items"]] == ["BTC", "ETH"]

    btc = await client.get(f"{API}/cryptocurrencies/btc", headers=headers)
    assert btc.status_code == 200
    assert btc.json()["name"] == "Bitcoin"
    history = await client.get(f"{API}/cryptocurrencies/BTC/history", headers=headers)
    assert len(history.json()["history"]) == 1
    gainers = await client.get(f"{API}/cryptocurrencies/top/gainers", headers=headers)
    changes = [Decimal(item["change_24h"]) for item in gainers.json()]
    assert changes == sorted(changes, reverse=True)
    losers = await client.get(
        f"{API}/cryptocurrencies/top/losers", params={"limit": 1}, headers=headers
    )
    assert Decimal(losers.json()[0]["change_24h"]) == min(changes)


async def test_an_admin_syncs_listings_through_a_job(
    client: httpx.AsyncClient, session: AsyncSession, settings: Settings, app: FastAPI
) -> None:
    admin = await reader(session, settings, role=Role.ADMIN.value)
    user = await reader(session, settings)
    await wait_for_listings(client, admin)
    refused = await client.post(f"{API}/cryptocurrencies/sync", json={}, headers=user)
    assert refused.status_code == 403
    bad = await client.post(
        f"{API}/cryptocurrencies/sync", json={"provider": "nasdaq"}, headers=admin
    )
    assert bad.status_code == 422
    accepted = await client.post(
        f"{API}/cryptocurrencies/sync", json={"limit": 2, "provider": "sim"}, headers=admin
    )
    assert accepted.status_code == 202, accepted.text
    job_id = accepted.json()["job_id"]
    async with asyncio.timeout(20):
        while True:
            run = (await client.get(f"{API}/admin/jobs/{job_id}", headers=admin)).json()
            if run["status"] in ("succeeded", "failed"):
                break
            await asyncio.sleep(0.1)
    assert run["status"] == "succeeded", run
    assert run["name"] == "market.sync_listings"
    assert '"fetched":2' in run["result_summary"]


async def test_listing_reads_are_cached_until_a_sync_changes_listings(
    client: httpx.AsyncClient, session: AsyncSession, settings: Settings
) -> None:
    admin = await reader(session, settings, role=Role.ADMIN.value)
    await wait_for_listings(client, admin)
    reads = (
        f"{API}/cryptocurrencies",
        f"{API}/cryptocurrencies/BTC",
        f"{API}/cryptocurrencies/top/market_cap",
    )
    before = [(await client.get(path, headers=admin)).json() for path in reads]
    # A change that bypasses the sync (and so its invalidation) is not seen: the reads are
    # served from the cache.
    btc = await session.scalar(select(CryptoListing).where(CryptoListing.symbol == "BTC"))
    assert btc is not None
    btc.price = Decimal("1")
    await session.commit()
    assert [(await client.get(path, headers=admin)).json() for path in reads] == before

    accepted = await client.post(
        f"{API}/cryptocurrencies/sync", json={"limit": 5, "provider": "sim"}, headers=admin
    )
    job_id = accepted.json()["job_id"]
    async with asyncio.timeout(20):
        while True:
            run = (await client.get(f"{API}/admin/jobs/{job_id}", headers=admin)).json()
            if run["status"] in ("succeeded", "failed"):
                break
            await asyncio.sleep(0.1)
    assert run["status"] == "succeeded", run
    # The sync stored the provider's price again (a change), which invalidated the reads.
    after = (await client.get(f"{API}/cryptocurrencies/BTC", headers=admin)).json()
    assert after["price"] != "1"
    await session.refresh(btc)
    assert Decimal(after["price"]) == btc.price


# -- the market's clock -----------------------------------------------------------------------


class MarketClock:
    """A clock the candle and ticker reads and the simulated market all read, moved by hand."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, delta: timedelta) -> None:
        self.now += delta


# A Saturday, mid-minute: the current 1m, 1h, 1d and 1w bars are all still forming.
FROZEN = datetime(2026, 11, 21, 12, 0, 30, tzinfo=UTC)


@pytest.fixture
def market_clock(
    client: httpx.AsyncClient, app: FastAPI, monkeypatch: pytest.MonkeyPatch
) -> MarketClock:
    clock = MarketClock(FROZEN)
    monkeypatch.setattr(service, "utcnow", clock)
    monkeypatch.setattr(market_router, "utcnow", clock)
    provider = app.state.market.provider
    for part in (provider, provider.primary, provider.fallback):
        if isinstance(part, SimProvider):
            monkeypatch.setattr(part, "_clock", clock)
    return clock


async def csv_instrument(session: AsyncSession, symbol: str = "ACME") -> Instrument:
    instrument = Instrument(
        symbol=symbol,
        name=f"{symbol} Corp",
        asset_class="equity",
        base=symbol,
        quote="USD",
        tick_size=Decimal("0.01"),
        quantity_step=Decimal("1"),
        provider="csv",
    )
    session.add(instrument)
    await session.commit()
    return instrument


def steady_bars(first: datetime, step: timedelta, count: int, volume: int = 10) -> list[Bar]:
    return [
        Bar(
            first + step * n,
            Decimal(100 + n),
            Decimal(102 + n),
            Decimal(99 + n),
            Decimal(101 + n),
            Decimal(volume),
        )
        for n in range(count)
    ]


async def store(
    database: Database, instrument: Instrument, timeframe: Timeframe, bars: list[Bar]
) -> None:
    async with database.session() as writing:
        await service.upsert_candles(writing, instrument.id, timeframe, bars, "csv")


def times_of(body: dict[str, Any]) -> list[datetime]:
    return [datetime.fromisoformat(c["time"]) for c in body["candles"]]


async def test_a_window_ending_in_the_future_gives_the_last_bars_that_exist(
    client: httpx.AsyncClient,
    session: AsyncSession,
    settings: Settings,
    database: Database,
    market_clock: MarketClock,
) -> None:
    headers = await reader(session, settings)
    now = market_clock.now
    minute = now.replace(second=0)
    window = {
        "timeframe": "1m",
        "start": (minute - timedelta(minutes=3)).isoformat(),
        "end": (now + timedelta(days=1)).isoformat(),
    }
    # Produced by the provider: four bars exist, the last one still forming.
    answers = [
        (
            await client.get(
                f"{API}/market/candles/BTC-USD", params={**window, "limit": limit}, headers=headers
            )
        ).json()
        for limit in (500, 5000, 2)
    ]
    expected = [minute - timedelta(minutes=n) for n in (3, 2, 1, 0)]
    assert [body["source"] for body in answers] == ["sim"] * 3
    assert times_of(answers[0]) == times_of(answers[1]) == expected
    assert answers[0] == answers[1]
    assert times_of(answers[2]) == expected[-2:]
    assert [c["partial"] for c in answers[0]["candles"]] == [False, False, False, True]
    no_start = await client.get(
        f"{API}/market/candles/BTC-USD",
        params={"timeframe": "1m", "end": window["end"], "limit": 4},
        headers=headers,
    )
    assert times_of(no_start.json()) == expected

    # Stored minutes two days ago, in two stretches a day apart: resampled to hours, the
    # last `limit` hours that exist, however far `end` is and whatever the gap.
    instrument = await csv_instrument(session)
    first = minute.replace(minute=0) - timedelta(days=3)
    await store(database, instrument, Timeframe.M1, steady_bars(first, timedelta(minutes=1), 120))
    later = first + timedelta(days=1)
    await store(database, instrument, Timeframe.M1, steady_bars(later, timedelta(minutes=1), 90))
    hours = {
        "timeframe": "1h",
        "start": (first - timedelta(days=10)).isoformat(),
        "end": (now + timedelta(days=1)).isoformat(),
    }
    for limit, opened in [
        (2, [later, later + timedelta(hours=1)]),
        (3, [first + timedelta(hours=1), later, later + timedelta(hours=1)]),
        (500, [first, first + timedelta(hours=1), later, later + timedelta(hours=1)]),
    ]:
        resampled = await client.get(
            f"{API}/market/candles/ACME", params={**hours, "limit": limit}, headers=headers
        )
        assert resampled.json()["source"] == "resampled:1m"
        assert times_of(resampled.json()) == opened, limit
    # The stored minutes themselves: the last ones, from both read paths alike.
    stored = await client.get(
        f"{API}/market/candles/ACME",
        params={**hours, "timeframe": "1m", "limit": 5},
        headers=headers,
    )
    assert stored.json()["source"] == "stored"
    assert times_of(stored.json()) == [later + timedelta(minutes=n) for n in range(85, 90)]
    async with database.session() as reading:
        direct = await service.candles(
            reading,
            None,
            instrument,
            Timeframe.M1,
            first - timedelta(days=10),
            now + timedelta(days=1),
            5,
        )
    assert [item.bar.open_time for item in direct.bars] == times_of(stored.json())


async def test_a_remembered_instrument_that_was_replaced_is_looked_up_afresh(
    client: httpx.AsyncClient, session: AsyncSession, settings: Settings, database: Database
) -> None:
    headers = await reader(session, settings)
    first = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(hours=1)
    path, params = f"{API}/market/candles/ACME", {"timeframe": "1m"}
    old = await csv_instrument(session)
    await store(database, old, Timeframe.M1, steady_bars(first, timedelta(minutes=1), 3))
    assert len((await client.get(path, params=params, headers=headers)).json()["candles"]) == 3

    # Meanwhile (another process, say) ACME is deleted and listed again. On SQLite the next new
    # instrument even gets ACME's old id: the id this process remembers for ACME is OTHER's now.
    async with database.session() as writing:
        await writing.execute(delete(Instrument).where(Instrument.id == old.id))
    other = await csv_instrument(session, "OTHER")
    await store(database, other, Timeframe.M1, steady_bars(first, timedelta(minutes=1), 5))
    new = await csv_instrument(session)
    await store(database, new, Timeframe.M1, steady_bars(first, timedelta(minutes=1), 2, 7))

    body = (await client.get(path, params=params, headers=headers)).json()
    assert (body["symbol"], body["source"]) == ("ACME", "stored")
    assert [(c["time"], c["volume"]) for c in body["candles"]] == [
        (moment.isoformat().replace("+00:00", "Z"), "7")
        for moment in (first, first + timedelta(minutes=1))
    ]


async def test_a_window_reaching_into_the_present_is_never_served_stale(
    client: httpx.AsyncClient,
    session: AsyncSession,
    settings: Settings,
    database: Database,
    market_clock: MarketClock,
) -> None:
    headers = await reader(session, settings)
    now = market_clock.now
    window = {
        "timeframe": "1m",
        "start": (now.replace(second=0) - timedelta(minutes=5)).isoformat(),
        "end": (now + timedelta(hours=1)).isoformat(),
    }
    path = f"{API}/market/candles/SOL-USD"
    first = (await client.get(path, params=window, headers=headers)).json()
    market_clock.advance(timedelta(seconds=20))  # the same minute, 20 seconds on
    second = (await client.get(path, params=window, headers=headers)).json()
    latest = (
        await client.get(path, params={"timeframe": "1m", "limit": 6}, headers=headers)
    ).json()
    ticker = (await client.get(f"{API}/market/ticker/SOL-USD", headers=headers)).json()

    assert times_of(first) == times_of(second)
    assert first["candles"][-1]["partial"] and second["candles"][-1]["partial"]
    assert first["candles"][-1] != second["candles"][-1]  # the forming bar moved on
    assert second == latest
    assert second["candles"][-1]["close"] == ticker["last"]
    assert first["candles"][:-1] == second["candles"][:-1]  # closed bars do not move

    # A window that has entirely closed is cached: a change that bypasses the writes (and so
    # their invalidation) is not seen until the cache expires.
    instrument = await csv_instrument(session)
    opened = now.replace(second=0) - timedelta(hours=2)
    await store(database, instrument, Timeframe.M1, steady_bars(opened, timedelta(minutes=1), 30))
    closed = {
        "timeframe": "1m",
        "start": opened.isoformat(),
        "end": (opened + timedelta(minutes=30)).isoformat(),
    }
    before = (await client.get(f"{API}/market/candles/ACME", params=closed, headers=headers)).json()
    await session.execute(
        update(Candle).where(Candle.instrument_id == instrument.id).values(close=Decimal(1))
    )
    await session.commit()
    after = (await client.get(f"{API}/market/candles/ACME", params=closed, headers=headers)).json()
    assert after == before
    live = {**closed, "end": (now + timedelta(minutes=1)).isoformat()}
    fresh = (await client.get(f"{API}/market/candles/ACME", params=live, headers=headers)).json()
    assert {c["close"] for c in fresh["candles"]} == {"1"}


async def test_weeks_from_stored_weekday_bars_are_final_and_open_on_mondays_from_start(
    client: httpx.AsyncClient,
    session: AsyncSession,
    settings: Settings,
    database: Database,
    market_clock: MarketClock,
) -> None:
    headers = await reader(session, settings)
    instrument = await csv_instrument(session)
    monday = datetime(2024, 1, 1, tzinfo=UTC)
    weekdays = [
        bar
        for bar in steady_bars(monday, timedelta(days=1), 42)
        if bar.open_time.weekday() < 5  # an equity market: closed on weekends
    ]
    # And this week up to today, Saturday (a market open on Saturdays, say): the week, and
    # today, are still forming.
    this_monday = Timeframe.W1.floor(market_clock.now)
    this_week = steady_bars(this_monday, timedelta(days=1), 6)
    await store(database, instrument, Timeframe.D1, weekdays + this_week)

    wednesday = datetime(2024, 1, 3, tzinfo=UTC)
    weekly = await client.get(
        f"{API}/market/candles/ACME",
        params={"timeframe": "1w", "start": wednesday.isoformat(), "limit": 5000},
        headers=headers,
    )
    assert weekly.status_code == 200, weekly.text
    body = weekly.json()
    assert body["source"] == "resampled:1d"
    opened = times_of(body)
    assert all(t.weekday() == 0 and t.time().hour == 0 for t in opened)
    # Bars open at or after `start`: the week of Wednesday 2024-01-03 opened on the Monday
    # before it and is left out, rather than made of its Wednesday to Friday only.
    assert opened[:5] == [monday + timedelta(weeks=n) for n in range(1, 6)]
    assert opened[-1] == this_monday
    first = body["candles"][0]
    second_monday = next(bar for bar in weekdays if bar.open_time == monday + timedelta(weeks=1))
    assert (first["open"], first["volume"]) == (str(second_monday.open), "50")
    # Partial is "still forming", not "fewer than seven days": only this week is partial.
    assert [c["partial"] for c in body["candles"]] == [False] * 5 + [True]
    # The same rule for produced bars: from a Wednesday, the weeks start on the next Monday.
    sim_weeks = await client.get(
        f"{API}/market/candles/BTC-USD",
        params={"timeframe": "1w", "start": (this_monday - timedelta(days=5)).isoformat()},
        headers=headers,
    )
    assert times_of(sim_weeks.json()) == [this_monday]
    # And for stored bars of the timeframe asked for: from Monday noon, Tuesday's bar first.
    days = await client.get(
        f"{API}/market/candles/ACME",
        params={"timeframe": "1d", "start": (this_monday + timedelta(hours=12)).isoformat()},
        headers=headers,
    )
    assert days.json()["source"] == "stored"
    assert times_of(days.json()) == [this_monday + timedelta(days=n) for n in range(1, 6)]
    # Friday's bar has ended; today's (Saturday's) is still forming.
    assert [c["partial"] for c in days.json()["candles"]] == [False] * 4 + [True]


async def test_the_candles_endpoint_documents_its_window_and_partial_rules(
    client: httpx.AsyncClient,
) -> None:
    document = (await client.get("/openapi.json")).json()
    read = document["paths"][f"{API}/market/candles/{{symbol}}"]["get"]
    start = next(p for p in read["parameters"] if p["name"] == "start")
    assert "opens before `start` is left out" in start["description"]
    assert "a coarse bar whose period begins\nbefore `start` is not included" in read["description"]
    assert "`partial` marks a bar still forming" in read["description"]


async def test_a_timeframe_not_stored_is_built_from_the_finest_stored_one(
    client: httpx.AsyncClient, session: AsyncSession, settings: Settings, database: Database
) -> None:
    headers = await reader(session, settings)
    instrument = await csv_instrument(session)
    hour = datetime(2026, 1, 5, 9, tzinfo=UTC)
    minutes = steady_bars(hour, timedelta(minutes=1), 60, volume=1)
    # 5-minute bars that disagree with the minutes (volume 1000 each): they must not be used.
    fives = steady_bars(hour, timedelta(minutes=5), 12, volume=1000)
    await store(database, instrument, Timeframe.M1, minutes)
    await store(database, instrument, Timeframe.M5, fives)

    hourly = await client.get(
        f"{API}/market/candles/ACME",
        params={"timeframe": "1h", "start": hour.isoformat(), "end": "2026-01-06T00:00:00Z"},
        headers=headers,
    )
    body = hourly.json()
    assert body["source"] == "resampled:1m"
    assert [
        (c["time"], c["open"], c["high"], c["low"], c["close"], c["volume"])
        for c in body["candles"]
    ] == [("2026-01-05T09:00:00Z", "100", "161", "99", "160", "60")]


# -- a fresh `serve`, offline ----------------------------------------------------------------


class NetworkUsed(OSError):
    pass


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[Any]]:
    """No connection leaves the machine: any socket connection to an address that is not the
    loopback (PostgreSQL and Redis of the second test run listen there) is refused, and
    recorded; any HTTP request through httpx's network transports is refused by respx."""
    attempts: list[Any] = []

    def loopback(address: Any) -> bool:
        if isinstance(address, str | bytes):  # a Unix socket
            return True
        host = str(address[0])
        return host in ("localhost", "::1") or host.startswith("127.")

    def guarded(original: Callable[..., Any]) -> Callable[..., Any]:
        def connect(sock: socket.socket, address: Any, *args: Any) -> Any:
            if not loopback(address):
                attempts.append(address)
                raise NetworkUsed(f"network connection to {address!r} in an offline test")
            return original(sock, address, *args)

        return connect

    def create_connection(address: Any, *args: Any, **kwargs: Any) -> socket.socket:
        if not loopback(address):
            attempts.append(address)
            raise NetworkUsed(f"network connection to {address!r} in an offline test")
        return original_create_connection(address, *args, **kwargs)

    original_create_connection = socket.create_connection
    monkeypatch.setattr(socket.socket, "connect", guarded(socket.socket.connect))
    monkeypatch.setattr(socket.socket, "connect_ex", guarded(socket.socket.connect_ex))
    monkeypatch.setattr(socket, "create_connection", create_connection)
    with respx.mock(assert_all_mocked=True, assert_all_called=False):
        yield attempts
    assert attempts == []


@pytest.mark.usefixtures("offline")  # before the app starts: its start-up is offline too
async def test_a_fresh_serve_has_a_live_market_and_its_history_offline(
    client: httpx.AsyncClient,
    session: AsyncSession,
    settings: Settings,
    market_clock: MarketClock,
    offline: list[Any],
) -> None:
    headers = await reader(session, settings)
    listed = await client.get(f"{API}/market/instruments", params={"size": 100}, headers=headers)
    symbols = [item["symbol"] for item in listed.json()["items"]]
    assert sorted(symbols) == sorted(CATALOGUE)

    first = {
        s: (await client.get(f"{API}/market/ticker/{s}", headers=headers)).json() for s in symbols
    }
    # A minute on: a quiet market (an equity on a Saturday) may hold one price for seconds.
    market_clock.advance(timedelta(minutes=1))
    second = {
        s: (await client.get(f"{API}/market/ticker/{s}", headers=headers)).json() for s in symbols
    }
    for symbol in symbols:
        assert first[symbol]["source"] == second[symbol]["source"] == "sim"
        assert first[symbol]["time"] < second[symbol]["time"]
        assert first[symbol]["last"] != second[symbol]["last"], symbol

    now = market_clock.now
    for symbol in symbols:
        daily = await client.get(
            f"{API}/market/candles/{symbol}",
            params={"timeframe": "1d", "start": (now - timedelta(days=366)).isoformat()},
            headers=headers,
        )
        assert daily.json()["source"] == "sim", symbol
        assert len(daily.json()["candles"]) >= 365, symbol
        hourly = await client.get(
            f"{API}/market/candles/{symbol}",
            params={
                "timeframe": "1h",
                "start": (now - timedelta(days=30)).isoformat(),
                "limit": 5000,
            },
            headers=headers,
        )
        assert hourly.json()["source"] == "sim", symbol
        assert len(hourly.json()["candles"]) >= 30 * 24, symbol
    assert offline == []
