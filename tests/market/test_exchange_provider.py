"""The ccxt exchange provider, on a real ccxt binance object fed recorded data (no network).

Markets go in with `exchange.set_markets` (tests/market/recorded/ccxt/binance_markets.json).
Requests are answered one level below ccxt's API: `exchange.fetch`, the method that would do
the HTTP call, is replaced by `FakeBinance.fetch`, which checks the URL ccxt built and hands
back a recorded Binance body through ccxt's own error handling (`handle_errors`,
`handle_http_status_code`). So ccxt's request building, its parsing of Binance's raw klines and
24 h tickers, and its error mapping all run. Backoff sleeps are recorded, not slept.
"""

from __future__ import annotations

import json
import sys
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest

pytest.importorskip("ccxt")

import ccxt.async_support as ccxt_async

from tests.conftest import CapturedLogs
from tradeos.market.providers.base import (
    AssetClass,
    Bar,
    MarketProvider,
    ProviderError,
    Tick,
    UnknownSymbol,
)
from tradeos.market.providers.exchange import (
    DEFAULT_PAGE_LIMIT,
    INSTALL_HINT,
    CcxtNotInstalled,
    ExchangeProvider,
)
from tradeos.market.timeframes import Timeframe

RECORDED = Path(__file__).parent / "recorded" / "ccxt"
REASONS = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 429: "Too Many Requests"}
REASONS |= {503: "Service Unavailable"}

Outcome = tuple[int, Any] | Exception
Responder = Callable[[str, dict[str, str]], Outcome]


def load(name: str) -> Any:
    return json.loads((RECORDED / name).read_text())


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


def ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


class FakeBinance:
    """Stands in for the network under ccxt: `respond(path, query)` answers each request."""

    def __init__(self, exchange: Any) -> None:
        self.exchange = exchange
        self.requests: list[tuple[str, dict[str, str]]] = []
        self.respond: Responder = self.unexpected

    @staticmethod
    def unexpected(path: str, query: dict[str, str]) -> Outcome:
        raise AssertionError(f"unexpected request {path} {query}")

    async def fetch(
        self, url: str, method: str = "GET", headers: Any = None, body: Any = None
    ) -> Any:
        parts = urlsplit(url)
        assert parts.netloc == "api.binance.com", url
        query = dict(parse_qsl(parts.query))
        self.requests.append((parts.path, query))
        outcome = self.respond(parts.path, query)
        if isinstance(outcome, Exception):
            raise outcome  # what ccxt's fetch raises for timeouts and dropped connections
        status, payload = outcome
        text = json.dumps(payload)
        exchange, reason = self.exchange, REASONS[status]
        answer = exchange.parse_json(text)
        exchange.handle_errors(status, reason, url, method, {}, text, answer, headers, body)
        exchange.handle_http_status_code(status, reason, url, method, text)
        return answer

    def serve_klines(self, name: str) -> None:
        """Answer /api/v3/klines from a recorded file, page by page (startTime and limit)."""
        pages = {
            (page["startTime"], page["limit"]): page["response"] for page in load(name)["pages"]
        }

        def respond(path: str, query: dict[str, str]) -> Outcome:
            assert path == "/api/v3/klines"
            return 200, pages[(int(query["startTime"]), int(query["limit"]))]

        self.respond = respond

    def serve_tickers(self) -> None:
        tickers = load("binance_ticker_24hr.json")

        def respond(path: str, query: dict[str, str]) -> Outcome:
            assert path == "/api/v3/ticker/24hr"
            return 200, tickers[query["symbol"]]

        self.respond = respond

    def serve_sequence(self, *outcomes: Outcome) -> None:
        """Answer the next requests with `outcomes` in turn (the last one repeats)."""
        queue = list(outcomes)

        def respond(path: str, query: dict[str, str]) -> Outcome:
            return queue.pop(0) if len(queue) > 1 else queue[0]

        self.respond = respond


@pytest.fixture
async def binance() -> AsyncIterator[Any]:
    exchange = ccxt_async.binance()
    exchange.timeout_on_exit = 0  # close() waits this long for websockets (there are none)
    exchange.set_markets(load("binance_markets.json")["markets"])
    exchange.fetch = FakeBinance(exchange).fetch
    yield exchange
    await exchange.close()


@pytest.fixture
def fake(binance: Any) -> FakeBinance:
    fake: FakeBinance = binance.fetch.__self__
    return fake


@pytest.fixture
def sleeps() -> list[float]:
    return []


@pytest.fixture
def make(binance: Any, sleeps: list[float]) -> Callable[..., ExchangeProvider]:
    async def sleep(seconds: float) -> None:
        sleeps.append(seconds)

    def make(**options: Any) -> ExchangeProvider:
        return ExchangeProvider(
            exchange=binance, sleep=sleep, jitter=lambda delay: delay, **options
        )

    return make


# --- instruments --------------------------------------------------------------------------


async def test_instruments_are_the_active_spot_markets_with_tick_and_step(
    make: Callable[..., ExchangeProvider], fake: FakeBinance
) -> None:
    provider = make()
    assert isinstance(provider, MarketProvider)
    assert provider.name == "ccxt:binance"

    specs = await provider.instruments()

    # MATIC/USDT is in status BREAK, BTC/USDT:USDT is a perpetual swap: both left out.
    assert [spec.symbol for spec in specs] == ["BTC-USDT", "ETH-USDT", "SHIB-USDT"]
    btc, eth, shib = specs
    assert btc.name == "BTC/USDT on Binance"
    assert btc.asset_class is AssetClass.CRYPTO
    assert (btc.base, btc.quote) == ("BTC", "USDT")
    # Binance's PRICE_FILTER tickSize and LOT_SIZE stepSize, through ccxt's TICK_SIZE mode.
    assert (btc.tick_size, btc.quantity_step) == (Decimal("0.01"), Decimal("0.00001"))
    assert (eth.tick_size, eth.quantity_step) == (Decimal("0.01"), Decimal("0.0001"))
    assert (shib.tick_size, shib.quantity_step) == (Decimal("0.00000001"), Decimal(1))
    assert fake.requests == []  # the markets were set: nothing to load


async def test_instruments_restricted_to_symbols_warns_of_unlisted_ones(
    make: Callable[..., ExchangeProvider], captured_logs: CapturedLogs
) -> None:
    provider = make(symbols=["btc/usdt", "MATIC-USDT", "DOGE-USDT"])

    specs = await provider.instruments()

    assert [spec.symbol for spec in specs] == ["BTC-USDT"]
    (warning,) = captured_logs.events("ccxt_symbols_not_listed")
    assert warning["symbols"] == ["DOGE-USDT", "MATIC-USDT"]


async def test_decimal_places_precision_is_counted_in_digits(
    make: Callable[..., ExchangeProvider], binance: Any
) -> None:
    markets = load("binance_markets.json")["markets"]
    by_symbol = {market["symbol"]: market for market in markets}
    by_symbol["BTC/USDT"]["precision"] = {"price": 2, "amount": 5}
    by_symbol["ETH/USDT"]["precision"] = {"price": 0, "amount": 8}
    by_symbol["SHIB/USDT"]["precision"] = {"price": None, "amount": 0}  # no tick: left out
    binance.set_markets(markets)
    binance.precisionMode = ccxt_async.DECIMAL_PLACES

    specs = await make().instruments()

    assert [(s.symbol, s.tick_size, s.quantity_step) for s in specs] == [
        ("BTC-USDT", Decimal("0.01"), Decimal("0.00001")),
        ("ETH-USDT", Decimal(1), Decimal("0.00000001")),
    ]


async def test_significant_digits_precision_is_refused(
    make: Callable[..., ExchangeProvider], binance: Any
) -> None:
    binance.precisionMode = ccxt_async.SIGNIFICANT_DIGITS  # bitfinex, bithumb

    with pytest.raises(ProviderError, match="significant digits"):
        await make().instruments()


# --- candles ------------------------------------------------------------------------------


async def test_candles_page_forward_deduplicate_and_keep_the_window(
    make: Callable[..., ExchangeProvider], fake: FakeBinance
) -> None:
    fake.serve_klines("binance_klines_btcusdt_1h.json")
    provider = make(page_limit=4)
    start, end = utc(2024, 3, 4, 0, 30), utc(2024, 3, 4, 9)

    bars = await provider.candles("BTC-USDT", Timeframe.H1, start, end)

    # 00:00 opens before the start, 09:00 and 10:00 at or after the end; 03:00 came twice.
    assert [bar.open_time for bar in bars] == [utc(2024, 3, 4, hour) for hour in range(1, 9)]
    assert [query["startTime"] for _, query in fake.requests] == [
        str(ms(start)),
        str(ms(utc(2024, 3, 4, 3)) + 1),
        str(ms(utc(2024, 3, 4, 6)) + 1),
    ]
    assert all(
        query["symbol"] == "BTCUSDT" and query["interval"] == "1h" and query["limit"] == "4"
        for _, query in fake.requests
    )
    # Exact decimals: Binance's strings, through ccxt's floats, with no binary residue.
    assert bars[0] == Bar(
        utc(2024, 3, 4, 1),
        Decimal("63254.01"),
        Decimal("63700"),
        Decimal("63210.55"),
        Decimal("63633.33"),
        Decimal("1234.56789"),
    )
    assert str(bars[0].open) == "63254.01"
    assert str(bars[-1].volume) == "1987.12345678"
    assert all(isinstance(bar.close, Decimal) for bar in bars)


async def test_weekly_candles_open_on_mondays_and_use_the_exchange_page_cap(
    make: Callable[..., ExchangeProvider], fake: FakeBinance
) -> None:
    fake.serve_klines("binance_klines_btcusdt_1w.json")
    provider = make()
    assert provider.page_limit == 1000  # ccxt's features: binance spot fetchOHLCV limit

    bars = await provider.candles("btc/usdt", Timeframe.W1, utc(2024, 2, 26), utc(2024, 3, 11))

    assert [bar.open_time for bar in bars] == [utc(2024, 2, 26), utc(2024, 3, 4)]
    assert all(bar.open_time.weekday() == 0 for bar in bars)
    assert len(fake.requests) == 1  # the newest bar (03-11) reached the end
    assert bars[1].close == Decimal("68955.88")


async def test_weeks_that_do_not_open_on_monday_are_refused(
    make: Callable[..., ExchangeProvider], fake: FakeBinance, captured_logs: CapturedLogs
) -> None:
    sunday = ms(utc(2024, 3, 3))
    week = 7 * 86_400_000
    rows = [
        [sunday + i * week, "1", "2", "0.5", "1.5", "10", 0, "0", 1, "0", "0", "0"]
        for i in range(2)
    ]
    fake.serve_sequence((200, rows), (200, []))

    with pytest.raises(ProviderError, match="Monday"):
        await make().candles("BTC-USDT", Timeframe.W1, utc(2024, 3, 1), utc(2024, 3, 20))

    # One stray bar among aligned ones is dropped with a warning instead.
    monday = ms(utc(2024, 3, 4))
    rows = [[monday, "1", "2", "0.5", "1.5", "10", 0, "0", 1, "0", "0", "0"], rows[1]]
    fake.serve_sequence((200, rows), (200, []))
    bars = await make().candles("BTC-USDT", Timeframe.W1, utc(2024, 3, 1), utc(2024, 3, 20))
    assert [bar.open_time for bar in bars] == [utc(2024, 3, 4)]
    assert captured_logs.events("ccxt_candles_misaligned")[0]["dropped"] == 1


async def test_candles_stop_when_a_page_brings_nothing_new(
    make: Callable[..., ExchangeProvider], fake: FakeBinance
) -> None:
    rows = load("binance_klines_btcusdt_1h.json")["pages"][0]["response"]
    fake.serve_sequence((200, rows))  # an exchange that ignores `since`: the same page again

    bars = await make(page_limit=4).candles(
        "BTC-USDT", Timeframe.H1, utc(2024, 3, 4), utc(2024, 3, 5)
    )

    assert len(bars) == 4
    assert len(fake.requests) == 2


async def test_candles_stop_on_an_empty_page_and_at_the_present(
    make: Callable[..., ExchangeProvider], fake: FakeBinance
) -> None:
    fake.serve_sequence((200, []))
    assert await make().candles("ETH-USDT", Timeframe.H1, utc(2024, 3, 4), utc(2024, 3, 5)) == []
    assert len(fake.requests) == 1

    # It is 03:30: after the 03:00 bar no other has opened, so no second page is asked for.
    fake.requests.clear()
    fake.serve_klines("binance_klines_btcusdt_1h.json")
    provider = make(page_limit=4, clock=lambda: utc(2024, 3, 4, 3, 30))
    bars = await provider.candles("BTC-USDT", Timeframe.H1, utc(2024, 3, 4, 0, 30), utc(2024, 3, 5))
    assert [bar.open_time.hour for bar in bars] == [1, 2, 3]
    assert len(fake.requests) == 1


async def test_candles_outside_the_ports_rules(
    make: Callable[..., ExchangeProvider], fake: FakeBinance, binance: Any
) -> None:
    provider = make()
    start = utc(2024, 3, 4)
    assert await provider.candles("BTC-USDT", Timeframe.H1, start, start) == []
    with pytest.raises(ValueError, match="timezone-aware"):
        await provider.candles("BTC-USDT", Timeframe.H1, start.replace(tzinfo=None), start)
    binance.timeframes = {"1m": "1m", "1h": "1h"}
    with pytest.raises(ProviderError, match="no 1w candles"):
        await provider.candles("BTC-USDT", Timeframe.W1, start, start + timedelta(weeks=2))
    assert fake.requests == []


# --- ticker -------------------------------------------------------------------------------


async def test_ticker_from_the_24h_ticker(
    make: Callable[..., ExchangeProvider], fake: FakeBinance
) -> None:
    fake.serve_tickers()

    tick = await make().ticker("BTC-USDT")

    assert fake.requests == [("/api/v3/ticker/24hr", {"symbol": "BTCUSDT"})]
    assert tick == Tick(
        symbol="BTC-USDT",
        time=datetime(2024, 3, 4, 22, 59, 59, 999000, tzinfo=UTC),  # the 24 h window's close
        last=Decimal("67012.34"),
        bid=Decimal("67012.33"),
        ask=Decimal("67012.34"),
    )
    tick = await make().ticker("SHIB-USDT")
    assert (tick.last, tick.bid, tick.ask) == (
        Decimal("0.00001834"),
        Decimal("0.00001833"),
        Decimal("0.00001834"),
    )


async def test_missing_bid_and_ask_are_the_last_price(
    make: Callable[..., ExchangeProvider], fake: FakeBinance, binance: Any
) -> None:
    fake.serve_tickers()
    # MATIC/USDT is halted (BREAK), its book empty: Binance reports bid and ask 0.
    tick = await make().ticker("MATIC-USDT")
    assert tick.bid == tick.ask == tick.last == Decimal("0.3812")

    async def fetch_ticker(symbol: str, params: Any = None) -> dict[str, Any]:
        return {"symbol": symbol, "timestamp": None, "last": 3456.78, "bid": None, "ask": None}

    binance.fetch_ticker = fetch_ticker
    now = utc(2024, 3, 4, 12)
    tick = await make(clock=lambda: now).ticker("ETH-USDT")
    assert tick == Tick("ETH-USDT", now, Decimal("3456.78"), Decimal("3456.78"), Decimal("3456.78"))


# --- errors -------------------------------------------------------------------------------


async def test_a_symbol_the_exchange_has_no_spot_market_for_is_unknown(
    make: Callable[..., ExchangeProvider], fake: FakeBinance
) -> None:
    provider = make()
    with pytest.raises(
        UnknownSymbol, match=r"no spot market 'BTC-USD' \(markets of BTC there: BTC-USDT\)"
    ):
        await provider.ticker("BTC-USD")  # USDT is not USD: no silent substitution
    with pytest.raises(UnknownSymbol):
        await provider.candles("DOGE-USDT", Timeframe.H1, utc(2024, 3, 4), utc(2024, 3, 5))
    assert fake.requests == []


async def test_bad_symbol_from_the_exchange_is_unknown_symbol(
    make: Callable[..., ExchangeProvider], fake: FakeBinance, sleeps: list[float]
) -> None:
    fake.serve_sequence((400, {"code": -1121, "msg": "Invalid symbol."}))

    with pytest.raises(UnknownSymbol, match="Invalid symbol"):
        await make().candles("MATIC-USDT", Timeframe.H1, utc(2024, 3, 4), utc(2024, 3, 5))

    assert len(fake.requests) == 1 and sleeps == []  # not retried


async def test_network_errors_are_retried_with_backoff(
    make: Callable[..., ExchangeProvider], fake: FakeBinance, sleeps: list[float]
) -> None:
    ticker = load("binance_ticker_24hr.json")["BTCUSDT"]
    fake.serve_sequence(
        ccxt_async.RequestTimeout("binance GET https://api.binance.com/api/v3/ticker/24hr"),
        (
            429,
            {"code": -1003, "msg": "Too many requests; current limit is 6000 weight per minute."},
        ),
        (200, ticker),
    )

    tick = await make().ticker("BTC-USDT")

    assert tick.last == Decimal("67012.34")
    assert len(fake.requests) == 3
    assert sleeps == [1.0, 2.0]


@pytest.mark.parametrize(
    "failure",
    [
        # ccxt's binance maps -1008 to OperationFailed (retryable), not to a NetworkError.
        (503, {"code": -1008, "msg": "Server is currently overloaded with other requests."}),
        ccxt_async.ExchangeNotAvailable("binance GET https://api.binance.com/api/v3/ticker/24hr"),
    ],
    ids=["overloaded", "connection-refused"],
)
async def test_network_errors_give_up_with_provider_error(
    make: Callable[..., ExchangeProvider],
    fake: FakeBinance,
    sleeps: list[float],
    failure: Outcome,
) -> None:
    fake.serve_sequence(failure)

    with pytest.raises(ProviderError, match="after 4 attempts") as caught:
        await make(backoff_base=10, backoff_max=15).ticker("BTC-USDT")

    assert not isinstance(caught.value, UnknownSymbol)
    assert isinstance(caught.value.__cause__, ccxt_async.OperationFailed)
    assert len(fake.requests) == 4
    assert sleeps == [10.0, 15.0, 15.0]


async def test_authentication_errors_say_so(
    make: Callable[..., ExchangeProvider], fake: FakeBinance, sleeps: list[float]
) -> None:
    fake.serve_sequence(
        (401, {"code": -2015, "msg": "Invalid API-key, IP, or permissions for action."})
    )

    with pytest.raises(ProviderError, match="API key, secret and their permissions"):
        await make().ticker("BTC-USDT")

    assert len(fake.requests) == 1 and sleeps == []


async def test_missing_ccxt_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ccxt", None)
    monkeypatch.setitem(sys.modules, "ccxt.async_support", None)

    with pytest.raises(CcxtNotInstalled, match=r"pip install 'tradeos\[exchanges\]'") as caught:
        ExchangeProvider()

    assert INSTALL_HINT in str(caught.value)
    assert isinstance(caught.value, ProviderError) and isinstance(caught.value, ImportError)


# --- the ccxt exchange object -------------------------------------------------------------


async def test_a_made_exchange_is_rate_limited_configured_and_closed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    provider = ExchangeProvider("kraken", config={"timeout": 5000})
    exchange = provider.exchange
    exchange.timeout_on_exit = 0
    assert provider.name == "ccxt:kraken"
    assert exchange.enableRateLimit is True
    assert exchange.timeout == 5000
    assert provider.page_limit == 720  # kraken's cap, from ccxt's features
    closed: list[bool] = []
    close = exchange.close

    async def spy_close() -> None:
        closed.append(True)
        await close()

    monkeypatch.setattr(exchange, "close", spy_close)
    async with provider:
        pass
    assert closed == [True]

    with pytest.raises(ValueError, match="no exchange 'binanse'"):
        ExchangeProvider("binanse")


async def test_an_injected_exchange_stays_open(
    make: Callable[..., ExchangeProvider], binance: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def fail() -> None:
        raise AssertionError("closed the caller's exchange")

    monkeypatch.setattr(binance, "close", fail)
    await make().aclose()
    monkeypatch.undo()


def test_page_limit_falls_back_when_ccxt_states_none() -> None:
    class Bare:
        id = "bare"
        features = None

    assert ExchangeProvider(exchange=Bare()).page_limit == DEFAULT_PAGE_LIMIT
