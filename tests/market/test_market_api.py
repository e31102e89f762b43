"""Market endpoints end to end on the default sim provider: instruments, candles (produced,
stored, resampled), tickers, crypto listings and their sync."""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from tests.factories import bearer, make_user, sign_in
from tradeos.accounts.models import Role
from tradeos.config import Settings
from tradeos.core.db import Database, strip_trailing_zeros
from tradeos.market import service
from tradeos.market.models import CryptoListing, Instrument
from tradeos.market.providers.base import Bar
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
        ("160", "190", "159", "189.5", "300", True),
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
    client: httpx.AsyncClient, session: AsyncSession, settings: Settings
) -> None:
    headers = await reader(session, settings)
    response = await client.get(f"{API}/market/ticker/ETH-USD", headers=headers)
    assert response.status_code == 200, response.text
    ticker = response.json()
    assert ticker["source"] == "sim"
    last, bid, ask = (Decimal(ticker[k]) for k in ("last", "bid", "ask"))
    assert bid < last < ask
    assert Decimal(ticker["low_24h"]) <= last <= Decimal(ticker["high_24h"])
    assert Decimal(ticker["change_24h"]) == last - Decimal(ticker["open_24h"])


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
