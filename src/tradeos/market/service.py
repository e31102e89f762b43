"""Market data use cases: instruments, candles (stored, resampled or produced on demand),
tickers, crypto listings and their history, and the idempotent writes sync jobs make.

Reads go through the cache (`MARKET_CACHE_SECONDS`), tagged per instrument or for listings, and
every write that changes stored data invalidates its tag.

The candles endpoint finds its instrument through `instrument_ref`, a per-process memo of
symbol -> (id, symbol) rather than a query per request (see there for why a few seconds' TTL
is safe with many API processes).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Final

from sqlalchemy import (
    Select,
    bindparam,
    delete,
    exists,
    func,
    literal,
    or_,
    select,
    true,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.functions import FunctionElement

from tradeos.core.db import (
    bulk_insert,
    bulk_row_converter,
    decimal_text,
    numeric_order,
    order_key,
    to_exact_decimal,
    utc_text,
    utcnow,
)
from tradeos.core.errors import NotFound, ServiceUnavailable, TradeOSError
from tradeos.market import backfill, symbols
from tradeos.market.models import (
    CANDLE_COLUMNS,
    CANDLES,
    Candle,
    CryptoListing,
    Instrument,
    PriceSnapshot,
)
from tradeos.market.providers.base import (
    Bar,
    InstrumentSpec,
    Listing,
    MarketProvider,
    ProviderError,
    Tick,
    UnknownSymbol,
)
from tradeos.market.providers.registry import primary_of, sourced_candles, sourced_ticker
from tradeos.market.resample import ResampledBar, is_forming, resample
from tradeos.market.timeframes import ORDERED, Timeframe

if TYPE_CHECKING:
    from tradeos.core.db import Database
    from tradeos.market.importer import CandleRecords

MAX_CANDLES: Final = 5000
DEFAULT_CANDLES: Final = 500
# Rows per statement when writing candles in bulk.
WRITE_BATCH: Final = 2000


def candles_tag(symbol: str) -> str:
    return f"candles:{symbol}"


LISTINGS_TAG: Final = "listings"


# -- instruments ------------------------------------------------------------------------------


async def upsert_instruments(
    session: AsyncSession, specs: Sequence[InstrumentSpec], provider: str
) -> int:
    """Add the instruments not known yet and bring the others up to date; returns how many
    rows changed."""
    existing = {
        row.symbol: row
        for row in await session.scalars(
            select(Instrument).where(Instrument.symbol.in_([s.symbol for s in specs]))
        )
    }
    changed = 0
    for spec in specs:
        values = {
            "name": spec.name,
            "asset_class": spec.asset_class.value,
            "base": spec.base,
            "quote": spec.quote,
            "tick_size": spec.tick_size,
            "quantity_step": spec.quantity_step,
            "provider": provider,
        }
        row = existing.get(spec.symbol)
        if row is None:
            session.add(Instrument(symbol=spec.symbol, status="trading", **values))
            changed += 1
        elif any(getattr(row, key) != value for key, value in values.items()):
            for key, value in values.items():
                setattr(row, key, value)
            changed += 1
    await session.flush()
    if changed:
        instrument_refs.clear()
    return changed


def instruments_query(*, asset_class: str | None = None, search: str | None = None) -> Select[Any]:
    query = select(Instrument).order_by(Instrument.symbol)
    if asset_class is not None:
        query = query.where(Instrument.asset_class == asset_class)
    if search:
        pattern = f"%{_escape_like(search.strip().lower())}%"
        query = query.where(
            or_(
                func.lower(Instrument.symbol).like(pattern, escape="\\"),
                func.lower(Instrument.name).like(pattern, escape="\\"),
            )
        )
    return query


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


# Built once (every order and quote looks an instrument up): building the expression costs
# more than running it.
_INSTRUMENTS_BY_SYMBOL: Final = select(Instrument).where(
    Instrument.symbol.in_(bindparam("symbols", expanding=True))
)


async def get_instrument(session: AsyncSession, text: str) -> Instrument:
    """The instrument `text` names in any accepted spelling (BTC-USD, BTCUSD, btc/usd), or a
    404 problem."""
    try:
        symbol = symbols.normalize(text)
    except ValueError:
        symbol = None
    if symbol is not None:
        candidates = [symbol]
        if "-" not in symbol:
            candidates += [f"{symbol[:i]}-{symbol[i:]}" for i in range(1, len(symbol))]
        rows = (await session.scalars(_INSTRUMENTS_BY_SYMBOL, {"symbols": candidates})).all()
        by_symbol = {row.symbol: row for row in rows}
        found = symbols.resolve(symbol, by_symbol)
        if found is not None:
            return by_symbol[found]
    raise NotFound(f"No instrument {text[:40]!r}. GET /api/v1/market/instruments lists them.")


@dataclass(frozen=True)
class InstrumentRef:
    """What a read needs to know of an instrument to find its rows: neither ever changes for
    a stored instrument."""

    id: int
    symbol: str


class InstrumentRefs:
    """Instrument lookups by symbol remembered in this process: at most `max_entries`, each for
    `ttl` seconds; `upsert_instruments` clears them. Only instruments found are remembered, so
    a new one (a sync, an import) is seen at once. A remembered entry is never trusted alone:
    `stored_candle_texts` reads bars only where the instrument of that id still has that
    symbol, and a read that finds none looks the instrument up afresh. So an instrument
    deleted or replaced by another process (or a database emptied and refilled, ids reused)
    is seen at once too. That check rides on the bars' query, where a version key in the
    shared cache would cost a round trip per request, the very thing this saves."""

    def __init__(
        self,
        *,
        ttl: float = 5.0,
        max_entries: int = 1024,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ttl = ttl
        self.max_entries = max_entries
        self.clock = clock
        self._entries: OrderedDict[str, tuple[float, InstrumentRef]] = OrderedDict()

    def get(self, key: str) -> InstrumentRef | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry[0] <= self.clock():
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return entry[1]

    def put(self, key: str, ref: InstrumentRef) -> None:
        self._entries[key] = (self.clock() + self.ttl, ref)
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def clear(self) -> None:
        self._entries.clear()


instrument_refs = InstrumentRefs()


async def instrument_ref(session: AsyncSession, text: str) -> InstrumentRef:
    """`get_instrument`'s id and symbol, remembered for a few seconds (`InstrumentRefs`): every
    candle read names its instrument by symbol, and the lookup was a query per request."""
    try:
        key = symbols.normalize(text)
    except ValueError:
        key = None
    ref = instrument_refs.get(key) if key is not None else None
    if ref is None:
        instrument = await get_instrument(session, text)  # an unknown symbol: 404, not kept
        ref = InstrumentRef(instrument.id, instrument.symbol)
        if key is not None:
            instrument_refs.put(key, ref)
    return ref


# -- candles ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class CandleSeries:
    symbol: str
    timeframe: Timeframe
    source: str  # stored | resampled:<from> | sim …
    bars: list[ResampledBar]


def candle_window(
    timeframe: Timeframe, start: datetime | None, end: datetime | None, limit: int, now: datetime
) -> tuple[datetime, datetime]:
    """The window of bars a read covers: the bars opening in [start, end). `start` is rounded
    up to a bar boundary (a coarse bar that opens before `start` is left out, rather than
    aggregated from the part of its period after `start`); `end` is cut at the end of the bar
    open at `now` (no bar exists after now) and defaults to it; `start` defaults to `limit`
    bars before `end`."""
    current_end = timeframe.floor(now) + timeframe.delta
    end = current_end if end is None else min(end, current_end)
    if start is None:
        return timeframe.floor(end) - timeframe.delta * limit, end
    first = timeframe.floor(start)
    return (first if first == start else first + timeframe.delta), end


async def candles(
    session: AsyncSession,
    provider: MarketProvider | None,
    instrument: Instrument,
    timeframe: Timeframe,
    start: datetime,
    end: datetime,
    limit: int,
) -> CandleSeries:
    """The last `limit` bars that exist with start <= open time < end, oldest first (the window
    clamped by `candle_window`): stored bars of the timeframe; else bars of the finest stored
    timeframe that tiles it, resampled; else, for instruments of the live provider, bars it
    produces (or its fallback, which `source` then names). A bar is partial while its period
    has not ended. A provider that cannot answer is a 503 problem."""
    now = utcnow()
    start, end = candle_window(timeframe, start, end, limit, now)
    if start >= end:
        return CandleSeries(instrument.symbol, timeframe, "stored", [])
    stored = await _stored(session, instrument.id, timeframe, start, end, limit)
    if stored:
        return CandleSeries(instrument.symbol, timeframe, "stored", _marked(stored, timeframe, now))
    finer = await _finest_stored(session, instrument.id, timeframe, start, end)
    if finer is not None:
        fine = await _fine_bars_of_last_periods(
            session, instrument.id, finer, timeframe, start, end, limit
        )
        bars = list(resample(fine, finer, timeframe, now=now))
        return CandleSeries(instrument.symbol, timeframe, f"resampled:{finer}", bars)
    if provider is not None and provider.name == instrument.provider:
        # A provider's bars are contiguous: the last `limit` periods before `end` (which is at
        # most the end of the bar open now) hold the last `limit` bars.
        span_start = max(start, timeframe.floor(end) - timeframe.delta * limit)
        try:
            source, produced = await sourced_candles(
                provider, instrument.symbol, timeframe, span_start, end
            )
        except ProviderError as exc:
            raise _provider_problem(provider, instrument, exc) from exc
        return CandleSeries(
            instrument.symbol, timeframe, source, _marked(produced[-limit:], timeframe, now)
        )
    return CandleSeries(instrument.symbol, timeframe, "stored", [])


def _marked(rows: Sequence[Bar], timeframe: Timeframe, now: datetime) -> list[ResampledBar]:
    """The bars that have opened, each partial while its period has not ended."""
    return [
        ResampledBar(bar, partial=is_forming(bar.open_time, timeframe, now))
        for bar in rows
        if bar.open_time <= now
    ]


# Fine bars read per query while looking for the last `limit` coarse periods.
_FINE_CHUNK: Final = 20_000


async def _fine_bars_of_last_periods(
    session: AsyncSession,
    instrument_id: int,
    finer: Timeframe,
    timeframe: Timeframe,
    start: datetime,
    end: datetime,
    limit: int,
) -> list[Bar]:
    """The stored `finer` bars of the last `limit` periods of `timeframe` that have any, with
    start <= open time < end, oldest first. Read newest first, chunk by chunk, until a bar of
    one period more shows the last wanted period is whole: gaps (weekends, missing history)
    cost no bars, where counting `limit` periods back from `end` would."""
    newest_first: list[Bar] = []
    periods: list[datetime] = []
    upper = end
    while True:
        rows = (
            await session.execute(
                select(*_BAR_COLUMNS)
                .where(
                    Candle.instrument_id == instrument_id,
                    Candle.timeframe == finer.value,
                    Candle.open_time >= start,
                    Candle.open_time < upper,
                )
                .order_by(Candle.open_time.desc())
                .limit(_FINE_CHUNK)
            )
        ).all()
        for row in rows:
            period = timeframe.floor(row[0])
            if not periods or periods[-1] != period:
                if len(periods) == limit:
                    newest_first.reverse()
                    return newest_first
                periods.append(period)
            newest_first.append(Bar(*row))
        if len(rows) < _FINE_CHUNK:
            newest_first.reverse()
            return newest_first
        upper = rows[-1][0]


async def _stored(
    session: AsyncSession,
    instrument_id: int,
    timeframe: Timeframe,
    start: datetime,
    end: datetime,
    limit: int | None,
) -> list[Bar]:
    # Columns, not ORM objects: a read of 5,000 bars spent most of its time building and
    # tracking Candle instances it never changed.
    query = select(*_BAR_COLUMNS).where(
        Candle.instrument_id == instrument_id,
        Candle.timeframe == timeframe.value,
        Candle.open_time >= start,
        Candle.open_time < end,
    )
    if limit is not None:
        # The newest `limit`, then oldest first.
        query = query.order_by(Candle.open_time.desc()).limit(limit)
        rows = list((await session.execute(query)).all())
        rows.reverse()
    else:
        rows = list((await session.execute(query.order_by(Candle.open_time))).all())
    return [Bar(*row) for row in rows]


async def stored_candle_texts(
    session: AsyncSession,
    instrument: InstrumentRef,
    timeframe: Timeframe,
    start: datetime,
    end: datetime,
    limit: int,
) -> list[tuple[str, str, str, str, str, str]]:
    """The last `limit` stored bars with start <= open time < end that have opened, oldest
    first, as (time, open, high, low, close, volume) in the API's text: what `candles` finds
    stored, written out by the database itself, for the candles endpoint to send as it is.
    Only while the instrument of that id still has that symbol (a remembered `instrument_ref`
    may be out of date): else none."""
    query = (
        select(
            utc_text(Candle.open_time),
            *(decimal_text(column) for column in _BAR_COLUMNS[1:]),
        )
        .join(Instrument, Instrument.id == Candle.instrument_id)
        .where(
            Instrument.symbol == instrument.symbol,
            Candle.instrument_id == instrument.id,
            Candle.timeframe == timeframe.value,
            Candle.open_time >= start,
            Candle.open_time < end,
            Candle.open_time <= utcnow(),
        )
        .order_by(Candle.open_time.desc())
        .limit(limit)
    )
    rows: list[Any] = list((await session.execute(query)).all())
    rows.reverse()
    return rows


_BAR_COLUMNS: Final = (
    Candle.open_time,
    Candle.open,
    Candle.high,
    Candle.low,
    Candle.close,
    Candle.volume,
)


async def _finest_stored(
    session: AsyncSession, instrument_id: int, timeframe: Timeframe, start: datetime, end: datetime
) -> Timeframe | None:
    finer = [tf for tf in ORDERED if tf.seconds < timeframe.seconds and tf.divides(timeframe)]
    if not finer:
        return None
    present = set(
        await session.scalars(
            select(Candle.timeframe)
            .where(
                Candle.instrument_id == instrument_id,
                Candle.timeframe.in_([tf.value for tf in finer]),
                Candle.open_time >= start,
                Candle.open_time < end,
            )
            .distinct()
        )
    )
    for tf in finer:  # finest first
        if tf.value in present:
            return tf
    return None


@dataclass(frozen=True)
class CandleWrite:
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0

    def plus(self, other: CandleWrite) -> CandleWrite:
        return CandleWrite(
            self.inserted + other.inserted,
            self.updated + other.updated,
            self.unchanged + other.unchanged,
        )


async def upsert_candles(
    session: AsyncSession,
    instrument_id: int,
    timeframe: Timeframe,
    bars: Sequence[Bar],
    source: str,
) -> CandleWrite:
    """Store `bars`: new ones inserted, changed ones updated, identical ones left alone, so
    writing the same data twice changes nothing."""
    inserted = updated = unchanged = 0
    for offset in range(0, len(bars), WRITE_BATCH):
        batch = {bar.open_time: bar for bar in bars[offset : offset + WRITE_BATCH]}
        stored = await _stored_in(session, instrument_id, timeframe, min(batch), max(batch))
        new_rows: list[tuple[Any, ...]] = []
        changes: list[dict[str, Any]] = []
        for open_time, bar in batch.items():
            found = stored.get(open_time)
            if found is None:
                # Checked and converted once, on the way into the driver's bulk insert.
                new_rows.append((instrument_id, timeframe.value, open_time, *_prices(bar), source))
            elif found == (exact := _exact(bar), source):
                unchanged += 1
            else:
                changes.append(_change(instrument_id, timeframe, exact, source))
        await bulk_insert(session, _CANDLES, _CANDLE_COLUMNS, new_rows)
        if changes:
            await session.execute(_UPDATE_CANDLE, changes)
        inserted, updated = inserted + len(new_rows), updated + len(changes)
    return CandleWrite(inserted, updated, unchanged)


async def upsert_candle_records(
    session: AsyncSession,
    instrument_id: int,
    timeframe: Timeframe,
    batch: CandleRecords,
    source: str,
) -> CandleWrite:
    """`upsert_candles` for bars already checked and converted for the bulk insert (a parsing
    process did it, see `importer`): new ones inserted as they are, changed ones updated,
    identical ones left alone."""
    stored = await _stored_in(session, instrument_id, timeframe, batch.first, batch.last)
    if not stored:  # a fresh stretch, the common case of an import
        await bulk_insert(session, _CANDLES, _CANDLE_COLUMNS, batch.records, converted=True)
        return CandleWrite(inserted=len(batch.records))
    # Converted records hold the open time as the driver takes it: key the stored bars alike.
    connection = await session.connection()
    time_key = bulk_row_converter(_CANDLES, ("open_time",), connection.dialect)
    by_key = {time_key((moment,))[0]: found for moment, found in stored.items()}
    new_rows: list[tuple[Any, ...]] = []
    changes: list[dict[str, Any]] = []
    unchanged = 0
    for record in batch.records:
        found = by_key.get(record[2])
        if found is None:
            new_rows.append(record)
            continue
        stored_bar = found[0]
        bar = Bar(stored_bar.open_time, *(Decimal(text) for text in record[3:8]))
        if (bar, record[8]) == found:
            unchanged += 1
        else:
            changes.append(_change(instrument_id, timeframe, bar, record[8]))
    await bulk_insert(session, _CANDLES, _CANDLE_COLUMNS, new_rows, converted=True)
    if changes:
        await session.execute(_UPDATE_CANDLE, changes)
    return CandleWrite(len(new_rows), len(changes), unchanged)


_CANDLE_COLUMNS: Final = CANDLE_COLUMNS
_CANDLES: Final = CANDLES
_candles = _CANDLES.c
_UPDATE_CANDLE: Final = (
    update(_CANDLES)
    .where(
        _candles.instrument_id == bindparam("key_instrument"),
        _candles.timeframe == bindparam("key_timeframe"),
        _candles.open_time == bindparam("key_open_time"),
    )
    .values(
        open=bindparam("open"),
        high=bindparam("high"),
        low=bindparam("low"),
        close=bindparam("close"),
        volume=bindparam("volume"),
        source=bindparam("source"),
    )
)


async def _stored_in(
    session: AsyncSession, instrument_id: int, timeframe: Timeframe, first: datetime, last: datetime
) -> dict[datetime, tuple[Bar, str]]:
    """The stored bars (with their source) opening in [first, last]."""
    rows = await session.execute(
        select(*_BAR_COLUMNS, Candle.source).where(
            Candle.instrument_id == instrument_id,
            Candle.timeframe == timeframe.value,
            Candle.open_time >= first,
            Candle.open_time <= last,
        )
    )
    return {row[0]: (Bar(*row[:6]), row[6]) for row in rows}


def _prices(bar: Bar) -> tuple[Decimal, Decimal, Decimal, Decimal, Decimal]:
    return bar.open, bar.high, bar.low, bar.close, bar.volume


def _exact(bar: Bar) -> Bar:
    """The bar as the database will hold it (18 decimal places), so comparing with a stored
    row tells a real change from a rounding."""
    return Bar(bar.open_time, *map(to_exact_decimal, _prices(bar)))


def _change(instrument_id: int, timeframe: Timeframe, bar: Bar, source: str) -> dict[str, Any]:
    return {
        "key_instrument": instrument_id,
        "key_timeframe": timeframe.value,
        "key_open_time": bar.open_time,
        "open": bar.open,
        "high": bar.high,
        "low": bar.low,
        "close": bar.close,
        "volume": bar.volume,
        "source": source,
    }


async def candle_gaps(
    session: AsyncSession, instrument_id: int, timeframe: Timeframe, start: datetime, end: datetime
) -> list[tuple[datetime, datetime]]:
    """The stretches of whole bars with start <= open time < end that are not stored, oldest
    first: each [first missing open time, the next stored one, or the first boundary at or
    after `end`). What a back-fill must fetch."""
    first, stop = backfill.ceil_time(start, timeframe), backfill.ceil_time(end, timeframe)
    if first >= stop:
        return []
    in_window = (
        Candle.instrument_id == instrument_id,
        Candle.timeframe == timeframe.value,
        Candle.open_time >= first,
        Candle.open_time < stop,
    )
    # Stored bars open on boundaries (every writer checks), so a full count means no gap,
    # found without reading the times: the sync asks this every minute, and a month of
    # minute bars is 43,200 of them.
    stored = await session.scalar(select(func.count()).select_from(Candle).where(*in_window))
    if stored == (stop - first) // timeframe.delta:
        return []
    times = await session.scalars(
        select(Candle.open_time).where(*in_window).order_by(Candle.open_time)
    )
    gaps = []
    expected = first  # the next open time a bar should have
    for open_time in times:
        if timeframe.floor(open_time) != open_time:
            continue  # off the boundaries: it fills no bar's place
        if open_time > expected:
            gaps.append((expected, open_time))
        expected = open_time + timeframe.delta
    if stop > expected:
        gaps.append((expected, stop))
    return gaps


# -- tickers ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class TickerStats:
    tick: Tick
    open_24h: Decimal | None
    high_24h: Decimal | None
    low_24h: Decimal | None
    volume_24h: Decimal | None
    source: str | None = None  # who gave the tick: a provider, or the instrument's stored bars

    @property
    def change_24h(self) -> Decimal | None:
        return None if self.open_24h is None else self.tick.last - self.open_24h

    @property
    def change_24h_percent(self) -> Decimal | None:
        if self.open_24h is None or self.open_24h == 0:
            return None
        return ((self.tick.last - self.open_24h) / self.open_24h * 100).quantize(Decimal("0.01"))


def day_stats(tick: Tick, hourly: Sequence[Bar]) -> TickerStats:
    """24 h open/high/low/volume from the hourly bars of the last day, the last price
    included in high and low."""
    if not hourly:
        return TickerStats(tick, None, None, None, None)
    return TickerStats(
        tick,
        open_24h=hourly[0].open,
        high_24h=max(max(bar.high for bar in hourly), tick.last),
        low_24h=min(min(bar.low for bar in hourly), tick.last),
        volume_24h=sum((bar.volume for bar in hourly), start=Decimal(0)),
    )


async def ticker(
    session: AsyncSession, provider: MarketProvider | None, instrument: Instrument
) -> TickerStats:
    """The instrument's last price (`last_tick`) with the last 24 hours' statistics from
    hourly bars. `source` names the provider that gave the tick; for a stored close, the
    instrument's provider. A provider that cannot answer is a 503 problem."""
    now = utcnow()
    source, tick = await last_tick(session, provider, instrument)
    day_start = Timeframe.H1.floor(now) - timedelta(hours=23)
    series = await candles(
        session, provider, instrument, Timeframe.H1, day_start, now + Timeframe.H1.delta, 24
    )
    return replace(day_stats(tick, [item.bar for item in series.bars]), source=source)


async def last_tick(
    session: AsyncSession, provider: MarketProvider | None, instrument: Instrument
) -> tuple[str, Tick]:
    """(the provider that gave it, the instrument's last price): its provider's live tick, or
    its fallback's, or the close of its newest stored bar (named by the instrument's provider).
    What orders are priced at: the ticker's price without its 24 hours' statistics. A provider
    that cannot answer is a 503 problem."""
    if provider is not None and provider.name == instrument.provider:
        try:
            return await sourced_ticker(provider, instrument.symbol)
        except ProviderError as exc:
            raise _provider_problem(provider, instrument, exc) from exc
    latest = await session.scalar(
        select(Candle)
        .where(Candle.instrument_id == instrument.id, Candle.open_time <= utcnow())
        .order_by(Candle.open_time.desc())
        .limit(1)
    )
    if latest is None:
        raise NotFound(f"No prices for {instrument.symbol} yet: sync or import its candles.")
    close = latest.close
    return instrument.provider, Tick(instrument.symbol, latest.open_time, close, close, close)


def _provider_problem(
    provider: MarketProvider, instrument: Instrument, error: ProviderError
) -> TradeOSError:
    """A provider's failure as the client sees it: its message is short and names no secret
    (providers mask keys), the traceback stays in the log."""
    reason = str(error)[:200] or type(error).__name__
    if isinstance(error, UnknownSymbol):
        return NotFound(f"{provider.name} no longer lists {instrument.symbol}: {reason}")
    return ServiceUnavailable(
        f"Market data for {instrument.symbol} is unavailable right now: {reason}. "
        "Try again shortly."
    )


# -- listings ---------------------------------------------------------------------------------


_LISTING_FIELDS: Final = (
    "name",
    "rank",
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
    "ath_date",
    "atl",
    "atl_date",
    "description",
    "website",
    "image_url",
    "last_updated",
    "source_id",
)


async def upsert_listings(
    session: AsyncSession, listings: Sequence[Listing], source: str, *, snapshot_at: datetime
) -> tuple[int, int]:
    """Store the listings (changed fields only) and one price snapshot each at `snapshot_at`;
    returns (listings changed, snapshots added). The same data twice changes nothing."""
    existing = {
        row.symbol: row
        for row in await session.scalars(
            select(CryptoListing).where(CryptoListing.symbol.in_([x.symbol for x in listings]))
        )
    }
    changed = 0
    rows = []
    for listing in listings:
        values: dict[str, Any] = {
            name: _stored_value(getattr(listing, name)) for name in _LISTING_FIELDS
        }
        values["categories"] = list(listing.categories)
        values["source"] = source
        row = existing.get(listing.symbol)
        if row is None:
            row = CryptoListing(symbol=listing.symbol, **values)
            session.add(row)
            changed += 1
        else:
            # A field a source does not give (None) keeps what an earlier sync stored.
            updates = {k: v for k, v in values.items() if v is not None and getattr(row, k) != v}
            for key, value in updates.items():
                setattr(row, key, value)
            changed += bool(updates)
        rows.append((row, listing))
    await session.flush()
    added = 0
    for row, listing in rows:
        if listing.price is None:
            continue
        time = listing.last_updated or snapshot_at
        if await session.get(PriceSnapshot, (row.id, time)) is None:
            session.add(
                PriceSnapshot(
                    listing_id=row.id,
                    time=time,
                    price=listing.price,
                    market_cap=_stored_value(listing.market_cap),
                    volume=_stored_value(listing.volume_24h),
                )
            )
            added += 1
    await session.flush()
    return changed, added


def _stored_value(value: Any) -> Any:
    return to_exact_decimal(value) if isinstance(value, Decimal) else value


async def get_listing(session: AsyncSession, text: str) -> CryptoListing:
    symbol = text.strip().upper().removesuffix("-USD")
    row = await session.scalar(select(CryptoListing).where(CryptoListing.symbol == symbol))
    if row is None:
        raise NotFound(f"No cryptocurrency {text[:40]!r}. GET /api/v1/cryptocurrencies lists them.")
    return row


async def price_history(
    session: AsyncSession,
    listing_id: int,
    start: datetime | None,
    end: datetime | None,
    limit: int,
) -> list[PriceSnapshot]:
    query = select(PriceSnapshot).where(PriceSnapshot.listing_id == listing_id)
    if start is not None:
        query = query.where(PriceSnapshot.time >= start)
    if end is not None:
        query = query.where(PriceSnapshot.time < end)
    rows = (await session.scalars(query.order_by(PriceSnapshot.time.desc()).limit(limit))).all()
    return list(reversed(rows))


async def prune_price_history(session: AsyncSession, keep_days: int) -> int:
    cutoff = utcnow() - timedelta(days=keep_days)
    result = await session.execute(delete(PriceSnapshot).where(PriceSnapshot.time < cutoff))
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


class json_texts(FunctionElement[Any]):  # lower case: it reads as a SQL function
    """The elements of a JSON array column as rows of text (column `value`), for
    `.table_valued("value")`: `json_each` on SQLite, `json_array_elements_text` on PostgreSQL.
    Element by element, so neither the JSON text's escapes (`Caf\\u00e9`) nor its quoting get
    in the way of a match."""

    inherit_cache = True
    name = "json_texts"


@compiles(json_texts)
def _json_texts_default(element: json_texts, compiler: SQLCompiler, **kw: Any) -> str:
    return f"json_array_elements_text({compiler.process(element.clauses, **kw)})"


@compiles(json_texts, "sqlite")
def _json_texts_sqlite(element: json_texts, compiler: SQLCompiler, **kw: Any) -> str:
    return f"json_each({compiler.process(element.clauses, **kw)})"


async def category_spellings(session: AsyncSession, category: str) -> list[str]:
    """The stored categories that are `category` in another case: compared in Python
    (`str.casefold`), as neither SQLite's `lower()` (ASCII only) nor PostgreSQL's (its
    collation's) folds every letter alike."""
    wanted = category.strip().casefold()
    elements = json_texts(CryptoListing.categories).table_valued("value")
    stored = await session.scalars(
        select(elements.c.value).select_from(CryptoListing).join(elements, true()).distinct()
    )
    return sorted(name for name in stored if isinstance(name, str) and name.casefold() == wanted)


def listings_query(
    *,
    symbol_filter: str | None = None,
    search: str | None = None,
    categories: Sequence[str] | None = None,
    min_market_cap: Decimal | None = None,
    max_market_cap: Decimal | None = None,
) -> Select[Any]:
    """The listings matching every filter given; `categories`: those with any of these
    categories, as stored (see `category_spellings`)."""
    query = select(CryptoListing)
    if symbol_filter:
        pattern = f"%{_escape_like(symbol_filter.strip().upper())}%"
        query = query.where(CryptoListing.symbol.like(pattern, escape="\\"))
    if search:
        pattern = f"%{_escape_like(search.strip().lower())}%"
        query = query.where(
            or_(
                func.lower(CryptoListing.name).like(pattern, escape="\\"),
                func.lower(CryptoListing.symbol).like(pattern, escape="\\"),
            )
        )
    if categories is not None:
        elements = json_texts(CryptoListing.categories).table_valued("value")
        query = query.where(
            exists(select(literal(1)).select_from(elements).where(elements.c.value.in_(categories)))
        )
    if min_market_cap is not None:
        query = query.where(numeric_order(CryptoListing.market_cap) >= float(min_market_cap))
    if max_market_cap is not None:
        query = query.where(numeric_order(CryptoListing.market_cap) <= float(max_market_cap))
    return query


LISTING_SORT_COLUMNS: Final = {
    "market_cap": CryptoListing.market_cap,
    "volume": CryptoListing.volume_24h,
    "price": CryptoListing.price,
    "change_24h": CryptoListing.change_24h,
    "rank": CryptoListing.rank,
}


def listing_order(sort_by: str, descending: bool) -> list[Any]:
    """ORDER BY for the listings: numeric on every backend, listings without the value last,
    ties broken by symbol."""
    key = order_key(LISTING_SORT_COLUMNS[sort_by])
    return [
        LISTING_SORT_COLUMNS[sort_by].is_(None),
        key.desc() if descending else key.asc(),
        CryptoListing.symbol,
    ]


async def top_listings(session: AsyncSession, category: str, limit: int) -> list[CryptoListing]:
    """gainers / losers (24 h change), volume, market_cap, trending (24 h volume relative to
    market cap: where trading is busiest for the coin's size)."""
    rows = list((await session.scalars(select(CryptoListing))).all())

    def value(row: CryptoListing) -> Decimal | None:
        if category in ("gainers", "losers"):
            return row.change_24h
        if category == "volume":
            return row.volume_24h
        if category == "market_cap":
            return row.market_cap
        if row.volume_24h is None or not row.market_cap:
            return None
        return row.volume_24h / row.market_cap

    ranked = [(v, row) for row in rows if (v := value(row)) is not None]
    ranked.sort(key=lambda pair: (pair[0], pair[1].symbol), reverse=category != "losers")
    return [row for _, row in ranked[:limit]]


# -- importing --------------------------------------------------------------------------------


async def find_or_create_instrument(
    session: AsyncSession, symbol_text: str, *, create: bool, asset_class: str
) -> Instrument:
    """The instrument named, or (with `create`) a new one for imported data."""
    try:
        return await get_instrument(session, symbol_text)
    except NotFound:
        if not create:
            raise
    symbol = symbols.normalize(symbol_text)
    base, _, quote = symbol.partition("-")
    instrument = Instrument(
        symbol=symbol,
        name=symbol,
        asset_class=asset_class,
        base=base,
        quote=quote or "USD",
        tick_size=Decimal("0.00000001"),
        quantity_step=Decimal("0.00000001"),
        status="trading",
        provider="csv",
    )
    session.add(instrument)
    await session.flush()
    return instrument


# -- candle sync ------------------------------------------------------------------------------

# Bars per provider request when the provider states no cap of its own. An exchange provider's
# `page_limit` is the exchange's cap, so there one planned request is one HTTP request.
SYNC_CHUNK_BARS: Final = 1000
# The newest closed bars each sync asks for again, stored or not: an exchange may still correct
# a bar for a moment after it closed. Older stored bars are taken as final.
RECHECKED_BARS: Final = 2


@dataclass(frozen=True)
class CandleSync:
    """What syncing one instrument's bars of one timeframe did."""

    symbol: str
    timeframe: Timeframe
    gaps: int = 0  # stretches of missing bars to fill (less those known to be holes)
    requests: int = 0  # provider requests made
    fetched: int = 0  # closed bars the provider sent
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    # Stretches the provider showed it has no bars for (see backfill.confirmed_holes).
    holes: tuple[backfill.Stretch, ...] = ()
    error: str | None = None  # the provider failure that ended this sync early

    @property
    def wrote(self) -> bool:
        return bool(self.inserted or self.updated)


async def tracked_instruments(
    session: AsyncSession, provider_name: str, wanted: Sequence[str]
) -> dict[str, Instrument]:
    """The instruments of the provider named `provider_name` that the symbols in `wanted`
    name (in any accepted spelling), by the symbol as written in `wanted`."""
    candidates = sorted({spelling for text in wanted for spelling in _spellings(text)})
    rows = await session.scalars(
        select(Instrument).where(
            Instrument.provider == provider_name, Instrument.symbol.in_(candidates)
        )
    )
    by_symbol = {row.symbol: row for row in rows}
    found = {}
    for text in wanted:
        symbol = symbols.resolve(text, by_symbol)
        if symbol is not None:
            found[text] = by_symbol[symbol]
    return found


def _spellings(text: str) -> list[str]:
    """The canonical symbols `text` may name: itself, or BTCUSDT split at each point."""
    symbol = symbols.normalize(text)
    if "-" in symbol:
        return [symbol]
    return [symbol, *(f"{symbol[:i]}-{symbol[i:]}" for i in range(1, len(symbol)))]


async def sync_candles(
    database: Database,
    provider: MarketProvider,
    instrument: Instrument,
    timeframe: Timeframe,
    *,
    now: datetime,
    days: int,
    known_holes: Sequence[tuple[datetime, datetime]] = (),
) -> CandleSync:
    """Fill the instrument's stored bars of `timeframe` from `days` before `now` up to the last
    closed bar. The gaps found, and the newest RECHECKED_BARS bars, are fetched request by
    request (`backfill`), each answer stored in a unit of work of its own: a long back-fill
    never holds the database, and one stopped half-way goes on where it stopped on the next
    run. Stretches in `known_holes` are not asked for. A provider failure ends this sync
    early: what was stored stays, and the failure is in the result.

    Bars come from the instrument's own provider only, never its fallback: a stand-in's bars,
    once stored, would pass for the instrument's history for good."""
    provider = primary_of(provider)
    window = backfill.sync_window(timeframe, now, days)
    async with database.session(write=False) as session:
        gaps = await candle_gaps(session, instrument.id, timeframe, *window)
    wanted = backfill.wanted_bars(gaps, timeframe, now, skip=known_holes)
    recent = backfill.recent_bars(window, timeframe, RECHECKED_BARS)
    requests = backfill.plan_fetches([*wanted, recent], timeframe, _bars_per_request(provider))
    done = CandleSync(instrument.symbol, timeframe, gaps=len(wanted))
    received: list[datetime] = []
    for request in requests:
        try:
            bars = await provider.candles(instrument.symbol, timeframe, *request)
        except ProviderError as exc:
            return replace(done, error=str(exc)[:300] or type(exc).__name__)
        # Only what was asked for, so never the open bar, whatever a provider sends.
        closed = [bar for bar in bars if request.start <= bar.open_time < request.end]
        write = await _store(database, instrument.id, timeframe, closed, provider.name)
        received.extend(bar.open_time for bar in closed)
        done = replace(
            done,
            requests=done.requests + 1,
            fetched=done.fetched + len(closed),
            inserted=done.inserted + write.inserted,
            updated=done.updated + write.updated,
            unchanged=done.unchanged + write.unchanged,
        )
    return replace(done, holes=tuple(backfill.confirmed_holes(wanted, received, timeframe)))


def _bars_per_request(provider: MarketProvider) -> int:
    cap = getattr(provider, "page_limit", None)
    if isinstance(cap, int) and not isinstance(cap, bool) and cap > 0:
        return cap
    return SYNC_CHUNK_BARS


async def _store(
    database: Database, instrument_id: int, timeframe: Timeframe, bars: list[Bar], source: str
) -> CandleWrite:
    if not bars:
        return CandleWrite()
    try:
        async with database.session() as session:
            return await upsert_candles(session, instrument_id, timeframe, bars, source)
    except IntegrityError:
        # Another sync stored some of these bars between our read and our insert (two runs
        # for one instrument at once): written again, they are found and compared.
        async with database.session() as session:
            return await upsert_candles(session, instrument_id, timeframe, bars, source)
