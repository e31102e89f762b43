"""The simulated market: deterministic, consistent across timeframes, realistic, live."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from itertools import pairwise

import numpy as np
import pytest

from tradeos.market.providers.base import (
    AssetClass,
    Bar,
    ListingsProvider,
    MarketProvider,
    UnknownSymbol,
)
from tradeos.market.providers.sim import CATALOGUE, SIM_EPOCH, SimProvider
from tradeos.market.timeframes import Timeframe

NOW = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
YEAR_AGO = NOW - timedelta(days=365)
# (symbol, lowest, highest) the price may reach in the year before NOW: wide, but realistic.
PRICE_BANDS = {
    "BTC-USD": (20_000, 400_000),
    "ETH-USD": (600, 15_000),
    "SOL-USD": (20, 1_200),
    "BNB-USD": (120, 3_000),
    "EUR-USD": (0.85, 1.35),
    "GBP-USD": (1.00, 1.60),
    "USD-JPY": (115, 195),
    "XAU-USD": (1_700, 4_000),
    "AAPL": (90, 600),
    "MSFT": (170, 1_000),
    "NVDA": (35, 550),
    "SPY": (330, 1_000),
}


def sim(seed: int = 42, now: datetime = NOW) -> SimProvider:
    return SimProvider(seed=seed, clock=lambda: now)


def aggregate(bars: Sequence[Bar], open_time: datetime) -> Bar:
    return Bar(
        open_time=open_time,
        open=bars[0].open,
        high=max(bar.high for bar in bars),
        low=min(bar.low for bar in bars),
        close=bars[-1].close,
        volume=sum((bar.volume for bar in bars), Decimal(0)),
    )


def closes(bars: Sequence[Bar]) -> np.ndarray:
    return np.array([float(bar.close) for bar in bars])


@pytest.fixture(scope="module")
async def year_of_hours() -> dict[str, Sequence[Bar]]:
    provider = sim()
    return {
        symbol: await provider.candles(symbol, Timeframe.H1, YEAR_AGO, NOW) for symbol in CATALOGUE
    }


async def test_a_dozen_instruments_across_asset_classes() -> None:
    specs = {spec.symbol: spec for spec in await sim().instruments()}

    assert len(specs) == 12
    assert {"BTC-USD", "ETH-USD", "SOL-USD", "EUR-USD", "GBP-USD", "USD-JPY", "XAU-USD"} <= set(
        specs
    )
    assert {"AAPL", "MSFT", "SPY"} <= set(specs)
    assert {spec.asset_class for spec in specs.values()} >= {
        AssetClass.CRYPTO,
        AssetClass.FOREX,
        AssetClass.EQUITY,
        AssetClass.COMMODITY,
    }
    assert specs["BTC-USD"].tick_size == Decimal("0.01")
    assert specs["EUR-USD"].tick_size == Decimal("0.00001")
    assert specs["USD-JPY"].tick_size == Decimal("0.001")
    assert (specs["EUR-USD"].base, specs["EUR-USD"].quote) == ("EUR", "USD")


async def test_the_provider_implements_both_ports() -> None:
    provider = sim()

    assert isinstance(provider, MarketProvider)
    assert isinstance(provider, ListingsProvider)
    assert provider.name == "sim"


async def test_same_seed_same_market_different_seed_different_market() -> None:
    start = NOW - timedelta(days=10)

    first = await sim(42).candles("ETH-USD", Timeframe.H1, start, NOW)
    again = await sim(42).candles("ETH-USD", Timeframe.H1, start, NOW)
    other = await sim(7).candles("ETH-USD", Timeframe.H1, start, NOW)

    assert first == again
    assert [bar.open_time for bar in other] == [bar.open_time for bar in first]
    assert sum(a.close != b.close for a, b in zip(first, other, strict=True)) > 200


async def test_overlapping_ranges_agree_bar_for_bar() -> None:
    provider = sim()
    start = NOW - timedelta(days=5)
    # Odd boundaries on purpose: mid-day, across midnights, different lengths.
    early = await provider.candles("BTC-USD", Timeframe.M1, start, start + timedelta(days=3))
    late = await provider.candles(
        "BTC-USD", Timeframe.M1, start + timedelta(days=1, minutes=17), NOW
    )

    overlap = {bar.open_time: bar for bar in late}
    shared = [bar for bar in early if bar.open_time in overlap]
    assert len(shared) == 2 * 1440 - 17
    assert all(overlap[bar.open_time] == bar for bar in shared)


async def test_every_minute_opens_at_the_previous_close_across_midnights() -> None:
    bars = await sim().candles("GBP-USD", Timeframe.M1, NOW - timedelta(days=3), NOW)

    assert all(b.open == a.close for a, b in pairwise(bars))
    times = [bar.open_time for bar in bars]
    assert times == [NOW - timedelta(days=3) + timedelta(minutes=i) for i in range(len(bars))]


@pytest.mark.parametrize(
    ("coarse", "fine", "count"),
    [
        (Timeframe.M5, Timeframe.M1, 5),
        (Timeframe.M15, Timeframe.M5, 3),
        (Timeframe.M30, Timeframe.M15, 2),
        (Timeframe.H1, Timeframe.M1, 60),
        (Timeframe.H4, Timeframe.H1, 4),
        (Timeframe.D1, Timeframe.H1, 24),
        (Timeframe.W1, Timeframe.D1, 7),
    ],
)
async def test_coarse_bars_are_exact_aggregates_of_finer_ones(
    coarse: Timeframe, fine: Timeframe, count: int
) -> None:
    provider = sim()
    start = coarse.floor(NOW - 30 * coarse.delta)
    end = coarse.floor(NOW)  # complete bars only

    coarse_bars = await provider.candles("SOL-USD", coarse, start, end)
    fine_bars = await provider.candles("SOL-USD", fine, start, end)

    assert len(coarse_bars) == 30
    assert len(fine_bars) == 30 * count
    for i, bar in enumerate(coarse_bars):
        assert bar == aggregate(fine_bars[i * count : (i + 1) * count], bar.open_time)


async def test_thirty_days_of_minutes_are_contiguous() -> None:
    start = NOW - timedelta(days=30)

    bars = await sim().candles("ETH-USD", Timeframe.M1, start, NOW)

    assert len(bars) == 30 * 1440 == 43_200
    assert bars[0].open_time == start
    assert bars[-1].open_time == NOW - timedelta(minutes=1)
    assert all(b.open_time - a.open_time == timedelta(minutes=1) for a, b in pairwise(bars))
    assert all(b.open == a.close for a, b in pairwise(bars))


def test_a_fresh_market_makes_a_year_of_hours_and_a_month_of_minutes() -> None:
    """A fresh market (a seed no other test uses, so nothing is cached) makes a year of hourly
    bars for every instrument and 30 days of minutes on demand; how fast is a benchmark's
    business, not a test's."""
    provider = SimProvider(seed=20_261_121, clock=lambda: NOW)

    async def produce() -> tuple[int, int]:
        hours = [await provider.candles(s, Timeframe.H1, YEAR_AGO, NOW) for s in CATALOGUE]
        minutes = await provider.candles("BTC-USD", Timeframe.M1, NOW - timedelta(days=30), NOW)
        return sum(len(bars) for bars in hours), len(minutes)

    hour_bars, minute_bars = asyncio.run(produce())
    assert (hour_bars, minute_bars) == (len(CATALOGUE) * 365 * 24, 30 * 1440)


async def test_weekly_bars_open_on_mondays() -> None:
    bars = await sim().candles("SPY", Timeframe.W1, YEAR_AGO, NOW)

    assert len(bars) == 52
    assert all(bar.open_time.weekday() == 0 and bar.open_time.hour == 0 for bar in bars)


async def test_a_year_of_hours_keeps_the_ohlc_invariants(
    year_of_hours: dict[str, Sequence[Bar]],
) -> None:
    for symbol, bars in year_of_hours.items():
        spec = CATALOGUE[symbol].spec
        assert len(bars) == 365 * 24, symbol
        assert bars[0].open_time == YEAR_AGO
        for bar in bars:
            assert bar.low <= min(bar.open, bar.close), (symbol, bar)
            assert bar.high >= max(bar.open, bar.close), (symbol, bar)
            assert bar.low > 0
            assert bar.volume >= 0
            for price in (bar.open, bar.high, bar.low, bar.close):
                assert price % spec.tick_size == 0
                assert price.as_tuple().exponent == spec.tick_size.as_tuple().exponent
            assert bar.volume % spec.quantity_step == 0
        # Bars have real ranges, not just open/close.
        assert sum(bar.high > max(bar.open, bar.close) for bar in bars) > 0.9 * len(bars)


async def test_prices_stay_at_realistic_levels(year_of_hours: dict[str, Sequence[Bar]]) -> None:
    for symbol, bars in year_of_hours.items():
        lowest, highest = PRICE_BANDS[symbol]
        assert min(bar.low for bar in bars) > lowest, symbol
        assert max(bar.high for bar in bars) < highest, symbol
        level = CATALOGUE[symbol].price_level
        assert level / 2 < float(bars[-1].close) < level * 2, symbol


async def test_volatility_is_crypto_then_equities_then_gold_then_forex(
    year_of_hours: dict[str, Sequence[Bar]],
) -> None:
    def annual_volatility(symbol: str) -> float:
        returns = np.diff(np.log(closes(year_of_hours[symbol])))
        return float(returns.std() * np.sqrt(24 * 365))

    by_class: dict[AssetClass, list[float]] = {}
    for symbol, instrument in CATALOGUE.items():
        by_class.setdefault(instrument.spec.asset_class, []).append(annual_volatility(symbol))

    assert min(by_class[AssetClass.CRYPTO]) > max(by_class[AssetClass.EQUITY])
    assert min(by_class[AssetClass.EQUITY]) > max(by_class[AssetClass.COMMODITY])
    assert min(by_class[AssetClass.COMMODITY]) > max(by_class[AssetClass.FOREX])
    assert 0.3 < annual_volatility("BTC-USD") < 0.9
    assert 0.03 < annual_volatility("EUR-USD") < 0.15


async def test_volatility_clusters(year_of_hours: dict[str, Sequence[Bar]]) -> None:
    for symbol, bars in year_of_hours.items():
        moves = np.abs(np.diff(np.log(closes(bars))))
        # Divide out the time-of-day pattern, so what is left is clustering, not the clock.
        hours = np.array([bar.open_time.hour for bar in bars[1:]])
        typical = np.array([moves[hours == h].mean() for h in range(24)])
        surprise = moves / typical[hours]
        surprise -= surprise.mean()
        autocorrelation = [
            float(surprise[:-lag] @ surprise[lag:] / (surprise @ surprise)) for lag in range(1, 25)
        ]
        # Independent returns would give 0 +- 0.002 here (1 / sqrt(24 lags * 8760 hours)).
        assert np.mean(autocorrelation) > 0.01, (symbol, autocorrelation)


async def test_no_bars_after_now() -> None:
    provider = sim(now=NOW + timedelta(seconds=30))

    for timeframe in Timeframe:
        bars = await provider.candles(
            "AAPL", timeframe, NOW - 5 * timeframe.delta, NOW + timedelta(days=30)
        )
        assert bars, timeframe
        assert bars[-1].open_time == timeframe.floor(NOW + timedelta(seconds=30))

    assert (
        await provider.candles(
            "AAPL", Timeframe.M1, NOW + timedelta(minutes=1), NOW + timedelta(days=1)
        )
        == []
    )


async def test_the_current_bar_is_built_from_the_path_up_to_now() -> None:
    minute = NOW + timedelta(minutes=7)
    halfway = sim(now=minute + timedelta(seconds=30))
    after = sim(now=minute + timedelta(minutes=1))

    partial = (await halfway.candles("BTC-USD", Timeframe.M1, minute, minute + timedelta(hours=1)))[
        -1
    ]
    complete = (
        await after.candles("BTC-USD", Timeframe.M1, minute, minute + timedelta(minutes=1))
    )[-1]
    tick = await halfway.ticker("BTC-USD")

    assert partial.open_time == complete.open_time == minute
    assert partial.open == complete.open
    assert partial.close == tick.last
    assert complete.low <= partial.low <= min(partial.open, partial.close)
    assert complete.high >= partial.high >= max(partial.open, partial.close)
    assert partial.volume < complete.volume

    # The hour in progress is the aggregate of its minutes so far, the partial one included.
    hour = (await halfway.candles("BTC-USD", Timeframe.H1, NOW, NOW + timedelta(hours=1)))[-1]
    minutes = await halfway.candles("BTC-USD", Timeframe.M1, NOW, NOW + timedelta(hours=1))
    assert len(minutes) == 8
    assert hour == aggregate(minutes, NOW)


async def test_the_ticker_ends_each_minute_at_its_close() -> None:
    bars = await sim(now=NOW).candles("XAU-USD", Timeframe.M1, NOW - timedelta(minutes=5), NOW)

    for bar in bars:
        at_open = await sim(now=bar.open_time).ticker("XAU-USD")
        at_close = await sim(now=bar.open_time + timedelta(minutes=1)).ticker("XAU-USD")
        assert at_open.last == bar.open
        assert at_close.last == bar.close
        assert at_close.time == bar.open_time + timedelta(minutes=1)


async def test_the_ticker_moves_every_second_within_the_bar() -> None:
    minute = NOW - timedelta(minutes=3)
    bar = (await sim().candles("BTC-USD", Timeframe.M1, minute, minute + timedelta(minutes=1)))[0]

    ticks = [
        await sim(now=minute + timedelta(seconds=s, microseconds=999)).ticker("BTC-USD")
        for s in range(60)
    ]

    prices = [tick.last for tick in ticks]
    assert all(bar.low <= price <= bar.high for price in prices)
    assert sum(a != b for a, b in pairwise(prices)) >= 55
    assert [tick.time.second for tick in ticks] == list(range(60))


async def test_bid_and_ask_surround_the_last_price() -> None:
    provider = sim()
    for symbol in CATALOGUE:
        tick = await provider.ticker(symbol)
        spread_bps = (tick.ask - tick.bid) / tick.last * 10_000
        assert tick.bid < tick.last < tick.ask, symbol
        assert spread_bps < 20, (symbol, spread_bps)
        assert tick.time == NOW
        assert tick.symbol == symbol

    euro = await provider.ticker("EUR-USD")
    assert euro.ask - euro.bid <= Decimal("0.00050")  # at most a few pips


async def test_listings_rank_the_simulated_coins_by_market_cap() -> None:
    provider = sim()

    listings = await provider.listings(10)

    assert {listing.symbol for listing in listings} == {"BTC", "ETH", "SOL", "BNB"}
    assert [listing.rank for listing in listings] == [1, 2, 3, 4]
    caps = [listing.market_cap for listing in listings]
    assert caps == sorted(caps, reverse=True)
    assert listings[0].symbol == "BTC"
    for listing in listings:
        tick = await provider.ticker(f"{listing.symbol}-USD")
        assert listing.price == tick.last
        assert listing.circulating_supply is not None and listing.price is not None
        assert listing.market_cap == (listing.price * listing.circulating_supply).quantize(
            Decimal("0.01")
        )
        assert listing.volume_24h is not None and listing.volume_24h > 0
        assert None not in (listing.change_1h, listing.change_24h, listing.change_7d)
        assert listing.ath is not None and listing.atl is not None
        assert listing.atl <= listing.price <= listing.ath
        assert listing.ath_date is not None and listing.atl_date is not None
        assert NOW - timedelta(days=366) <= listing.ath_date <= NOW
        assert NOW - timedelta(days=366) <= listing.atl_date <= NOW
        assert listing.categories
        assert listing.description is not None and "sim" in listing.description
        assert listing.website is not None and listing.website.startswith("https://")
        assert listing.last_updated == NOW
        assert listing.source_id


async def test_listing_changes_come_from_the_path() -> None:
    provider = sim()
    btc = (await provider.listings(1))[0]
    hour_ago = await sim(now=NOW - timedelta(hours=1)).ticker("BTC-USD")

    assert btc.price is not None and btc.change_1h is not None
    expected = ((btc.price / hour_ago.last - 1) * 100).quantize(Decimal("0.01"))
    assert btc.change_1h == expected


async def test_listings_respect_the_limit() -> None:
    assert [listing.rank for listing in await sim().listings(2)] == [1, 2]
    assert await sim().listings(0) == []


async def test_unknown_symbols_are_refused() -> None:
    provider = sim()

    with pytest.raises(UnknownSymbol):
        await provider.ticker("DOGE-USD")
    with pytest.raises(UnknownSymbol):
        await provider.candles("btc-usd", Timeframe.H1, YEAR_AGO, NOW)


async def test_naive_times_are_refused() -> None:
    with pytest.raises(ValueError, match="naive"):
        await sim().candles("BTC-USD", Timeframe.H1, datetime(2026, 11, 1), NOW)


async def test_history_starts_at_the_sim_epoch() -> None:
    bars = await sim().candles(
        "MSFT", Timeframe.D1, SIM_EPOCH - timedelta(days=30), SIM_EPOCH + timedelta(days=3)
    )

    assert [bar.open_time for bar in bars] == [SIM_EPOCH + timedelta(days=i) for i in range(3)]


async def test_the_simulated_market_does_not_change_between_releases() -> None:
    # A golden value: if this moves, every user's simulated history moves with it (a change of
    # the generator, or of numpy's random streams). Update it only on purpose.
    tick = await sim().ticker("BTC-USD")

    assert tick.last == Decimal("91112.34")
