"""The CoinGecko and CoinMarketCap listing clients, against recorded responses (no network).

Every HTTP call goes through respx's mocked transport; the recorded JSON lives in
tests/market/recorded/ and is served byte for byte, so numbers reach the client exactly as the
providers write them. Time is fake: backoffs and rate-limit waits are recorded, not slept.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx

from tests.conftest import CapturedLogs
from tradeos import __version__
from tradeos.market.providers import coingecko as cg
from tradeos.market.providers import coinmarketcap as cmc
from tradeos.market.providers.base import (
    Bar,
    Listing,
    ListingsProvider,
    ProviderError,
    UnknownSymbol,
)
from tradeos.market.providers.coingecko import CoinGeckoClient, PriceSnapshot
from tradeos.market.providers.coinmarketcap import CoinInfo, CoinMarketCapClient
from tradeos.market.providers.http import (
    ApiKeyRefused,
    MalformedResponse,
    ProviderUnavailable,
    RateLimited,
    RateLimiter,
    RequestRejected,
    equal_jitter,
    parse_retry_after,
    to_decimal,
)

RECORDED = Path(__file__).parent / "recorded"
CG = cg.PUBLIC_BASE_URL
CG_PRO = cg.PRO_BASE_URL
CMC = cmc.BASE_URL
CG_KEY = "CG-dEm0kEy7xQ2vN9sLpR4tW8yZ"
CMC_KEY = "b54bcf4d-1bca-4e8e-9a24-22ff2c3d462c"
JSON = {"Content-Type": "application/json; charset=utf-8"}


def recorded(name: str) -> httpx.Response:
    """A 200 answer whose body is the recorded file, byte for byte."""
    return httpx.Response(200, content=(RECORDED / name).read_bytes(), headers=JSON)


def utc(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0
) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


class FakeTime:
    """A monotonic clock that only moves when someone sleeps; every sleep is recorded."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
        await asyncio.sleep(0)  # let other tasks run, as a real sleep would


def no_jitter(delay: float) -> float:
    return delay


@pytest.fixture
def fake_time() -> FakeTime:
    return FakeTime()


@pytest.fixture
def api() -> Iterator[respx.MockRouter]:
    with respx.mock(assert_all_called=False) as router:
        yield router


@pytest.fixture
def gecko(fake_time: FakeTime) -> Callable[..., CoinGeckoClient]:
    def make(api_key: str | None = CG_KEY, **options: Any) -> CoinGeckoClient:
        options.setdefault("sleep", fake_time.sleep)
        options.setdefault("clock", fake_time.clock)
        options.setdefault("jitter", no_jitter)
        return CoinGeckoClient(api_key, **options)

    return make


@pytest.fixture
def cmc_client(fake_time: FakeTime) -> Callable[..., CoinMarketCapClient]:
    def make(api_key: str = CMC_KEY, **options: Any) -> CoinMarketCapClient:
        options.setdefault("sleep", fake_time.sleep)
        options.setdefault("clock", fake_time.clock)
        options.setdefault("jitter", no_jitter)
        return CoinMarketCapClient(api_key, **options)

    return make


def market_row(rank: int) -> dict[str, Any]:
    """A minimal /coins/markets row for pagination tests."""
    return {
        "id": f"coin-{rank}",
        "symbol": f"c{rank}",
        "name": f"Coin {rank}",
        "current_price": 1.5,
        "market_cap": 1_000_000_000 - rank,
        "market_cap_rank": rank,
        "total_volume": 1000,
        "last_updated": "2024-04-30T09:21:16.482Z",
    }


def pages_of(rows: list[dict[str, Any]]) -> Callable[[httpx.Request], httpx.Response]:
    """A /coins/markets handler that pages through `rows` like CoinGecko does."""

    def handler(request: httpx.Request) -> httpx.Response:
        per_page = int(request.url.params["per_page"])
        page = int(request.url.params["page"])
        return httpx.Response(200, json=rows[(page - 1) * per_page : page * per_page])

    return handler


# --- CoinGecko: listings --------------------------------------------------------------------


async def test_coingecko_listings_map_every_field(
    api: respx.MockRouter, gecko: Callable[..., CoinGeckoClient]
) -> None:
    route = api.get(f"{CG}/coins/markets").mock(return_value=recorded("coingecko_markets.json"))
    async with gecko() as client:
        listings = await client.listings(5)

    assert route.call_count == 1
    assert dict(route.calls.last.request.url.params) == {
        "vs_currency": "usd",
        "order": "market_cap_desc",
        "per_page": "5",
        "page": "1",
        "price_change_percentage": "1h,24h,7d",
    }
    assert [listing.symbol for listing in listings] == ["BTC", "ETH", "USDT", "BNB", "SOL"]
    assert listings[0] == Listing(
        symbol="BTC",
        name="Bitcoin",
        rank=1,
        price=Decimal("67321.12"),
        market_cap=Decimal("1325472386417"),
        volume_24h=Decimal("28531675226"),
        change_1h=Decimal("0.1234573410842951"),
        change_24h=Decimal("1.2291401234567"),
        change_7d=Decimal("-3.9501234020193474"),
        circulating_supply=Decimal("19688406.0"),
        total_supply=Decimal("21000000.0"),
        max_supply=Decimal("21000000.0"),
        ath=Decimal("73738"),
        ath_date=datetime(2024, 3, 14, 7, 10, 36, 635000, tzinfo=UTC),
        atl=Decimal("67.81"),
        atl_date=utc(2013, 7, 6),
        categories=(),
        description=None,
        website=None,
        image_url="https://coin-images.coingecko.com/coins/images/1/large/bitcoin.png?1696501400",
        last_updated=datetime(2024, 4, 30, 9, 21, 16, 482000, tzinfo=UTC),
        source_id="bitcoin",
    )
    eth, usdt, _, sol = listings[1:]
    assert eth.max_supply is None  # null in the answer
    assert eth.circulating_supply == Decimal("120112963.214315")
    assert usdt.price == Decimal("1.0")
    assert usdt.change_24h == Decimal("-0.0217944505219637")
    assert sol.change_1h is None
    assert sol.source_id == "solana"
    for listing in listings:
        assert isinstance(listing.price, Decimal)
        assert listing.last_updated is not None
        assert listing.last_updated.utcoffset() == timedelta(0)


async def test_coingecko_listings_paginate_in_even_pages(
    api: respx.MockRouter, gecko: Callable[..., CoinGeckoClient]
) -> None:
    route = api.get(f"{CG}/coins/markets").mock(
        side_effect=pages_of([market_row(rank) for rank in range(1, 701)])
    )
    async with gecko() as client:
        listings = await client.listings(600)

    assert [(call.request.url.params["page"], call.request.url.params["per_page"]) for call in
            route.calls] == [("1", "200"), ("2", "200"), ("3", "200")]  # fmt: skip
    assert [listing.rank for listing in listings] == list(range(1, 601))
    assert listings[-1].symbol == "C600"


async def test_coingecko_listings_stop_at_a_short_page(
    api: respx.MockRouter, gecko: Callable[..., CoinGeckoClient]
) -> None:
    route = api.get(f"{CG}/coins/markets").mock(
        side_effect=pages_of([market_row(rank) for rank in range(1, 261)])
    )
    async with gecko() as client:
        listings = await client.listings(1000)

    assert route.call_count == 2  # page 2 had 10 coins: there is no page 3
    assert len(listings) == 260


async def test_coingecko_listings_count_a_coin_once_when_ranks_shift_between_pages(
    api: respx.MockRouter, gecko: Callable[..., CoinGeckoClient]
) -> None:
    first = [market_row(rank) for rank in range(1, 251)]
    # Between the two requests coin 250 fell one place: page 2 starts with it again.
    second = [market_row(250), *(market_row(rank) for rank in range(251, 500))]
    api.get(f"{CG}/coins/markets", params={"page": "1"}).respond(json=first)
    api.get(f"{CG}/coins/markets", params={"page": "2"}).respond(json=second)
    async with gecko() as client:
        listings = await client.listings(500)

    ids = [listing.source_id for listing in listings]
    assert len(ids) == len(set(ids)) == 499


async def test_coingecko_listings_of_zero_coins_ask_nothing(
    api: respx.MockRouter, gecko: Callable[..., CoinGeckoClient]
) -> None:
    route = api.get(f"{CG}/coins/markets")
    async with gecko() as client:
        assert await client.listings(0) == []
        with pytest.raises(ValueError, match="limit"):
            await client.listings(-1)
    assert route.call_count == 0


# --- CoinGecko: keys and headers ----------------------------------------------------------


async def test_coingecko_demo_key_goes_in_its_header(
    api: respx.MockRouter, gecko: Callable[..., CoinGeckoClient]
) -> None:
    route = api.get(f"{CG}/coins/markets").mock(return_value=recorded("coingecko_markets.json"))
    async with gecko(CG_KEY) as client:
        await client.listings(5)

    request = route.calls.last.request
    assert request.headers["x-cg-demo-api-key"] == CG_KEY
    assert "x-cg-pro-api-key" not in request.headers
    assert CG_KEY not in str(request.url)  # headers only, never the query string
    assert request.headers["user-agent"] == f"TradeOS/{__version__}"
    assert request.headers["accept"] == "application/json"
    assert request.extensions["timeout"] == {
        "connect": 5.0,
        "read": 15.0,
        "write": 15.0,
        "pool": 15.0,
    }


async def test_coingecko_without_a_key_sends_no_key_header(
    api: respx.MockRouter, gecko: Callable[..., CoinGeckoClient]
) -> None:
    route = api.get(f"{CG}/coins/markets").mock(return_value=recorded("coingecko_markets.json"))
    async with gecko(None) as client:
        await client.listings(5)

    headers = route.calls.last.request.headers
    assert "x-cg-demo-api-key" not in headers
    assert "x-cg-pro-api-key" not in headers


async def test_coingecko_pro_key_uses_the_pro_api(
    api: respx.MockRouter, gecko: Callable[..., CoinGeckoClient]
) -> None:
    route = api.get(f"{CG_PRO}/coins/markets").mock(return_value=recorded("coingecko_markets.json"))
    async with gecko(CG_KEY, pro=True) as client:
        await client.listings(5)

    headers = route.calls.last.request.headers
    assert headers["x-cg-pro-api-key"] == CG_KEY
    assert "x-cg-demo-api-key" not in headers
    with pytest.raises(ValueError, match="Pro API needs an API key"):
        CoinGeckoClient(None, pro=True)


async def test_an_injected_http_client_is_used_and_left_open(
    api: respx.MockRouter, gecko: Callable[..., CoinGeckoClient]
) -> None:
    route = api.get(f"{CG}/coins/markets").mock(return_value=recorded("coingecko_markets.json"))
    async with httpx.AsyncClient() as http_client:
        async with gecko(client=http_client) as client:
            await client.listings(5)
        assert not http_client.is_closed
    assert route.calls.last.request.headers["x-cg-demo-api-key"] == CG_KEY


async def test_the_clients_are_listings_providers_and_hide_their_keys() -> None:
    async with CoinGeckoClient(CG_KEY) as gecko_client, CoinMarketCapClient(CMC_KEY) as cmc_client:
        check_provider_reprs(gecko_client, cmc_client)


def check_provider_reprs(gecko_client: CoinGeckoClient, cmc_client: CoinMarketCapClient) -> None:
    assert isinstance(gecko_client, ListingsProvider)
    assert isinstance(cmc_client, ListingsProvider)
    assert gecko_client.name == "coingecko"
    assert cmc_client.name == "coinmarketcap"
    for client in (gecko_client, cmc_client, gecko_client._http, cmc_client._http):
        assert CG_KEY not in repr(client)
        assert CMC_KEY not in repr(client)
    assert "key=set" in repr(gecko_client)


# --- CoinGecko: coin details, history, OHLC -----------------------------------------------


async def test_coingecko_coin_merges_details_into_a_listing(
    api: respx.MockRouter, gecko: Callable[..., CoinGeckoClient]
) -> None:
    route = api.get(f"{CG}/coins/bitcoin").mock(
        return_value=recorded("coingecko_coin_bitcoin.json")
    )
    async with gecko() as client:
        bitcoin = await client.coin("bitcoin")

    assert dict(route.calls.last.request.url.params) == {
        "localization": "false",
        "tickers": "false",
        "market_data": "true",
        "community_data": "false",
        "developer_data": "false",
        "sparkline": "false",
    }
    assert bitcoin.symbol == "BTC"
    assert bitcoin.name == "Bitcoin"
    assert bitcoin.source_id == "bitcoin"
    assert bitcoin.rank == 1
    # USD, not the other currencies of the answer
    assert bitcoin.price == Decimal("67321.12")
    assert bitcoin.market_cap == Decimal("1325472386417")
    assert bitcoin.volume_24h == Decimal("28531675226")
    assert bitcoin.change_1h == Decimal("0.12346")
    assert bitcoin.change_24h == Decimal("1.22914")
    assert bitcoin.change_7d == Decimal("-3.95012")
    assert bitcoin.ath == Decimal("73738")
    assert bitcoin.ath_date == datetime(2024, 3, 14, 7, 10, 36, 635000, tzinfo=UTC)
    assert bitcoin.atl == Decimal("67.81")
    assert bitcoin.atl_date == utc(2013, 7, 6)
    assert bitcoin.circulating_supply == Decimal("19688406.0")
    assert bitcoin.total_supply == Decimal("21000000.0")
    assert bitcoin.max_supply == Decimal("21000000.0")
    assert bitcoin.last_updated == datetime(2024, 4, 30, 9, 21, 16, 482000, tzinfo=UTC)
    # the details
    assert bitcoin.categories == (
        "Cryptocurrency",
        "Layer 1 (L1)",
        "Proof of Work (PoW)",
        "FTX Holdings",
    )
    assert bitcoin.website == "http://www.bitcoin.org"
    assert bitcoin.image_url == (
        "https://coin-images.coingecko.com/coins/images/1/large/bitcoin.png?1696501400"
    )
    description = bitcoin.description
    assert description is not None
    assert description.startswith("Bitcoin is the first successful internet money")
    assert "<a" not in description
    assert "\r" not in description
    assert "Bitcoin uses the SHA-256 hashing algorithm" in description
    assert description.endswith("Primecoin, and so on & so forth.")


async def test_coingecko_unknown_coin_id_is_an_unknown_symbol(
    api: respx.MockRouter, gecko: Callable[..., CoinGeckoClient]
) -> None:
    route = api.get(f"{CG}/coins/not-a-coin").respond(404, json={"error": "coin not found"})
    async with gecko() as client:
        with pytest.raises(UnknownSymbol, match="not-a-coin"):
            await client.coin("not-a-coin")
    assert route.call_count == 1  # a 404 is not retried


async def test_coingecko_coin_id_cannot_escape_its_path(
    api: respx.MockRouter, gecko: Callable[..., CoinGeckoClient]
) -> None:
    route = api.get(url__regex=r".*").respond(404, json={"error": "coin not found"})
    async with gecko() as client:
        with pytest.raises(UnknownSymbol):
            await client.coin("../simple/price?ids=x")
        with pytest.raises(ValueError, match="coin_id"):
            await client.coin(" ")
    assert route.calls.last.request.url.raw_path.startswith(b"/api/v3/coins/..%2Fsimple%2Fprice")


async def test_coingecko_price_history_is_a_list_of_snapshots(
    api: respx.MockRouter, gecko: Callable[..., CoinGeckoClient]
) -> None:
    route = api.get(f"{CG}/coins/bitcoin/market_chart").mock(
        return_value=recorded("coingecko_market_chart.json")
    )
    async with gecko() as client:
        history = await client.price_history("bitcoin", 1)

    assert dict(route.calls.last.request.url.params) == {"vs_currency": "usd", "days": "1"}
    assert len(history) == 6
    assert history[0] == PriceSnapshot(
        time=utc(2024, 4, 29, 9, 25),
        price=Decimal("63897.14925362481"),
        market_cap=Decimal("1258209734581.4338"),
        volume=Decimal("27154367321.508232"),
    )
    assert [snapshot.time for snapshot in history[:5]] == [
        utc(2024, 4, 29, 9, 25) + timedelta(minutes=5 * step) for step in range(5)
    ]
    assert history[-1].time == utc(2024, 4, 29, 9, 46, 2)  # the latest point is "now"
    assert history[-1].price == Decimal("63962.8815540125")


async def test_coingecko_price_history_leaves_missing_values_none(
    api: respx.MockRouter, gecko: Callable[..., CoinGeckoClient]
) -> None:
    api.get(f"{CG}/coins/bitcoin/market_chart").respond(
        content=b'{"prices": [[1714003200000, 64512.5], [1714089600000, null]],'
        b' "market_caps": [[1714003200000, null]], "total_volumes": []}',
        headers=JSON,
    )
    async with gecko() as client:
        history = await client.price_history("bitcoin", "max", interval="daily")

    assert history == [
        PriceSnapshot(time=utc(2024, 4, 25), price=Decimal("64512.5"), market_cap=None, volume=None)
    ]


async def test_coingecko_ohlc_bars_open_one_candle_before_their_timestamp(
    api: respx.MockRouter, gecko: Callable[..., CoinGeckoClient]
) -> None:
    route = api.get(f"{CG}/coins/bitcoin/ohlc").mock(return_value=recorded("coingecko_ohlc.json"))
    async with gecko() as client:
        bars = await client.ohlc("bitcoin", 1)
        four_hourly = await client.ohlc("bitcoin", 14)
        four_daily = await client.ohlc("bitcoin", "max")

    assert dict(route.calls[0].request.url.params) == {"vs_currency": "usd", "days": "1"}
    assert route.calls[2].request.url.params["days"] == "max"
    # CoinGecko stamps a candle with its close time; days=1 gives 30-minute candles.
    assert bars[0] == Bar(
        open_time=utc(2024, 4, 29, 9, 30),
        open=Decimal("63843.0"),
        high=Decimal("63976.0"),
        low=Decimal("63801.0"),
        close=Decimal("63976.0"),
        volume=Decimal(0),  # /ohlc has no volume
    )
    assert [bar.open_time for bar in bars] == [
        utc(2024, 4, 29, 9, 30) + timedelta(minutes=30 * step) for step in range(5)
    ]
    assert bars[-1].close == Decimal("63888.58")
    assert all(bar.volume == 0 for bar in bars)
    assert four_hourly[0].open_time == utc(2024, 4, 29, 6)
    assert four_daily[0].open_time == utc(2024, 4, 25, 10)


# --- the HTTP plumbing: retries, backoff, errors --------------------------------------------


async def test_429_waits_as_long_as_retry_after_then_succeeds(
    api: respx.MockRouter, gecko: Callable[..., CoinGeckoClient], fake_time: FakeTime
) -> None:
    times: list[float] = []
    answers = iter(
        [
            httpx.Response(
                429,
                headers={"Retry-After": "7"},
                json={
                    "status": {"error_code": 429, "error_message": "You've exceeded the Rate Limit"}
                },
            ),
            recorded("coingecko_markets.json"),
        ]
    )

    def answer(request: httpx.Request) -> httpx.Response:
        times.append(fake_time.now)
        return next(answers)

    api.get(f"{CG}/coins/markets").mock(side_effect=answer)
    async with gecko() as client:
        listings = await client.listings(5)

    assert len(listings) == 5
    assert times == [0.0, 7.0]
    assert fake_time.sleeps == [7.0]


async def test_a_429_holds_back_every_request_of_the_client(
    api: respx.MockRouter, gecko: Callable[..., CoinGeckoClient], fake_time: FakeTime
) -> None:
    times: list[float] = []
    answers = iter(
        [
            httpx.Response(429, headers={"Retry-After": "30"}),
            recorded("coingecko_markets.json"),
            recorded("coingecko_coin_bitcoin.json"),
        ]
    )

    def answer(request: httpx.Request) -> httpx.Response:
        times.append(fake_time.now)
        return next(answers)

    api.get(url__regex=r".*").mock(side_effect=answer)
    async with gecko() as client:
        await client.listings(5)
        await client.coin("bitcoin")

    # The retry waits the 30 s; the next call keeps the 2 s spacing of 30 requests/minute.
    assert times == [0.0, 30.0, 32.0]


async def test_429_without_retry_after_backs_off_exponentially(
    api: respx.MockRouter, gecko: Callable[..., CoinGeckoClient], fake_time: FakeTime
) -> None:
    route = api.get(f"{CG}/coins/markets").mock(
        side_effect=[
            httpx.Response(429),
            httpx.Response(429),
            recorded("coingecko_markets.json"),
        ]
    )
    async with gecko(requests_per_minute=6000) as client:
        await client.listings(5)

    assert route.call_count == 3
    assert fake_time.sleeps == [1.0, 2.0]


async def test_5xx_is_retried_with_exponential_backoff_then_gives_up(
    api: respx.MockRouter, gecko: Callable[..., CoinGeckoClient], fake_time: FakeTime
) -> None:
    route = api.get(f"{CG}/coins/markets").respond(503, text="<html>Service Unavailable</html>")
    async with gecko(requests_per_minute=6000, max_retries=4) as client:
        with pytest.raises(ProviderUnavailable) as raised:
            await client.listings(5)

    assert route.call_count == 5  # the first try and 4 retries
    assert fake_time.sleeps == [1.0, 2.0, 4.0, 8.0]
    assert raised.value.status == 503
    assert isinstance(raised.value, ProviderError)
    assert "coingecko is unavailable after 5 attempts" in str(raised.value)


async def test_5xx_then_success_returns_the_answer(
    api: respx.MockRouter, gecko: Callable[..., CoinGeckoClient], fake_time: FakeTime
) -> None:
    route = api.get(f"{CG}/coins/markets").mock(
        side_effect=[httpx.Response(502), httpx.Response(500), recorded("coingecko_markets.json")]
    )
    async with gecko(requests_per_minute=6000) as client:
        listings = await client.listings(5)

    assert route.call_count == 3
    assert fake_time.sleeps == [1.0, 2.0]
    assert listings[0].symbol == "BTC"


async def test_backoff_is_capped_and_jittered(
    api: respx.MockRouter, gecko: Callable[..., CoinGeckoClient], fake_time: FakeTime
) -> None:
    api.get(f"{CG}/coins/markets").respond(500)
    async with gecko(
        requests_per_minute=6000, max_retries=6, backoff_max=10.0, jitter=equal_jitter
    ) as client:
        with pytest.raises(ProviderUnavailable):
            await client.listings(5)

    nominal = [1.0, 2.0, 4.0, 8.0, 10.0, 10.0]
    assert len(fake_time.sleeps) == len(nominal)
    for slept, delay in zip(fake_time.sleeps, nominal, strict=True):
        assert delay / 2 <= slept <= delay


async def test_timeouts_and_dropped_connections_are_retried(
    api: respx.MockRouter, gecko: Callable[..., CoinGeckoClient], fake_time: FakeTime
) -> None:
    route = api.get(f"{CG}/coins/markets").mock(
        side_effect=[
            httpx.ConnectTimeout("timed out"),
            httpx.ReadTimeout("timed out"),
            httpx.ConnectError("connection refused"),
            httpx.RemoteProtocolError("server disconnected"),
            recorded("coingecko_markets.json"),
        ]
    )
    async with gecko(requests_per_minute=6000) as client:
        listings = await client.listings(5)

    assert route.call_count == 5
    assert fake_time.sleeps == [1.0, 2.0, 4.0, 8.0]
    assert len(listings) == 5


async def test_timeouts_after_every_retry_are_provider_unavailable(
    api: respx.MockRouter, gecko: Callable[..., CoinGeckoClient], fake_time: FakeTime
) -> None:
    route = api.get(f"{CG}/coins/markets").mock(side_effect=httpx.ReadTimeout("timed out"))
    async with gecko(requests_per_minute=6000, max_retries=2) as client:
        with pytest.raises(ProviderUnavailable, match="ReadTimeout after 3 attempts"):
            await client.listings(5)
    assert route.call_count == 3
    assert fake_time.sleeps == [1.0, 2.0]


async def test_a_retry_after_beyond_the_limit_fails_at_once(
    api: respx.MockRouter, gecko: Callable[..., CoinGeckoClient], fake_time: FakeTime
) -> None:
    route = api.get(f"{CG}/coins/markets").respond(429, headers={"Retry-After": "3600"})
    async with gecko(max_retry_after=120.0) as client:
        with pytest.raises(RateLimited, match="asks to wait 3600 s"):
            await client.listings(5)
    assert route.call_count == 1
    assert fake_time.sleeps == []


async def test_refused_key_is_a_clear_error_without_the_key(
    api: respx.MockRouter,
    gecko: Callable[..., CoinGeckoClient],
    captured_logs: CapturedLogs,
) -> None:
    route = api.get(f"{CG}/coins/markets").mock(
        side_effect=[
            httpx.Response(500),  # one retry first, so a retry log line is written too
            httpx.Response(
                401,
                json={
                    "status": {
                        "error_code": 10002,
                        "error_message": f"Invalid API key: {CG_KEY}",
                    }
                },
            ),
        ]
    )
    async with gecko(CG_KEY) as client:
        with pytest.raises(ApiKeyRefused) as raised:
            await client.listings(5)

    error = raised.value
    assert route.call_count == 2  # the 401 is not retried
    assert error.status == 401
    assert str(error).startswith("coingecko refused the API key (GET /coins/markets: HTTP 401)")
    assert "Invalid API key: ***" in str(error)
    for text in (str(error), repr(error), repr(error.args), captured_logs.text):
        assert CG_KEY not in text
    assert captured_logs.events("market_provider_retry")


async def test_401_without_a_key_says_one_is_needed(
    api: respx.MockRouter, gecko: Callable[..., CoinGeckoClient]
) -> None:
    api.get(f"{CG}/coins/markets").respond(
        401, json={"status": {"error_code": 10002, "error_message": "API Key Missing"}}
    )
    async with gecko(None) as client:
        with pytest.raises(ApiKeyRefused, match=r"requires an API key.*API Key Missing"):
            await client.listings(5)


async def test_403_names_the_plan(
    api: respx.MockRouter, gecko: Callable[..., CoinGeckoClient]
) -> None:
    api.get(f"{CG}/coins/bitcoin/ohlc").respond(
        403,
        json={"status": {"error_code": 10005, "error_message": "This request is limited"}},
    )
    async with gecko() as client:
        with pytest.raises(ApiKeyRefused, match="plan may not include it"):
            await client.ohlc("bitcoin", 1, interval="hourly")


async def test_other_4xx_are_rejected_requests_not_retried(
    api: respx.MockRouter, gecko: Callable[..., CoinGeckoClient], fake_time: FakeTime
) -> None:
    route = api.get(f"{CG}/coins/markets").respond(400, json={"error": "invalid vs_currency"})
    async with gecko() as client:
        with pytest.raises(RequestRejected, match=r"HTTP 400.*invalid vs_currency") as raised:
            await client.listings(5)
    assert not isinstance(raised.value, ApiKeyRefused)
    assert route.call_count == 1
    assert fake_time.sleeps == []


@pytest.mark.parametrize(
    "body",
    [
        b"<html><body>Just a moment...</body></html>",
        b'[{"id": "bitcoin", "symbol": "btc"',
        b"[NaN]",
    ],
    ids=["html", "truncated", "nan"],
)
async def test_malformed_json_is_a_provider_error(
    api: respx.MockRouter, gecko: Callable[..., CoinGeckoClient], body: bytes
) -> None:
    api.get(f"{CG}/coins/markets").respond(200, content=body, headers=JSON)
    async with gecko() as client:
        with pytest.raises(MalformedResponse, match="not valid JSON"):
            await client.listings(5)


async def test_json_of_the_wrong_shape_is_a_provider_error(
    api: respx.MockRouter, gecko: Callable[..., CoinGeckoClient]
) -> None:
    api.get(f"{CG}/coins/markets").respond(json={"coins": []})
    api.get(f"{CG}/coins/bitcoin/ohlc").respond(json={"prices": []})
    async with gecko() as client:
        with pytest.raises(MalformedResponse):
            await client.listings(5)
        with pytest.raises(ProviderError):
            await client.ohlc("bitcoin", 1)


def test_retry_after_accepts_seconds_and_http_dates() -> None:
    now = utc(2024, 4, 30, 9, 0)
    assert parse_retry_after("12") == 12.0
    assert parse_retry_after("1.5") == 1.5
    assert parse_retry_after("Tue, 30 Apr 2024 09:00:45 GMT", now=now) == 45.0
    assert parse_retry_after("Tue, 30 Apr 2024 08:59:00 GMT", now=now) == 0.0
    assert parse_retry_after("-3") == 0.0
    assert parse_retry_after("soon") is None
    assert parse_retry_after(None) is None


def test_numbers_become_exact_decimals() -> None:
    assert to_decimal(0.1) == Decimal("0.1")
    assert to_decimal(Decimal("67321.123456789012345678")) == Decimal("67321.123456789012345678")
    assert to_decimal(21000000) == Decimal(21000000)
    assert to_decimal("1.25") == Decimal("1.25")
    for missing in (None, "", True, float("nan"), float("inf"), "n/a", [1]):
        assert to_decimal(missing) is None


# --- the rate limiter ---------------------------------------------------------------------


async def test_rate_limiter_spaces_requests_evenly(fake_time: FakeTime) -> None:
    limiter = RateLimiter(30, clock=fake_time.clock, sleep=fake_time.sleep)
    starts = []
    for _ in range(4):
        await limiter.acquire()
        starts.append(fake_time.now)
    assert starts == [0.0, 2.0, 4.0, 6.0]
    assert fake_time.sleeps == [2.0, 2.0, 2.0]


async def test_rate_limiter_counts_time_already_passed(fake_time: FakeTime) -> None:
    limiter = RateLimiter(30, clock=fake_time.clock, sleep=fake_time.sleep)
    await limiter.acquire()
    fake_time.now = 1.5  # the caller spent 1.5 s on its own
    assert await limiter.acquire() == pytest.approx(0.5)
    fake_time.now = 10.0
    assert await limiter.acquire() == 0.0


async def test_rate_limiter_allows_a_burst_then_the_rate(fake_time: FakeTime) -> None:
    limiter = RateLimiter(60, burst=3, clock=fake_time.clock, sleep=fake_time.sleep)
    starts = []
    for _ in range(5):
        await limiter.acquire()
        starts.append(fake_time.now)
    assert starts == [0.0, 0.0, 0.0, 1.0, 2.0]


async def test_rate_limiter_queues_concurrent_callers(fake_time: FakeTime) -> None:
    limiter = RateLimiter(30, clock=fake_time.clock, sleep=fake_time.sleep)
    starts: list[float] = []

    async def request() -> None:
        asked_at = fake_time.now
        waited = await limiter.acquire()
        starts.append(asked_at + waited)

    # Each caller reserves its own slot before it sleeps: none shares a slot.
    await asyncio.gather(*(request() for _ in range(3)))
    assert sorted(starts) == [0.0, 2.0, 4.0]


async def test_rate_limiter_hold_delays_the_next_request(fake_time: FakeTime) -> None:
    limiter = RateLimiter(30, clock=fake_time.clock, sleep=fake_time.sleep)
    await limiter.acquire()
    limiter.hold(10)
    await limiter.acquire()
    assert fake_time.now == 10.0
    with pytest.raises(ValueError, match="requests_per_minute"):
        RateLimiter(0)


async def test_client_requests_respect_requests_per_minute(
    api: respx.MockRouter, gecko: Callable[..., CoinGeckoClient], fake_time: FakeTime
) -> None:
    times: list[float] = []

    def answer(request: httpx.Request) -> httpx.Response:
        times.append(fake_time.now)
        return pages_of([market_row(rank) for rank in range(1, 1001)])(request)

    api.get(f"{CG}/coins/markets").mock(side_effect=answer)
    async with gecko(requests_per_minute=20) as client:
        await client.listings(750)  # three pages
        await client.listings(10)

    assert times == [0.0, 3.0, 6.0, 9.0]


# --- CoinMarketCap --------------------------------------------------------------------------


async def test_cmc_listings_map_every_field(
    api: respx.MockRouter, cmc_client: Callable[..., CoinMarketCapClient]
) -> None:
    route = api.get(f"{CMC}/v1/cryptocurrency/listings/latest").mock(
        return_value=recorded("cmc_listings_latest.json")
    )
    async with cmc_client() as client:
        listings = await client.listings(5)

    request = route.calls.last.request
    assert request.headers["X-CMC_PRO_API_KEY"] == CMC_KEY
    assert request.headers["user-agent"] == f"TradeOS/{__version__}"
    assert CMC_KEY not in str(request.url)
    assert dict(request.url.params) == {"start": "1", "limit": "5", "convert": "USD"}
    assert [listing.symbol for listing in listings] == ["BTC", "ETH", "USDT", "BNB", "SOL"]
    assert listings[0] == Listing(
        symbol="BTC",
        name="Bitcoin",
        rank=1,
        price=Decimal("67283.50718493218"),
        market_cap=Decimal("1324721447618.6377"),
        volume_24h=Decimal("28519847563.142754"),
        change_1h=Decimal("0.11825146"),
        change_24h=Decimal("1.20763198"),
        change_7d=Decimal("-3.97022845"),
        circulating_supply=Decimal("19688406"),
        total_supply=Decimal("19688406"),
        max_supply=Decimal("21000000"),
        ath=None,  # not in listings/latest
        ath_date=None,
        atl=None,
        atl_date=None,
        categories=(
            "mineable",
            "pow",
            "sha-256",
            "store-of-value",
            "state-channel",
            "coinbase-ventures-portfolio",
        ),
        description=None,
        website=None,
        image_url=None,
        last_updated=utc(2024, 4, 30, 9, 22),
        source_id="1",
    )
    eth, usdt, bnb, sol = listings[1:]
    assert eth.max_supply is None
    assert eth.source_id == "1027"
    assert usdt.name == "Tether USDt"
    assert usdt.price == Decimal("1.0002144101032597")
    assert usdt.total_supply == Decimal("112926924290.42")
    assert bnb.rank == 4
    assert sol.change_1h is None
    assert sol.circulating_supply == Decimal("447599587.9347271")


async def test_cmc_info_gives_description_website_logo_and_tags(
    api: respx.MockRouter, cmc_client: Callable[..., CoinMarketCapClient]
) -> None:
    route = api.get(f"{CMC}/v2/cryptocurrency/info").mock(return_value=recorded("cmc_info.json"))
    async with cmc_client() as client:
        infos = await client.info([1, "1027", 1])

    request = route.calls.last.request
    assert dict(request.url.params) == {"id": "1,1027", "skip_invalid": "true"}
    assert request.headers["X-CMC_PRO_API_KEY"] == CMC_KEY
    assert set(infos) == {"1", "1027"}
    bitcoin = infos["1"]
    assert bitcoin == CoinInfo(
        source_id="1",
        symbol="BTC",
        name="Bitcoin",
        description=bitcoin.description,
        website="https://bitcoin.org/",
        image_url="https://s2.coinmarketcap.com/static/img/coins/64x64/1.png",
        categories=(
            "Mineable",
            "PoW",
            "SHA-256",
            "Store Of Value",
            "State Channel",
            "Coinbase Ventures Portfolio",
        ),
    )
    assert bitcoin.description is not None
    assert bitcoin.description.startswith("Bitcoin (BTC) is a cryptocurrency launched in 2010.")
    assert infos["1027"].website == "https://www.ethereum.org/"
    assert infos["1027"].categories == ("PoS", "Smart Contracts", "Ethereum Ecosystem", "Layer 1")
    with pytest.raises(ValueError, match="not a CoinMarketCap id"):
        await client.info(["bitcoin"])


async def test_cmc_listings_with_info_merge_the_details(
    api: respx.MockRouter, cmc_client: Callable[..., CoinMarketCapClient]
) -> None:
    api.get(f"{CMC}/v1/cryptocurrency/listings/latest").mock(
        return_value=recorded("cmc_listings_latest.json")
    )
    info = api.get(f"{CMC}/v2/cryptocurrency/info").mock(return_value=recorded("cmc_info.json"))
    async with cmc_client() as client:
        listings = await client.listings(5, with_info=True)

    assert info.calls.last.request.url.params["id"] == "1,1027,825,1839,5426"
    bitcoin, ethereum, tether = listings[:3]
    assert bitcoin.website == "https://bitcoin.org/"
    assert bitcoin.image_url == "https://s2.coinmarketcap.com/static/img/coins/64x64/1.png"
    assert bitcoin.categories[0] == "Mineable"
    assert bitcoin.price == Decimal("67283.50718493218")  # market data untouched
    assert ethereum.description is not None
    assert tether.description is None  # not in this recorded info answer
    assert tether.categories[0] == "payments"


async def test_cmc_listings_beyond_5000_take_a_second_request(
    api: respx.MockRouter, cmc_client: Callable[..., CoinMarketCapClient]
) -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        start = int(request.url.params["start"])
        limit = int(request.url.params["limit"])
        rows = [
            {"id": rank, "name": f"Coin {rank}", "symbol": f"c{rank}", "cmc_rank": rank,
             "quote": {"USD": {"price": 0.5}}}
            for rank in range(start, start + limit)
        ]  # fmt: skip
        return httpx.Response(200, json={"status": {"error_code": 0}, "data": rows})

    route = api.get(f"{CMC}/v1/cryptocurrency/listings/latest").mock(side_effect=answer)
    async with cmc_client() as client:
        listings = await client.listings(5003)

    assert [
        (c.request.url.params["start"], c.request.url.params["limit"]) for c in route.calls
    ] == [
        ("1", "5000"),
        ("5001", "3"),
    ]
    assert len(listings) == 5003
    assert listings[-1].symbol == "C5003"


async def test_cmc_refused_key_is_a_clear_error_without_the_key(
    api: respx.MockRouter, cmc_client: Callable[..., CoinMarketCapClient]
) -> None:
    route = api.get(f"{CMC}/v1/cryptocurrency/listings/latest").respond(
        401,
        json={
            "status": {
                "timestamp": "2024-04-30T09:23:41.126Z",
                "error_code": 1001,
                "error_message": "This API Key is invalid.",
                "elapsed": 0,
                "credit_count": 0,
            }
        },
    )
    async with cmc_client() as client:
        with pytest.raises(ApiKeyRefused) as raised:
            await client.listings(5)

    assert route.call_count == 1
    assert str(raised.value) == (
        "coinmarketcap refused the API key "
        "(GET /v1/cryptocurrency/listings/latest: HTTP 401): This API Key is invalid."
    )
    assert CMC_KEY not in repr(raised.value)
    with pytest.raises(ValueError, match="needs an API key"):
        CoinMarketCapClient(" ")


async def test_cmc_minute_rate_limit_is_retried_but_a_spent_quota_is_not(
    api: respx.MockRouter, cmc_client: Callable[..., CoinMarketCapClient], fake_time: FakeTime
) -> None:
    minute = {
        "status": {
            "error_code": 1008,
            "error_message": "You've exceeded your API Key's HTTP request rate limit. "
            "Rate limits reset every minute.",
        }
    }
    daily = {
        "status": {
            "error_code": 1009,
            "error_message": "You've exceeded your API Key's daily rate limit.",
        }
    }
    route = api.get(f"{CMC}/v1/cryptocurrency/listings/latest").mock(
        side_effect=[
            httpx.Response(429, json=minute),
            recorded("cmc_listings_latest.json"),
            httpx.Response(429, json=daily),
        ]
    )
    async with cmc_client(requests_per_minute=6000) as client:
        assert len(await client.listings(5)) == 5
        fake_time.now += 60  # a while later
        with pytest.raises(RateLimited, match=r"quota is exhausted.*daily rate limit"):
            await client.listings(5)

    assert route.call_count == 3
    assert fake_time.sleeps == [1.0]


async def test_cmc_error_code_in_a_200_is_a_provider_error(
    api: respx.MockRouter, cmc_client: Callable[..., CoinMarketCapClient]
) -> None:
    api.get(f"{CMC}/v1/cryptocurrency/listings/latest").respond(
        json={
            "status": {"error_code": 500, "error_message": "An internal server error occurred"},
            "data": [],
        }
    )
    async with cmc_client() as client:
        with pytest.raises(ProviderError, match="error 500: An internal server error occurred"):
            await client.listings(5)


async def test_cmc_malformed_answers_are_provider_errors(
    api: respx.MockRouter, cmc_client: Callable[..., CoinMarketCapClient]
) -> None:
    route = api.get(f"{CMC}/v1/cryptocurrency/listings/latest")
    async with cmc_client() as client:
        route.respond(200, content=b"<!DOCTYPE html><title>502</title>", headers=JSON)
        with pytest.raises(MalformedResponse, match="not valid JSON"):
            await client.listings(5)
        route.respond(json={"status": {"error_code": 0}})
        with pytest.raises(MalformedResponse, match="without data"):
            await client.listings(5)
        route.respond(json={"status": {"error_code": 0}, "data": {"1": {}}})
        with pytest.raises(MalformedResponse, match="not a list"):
            await client.listings(5)


async def test_cmc_5xx_retried_then_provider_error(
    api: respx.MockRouter, cmc_client: Callable[..., CoinMarketCapClient], fake_time: FakeTime
) -> None:
    route = api.get(f"{CMC}/v1/cryptocurrency/listings/latest").respond(500)
    async with cmc_client(requests_per_minute=6000, max_retries=3) as client:
        with pytest.raises(ProviderUnavailable, match="after 4 attempts"):
            await client.listings(5)
    assert route.call_count == 4
    assert fake_time.sleeps == [1.0, 2.0, 4.0]
