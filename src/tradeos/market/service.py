"""Market data use cases: instruments, candles (stored, resampled or produced on demand),
tickers, crypto listings and their history, and the idempotent writes sync jobs make.

Reads go through the cache (`MARKET_CACHE_SECONDS`), tagged per instrument or for listings, and
every write that changes stored data invalidates its tag.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, Final

from sqlalchemy import Select, String, cast, delete, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from tradeos.core.db import numeric_order, order_key, to_exact_decimal, utcnow
from tradeos.core.errors import NotFound
from tradeos.market import symbols
from tradeos.market.models import Candle, CryptoListing, Instrument, PriceSnapshot
from tradeos.market.providers.base import Bar, InstrumentSpec, Listing, MarketProvider, Tick
from tradeos.market.resample import ResampledBar, resample
from tradeos.market.timeframes import ORDERED, Timeframe

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
        rows = (
            await session.scalars(select(Instrument).where(Instrument.symbol.in_(candidates)))
        ).all()
        by_symbol = {row.symbol: row for row in rows}
        found = symbols.resolve(symbol, by_symbol)
        if found is not None:
            return by_symbol[found]
    raise NotFound(f"No instrument {text[:40]!r}. GET /api/v1/market/instruments lists them.")


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
    """The [start, end) asked for: `end` defaults to now (the current bar included), `start`
    to `limit` bars before `end`."""
    end = end or now + timeframe.delta
    start = start or timeframe.floor(end) - timeframe.delta * limit
    return start, end


async def candles(
    session: AsyncSession,
    provider: MarketProvider | None,
    instrument: Instrument,
    timeframe: Timeframe,
    start: datetime,
    end: datetime,
    limit: int,
) -> CandleSeries:
    """The last `limit` bars with start <= open time < end, oldest first: stored bars of the
    timeframe; else bars of the finest stored timeframe that tiles it, resampled; else, for
    instruments of an on-demand provider (sim), bars produced by it."""
    stored = await _stored(session, instrument.id, timeframe, start, end, limit)
    if stored:
        return CandleSeries(instrument.symbol, timeframe, "stored", _whole(stored))
    finer = await _finest_stored(session, instrument.id, timeframe, start, end)
    if finer is not None:
        # The fine bars of the last `limit` coarse periods only.
        span_start = max(start, timeframe.floor(end) - timeframe.delta * limit)
        fine = await _stored(session, instrument.id, finer, span_start, end, None)
        bars = list(resample(fine, finer, timeframe))[-limit:]
        return CandleSeries(instrument.symbol, timeframe, f"resampled:{finer}", bars)
    if provider is not None and provider.name == instrument.provider:
        span_start = max(start, timeframe.floor(end) - timeframe.delta * limit)
        produced = await provider.candles(instrument.symbol, timeframe, span_start, end)
        now = utcnow()
        bars = [
            ResampledBar(bar, partial=bar.open_time + timeframe.delta > now)
            for bar in produced[-limit:]
        ]
        return CandleSeries(instrument.symbol, timeframe, provider.name, bars)
    return CandleSeries(instrument.symbol, timeframe, "stored", [])


def _whole(rows: Sequence[Bar]) -> list[ResampledBar]:
    now = utcnow()
    return [ResampledBar(bar, partial=False) for bar in rows if bar.open_time <= now]


async def _stored(
    session: AsyncSession,
    instrument_id: int,
    timeframe: Timeframe,
    start: datetime,
    end: datetime,
    limit: int | None,
) -> list[Bar]:
    query = select(Candle).where(
        Candle.instrument_id == instrument_id,
        Candle.timeframe == timeframe.value,
        Candle.open_time >= start,
        Candle.open_time < end,
    )
    if limit is not None:
        # The newest `limit`, then oldest first.
        query = query.order_by(Candle.open_time.desc()).limit(limit)
        rows = list(reversed((await session.scalars(query)).all()))
    else:
        rows = list((await session.scalars(query.order_by(Candle.open_time))).all())
    return [_bar(row) for row in rows]


def _bar(row: Candle) -> Bar:
    return Bar(row.open_time, row.open, row.high, row.low, row.close, row.volume)


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
        times = sorted(batch)
        existing = {
            row.open_time: row
            for row in await session.scalars(
                select(Candle).where(
                    Candle.instrument_id == instrument_id,
                    Candle.timeframe == timeframe.value,
                    Candle.open_time >= times[0],
                    Candle.open_time <= times[-1],
                )
            )
        }
        new_rows = []
        for open_time in times:
            bar = _exact(batch[open_time])
            row = existing.get(open_time)
            if row is None:
                new_rows.append(_candle_values(instrument_id, timeframe, bar, source))
                inserted += 1
            elif _bar(row) == bar and row.source == source:
                unchanged += 1
            else:
                row.open, row.high, row.low, row.close = bar.open, bar.high, bar.low, bar.close
                row.volume, row.source = bar.volume, source
                updated += 1
        if new_rows:
            await session.execute(Candle.__table__.insert(), new_rows)
        await session.flush()
    return CandleWrite(inserted, updated, unchanged)


def _exact(bar: Bar) -> Bar:
    """The bar as the database will hold it (18 decimal places), so comparing with a stored
    row tells a real change from a rounding."""
    return Bar(
        bar.open_time,
        to_exact_decimal(bar.open),
        to_exact_decimal(bar.high),
        to_exact_decimal(bar.low),
        to_exact_decimal(bar.close),
        to_exact_decimal(bar.volume),
    )


def _candle_values(
    instrument_id: int, timeframe: Timeframe, bar: Bar, source: str
) -> dict[str, Any]:
    return {
        "instrument_id": instrument_id,
        "timeframe": timeframe.value,
        "open_time": bar.open_time,
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
    """Stretches of [start, end) with no stored bar: what a back-fill must fetch."""
    times = list(
        await session.scalars(
            select(Candle.open_time)
            .where(
                Candle.instrument_id == instrument_id,
                Candle.timeframe == timeframe.value,
                Candle.open_time >= start,
                Candle.open_time < end,
            )
            .order_by(Candle.open_time)
        )
    )
    gaps = []
    expected = timeframe.floor(start)
    if expected < start:
        expected += timeframe.delta
    for open_time in [*times, None]:
        stop = end if open_time is None else open_time
        if stop > expected:
            gaps.append((expected, stop))
        if open_time is not None:
            expected = open_time + timeframe.delta
    return [(a, b) for a, b in gaps if a < b]


# -- tickers ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class TickerStats:
    tick: Tick
    open_24h: Decimal | None
    high_24h: Decimal | None
    low_24h: Decimal | None
    volume_24h: Decimal | None

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
    """The instrument's last price (its provider's live tick, or the close of its newest stored
    bar) with the last 24 hours' statistics from hourly bars."""
    now = utcnow()
    if provider is not None and provider.name == instrument.provider:
        tick = await provider.ticker(instrument.symbol)
    else:
        latest = await session.scalar(
            select(Candle)
            .where(Candle.instrument_id == instrument.id, Candle.open_time <= now)
            .order_by(Candle.open_time.desc())
            .limit(1)
        )
        if latest is None:
            raise NotFound(f"No prices for {instrument.symbol} yet: sync or import its candles.")
        tick = Tick(instrument.symbol, latest.open_time, latest.close, latest.close, latest.close)
    day_start = Timeframe.H1.floor(now) - timedelta(hours=23)
    series = await candles(
        session, provider, instrument, Timeframe.H1, day_start, now + Timeframe.H1.delta, 24
    )
    return day_stats(tick, [item.bar for item in series.bars])


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


def listings_query(
    *,
    symbol_filter: str | None = None,
    search: str | None = None,
    category: str | None = None,
    min_market_cap: Decimal | None = None,
    max_market_cap: Decimal | None = None,
) -> Select[Any]:
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
    if category:
        # Categories are a JSON list; its text holds each one quoted. Portable across backends.
        quoted = f'%"{_escape_like(category.strip().lower())}"%'
        query = query.where(
            func.lower(cast(CryptoListing.categories, String)).like(quoted, escape="\\")
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


async def import_candles(
    database: Any,
    instrument_id: int,
    timeframe: Timeframe,
    batches: Any,
    *,
    source: str = "csv",
    on_batch: Any = None,
) -> CandleWrite:
    """Upsert batches of bars, each in a short unit of work of its own (a long import never
    holds the database); `on_batch(write)` after each. Idempotent: importing a file twice
    changes nothing the second time."""
    inserted = updated = unchanged = 0
    for batch in batches:
        async with database.session() as session:
            write = await upsert_candles(session, instrument_id, timeframe, batch, source)
        inserted, updated = inserted + write.inserted, updated + write.updated
        unchanged += write.unchanged
        if on_batch is not None:
            on_batch(write)
    return CandleWrite(inserted, updated, unchanged)


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
