"""The fallbacks of listings, candles and tickers: when the primary provider fails, the
secondary serves and answers say so; the failure is logged and counted in /metrics. Without a
fallback, a failing provider is a 503 problem."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from fastapi import FastAPI
from prometheus_client import CollectorRegistry, Counter
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy.ext.asyncio import AsyncSession

from tests.conftest import CapturedLogs
from tests.factories import bearer, make_user, sign_in
from tradeos.config import Settings
from tradeos.market.providers.base import (
    Bar,
    InstrumentSpec,
    Listing,
    ProviderError,
    Tick,
    UnknownSymbol,
)
from tradeos.market.providers.registry import (
    FallbackMarketProvider,
    Listings,
    MarketData,
    make_market_data,
)
from tradeos.market.providers.sim import CATALOGUE, SimProvider
from tradeos.market.timeframes import Timeframe

API = "/api/v1"


class Broken:
    name = "coingecko"

    async def listings(self, limit: int) -> Sequence[Listing]:
        raise ProviderError("coingecko is unavailable (HTTP 503)")


def clock() -> datetime:
    return datetime(2026, 11, 21, 12, 0, tzinfo=UTC)


async def test_the_fallback_answers_and_the_failure_is_counted(captured_logs: object) -> None:
    registry = CollectorRegistry()
    failures = Counter("failures", "", ["provider", "operation"], registry=registry)
    listings = Listings(Broken(), SimProvider(clock=clock), failures)

    source, fetched = await listings.fetch(3)

    assert source == "sim"
    assert [listing.symbol for listing in fetched] == ["BTC", "ETH", "BNB"][: len(fetched)]
    sample = registry.get_sample_value(
        "failures_total", {"provider": "coingecko", "operation": "listings"}
    )
    assert sample == 1.0
    logged = captured_logs.events("listings_provider_failed")  # type: ignore[attr-defined]
    assert logged and logged[0]["fallback"] == "sim"


async def test_without_a_fallback_the_failure_is_raised() -> None:
    with pytest.raises(ProviderError, match="unavailable"):
        await Listings(Broken(), None).fetch(3)


async def test_the_failure_counter_is_on_metrics(client: httpx.AsyncClient) -> None:
    response = await client.get("/metrics")
    assert "tradeos_market_provider_failures_total" in response.text


# -- candles and tickers ----------------------------------------------------------------------

START, END = datetime(2026, 11, 20, tzinfo=UTC), datetime(2026, 11, 20, 3, tzinfo=UTC)


class Flaky:
    """A market provider that fails (ProviderError) for the symbols in `failing`, and knows
    only the symbols of the simulated market but those `delisted`. Its prices are the
    simulated market's (`sim`: at the fixed `clock` unless given)."""

    def __init__(
        self,
        name: str,
        failing: set[str] | None = None,
        *,
        delisted: frozenset[str] = frozenset(),
        sim: SimProvider | None = None,
    ) -> None:
        self.name = name
        self.failing = failing if failing is not None else {"BTC-USD", "ETH-USD"}
        self.delisted = delisted
        self.sim = sim or SimProvider(clock=clock)
        self.asked: list[str] = []

    async def instruments(self) -> Sequence[InstrumentSpec]:
        return await self.sim.instruments()

    async def candles(
        self, symbol: str, timeframe: Timeframe, start: datetime, end: datetime
    ) -> Sequence[Bar]:
        await self._check(symbol)
        return await self.sim.candles(symbol, timeframe, start, end)

    async def ticker(self, symbol: str) -> Tick:
        await self._check(symbol)
        return await self.sim.ticker(symbol)

    async def _check(self, symbol: str) -> None:
        self.asked.append(symbol)
        await asyncio.sleep(0)  # concurrent calls interleave here
        if symbol in self.failing:
            raise ProviderError(f"{self.name} is unavailable (HTTP 503)")
        if symbol not in CATALOGUE or symbol in self.delisted:
            raise UnknownSymbol(f"{self.name} does not list {symbol}")


def counter() -> tuple[CollectorRegistry, Counter]:
    registry = CollectorRegistry()
    return registry, Counter("failures", "", ["provider", "operation"], registry=registry)


def failed(registry: CollectorRegistry, provider: str, operation: str) -> float:
    sample = registry.get_sample_value(
        "failures_total", {"provider": provider, "operation": operation}
    )
    return sample or 0.0


async def test_the_fallback_serves_candles_and_tickers_and_says_so(
    captured_logs: CapturedLogs,
) -> None:
    registry, failures = counter()
    provider = FallbackMarketProvider(Flaky("ccxt:binance"), Flaky("backup", set()), failures)

    source, bars = await provider.sourced_candles("BTC-USD", Timeframe.H1, START, END)
    tick_source, tick = await provider.sourced_ticker("BTC-USD")

    assert (source, tick_source) == ("backup", "backup")
    assert [bar.open_time for bar in bars] == [START + timedelta(hours=n) for n in range(3)]
    assert tick.symbol == "BTC-USD"
    assert provider.name == "ccxt:binance"  # instruments stay the primary's
    assert failed(registry, "ccxt:binance", "candles") == 1.0
    assert failed(registry, "ccxt:binance", "ticker") == 1.0
    logged = captured_logs.events("market_provider_failed")
    assert [(line["operation"], line["fallback"], line["symbol"]) for line in logged] == [
        ("candles", "backup", "BTC-USD"),
        ("ticker", "backup", "BTC-USD"),
    ]
    assert "unavailable (HTTP 503)" in logged[0]["error"]


async def test_a_working_primary_serves_and_nothing_is_counted() -> None:
    registry, failures = counter()
    backup = Flaky("backup", set())
    provider = FallbackMarketProvider(Flaky("ccxt:binance", set()), backup, failures)

    source, bars = await provider.sourced_candles("SOL-USD", Timeframe.H1, START, END)
    assert (source, len(bars)) == ("ccxt:binance", 3)
    assert await provider.candles("SOL-USD", Timeframe.H1, START, END) == bars
    assert (await provider.sourced_ticker("SOL-USD"))[0] == "ccxt:binance"
    assert backup.asked == []
    assert failed(registry, "ccxt:binance", "candles") == 0.0


async def test_concurrent_calls_each_learn_their_own_source() -> None:
    primary = Flaky("ccxt:binance", {"BTC-USD"})
    provider = FallbackMarketProvider(primary, Flaky("backup", set()))

    answers = await asyncio.gather(
        *(provider.sourced_ticker(symbol) for symbol in ["BTC-USD", "SOL-USD"] * 5)
    )

    assert primary.asked[:2] == ["BTC-USD", "SOL-USD"]  # they did run side by side
    assert [(source, tick.symbol) for source, tick in answers] == [
        ("backup", "BTC-USD"),
        ("ccxt:binance", "SOL-USD"),
    ] * 5


async def test_an_unknown_symbol_is_an_answer_not_an_outage() -> None:
    registry, failures = counter()
    backup = Flaky("backup", set())
    provider = FallbackMarketProvider(Flaky("ccxt:binance"), backup, failures)

    with pytest.raises(UnknownSymbol):
        await provider.sourced_ticker("DOGE-USDT")
    assert backup.asked == []
    assert failed(registry, "ccxt:binance", "ticker") == 0.0


async def test_when_the_fallback_cannot_answer_either_the_failure_surfaces() -> None:
    registry, failures = counter()
    # The fallback does not know the symbol: the primary's failure is what counts.
    provider = FallbackMarketProvider(
        Flaky("ccxt:binance", {"XRP-USDT"}), Flaky("backup", set()), failures
    )
    with pytest.raises(ProviderError, match="ccxt:binance is unavailable") as caught:
        await provider.sourced_ticker("XRP-USDT")
    assert not isinstance(caught.value, UnknownSymbol)
    assert failed(registry, "backup", "ticker") == 0.0

    # Both fail: both are counted, the error names both.
    both = FallbackMarketProvider(Flaky("ccxt:binance"), Flaky("backup"), failures)
    with pytest.raises(ProviderError, match="fallback backup failed too"):
        await both.sourced_candles("ETH-USD", Timeframe.H1, START, END)
    assert failed(registry, "ccxt:binance", "candles") == 1.0
    assert failed(registry, "backup", "candles") == 1.0

    # No fallback: counted, and raised as it was.
    alone = FallbackMarketProvider(Flaky("ccxt:binance"), None, failures)
    with pytest.raises(ProviderError, match="unavailable"):
        await alone.sourced_ticker("ETH-USD")
    assert failed(registry, "ccxt:binance", "ticker") == 2.0


async def test_the_settings_pick_the_fallback(settings_factory: Callable[..., Settings]) -> None:
    pytest.importorskip("ccxt")
    exchange_first = make_market_data(
        settings_factory(
            market_provider="ccxt", ccxt_symbols="BTC-USDT", market_fallback_provider="sim"
        )
    )
    sim_first = make_market_data(
        settings_factory(market_fallback_provider="ccxt", ccxt_fallback_exchange="kraken")
    )
    alone = make_market_data(settings_factory())
    try:
        provider = exchange_first.provider
        assert isinstance(provider, FallbackMarketProvider)
        assert provider.name == provider.primary.name == "ccxt:binance"
        # One simulated market serves as fallback and for the listings.
        assert provider.fallback is exchange_first.listings.primary
        assert isinstance(provider.fallback, SimProvider)
        assert isinstance(sim_first.provider, FallbackMarketProvider)
        assert sim_first.provider.name == "sim"
        assert sim_first.provider.fallback is not None
        assert sim_first.provider.fallback.name == "ccxt:kraken"
        assert isinstance(alone.provider, FallbackMarketProvider)
        assert alone.provider.fallback is None
    finally:
        for market in (exchange_first, sim_first, alone):
            await market.aclose()


# -- through the API --------------------------------------------------------------------------


async def reader(session: AsyncSession, settings: Settings) -> dict[str, str]:
    user = await make_user(session)
    headers = bearer(await sign_in(session, settings, user))
    await session.commit()
    return headers


def metric(text: str, provider: str, operation: str) -> float:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "tradeos_market_provider_failures_total" and sample.labels == {
                "provider": provider,
                "operation": operation,
            }:
                return float(sample.value)
    return 0.0


async def test_the_api_answers_from_the_fallback_and_metrics_count_the_failure(
    app: FastAPI,
    client: httpx.AsyncClient,
    session: AsyncSession,
    settings: Settings,
    captured_logs: CapturedLogs,
) -> None:
    headers = await reader(session, settings)
    market: MarketData = app.state.market
    # The simulated market's instruments, served by a primary (named sim, like them) that
    # fails, and a stand-in.
    # Prices at the real time: the API asks for the latest bars.
    primary, backup = Flaky("sim", sim=SimProvider()), Flaky("backup", set(), sim=SimProvider())
    market.provider = FallbackMarketProvider(primary, backup, market.failures)

    candles = await client.get(
        f"{API}/market/candles/BTC-USD", params={"timeframe": "1h", "limit": 3}, headers=headers
    )
    ticker = await client.get(f"{API}/market/ticker/BTC-USD", headers=headers)

    assert candles.status_code == 200, candles.text
    assert (candles.json()["source"], len(candles.json()["candles"])) == ("backup", 3)
    assert ticker.status_code == 200, ticker.text
    assert ticker.json()["source"] == "backup"
    metrics = (await client.get("/metrics")).text
    assert metric(metrics, "sim", "candles") == 2.0  # the candles, and the ticker's 24 h bars
    assert metric(metrics, "sim", "ticker") == 1.0
    assert captured_logs.events("market_provider_failed")


async def test_without_a_fallback_a_failing_provider_is_a_503_problem(
    app: FastAPI, client: httpx.AsyncClient, session: AsyncSession, settings: Settings
) -> None:
    headers = await reader(session, settings)
    market: MarketData = app.state.market
    market.provider = FallbackMarketProvider(Flaky("sim"), None, market.failures)

    for path in ("/market/ticker/ETH-USD", "/market/candles/ETH-USD"):
        response = await client.get(f"{API}{path}", headers=headers)
        assert response.status_code == 503, response.text
        assert response.headers["content-type"] == "application/problem+json"
        problem = response.json()
        assert problem["status"] == 503
        assert problem["detail"].startswith("Market data for ETH-USD is unavailable right now")
        assert "HTTP 503" in problem["detail"] and "Traceback" not in response.text
    # A symbol the provider no longer lists is not an outage: 404, and not counted.
    delisted = Flaky("sim", set(), delisted=frozenset({"SOL-USD"}))
    market.provider = FallbackMarketProvider(delisted, None, market.failures)
    gone = await client.get(f"{API}/market/ticker/SOL-USD", headers=headers)
    assert gone.status_code == 404, gone.text
    assert gone.json()["detail"].startswith("sim no longer lists SOL-USD")
    metrics = (await client.get("/metrics")).text
    assert metric(metrics, "sim", "ticker") == 1.0
