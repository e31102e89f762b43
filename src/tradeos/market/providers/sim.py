"""The `sim` market provider: a seeded, deterministic, fully offline simulated market.

The default data source of TradeOS. Every price is a pure function of (seed, symbol, time), so
any range of history is computed on demand, overlapping requests agree bar for bar, and the live
ticker continues the history exactly. Nothing is stored.

How a price path is made (all numpy, no I/O):

1. **Days.** A day-level walk of log prices from `SIM_EPOCH` (2020-01-01 UTC): GARCH(1,1)
   variance (volatility clustering), a slow AR(1) trend regime, and mean reversion towards the
   instrument's late-2026 price level (so levels stay realistic however long the server runs),
   bent smoothly to meet that level on `PIN_DAY` (2026-11-01) whatever the seed.
   Its shocks come in blocks of `DAY_BLOCK` days, each block from its own seeded generator, so
   extending the walk further never changes a day already computed. A few thousand days: cheap.
2. **Inside a day.** `SUBSTEPS_PER_MINUTE` points per minute, a Brownian bridge from the day's
   opening anchor to the next day's, with an intraday variance profile per asset class (busy
   London/New York sessions). Seeded by (seed, symbol, day) alone, so one day is computed without
   its neighbours. 1-minute OHLC comes from those points: realistic intrabar high/low.
3. **Inside a minute.** The live ticker needs a price every second: a finer bridge between the
   minute's points, seeded by (seed, symbol, minute) and folded back inside the minute's low/high,
   so a live price never leaves the bar it ends up in and equals the bar's close when the minute
   ends.

Coarser bars (5m … 1w) are exact aggregates of the 1-minute bars, on `Timeframe` boundaries.
Prices are whole ticks (`InstrumentSpec.tick_size`), volumes whole quantity steps, so the
aggregation is exact integer arithmetic before anything becomes a `Decimal`.

Simplifications, on purpose: every instrument trades 24/7 (equities and forex too, with quiet
nights and weekends only in the sense of the intraday profile); history starts at `SIM_EPOCH`;
volumes are market-wide in scale; crypto supplies are fixed; ATH/ATL cover the last 365 days.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal
from functools import lru_cache, partial
from typing import Final

import anyio.to_thread
import numpy as np
import numpy.typing as npt

from tradeos.market.providers.base import (
    AssetClass,
    Bar,
    InstrumentSpec,
    Listing,
    ProviderError,
    Tick,
    UnknownSymbol,
)
from tradeos.market.timeframes import Timeframe

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

SIM_EPOCH: Final = datetime(2020, 1, 1, tzinfo=UTC)
_UNIX_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_SECOND: Final = timedelta(seconds=1)
_EPOCH_MINUTE: Final = int((SIM_EPOCH - _UNIX_EPOCH) // timedelta(minutes=1))
# Weekly bars start on Monday 1970-01-05, four days after the Unix epoch (as in timeframes.py).
_WEEK_ORIGIN_MINUTE: Final = 4 * 1440

MINUTES_PER_DAY: Final = 1440
# Points per minute for the intrabar path; must divide 60 so the ticker's seconds hit them.
SUBSTEPS_PER_MINUTE: Final = 6
_SECONDS_PER_SUBSTEP: Final = 60 // SUBSTEPS_PER_MINUTE
_SUBSTEPS_PER_DAY: Final = MINUTES_PER_DAY * SUBSTEPS_PER_MINUTE

DAY_BLOCK: Final = 1024  # days of shocks drawn per seeded generator
GARCH_ALPHA: Final = 0.10  # reaction of tomorrow's variance to today's shock
GARCH_BETA: Final = 0.85  # persistence: alpha + beta = 0.95, clusters last a few weeks
REVERSION_HALF_LIFE_DAYS: Final = 120.0  # pull back to the instrument's price level
# The walk is bent smoothly (over about PIN_WIDTH_DAYS) to pass through the price level on this
# day, so whatever the seed, late-2026 prices look like late 2026.
PIN_DAY: Final = (datetime(2026, 11, 1, tzinfo=UTC) - SIM_EPOCH).days
PIN_WIDTH_DAYS: Final = 120.0
TREND_MEMORY_DAYS: Final = 30.0  # how long a trend regime lasts
TREND_SHARE: Final = 0.10  # trend drift per day, in units of the daily volatility
VOLUME_NOISE: Final = 0.35  # log-normal spread of minute volumes

# Above this many minutes of work a candle request runs in a worker thread (about 1 ms/day).
INLINE_MINUTES: Final = MINUTES_PER_DAY


@dataclass(frozen=True)
class SimInstrument:
    """An instrument of the simulated market and the parameters of its price process."""

    spec: InstrumentSpec
    price_level: float  # late-2026 level the price reverts to
    annual_volatility: float
    daily_volume: float  # base units traded per day, market-wide scale
    half_spread_bps: float  # half the bid/ask spread in calm markets


@dataclass(frozen=True)
class SimCoin:
    """Listing facts of a simulated cryptocurrency (supplies fixed at late-2026 values)."""

    symbol: str  # the instrument: BTC-USD
    source_id: str
    circulating_supply: Decimal
    total_supply: Decimal | None
    max_supply: Decimal | None
    categories: tuple[str, ...]
    website: str
    summary: str


def _instrument(
    symbol: str,
    name: str,
    asset_class: AssetClass,
    tick: str,
    step: str,
    level: float,
    vol: float,
    daily_volume: float,
    half_spread_bps: float,
) -> SimInstrument:
    base, _, quote = symbol.partition("-")
    spec = InstrumentSpec(
        symbol=symbol,
        name=name,
        asset_class=asset_class,
        base=base,
        quote=quote or "USD",
        tick_size=Decimal(tick),
        quantity_step=Decimal(step),
    )
    return SimInstrument(spec, level, vol, daily_volume, half_spread_bps)


_C, _F, _G, _E = AssetClass.CRYPTO, AssetClass.FOREX, AssetClass.COMMODITY, AssetClass.EQUITY
# Volatility order: crypto > equities > gold > forex, as in real markets.
CATALOGUE: Final[dict[str, SimInstrument]] = {
    sim.spec.symbol: sim
    for sim in (
        _instrument("BTC-USD", "Bitcoin", _C, "0.01", "0.00001", 90_000, 0.55, 350_000, 0.5),
        _instrument("ETH-USD", "Ethereum", _C, "0.01", "0.0001", 3_000, 0.70, 5_000_000, 0.8),
        _instrument("SOL-USD", "Solana", _C, "0.01", "0.001", 150, 0.85, 25_000_000, 1.5),
        _instrument("BNB-USD", "BNB", _C, "0.01", "0.001", 650, 0.60, 2_500_000, 1.5),
        _instrument("EUR-USD", "Euro / US Dollar", _F, "0.00001", "1", 1.08, 0.07, 5e9, 0.4),
        _instrument(
            "GBP-USD", "British Pound / US Dollar", _F, "0.00001", "1", 1.27, 0.08, 3e9, 0.5
        ),
        _instrument("USD-JPY", "US Dollar / Japanese Yen", _F, "0.001", "1", 150, 0.09, 4e9, 0.4),
        _instrument("XAU-USD", "Gold / US Dollar", _G, "0.01", "0.01", 2_600, 0.15, 500_000, 1.0),
        _instrument("AAPL", "Apple Inc.", _E, "0.01", "1", 230, 0.27, 50_000_000, 0.2),
        _instrument("MSFT", "Microsoft Corporation", _E, "0.01", "1", 420, 0.25, 20_000_000, 0.2),
        _instrument("NVDA", "NVIDIA Corporation", _E, "0.01", "1", 140, 0.45, 250_000_000, 0.3),
        _instrument("SPY", "SPDR S&P 500 ETF Trust", _E, "0.01", "1", 590, 0.16, 60_000_000, 0.1),
    )
}

_POW = ("Cryptocurrency", "Layer 1 (L1)", "Proof of Work (PoW)")
_POS = ("Smart Contract Platform", "Layer 1 (L1)", "Proof of Stake (PoS)")
COINS: Final[dict[str, SimCoin]] = {
    coin.symbol: coin
    for coin in (
        SimCoin(
            "BTC-USD",
            "bitcoin",
            Decimal(19_950_000),
            Decimal(19_950_000),
            Decimal(21_000_000),
            _POW,
            "https://bitcoin.org",
            "The first decentralised digital currency, secured by proof of work.",
        ),
        SimCoin(
            "ETH-USD",
            "ethereum",
            Decimal(120_700_000),
            Decimal(120_700_000),
            None,
            _POS,
            "https://ethereum.org",
            "A programmable blockchain for smart contracts and decentralised applications.",
        ),
        SimCoin(
            "SOL-USD",
            "solana",
            Decimal(560_000_000),
            Decimal(610_000_000),
            None,
            _POS,
            "https://solana.com",
            "A high-throughput smart contract blockchain.",
        ),
        SimCoin(
            "BNB-USD",
            "binancecoin",
            Decimal(139_000_000),
            Decimal(139_000_000),
            Decimal(200_000_000),
            ("Exchange-based Tokens", "Smart Contract Platform", "Layer 1 (L1)"),
            "https://www.bnbchain.org",
            "The native coin of BNB Chain and the Binance ecosystem.",
        ),
    )
}


# --- intraday profiles --------------------------------------------------------------------------

# Relative variance per UTC hour. Crypto is busiest in US hours; forex and gold in the London and
# London/New York overlap sessions; equities (traded 24/7 here) mostly in NYSE hours.
# fmt: off
_HOURLY_VARIANCE: Final[dict[str, tuple[float, ...]]] = {
    #          00h  01h  02h  03h  04h  05h  06h  07h  08h  09h  10h  11h
    #          12h  13h  14h  15h  16h  17h  18h  19h  20h  21h  22h  23h
    "crypto": (1.1, 1.1, 1.0, 1.0, 0.8, 0.8, 0.8, 0.9, 1.0, 1.0, 1.0, 1.0,
               1.1, 1.3, 1.5, 1.5, 1.4, 1.3, 1.2, 1.1, 1.1, 1.0, 1.0, 1.0),
    "fx":     (0.5, 0.5, 0.5, 0.5, 0.4, 0.5, 0.7, 1.2, 1.4, 1.3, 1.2, 1.2,
               1.6, 1.8, 1.9, 1.8, 1.5, 1.0, 0.8, 0.7, 0.6, 0.4, 0.3, 0.4),
    "equity": (0.3, 0.3, 0.3, 0.3, 0.3, 0.3, 0.3, 0.3, 0.3, 0.3, 0.3, 0.3,
               0.4, 0.6, 3.0, 2.4, 2.0, 2.0, 2.2, 2.6, 0.5, 0.4, 0.3, 0.3),
}
# fmt: on


@dataclass(frozen=True)
class IntradayProfile:
    substep_fraction: FloatArray  # share of the day's variance in each substep (sums to 1)
    cumulative_fraction: FloatArray  # running sum of substep_fraction, ends at exactly 1
    minute_fraction: FloatArray  # share of the day's variance in each minute
    minute_volume: FloatArray  # relative volume per minute, mean 1


def intraday_profile(hourly_variance: Sequence[float]) -> IntradayProfile:
    hourly = np.asarray(hourly_variance, dtype=np.float64)
    minute = np.repeat(hourly / hourly.sum() / 60.0, 60)
    substep = np.repeat(minute / SUBSTEPS_PER_MINUTE, SUBSTEPS_PER_MINUTE)
    cumulative = np.cumsum(substep)
    cumulative[-1] = 1.0
    volume = np.repeat(hourly**0.75, 60)
    return IntradayProfile(substep, cumulative, minute, volume / volume.mean())


_PROFILES: Final = {name: intraday_profile(hourly) for name, hourly in _HOURLY_VARIANCE.items()}


def _profile(asset_class: AssetClass) -> IntradayProfile:
    if asset_class is AssetClass.CRYPTO:
        return _PROFILES["crypto"]
    if asset_class in (AssetClass.FOREX, AssetClass.COMMODITY):
        return _PROFILES["fx"]
    return _PROFILES["equity"]


# --- seeded randomness ---------------------------------------------------------------------------


def stream_seed(seed: int, symbol: str, stream: str, index: int) -> int:
    """A stable 128-bit seed for one stream of one period (Python's `hash()` is salted)."""
    key = f"tradeos-sim:{seed}:{symbol}:{stream}:{index}".encode()
    return int.from_bytes(hashlib.blake2b(key, digest_size=16).digest(), "little")


def _generator(seed: int, symbol: str, stream: str, index: int) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64(stream_seed(seed, symbol, stream, index)))


def long_run_daily_variance(sim: SimInstrument) -> float:
    return sim.annual_volatility**2 / 365.0


# --- level 1: the day-level walk ---------------------------------------------------------------


@dataclass(frozen=True)
class DayWalk:
    log_anchor: FloatArray  # log price at 00:00 UTC of day d (from SIM_EPOCH), len = days + 1
    variance: FloatArray  # variance of day d's log return, len = days


@lru_cache(maxsize=128)
def day_walk(seed: int, symbol: str, blocks: int) -> DayWalk:
    """The first `blocks * DAY_BLOCK` days of the walk (at least through PIN_DAY); a longer walk
    shares this prefix."""
    sim = CATALOGUE[symbol]
    blocks = max(blocks, PIN_DAY // DAY_BLOCK + 1)
    shocks = np.concatenate(
        [_generator(seed, symbol, "days", b).standard_normal((DAY_BLOCK, 2)) for b in range(blocks)]
    ).tolist()
    long_run = long_run_daily_variance(sim)
    omega = long_run * (1.0 - GARCH_ALPHA - GARCH_BETA)
    reversion = math.log(2.0) / REVERSION_HALF_LIFE_DAYS
    trend_persistence = 1.0 - 1.0 / TREND_MEMORY_DAYS
    trend_shock = TREND_SHARE * math.sqrt(long_run) * math.sqrt(1.0 - trend_persistence**2)

    days = blocks * DAY_BLOCK
    deviation = np.empty(days + 1)  # log price minus log price level
    variance = np.empty(days)
    level, trend, var = 0.0, 0.0, long_run
    deviation[0] = level
    # Sequential by nature (GARCH, AR, OU recurrences), but only a few thousand steps.
    for day, (z_return, z_trend) in enumerate(shocks):
        variance[day] = var
        trend = trend_persistence * trend + trend_shock * z_trend
        shock = math.sqrt(var) * z_return
        level += trend - reversion * level + shock
        deviation[day + 1] = level
        var = omega + GARCH_ALPHA * shock * shock + GARCH_BETA * var
    distance = (np.arange(days + 1) - PIN_DAY) / PIN_WIDTH_DAYS
    deviation -= deviation[PIN_DAY] * np.exp(-(distance**2))
    log_anchor = math.log(sim.price_level) + deviation
    log_anchor.flags.writeable = False
    variance.flags.writeable = False
    return DayWalk(log_anchor, variance)


def day_walk_through(seed: int, symbol: str, day: int) -> DayWalk:
    """A walk long enough to hold the anchors of `day` and `day + 1`."""
    return day_walk(seed, symbol, (day + 1) // DAY_BLOCK + 1)


# --- level 2: one day of minutes -----------------------------------------------------------------


@dataclass(frozen=True)
class DayPath:
    """One simulated day: the substep path and its 1-minute bars (prices in ticks)."""

    day: int  # days since SIM_EPOCH
    log_points: FloatArray  # log price at each substep boundary, len 1440 * K + 1
    variance: float  # the day's variance (from the day walk)
    open: IntArray
    high: IntArray
    low: IntArray
    close: IntArray
    volume: IntArray  # in quantity steps


def to_ticks(log_prices: FloatArray, tick: float) -> IntArray:
    """Log prices to whole ticks (at least one tick: prices stay positive)."""
    ticks: IntArray = np.maximum(np.rint(np.exp(log_prices) / tick), 1.0).astype(np.int64)
    return ticks


def _anchor_ticks(log_price: float, tick: float) -> int:
    # Both days that share an anchor compute it by this one call, so the close of a day's last
    # minute equals the open of the next day's first minute to the tick.
    return int(to_ticks(np.array([log_price]), tick)[0])


def simulate_day(seed: int, sim: SimInstrument, day: int) -> DayPath:
    """Day `day` (counted from SIM_EPOCH) of one instrument: a pure function of its arguments."""
    symbol = sim.spec.symbol
    walk = day_walk_through(seed, symbol, day)
    day_open, day_close = float(walk.log_anchor[day]), float(walk.log_anchor[day + 1])
    variance = float(walk.variance[day])
    profile = _profile(sim.spec.asset_class)
    rng = _generator(seed, symbol, "minutes", day)

    # Time-changed Brownian bridge: the walk's increments follow the intraday variance profile,
    # then the bridge term pins the path to the next day's anchor.
    steps = rng.standard_normal(_SUBSTEPS_PER_DAY) * np.sqrt(variance * profile.substep_fraction)
    walk_path = np.cumsum(steps)
    log_points = np.empty(_SUBSTEPS_PER_DAY + 1)
    log_points[0] = day_open
    log_points[1:] = day_open + walk_path
    log_points[1:] += (day_close - day_open - walk_path[-1]) * profile.cumulative_fraction
    log_points[-1] = day_close

    tick = float(sim.spec.tick_size)
    points = to_ticks(log_points, tick)
    points[0] = _anchor_ticks(day_open, tick)
    points[-1] = _anchor_ticks(day_close, tick)
    k = SUBSTEPS_PER_MINUTE
    bar_open = points[0:-1:k]
    bar_close = points[k::k]
    inside = points[1:].reshape(MINUTES_PER_DAY, k)  # the points after the open, close included
    # Column by column: much faster than a max over a short axis of a 1440 x K array.
    columns = [inside[:, j] for j in range(k)]
    bar_high = np.maximum.reduce([bar_open, *columns])
    bar_low = np.minimum.reduce([bar_open, *columns])

    # Volume rises with the session, with the day's volatility and with the minute's own move.
    minute_move = np.abs(log_points[k::k] - log_points[0:-1:k])
    minute_sd = np.sqrt(variance * profile.minute_fraction)
    per_minute = sim.daily_volume / MINUTES_PER_DAY / float(sim.spec.quantity_step)
    activity = math.sqrt(variance / long_run_daily_variance(sim))
    noise = np.exp(VOLUME_NOISE * rng.standard_normal(MINUTES_PER_DAY) - VOLUME_NOISE**2 / 2)
    volume = per_minute * profile.minute_volume * activity * (0.5 + 0.6 * minute_move / minute_sd)
    bar_volume: IntArray = np.rint(volume * noise).astype(np.int64)

    # Read-only: cached days are shared by every caller (and thread).
    for array in (log_points, bar_open, bar_high, bar_low, bar_close, bar_volume):
        array.flags.writeable = False
    return DayPath(day, log_points, variance, bar_open, bar_high, bar_low, bar_close, bar_volume)


@lru_cache(maxsize=64)
def recent_day(seed: int, symbol: str, day: int) -> DayPath:
    """Cached days for the live ticker, which asks for the same day every second."""
    return simulate_day(seed, CATALOGUE[symbol], day)


# --- level 3: seconds inside one minute --------------------------------------------------------


def minute_seconds(seed: int, sim: SimInstrument, path: DayPath, minute_of_day: int) -> IntArray:
    """Price in ticks at each second 0..60 of one minute: second 0 is the bar's open, second 60
    its close, and every second stays within the bar's low and high."""
    k, per = SUBSTEPS_PER_MINUTE, _SECONDS_PER_SUBSTEP
    first = minute_of_day * k
    points = path.log_points[first : first + k + 1]
    profile = _profile(sim.spec.asset_class)
    substep_sd = np.sqrt(path.variance * profile.substep_fraction[first : first + k] / per)
    minute = _EPOCH_MINUTE + path.day * MINUTES_PER_DAY + minute_of_day
    rng = _generator(seed, sim.spec.symbol, "seconds", minute)
    shocks = np.cumsum(rng.standard_normal((k, per)) * substep_sd[:, None], axis=1)
    fraction = np.arange(1, per + 1) / per
    bridge = shocks - fraction * shocks[:, -1:]
    straight = points[:-1, None] + (points[1:] - points[:-1])[:, None] * fraction
    log_seconds = np.empty(60 + 1)
    log_seconds[0] = points[0]
    log_seconds[1:] = (straight + bridge).ravel()
    # Fold excursions beyond the minute's extremes back inside (clipping would leave the price
    # stuck at the high for seconds): the bar's high and low stay those of its points.
    high, low = points.max(), points.min()
    log_seconds = np.where(log_seconds > high, 2 * high - log_seconds, log_seconds)
    log_seconds = np.where(log_seconds < low, 2 * low - log_seconds, log_seconds)
    log_seconds = np.clip(log_seconds, low, high)

    seconds = to_ticks(log_seconds, float(sim.spec.tick_size))
    seconds[0] = path.open[minute_of_day]
    seconds[-1] = path.close[minute_of_day]
    clipped: IntArray = np.clip(seconds, path.low[minute_of_day], path.high[minute_of_day])
    return clipped


@lru_cache(maxsize=256)
def recent_minute(seed: int, symbol: str, day: int, minute_of_day: int) -> IntArray:
    """Cached minutes for the live ticker: every order and mark in a minute asks for a second
    of the same minute, and simulating the minute's 60 seconds is most of a tick's cost."""
    seconds = minute_seconds(seed, CATALOGUE[symbol], recent_day(seed, symbol, day), minute_of_day)
    seconds.flags.writeable = False
    return seconds


def price_at(seed: int, sim: SimInstrument, second: int) -> int:
    """The path price in ticks at a Unix second (the live price, and the history's)."""
    minute, into = divmod(second, 60)
    day, minute_of_day = divmod(minute - _EPOCH_MINUTE, MINUTES_PER_DAY)
    return int(recent_minute(seed, sim.spec.symbol, day, minute_of_day)[into])


# --- bars over a range -------------------------------------------------------------------------


@dataclass(frozen=True)
class BarArrays:
    """Bars as integer columns: open time in Unix minutes, prices in ticks, volume in steps."""

    open_minute: IntArray
    open: IntArray
    high: IntArray
    low: IntArray
    close: IntArray
    volume: IntArray

    def __len__(self) -> int:
        return len(self.open_minute)


def _empty_bars() -> BarArrays:
    empty = np.empty(0, dtype=np.int64)
    return BarArrays(empty, empty, empty, empty, empty, empty)


def simulate_minutes(
    seed: int, sim: SimInstrument, first_minute: int, end_minute: int
) -> BarArrays:
    """Complete 1-minute bars opening in [first_minute, end_minute) (Unix minutes)."""
    if end_minute <= first_minute:
        return _empty_bars()
    first_day = (first_minute - _EPOCH_MINUTE) // MINUTES_PER_DAY
    last_day = (end_minute - 1 - _EPOCH_MINUTE) // MINUTES_PER_DAY
    days = [simulate_day(seed, sim, day) for day in range(first_day, last_day + 1)]
    skip = first_minute - (_EPOCH_MINUTE + first_day * MINUTES_PER_DAY)
    window = slice(skip, skip + end_minute - first_minute)

    def column(part: Callable[[DayPath], IntArray]) -> IntArray:
        joined: IntArray = np.concatenate([part(path) for path in days])[window]
        return joined

    return BarArrays(
        np.arange(first_minute, end_minute, dtype=np.int64),
        column(lambda p: p.open),
        column(lambda p: p.high),
        column(lambda p: p.low),
        column(lambda p: p.close),
        column(lambda p: p.volume),
    )


def partial_minute(seed: int, sim: SimInstrument, second: int) -> tuple[int, int, int, int, int]:
    """(open, high, low, close, volume) of the minute containing `second`, up to that second:
    the same seconds the ticker showed, so the current bar and the live price agree."""
    minute, into = divmod(second, 60)
    day, minute_of_day = divmod(minute - _EPOCH_MINUTE, MINUTES_PER_DAY)
    path = recent_day(seed, sim.spec.symbol, day)
    prices = minute_seconds(seed, sim, path, minute_of_day)[: into + 1]
    volume = int(path.volume[minute_of_day]) * into // 60
    return int(prices[0]), int(prices.max()), int(prices.min()), int(prices[-1]), volume


def _origin_minute(timeframe: Timeframe) -> int:
    return _WEEK_ORIGIN_MINUTE if timeframe is Timeframe.W1 else 0


def aggregate(minutes: BarArrays, timeframe: Timeframe) -> BarArrays:
    """Exact OHLCV aggregation of consecutive 1-minute bars into `timeframe` bars."""
    if timeframe is Timeframe.M1 or len(minutes) == 0:
        return minutes
    span = timeframe.seconds // 60
    origin = _origin_minute(timeframe)
    bucket = (minutes.open_minute - origin) // span
    starts = np.concatenate(([0], np.flatnonzero(np.diff(bucket)) + 1))
    ends = np.append(starts[1:], len(minutes)) - 1
    return BarArrays(
        bucket[starts] * span + origin,
        minutes.open[starts],
        np.maximum.reduceat(minutes.high, starts),
        np.minimum.reduceat(minutes.low, starts),
        minutes.close[ends],
        np.add.reduceat(minutes.volume, starts),
    )


def bar_window(
    timeframe: Timeframe, start_second: int, end_second: int, now_second: int
) -> tuple[int, int] | None:
    """The 1-minute span [first, stop) (Unix minutes) behind the bars with
    start <= open_time < end and open_time <= now, or None if there are none.

    `start_second` and `end_second` are rounded up to whole seconds, `now_second` down."""
    span = timeframe.seconds
    origin = _origin_minute(timeframe) * 60
    earliest = max(start_second, _EPOCH_MINUTE * 60)  # no bars open before the sim starts
    first_open = origin + _ceil_div(earliest - origin, span) * span
    last_open = origin + (min(end_second - 1, now_second) - origin) // span * span
    if last_open < first_open:
        return None
    # Through the end of the last bar, but never past the minute that contains now.
    stop = min(last_open + span, (now_second // 60 + 1) * 60)
    return first_open // 60, stop // 60


def _ceil_div(numerator: int, denominator: int) -> int:
    return -(-numerator // denominator)


def simulate_bars(
    seed: int, sim: SimInstrument, timeframe: Timeframe, window: tuple[int, int], now_second: int
) -> BarArrays:
    """The bars of `timeframe` over a `bar_window`; the bar containing now is partial."""
    first_minute, stop_minute = window
    minutes = simulate_minutes(seed, sim, first_minute, stop_minute)
    if len(minutes) and stop_minute == now_second // 60 + 1:
        bar_open, high, low, close, volume = partial_minute(seed, sim, now_second)
        minutes.open[-1], minutes.high[-1], minutes.low[-1] = bar_open, high, low
        minutes.close[-1], minutes.volume[-1] = close, volume
    return aggregate(minutes, timeframe)


def to_bars(bars: BarArrays, spec: InstrumentSpec) -> list[Bar]:
    tick, step = spec.tick_size, spec.quantity_step
    # Decimal * int is exact and keeps the tick's scale: 0.01 * 9000000 -> 90000.00.
    return [
        Bar(datetime.fromtimestamp(t * 60, UTC), tick * o, tick * h, tick * lo, tick * c, step * v)
        for t, o, h, lo, c, v in zip(
            bars.open_minute.tolist(),
            bars.open.tolist(),
            bars.high.tolist(),
            bars.low.tolist(),
            bars.close.tolist(),
            bars.volume.tolist(),
            strict=True,
        )
    ]


def candle_bars(
    seed: int, sim: SimInstrument, timeframe: Timeframe, window: tuple[int, int], now_second: int
) -> list[Bar]:
    return to_bars(simulate_bars(seed, sim, timeframe, window, now_second), sim.spec)


# --- ticker -------------------------------------------------------------------------------------


def half_spread_ticks(sim: SimInstrument, last: int, variance: float) -> int:
    """Half the bid/ask spread in ticks: wider when the market is volatile, at least one tick."""
    stress = min(max(math.sqrt(variance / long_run_daily_variance(sim)), 0.5), 3.0)
    half = last * sim.half_spread_bps / 10_000 * stress
    return max(1, round(half))


def sim_tick(seed: int, sim: SimInstrument, second: int) -> Tick:
    last = price_at(seed, sim, second)
    day = (second // 60 - _EPOCH_MINUTE) // MINUTES_PER_DAY
    half = half_spread_ticks(sim, last, recent_day(seed, sim.spec.symbol, day).variance)
    tick = sim.spec.tick_size
    return Tick(
        symbol=sim.spec.symbol,
        time=_UNIX_EPOCH + timedelta(seconds=second),
        last=tick * last,
        bid=tick * max(last - half, 1),
        ask=tick * (last + half),
    )


# --- listings -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class PriceExtremes:
    high: int  # ticks
    high_minute: int  # Unix minute of the bar that made it
    low: int
    low_minute: int


def extremes(bars: BarArrays) -> PriceExtremes:
    top, bottom = int(np.argmax(bars.high)), int(np.argmin(bars.low))
    return PriceExtremes(
        int(bars.high[top]),
        int(bars.open_minute[top]),
        int(bars.low[bottom]),
        int(bars.open_minute[bottom]),
    )


def day_extremes(path: DayPath) -> PriceExtremes:
    top, bottom = int(np.argmax(path.high)), int(np.argmin(path.low))
    first_minute = _EPOCH_MINUTE + path.day * MINUTES_PER_DAY
    return PriceExtremes(
        int(path.high[top]), first_minute + top, int(path.low[bottom]), first_minute + bottom
    )


def combine(parts: Sequence[PriceExtremes]) -> PriceExtremes:
    """Highest high and lowest low; ties go to the earliest time, as an all-time high does."""
    high = max(parts, key=lambda p: (p.high, -p.high_minute))
    low = min(parts, key=lambda p: (p.low, p.low_minute))
    return PriceExtremes(high.high, high.high_minute, low.low, low.low_minute)


def percent_change(now: int, then: int) -> Decimal:
    return ((Decimal(now) / Decimal(then) - 1) * 100).quantize(Decimal("0.01"), ROUND_HALF_EVEN)


LISTING_HISTORY_DAYS: Final = 365


def _minute_time(minute: int) -> datetime:
    return _UNIX_EPOCH + timedelta(minutes=minute)


class SimProvider:
    """The simulated market: candles, tickers and crypto listings, all from one seeded path.

    Candle requests over more than a day of minutes run in a worker thread (numpy work: about
    1 ms per simulated day); tickers are computed inline from a cached day (well under 1 ms).
    """

    name = "sim"

    def __init__(self, seed: int = 42, clock: Callable[[], datetime] | None = None) -> None:
        self.seed = seed
        self._clock = clock or _utc_now
        # Extremes of completed days never change: the listings' 365-day ATH/ATL reuse them.
        self._day_extremes: dict[tuple[str, int], PriceExtremes] = {}

    def _now_second(self) -> int:
        now = self._clock()
        if now.tzinfo is None or now.utcoffset() is None:
            raise ValueError("the clock must return timezone-aware UTC datetimes")
        second = (now - _UNIX_EPOCH) // _SECOND
        if second < _EPOCH_MINUTE * 60:
            raise ProviderError(f"the simulated market opens at {SIM_EPOCH.isoformat()}")
        return second

    def _instrument(self, symbol: str) -> SimInstrument:
        try:
            return CATALOGUE[symbol]
        except KeyError:
            raise UnknownSymbol(symbol) from None

    async def instruments(self) -> Sequence[InstrumentSpec]:
        return tuple(sim.spec for sim in CATALOGUE.values())

    async def candles(
        self, symbol: str, timeframe: Timeframe, start: datetime, end: datetime
    ) -> Sequence[Bar]:
        """Bars with start <= open_time < end and open_time <= now, oldest first; the bar that
        contains now is partial (built from the path up to the current second)."""
        sim = self._instrument(symbol)
        timeframe = Timeframe(timeframe)
        now = self._now_second()
        window = bar_window(timeframe, _ceil_second(start), _ceil_second(end), now)
        if window is None:
            return []
        work = partial(candle_bars, self.seed, sim, timeframe, window, now)
        if window[1] - window[0] > INLINE_MINUTES:
            return await anyio.to_thread.run_sync(work)
        return work()

    async def ticker(self, symbol: str) -> Tick:
        return sim_tick(self.seed, self._instrument(symbol), self._now_second())

    async def listings(self, limit: int) -> Sequence[Listing]:
        """The simulated coins by market cap. The first call simulates a year of minutes per
        coin for ATH/ATL (a fraction of a second, in a worker thread); later calls reuse it."""
        if limit <= 0:
            return []
        second = self._now_second()
        found = await anyio.to_thread.run_sync(partial(self._listings, second))
        return found[:limit]

    def _listings(self, second: int) -> list[Listing]:
        unranked = [self._listing(COINS[symbol], second) for symbol in COINS]
        unranked.sort(key=lambda listing: listing.market_cap or 0, reverse=True)
        return [
            dataclasses.replace(listing, rank=rank)
            for rank, listing in enumerate(unranked, start=1)
        ]

    def _listing(self, coin: SimCoin, second: int) -> Listing:
        sim = CATALOGUE[coin.symbol]
        tick = sim.spec.tick_size
        last = price_at(self.seed, sim, second)
        price = tick * last

        def change(seconds_ago: int) -> Decimal | None:
            then = second - seconds_ago
            if then < _EPOCH_MINUTE * 60:
                return None
            return percent_change(last, price_at(self.seed, sim, then))

        window = bar_window(Timeframe.M1, second - 86_400 + 1, second + 1, second)
        day_of_minutes = (
            _empty_bars()
            if window is None
            else simulate_bars(self.seed, sim, Timeframe.M1, window, second)
        )
        quote_volume = sum(
            v * c
            for v, c in zip(
                day_of_minutes.volume.tolist(), day_of_minutes.close.tolist(), strict=True
            )
        )
        ath_atl = self._year_extremes(sim, second, day_of_minutes)
        return Listing(
            symbol=sim.spec.base,
            name=sim.spec.name,
            rank=None,
            price=price,
            market_cap=(price * coin.circulating_supply).quantize(Decimal("0.01")),
            volume_24h=(tick * sim.spec.quantity_step * quote_volume).quantize(Decimal("0.01")),
            change_1h=change(3_600),
            change_24h=change(86_400),
            change_7d=change(7 * 86_400),
            circulating_supply=coin.circulating_supply,
            total_supply=coin.total_supply,
            max_supply=coin.max_supply,
            ath=tick * ath_atl.high,
            ath_date=_minute_time(ath_atl.high_minute),
            atl=tick * ath_atl.low,
            atl_date=_minute_time(ath_atl.low_minute),
            categories=coin.categories,
            description=f"{coin.summary} Simulated market data (source: sim).",
            website=coin.website,
            image_url=None,
            last_updated=_UNIX_EPOCH + timedelta(seconds=second),
            source_id=coin.source_id,
        )

    def _year_extremes(self, sim: SimInstrument, second: int, today: BarArrays) -> PriceExtremes:
        """ATH/ATL over the last 365 whole days plus today so far (approximate: a year, not
        all of the simulated history)."""
        symbol = sim.spec.symbol
        today_index = (second // 60 - _EPOCH_MINUTE) // MINUTES_PER_DAY
        today_start = _EPOCH_MINUTE + today_index * MINUTES_PER_DAY
        parts = []
        for day in range(max(0, today_index - LISTING_HISTORY_DAYS), today_index):
            if (symbol, day) not in self._day_extremes:
                self._day_extremes[symbol, day] = day_extremes(simulate_day(self.seed, sim, day))
            parts.append(self._day_extremes[symbol, day])
        since_midnight = today.open_minute >= today_start
        if since_midnight.any():
            parts.append(
                extremes(
                    BarArrays(
                        today.open_minute[since_midnight],
                        today.open[since_midnight],
                        today.high[since_midnight],
                        today.low[since_midnight],
                        today.close[since_midnight],
                        today.volume[since_midnight],
                    )
                )
            )
        return combine(parts)


def _ceil_second(moment: datetime) -> int:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError("naive datetime refused: market times are timezone-aware UTC")
    return -((_UNIX_EPOCH - moment) // _SECOND)


def _utc_now() -> datetime:
    return datetime.now(UTC)
