"""The crypto listing endpoints against listings stored in the database: filters, every sort
order, pagination and their limits; one coin with every field as its provider gave it; price
history windows; the top lists; the sync's progress as the job status endpoint shows it. Also
that a listing sync stores the same data only once, and that the CoinGecko and CoinMarketCap
clients the settings make send their API keys."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx
from fastapi import FastAPI
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from tests.conftest import serve_app
from tests.factories import bearer, make_user, sign_in
from tests.market.test_candle_sync import consuming_queue, finished
from tradeos.accounts.models import Role
from tradeos.app import create_app
from tradeos.config import Settings
from tradeos.core.db import Database
from tradeos.core.jobs import RunStatus
from tradeos.core.transactions import flush_after_commit
from tradeos.market import jobs as market_jobs
from tradeos.market import service
from tradeos.market.models import CryptoListing, PriceSnapshot
from tradeos.market.providers import coingecko as cg
from tradeos.market.providers import coinmarketcap as cmc
from tradeos.market.providers.base import Listing
from tradeos.market.providers.registry import make_market_data
from tradeos.market.providers.sim import SimProvider

API = "/api/v1"
RECORDED = Path(__file__).parent / "recorded"
# A moment of the simulated market, the same on every run.
CLOCK = datetime(2026, 11, 20, 12, 34, 56, tzinfo=UTC)
T0 = datetime(2026, 11, 1, tzinfo=UTC)
HOUR = timedelta(hours=1)


@pytest.fixture
def settings(settings_factory: Callable[..., Settings]) -> Settings:
    # No job runs in the app: the listings a test reads are the ones it stored (the first
    # listings sync the app queues at start-up stays queued).
    return settings_factory(jobs_broker="memory", jobs_run_in_serve=False)


async def reader(session: AsyncSession, settings: Settings, **values: Any) -> dict[str, str]:
    user = await make_user(session, **values)
    headers = bearer(await sign_in(session, settings, user))
    await session.commit()
    return headers


# -- stored listings ----------------------------------------------------------------------------

# symbol, name, rank, price, market cap, 24 h volume, 24 h change, categories. Numbers whose
# text order is not their numeric order (9.5 < 10 < 123456.78, -12.5 < -3 < -0.01), and a
# coin listed without any figures yet, which sorts last whatever the order.
COINS: list[tuple[Any, ...]] = [
    ("AAA", "Alpha Coin", 3, "9.5", "950000000", "120000000", "-12.5", ["Layer 1 (L1)", "DeFi"]),
    ("BBB", "Beta Token", 1, "123456.78", "2400000000000", "30000000000", "2", ["Layer 1 (L1)"]),
    ("CCC", "Gamma Cash", 10, "0.00001234", "5000000", "9000000", "10.25", ["Meme"]),
    ("DDD", "Delta Dollar", 2, "1.0001", "110000000000", "55000000000", "-0.01", ["Stablecoins"]),
    ("EEE", "Epsilon", 9, "10", "80000000", "4000000", "-3", ["Layer 1 (L1)"]),
    ("FFF", "Zeta Fresh", None, None, None, None, None, []),
]
FIELD_OF_SORT = {
    "market_cap": "market_cap",
    "volume": "volume_24h",
    "price": "price",
    "change_24h": "change_24h",
    "rank": "rank",
}


def _number(text: str | None) -> Decimal | None:
    return None if text is None else Decimal(text)


async def store_coins(session: AsyncSession) -> None:
    for symbol, name, rank, price, cap, volume, change, categories in COINS:
        session.add(
            CryptoListing(
                symbol=symbol,
                name=name,
                rank=rank,
                price=_number(price),
                market_cap=_number(cap),
                volume_24h=_number(volume),
                change_24h=_number(change),
                categories=categories,
                source="sim",
            )
        )
    await session.commit()


def expected_order(field: str, descending: bool) -> list[str]:
    """Symbols by `field`: numerically, those without a value last, ties by symbol."""
    index = {"rank": 2, "price": 3, "market_cap": 4, "volume_24h": 5, "change_24h": 6}[field]
    valued = [coin for coin in COINS if coin[index] is not None]
    valued.sort(key=lambda coin: coin[0])  # ties by symbol (a stable sort keeps it)
    valued.sort(key=lambda coin: Decimal(coin[index]), reverse=descending)
    return [coin[0] for coin in valued] + [coin[0] for coin in COINS if coin[index] is None]


@pytest.fixture
async def headers(session: AsyncSession, settings: Settings) -> dict[str, str]:
    headers = await reader(session, settings)
    await store_coins(session)
    return headers


async def listed(client: httpx.AsyncClient, headers: dict[str, str], **params: Any) -> Any:
    response = await client.get(f"{API}/cryptocurrencies", params=params, headers=headers)
    assert response.status_code == 200, response.text
    return response.json()


def symbols(page: Any) -> list[str]:
    return [item["symbol"] for item in page["items"]]


def problem_fields(response: httpx.Response) -> list[str]:
    assert response.headers["content-type"] == "application/problem+json", response.text
    return [error["field"] for error in response.json().get("errors", [])]


async def test_the_listings_are_filtered_by_name_symbol_category_and_market_cap(
    client: httpx.AsyncClient, headers: dict[str, str]
) -> None:
    everything = await listed(client, headers)
    # The default order: market cap, largest first, the coin without one last.
    assert symbols(everything) == ["BBB", "DDD", "AAA", "EEE", "CCC", "FFF"]
    assert everything["total"] == 6

    # `search`: part of the name (or symbol), in any case.
    assert symbols(await listed(client, headers, search="TA")) == ["BBB", "DDD", "FFF"]
    assert symbols(await listed(client, headers, search="alpha c")) == ["AAA"]
    assert symbols(await listed(client, headers, search="eee")) == ["EEE"]
    # A LIKE wildcard is a character like any other.
    assert symbols(await listed(client, headers, search="%")) == []
    assert symbols(await listed(client, headers, search="_")) == []

    # `symbol_filter`: part of the symbol only.
    assert symbols(await listed(client, headers, symbol_filter="c")) == ["CCC"]
    assert symbols(await listed(client, headers, symbol_filter="alpha")) == []

    # `category`: one of the coin's categories, whole, in any case.
    layer_one = await listed(client, headers, category="layer 1 (l1)")
    assert symbols(layer_one) == ["BBB", "AAA", "EEE"]
    assert layer_one["total"] == 3
    assert symbols(await listed(client, headers, category="Meme")) == ["CCC"]
    assert symbols(await listed(client, headers, category="Layer")) == []

    # Market cap bounds, both inclusive; a coin without a market cap is in no range.
    ranged = await listed(client, headers, min_market_cap="80000000", max_market_cap="110000000000")
    assert symbols(ranged) == ["DDD", "AAA", "EEE"]
    assert symbols(await listed(client, headers, min_market_cap="1000000000")) == ["BBB", "DDD"]
    assert symbols(await listed(client, headers, max_market_cap="80000000")) == ["EEE", "CCC"]
    # Filters combine.
    both = await listed(client, headers, category="layer 1 (l1)", max_market_cap="1000000000")
    assert symbols(both) == ["AAA", "EEE"]


async def test_a_category_with_non_ascii_letters_or_quotes_is_found_in_any_case(
    client: httpx.AsyncClient, headers: dict[str, str], session: AsyncSession
) -> None:
    # JSON text holds these escaped ("Caf\u00e9", "\"Quoted\""): matched element by element.
    categories = {"GGG": ["Café", 'The "Quoted" One'], "HHH": ["ÉCOLE Ελληνικά"]}
    for symbol, names in categories.items():
        session.add(CryptoListing(symbol=symbol, name=symbol, categories=names, source="sim"))
    await session.commit()

    for spelling in ("Café", "café", "CAFÉ", " café "):
        assert symbols(await listed(client, headers, category=spelling)) == ["GGG"], spelling
    assert symbols(await listed(client, headers, category="école ελληνικά")) == ["HHH"]
    assert symbols(await listed(client, headers, category='the "quoted" one')) == ["GGG"]
    assert symbols(await listed(client, headers, category="Caf")) == []
    assert symbols(await listed(client, headers, category="Cafe")) == []


async def test_the_list_with_a_trailing_slash_redirects_with_its_query(
    client: httpx.AsyncClient, headers: dict[str, str]
) -> None:
    response = await client.get(
        f"{API}/cryptocurrencies/", params={"symbol_filter": "c"}, headers=headers
    )
    assert response.status_code == 307
    assert response.headers["location"].endswith("/api/v1/cryptocurrencies?symbol_filter=c")
    followed = await client.get(
        f"{API}/cryptocurrencies/",
        params={"symbol_filter": "c"},
        headers=headers,
        follow_redirects=True,
    )
    assert symbols(followed.json()) == ["CCC"]


async def test_a_market_cap_range_that_is_empty_is_refused_naming_the_field(
    client: httpx.AsyncClient, headers: dict[str, str]
) -> None:
    response = await client.get(
        f"{API}/cryptocurrencies",
        params={"min_market_cap": "1000", "max_market_cap": "999.99"},
        headers=headers,
    )
    assert response.status_code == 422, response.text
    assert problem_fields(response) == ["query.min_market_cap"]
    body = response.json()
    assert body["status"] == 422
    assert "max_market_cap" in body["detail"] or "max_market_cap" in str(body["errors"])

    negative = await client.get(
        f"{API}/cryptocurrencies", params={"min_market_cap": "-1"}, headers=headers
    )
    assert negative.status_code == 422
    assert problem_fields(negative) == ["query.min_market_cap"]


@pytest.mark.parametrize("order", ["asc", "desc"])
@pytest.mark.parametrize("sort_by", ["market_cap", "volume", "price", "change_24h", "rank"])
async def test_every_sort_order_sorts_numerically_with_missing_values_last(
    client: httpx.AsyncClient, headers: dict[str, str], sort_by: str, order: str
) -> None:
    page = await listed(client, headers, sort_by=sort_by, order=order)
    field = FIELD_OF_SORT[sort_by]
    assert symbols(page) == expected_order(field, descending=order == "desc")
    values = [item[field] for item in page["items"] if item[field] is not None]
    numbers = [Decimal(str(value)) for value in values]
    assert numbers == sorted(numbers, reverse=order == "desc")


async def test_an_unknown_sort_or_order_is_refused(
    client: httpx.AsyncClient, headers: dict[str, str]
) -> None:
    for params, field in (({"sort_by": "name"}, "query.sort_by"), ({"order": "up"}, "query.order")):
        response = await client.get(f"{API}/cryptocurrencies", params=params, headers=headers)
        assert response.status_code == 422, response.text
        assert problem_fields(response) == [field]


async def test_the_listings_are_paginated(
    client: httpx.AsyncClient, headers: dict[str, str]
) -> None:
    by_rank = expected_order("rank", descending=False)
    assert by_rank == ["BBB", "DDD", "AAA", "EEE", "CCC", "FFF"]
    pages = [
        await listed(client, headers, sort_by="rank", order="asc", size=4, page=n) for n in (1, 2)
    ]
    assert [symbols(page) for page in pages] == [by_rank[:4], by_rank[4:]]
    for number, page in enumerate(pages, start=1):
        assert (page["total"], page["page"], page["size"], page["pages"]) == (6, number, 4, 2)
    beyond = await listed(client, headers, sort_by="rank", order="asc", size=4, page=3)
    assert (symbols(beyond), beyond["total"], beyond["pages"]) == ([], 6, 2)
    # Totals and pages count what the filters kept.
    filtered = await listed(client, headers, category="layer 1 (l1)", size=2, page=2)
    assert (symbols(filtered), filtered["total"], filtered["pages"]) == (["EEE"], 3, 2)
    hundred = await listed(client, headers, size=100)
    assert (len(hundred["items"]), hundred["size"], hundred["pages"]) == (6, 100, 1)


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"size": 101}, "query.size"),
        ({"size": 0}, "query.size"),
        ({"page": 0}, "query.page"),
    ],
)
async def test_a_page_size_over_100_is_refused(
    client: httpx.AsyncClient, headers: dict[str, str], params: dict[str, Any], field: str
) -> None:
    response = await client.get(f"{API}/cryptocurrencies", params=params, headers=headers)
    assert response.status_code == 422, response.text
    assert problem_fields(response) == [field]


# -- one coin --------------------------------------------------------------------------------


def assert_shown_as_provided(shown: dict[str, Any], listing: Listing, source: str) -> None:
    """Every field of the API's coin is the provider's value (numbers compared exactly)."""
    decimals = (
        "price",
        "market_cap",
        "volume_24h",
        "change_1h",
        "change_24h",
        "change_7d",
        "circulating_supply",
        "total_supply",
        "max_supply",
        "ath",
        "atl",
    )
    moments = ("ath_date", "atl_date", "last_updated")
    for name in decimals:
        given = getattr(listing, name)
        assert (name, None if shown[name] is None else Decimal(shown[name])) == (name, given)
        assert shown[name] is None or isinstance(shown[name], str)  # exact: JSON strings
    for name in moments:
        given = getattr(listing, name)
        assert (name, None if shown[name] is None else datetime.fromisoformat(shown[name])) == (
            name,
            given,
        )
    for name in ("symbol", "name", "rank", "description", "website", "image_url"):
        assert (name, shown[name]) == (name, getattr(listing, name))
    assert shown["categories"] == list(listing.categories)
    assert shown["source"] == source
    others = ("symbol", "name", "rank", "description", "website", "image_url", "categories")
    assert set(shown) == {*decimals, *moments, *others, "source"}


async def test_a_coin_shows_every_field_the_simulated_provider_produced(
    client: httpx.AsyncClient, session: AsyncSession, settings: Settings
) -> None:
    headers = await reader(session, settings)
    provided = await SimProvider(seed=settings.sim_seed, clock=lambda: CLOCK).listings(10)
    assert {listing.symbol for listing in provided} == {"BTC", "ETH", "SOL", "BNB"}
    assert [listing.rank for listing in provided] == [1, 2, 3, 4]
    await service.upsert_listings(session, provided, "sim", snapshot_at=CLOCK)
    await session.commit()

    for listing in provided:
        response = await client.get(f"{API}/cryptocurrencies/{listing.symbol}", headers=headers)
        assert response.status_code == 200, response.text
        assert_shown_as_provided(response.json(), listing, "sim")
    eth = next(listing for listing in provided if listing.symbol == "ETH")
    assert eth.max_supply is None and eth.ath is not None and eth.ath_date is not None
    # Other spellings of the coin.
    for spelling in ("eth", "ETH-USD", "eth-usd"):
        again = await client.get(f"{API}/cryptocurrencies/{spelling}", headers=headers)
        assert again.status_code == 200, again.text
        assert again.json()["symbol"] == "ETH"


async def test_a_coin_shows_every_field_a_full_provider_listing_has(
    client: httpx.AsyncClient, session: AsyncSession, settings: Settings
) -> None:
    # The simulated market has no logos: a listing as CoinGecko gives it, every field set.
    listing = Listing(
        symbol="ATOM",
        name="Cosmos Hub",
        rank=27,
        price=Decimal("8.123456789"),
        market_cap=Decimal("3172945123.45"),
        volume_24h=Decimal("145678901.23"),
        change_1h=Decimal("-0.1234"),
        change_24h=Decimal("3.4567"),
        change_7d=Decimal("-12.3456"),
        circulating_supply=Decimal("390934204.525"),
        total_supply=Decimal("390934204.525"),
        max_supply=Decimal("1000000000"),
        ath=Decimal("44.45"),
        ath_date=datetime(2022, 1, 17, 0, 34, 41, 497000, tzinfo=UTC),
        atl=Decimal("1.16"),
        atl_date=datetime(2020, 3, 13, 2, 27, 44, 591000, tzinfo=UTC),
        categories=("Cosmos Ecosystem", "Layer 0 (L0)"),
        description="The hub of the Cosmos network of blockchains.",
        website="https://cosmos.network",
        image_url="https://coin-images.coingecko.com/coins/images/1481/large/cosmos_hub.png",
        last_updated=datetime(2026, 11, 20, 12, 30, 1, 123000, tzinfo=UTC),
        source_id="cosmos",
    )
    headers = await reader(session, settings)
    await service.upsert_listings(session, [listing], "coingecko", snapshot_at=CLOCK)
    await session.commit()

    response = await client.get(f"{API}/cryptocurrencies/atom", headers=headers)
    assert response.status_code == 200, response.text
    assert_shown_as_provided(response.json(), listing, "coingecko")


async def test_an_unknown_coin_is_a_404_problem(
    client: httpx.AsyncClient, headers: dict[str, str]
) -> None:
    for path in ("/cryptocurrencies/NOPE", "/cryptocurrencies/NOPE/history"):
        response = await client.get(f"{API}{path}", headers=headers)
        assert response.status_code == 404, response.text
        assert response.headers["content-type"] == "application/problem+json"
        body = response.json()
        assert body["status"] == 404
        assert "'NOPE'" in body["detail"]


async def test_storing_the_same_provider_data_twice_changes_nothing(
    session: AsyncSession, database: Database
) -> None:
    provided = await SimProvider(clock=lambda: CLOCK).listings(10)
    first = await service.upsert_listings(session, provided, "sim", snapshot_at=CLOCK)
    await session.commit()
    assert first == (4, 4)  # four coins, a price snapshot each

    async with database.session() as again:
        assert await service.upsert_listings(again, provided, "sim", snapshot_at=CLOCK) == (0, 0)

    # A minute later the market moved: every coin changes, each with a new snapshot.
    later = await SimProvider(clock=lambda: CLOCK + timedelta(minutes=1)).listings(10)
    async with database.session() as moved:
        assert await service.upsert_listings(moved, later, "sim", snapshot_at=CLOCK) == (4, 4)
    # Only one coin differs: only it changes.
    btc = next(listing for listing in later if listing.symbol == "BTC")
    edited = [replace(btc, website="https://bitcoin.example")] + [
        listing for listing in later if listing.symbol != "BTC"
    ]
    async with database.session() as one:
        assert await service.upsert_listings(one, edited, "sim", snapshot_at=CLOCK) == (1, 0)
    async with database.session(write=False) as check:
        assert await check.scalar(select(func.count()).select_from(CryptoListing)) == 4
        assert await check.scalar(select(func.count()).select_from(PriceSnapshot)) == 8


# -- price history ---------------------------------------------------------------------------


@pytest.fixture
async def history(session: AsyncSession) -> list[datetime]:
    """BBB's hourly snapshots from T0, ten of them; AAA has one of its own."""
    await store_coins(session)
    ids = dict((await session.execute(select(CryptoListing.symbol, CryptoListing.id))).all())
    times = [T0 + n * HOUR for n in range(10)]
    for n, time in enumerate(times):
        session.add(
            PriceSnapshot(
                listing_id=ids["BBB"],
                time=time,
                price=Decimal("100000.5") + n,
                market_cap=Decimal("2000000000000") + n,
                volume=Decimal("30000000000.25") if n % 2 else None,
            )
        )
    session.add(PriceSnapshot(listing_id=ids["AAA"], time=T0 + 3 * HOUR, price=Decimal("9")))
    await session.commit()
    return times


async def history_of(
    client: httpx.AsyncClient, headers: dict[str, str], symbol: str, **params: Any
) -> list[datetime]:
    response = await client.get(
        f"{API}/cryptocurrencies/{symbol}/history", params=params, headers=headers
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["symbol"] == symbol.upper()
    return [datetime.fromisoformat(item["time"]) for item in body["history"]]


async def test_price_history_windows_and_limits(
    client: httpx.AsyncClient,
    session: AsyncSession,
    settings: Settings,
    history: list[datetime],
) -> None:
    headers = await reader(session, settings)
    # Everything, oldest first; each snapshot as stored.
    response = await client.get(f"{API}/cryptocurrencies/BBB/history", headers=headers)
    assert response.status_code == 200, response.text
    snapshots = response.json()["history"]
    assert [datetime.fromisoformat(item["time"]) for item in snapshots] == history
    assert snapshots[3] == {
        "time": snapshots[3]["time"],
        "price": "100003.5",
        "market_cap": "2000000000003",
        "volume": "30000000000.25",
    }
    assert snapshots[2]["volume"] is None
    # [start, end): start inclusive, end exclusive.
    window = {"start": history[2].isoformat(), "end": history[6].isoformat()}
    assert await history_of(client, headers, "BBB", **window) == history[2:6]
    assert await history_of(client, headers, "bbb", start=history[8].isoformat()) == history[8:]
    assert await history_of(client, headers, "BBB", end=history[1].isoformat()) == history[:1]
    # `limit`: the newest that many in the window, oldest first.
    assert await history_of(client, headers, "BBB", limit=3) == history[7:]
    assert await history_of(client, headers, "BBB", limit=2, **window) == history[4:6]
    assert await history_of(client, headers, "BBB", limit=5000) == history
    # An empty window, and another coin's history.
    assert await history_of(client, headers, "BBB", end=T0.isoformat()) == []
    assert await history_of(client, headers, "AAA") == [T0 + 3 * HOUR]
    assert await history_of(client, headers, "CCC") == []


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"start": "2026-11-01T05:00:00Z", "end": "2026-11-01T04:00:00Z"}, "query.start"),
        ({"start": "2026-11-01T05:00:00Z", "end": "2026-11-01T05:00:00Z"}, "query.start"),
        ({"limit": 5001}, "query.limit"),
        ({"limit": 0}, "query.limit"),
        ({"start": "yesterday"}, "query.start"),
    ],
)
async def test_a_bad_history_request_is_refused_naming_the_field(
    client: httpx.AsyncClient,
    session: AsyncSession,
    settings: Settings,
    history: list[datetime],
    params: dict[str, Any],
    field: str,
) -> None:
    headers = await reader(session, settings)
    response = await client.get(
        f"{API}/cryptocurrencies/BBB/history", params=params, headers=headers
    )
    assert response.status_code == 422, response.text
    assert problem_fields(response) == [field]


# -- top lists -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("category", "expected"),
    [
        # 24 h change, largest first.
        ("gainers", ["CCC", "BBB", "DDD", "EEE", "AAA"]),
        # 24 h change, smallest first.
        ("losers", ["AAA", "EEE", "DDD", "BBB", "CCC"]),
        # 24 h volume, largest first.
        ("volume", ["DDD", "BBB", "AAA", "CCC", "EEE"]),
        ("market_cap", ["BBB", "DDD", "AAA", "EEE", "CCC"]),
        # 24 h volume per market cap, largest first: CCC 1.8, DDD 0.5, AAA 0.126, EEE 0.05,
        # BBB 0.0125.
        ("trending", ["CCC", "DDD", "AAA", "EEE", "BBB"]),
    ],
)
async def test_each_top_list_is_in_its_order(
    client: httpx.AsyncClient, headers: dict[str, str], category: str, expected: list[str]
) -> None:
    response = await client.get(f"{API}/cryptocurrencies/top/{category}", headers=headers)
    assert response.status_code == 200, response.text
    # The coin without figures is in none of them.
    assert [item["symbol"] for item in response.json()] == expected
    limited = await client.get(
        f"{API}/cryptocurrencies/top/{category}", params={"limit": 2}, headers=headers
    )
    assert [item["symbol"] for item in limited.json()] == expected[:2]


@pytest.mark.parametrize(
    ("path", "params", "field"),
    [
        ("/cryptocurrencies/top/newest", {}, "path.category"),
        ("/cryptocurrencies/top/gainers", {"limit": 101}, "query.limit"),
        ("/cryptocurrencies/top/gainers", {"limit": 0}, "query.limit"),
    ],
)
async def test_a_bad_top_request_is_refused(
    client: httpx.AsyncClient,
    headers: dict[str, str],
    path: str,
    params: dict[str, Any],
    field: str,
) -> None:
    response = await client.get(f"{API}{path}", params=params, headers=headers)
    assert response.status_code == 422, response.text
    assert problem_fields(response) == [field]


# -- the sync on demand ----------------------------------------------------------------------


@pytest.fixture
async def running_app(
    settings_factory: Callable[..., Settings], database: Database
) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    # Jobs run in the app, on whichever broker the suite uses.
    app = create_app(settings_factory(jobs_run_in_serve=True), configure_logs=False)
    async with serve_app(app) as client:
        yield app, client


async def test_the_sync_job_reports_its_progress_through_the_job_status(
    running_app: tuple[FastAPI, httpx.AsyncClient], database: Database
) -> None:
    app, client = running_app
    async with database.session() as session:
        admin = await make_user(session, role=Role.ADMIN.value)
        headers = bearer(await sign_in(session, app.state.settings, admin))
    # The first sync the app queued at start-up runs before ours.
    async with asyncio.timeout(30):
        while True:
            shown = await client.get(f"{API}/cryptocurrencies", headers=headers)
            if shown.json()["items"]:
                break
            await asyncio.sleep(0.1)

    async with app.state.events.subscribe(f"user:{admin.id}:jobs") as events:
        accepted = await client.post(
            f"{API}/cryptocurrencies/sync", json={"limit": 3, "provider": "sim"}, headers=headers
        )
        assert accepted.status_code == 202, accepted.text
        job_id = accepted.json()["job_id"]
        seen = []
        async with asyncio.timeout(30):
            while True:
                event = await events.get()
                assert event is not None
                if event.payload["id"] != job_id:
                    continue
                if event.payload.get("progress_message"):
                    seen.append((event.payload["progress"], event.payload["progress_message"]))
                if event.payload["status"] in ("succeeded", "failed"):
                    break
    assert seen == [(10, "fetching the top 3"), (60, "storing 3 listings from sim")]

    status = await client.get(f"{API}/admin/jobs/{job_id}", headers=headers)
    assert status.status_code == 200, status.text
    run = status.json()
    assert (run["id"], run["name"], run["status"]) == (job_id, "market.sync_listings", "succeeded")
    assert run["progress"] == 100
    assert run["progress_message"] == "storing 3 listings from sim"
    assert run["finished_at"] is not None
    result = json.loads(run["result_summary"])
    assert (result["source"], result["fetched"]) == ("sim", 3)


# -- provider API keys from the settings -----------------------------------------------------


def recorded(name: str) -> httpx.Response:
    return httpx.Response(
        200,
        content=(RECORDED / name).read_bytes(),
        headers={"Content-Type": "application/json; charset=utf-8"},
    )


@pytest.fixture
def api() -> Any:
    with respx.mock(assert_all_called=False) as router:
        yield router


CG_KEY = "CG-s3ttingsK3yFr0mEnv1234"
CMC_KEY = "0f1e2d3c-4b5a-6978-8a9b-cdef01234567"


@pytest.mark.parametrize(
    ("options", "url", "header", "key"),
    [
        (
            {"coingecko_api_key": CG_KEY},
            f"{cg.PUBLIC_BASE_URL}/coins/markets",
            "x-cg-demo-api-key",
            CG_KEY,
        ),
        (
            {"coingecko_api_key": CG_KEY, "coingecko_pro": True},
            f"{cg.PRO_BASE_URL}/coins/markets",
            "x-cg-pro-api-key",
            CG_KEY,
        ),
    ],
)
async def test_the_coingecko_client_takes_its_key_from_the_settings(
    api: respx.MockRouter,
    settings_factory: Callable[..., Settings],
    options: dict[str, Any],
    url: str,
    header: str,
    key: str,
) -> None:
    route = api.get(url).mock(return_value=recorded("coingecko_markets.json"))
    settings = settings_factory(listings_provider="coingecko", **options)
    market = make_market_data(settings)
    try:
        source, listings = await market.listings.fetch(5)
    finally:
        await market.aclose()
    assert (source, [listing.symbol for listing in listings][:2]) == ("coingecko", ["BTC", "ETH"])
    request = route.calls.last.request
    assert request.headers[header] == key
    assert key not in str(request.url)


async def test_the_coinmarketcap_client_takes_its_key_from_the_settings(
    api: respx.MockRouter, settings_factory: Callable[..., Settings]
) -> None:
    route = api.get(f"{cmc.BASE_URL}/v1/cryptocurrency/listings/latest").mock(
        return_value=recorded("cmc_listings_latest.json")
    )
    settings = settings_factory(listings_provider="coinmarketcap", coinmarketcap_api_key=CMC_KEY)
    market = make_market_data(settings)
    try:
        source, listings = await market.listings.fetch(5)
    finally:
        await market.aclose()
    assert (source, len(listings)) == ("coinmarketcap", 5)
    request = route.calls.last.request
    assert request.headers["X-CMC_PRO_API_KEY"] == CMC_KEY
    assert CMC_KEY not in str(request.url)


async def test_a_worker_s_listing_sync_sends_the_configured_coingecko_key(
    api: respx.MockRouter, settings_factory: Callable[..., Settings], database: Database
) -> None:
    # As `tradeos worker` runs it: the job makes its providers from the settings.
    route = api.get(f"{cg.PUBLIC_BASE_URL}/coins/markets").mock(
        return_value=recorded("coingecko_markets.json")
    )
    settings = settings_factory(
        jobs_broker="memory",
        listings_provider="coingecko",
        coingecko_api_key=CG_KEY,
        listings_sync_top=5,
    )
    jobs = await consuming_queue(settings, database)
    try:
        run = await finished(jobs, market_jobs.sync_top_listings)
    finally:
        await flush_after_commit()
        await jobs.aclose()
        await jobs.cache.aclose()
    assert run.status == RunStatus.SUCCEEDED, run.error
    assert route.call_count == 1
    request = route.calls.last.request
    assert request.headers["x-cg-demo-api-key"] == CG_KEY
    assert request.url.params["per_page"] == "5"
    async with database.session(write=False) as session:
        stored = (await session.execute(select(CryptoListing.symbol, CryptoListing.source))).all()
    assert sorted(stored) == sorted(
        (symbol, "coingecko") for symbol in ("BTC", "ETH", "USDT", "BNB", "SOL")
    )
