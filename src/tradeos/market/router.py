"""Market data endpoints: /market/instruments, /market/candles, /market/ticker and
/cryptocurrencies."""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable, Iterable
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any
from urllib.parse import urlencode

import orjson
from fastapi import Depends, Query, Request, Response, status
from starlette.convertors import StringConvertor, register_url_convertor

from tradeos.accounts.deps import AdminDep, ReaderDep, UserRateLimit
from tradeos.config import Settings
from tradeos.core.cache import Cache, CacheDep, cached, cached_json
from tradeos.core.db import utcnow
from tradeos.core.deps import JobsDep, PageQuery, SessionDep, SettingsDep
from tradeos.core.errors import ValidationFailed, field_error
from tradeos.core.fields import Moment, NoNul, decimal_text
from tradeos.core.pagination import Page, paginate
from tradeos.core.routing import APIRouter
from tradeos.market import jobs as market_jobs
from tradeos.market import service
from tradeos.market.deps import MarketDep
from tradeos.market.providers.base import AssetClass
from tradeos.market.resample import ResampledBar, is_forming
from tradeos.market.schemas import (
    CandlesOut,
    CryptocurrencyOut,
    InstrumentOut,
    ListingSort,
    PriceHistoryOut,
    PriceSnapshotOut,
    SortOrder,
    SyncAccepted,
    SyncRequest,
    TickerOut,
    TopCategory,
)
from tradeos.market.timeframes import Timeframe


class _CoinSymbol(StringConvertor):
    """A coin symbol in a path: any one segment but the words of sibling routes (`sync`,
    `top`), so /cryptocurrencies/sync is never also "the coin called sync"."""

    regex = r"(?!(?:sync|top)(?:/|$))[^/]+"


register_url_convertor("coin", _CoinSymbol())

MarketDataLimit = Depends(UserRateLimit("market_data"))
market = APIRouter(prefix="/market", tags=["market"], dependencies=[MarketDataLimit])
crypto = APIRouter(prefix="/cryptocurrencies", tags=["cryptocurrencies"])

Symbol = Annotated[str, NoNul]


def _check_window(start: datetime | None, end: datetime | None) -> None:
    if start is not None and end is not None and start >= end:
        raise ValidationFailed(
            "start is not before end: the time window is empty.",
            errors=[field_error("query.start", "must be before end")],
        )


@market.get("/instruments")
async def list_instruments(
    _reader: ReaderDep,
    session: SessionDep,
    paging: PageQuery,
    asset_class: AssetClass | None = None,
    search: Annotated[
        str | None, Query(max_length=50, description="Part of the symbol or name."), NoNul
    ] = None,
) -> Page[InstrumentOut]:
    query = service.instruments_query(
        asset_class=asset_class.value if asset_class else None, search=search
    )
    page = await paginate(session, query, paging)
    return page.map(InstrumentOut.model_validate)


# `:path`, so BTC/USD works in the path as well.
@market.get("/candles/{symbol:path}", response_model=CandlesOut)
async def get_candles(
    symbol: Symbol,
    _reader: ReaderDep,
    session: SessionDep,
    market_data: MarketDep,
    cache: CacheDep,
    settings: SettingsDep,
    timeframe: Timeframe = Timeframe.H1,
    start: Annotated[
        Moment | None,
        Query(
            description="Bars opening at or after this moment (inclusive). A bar that opens "
            "before `start` is left out, even if its period contains `start`."
        ),
    ] = None,
    end: Annotated[
        Moment | None,
        Query(description="Bars opening before this moment (exclusive); may be in the future."),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=service.MAX_CANDLES)] = service.DEFAULT_CANDLES,
) -> Response:
    """OHLCV bars, oldest first: the last `limit` bars that exist among those opening in
    [start, end), for every timeframe and source alike. So a coarse bar whose period begins
    before `start` is not included (weekly bars from a Wednesday start with the next Monday's
    week): no bar is built from part of its period. `end` may be in the future: there are no
    bars after the current one. A timeframe not stored is resampled from the finest stored
    one (UTC boundaries, weeks from Monday). `partial` marks a bar still forming, its period
    not ended yet; a bar whose period has ended is final, even if the market was closed for
    part of it (a week of daily equity bars has five)."""
    _check_window(start, end)
    # Remembered for a few seconds, checked by the bars' query itself (see InstrumentRefs).
    ref = await service.instrument_ref(session, symbol)
    now = utcnow()
    window_start, window_end = service.candle_window(timeframe, start, end, limit, now)

    async def compute() -> dict[str, Any]:
        stored = await service.stored_candle_texts(
            session, ref, timeframe, window_start, window_end, limit
        )
        if stored:  # the common case, and the one with thousands of bars: no Decimal at all
            return _stored_candles_json(ref.symbol, timeframe, stored, utcnow())
        # Nothing stored (or the remembered instrument is gone): the instrument as it is now.
        instrument = await service.get_instrument(session, symbol)
        series = await service.candles(
            session, market_data.provider, instrument, timeframe, window_start, window_end, limit
        )
        return _candles_json(series)

    # Up to 5,000 bars: written straight to JSON in the CandlesOut shape (the OpenAPI document
    # and the tests hold it to that model). Building and serializing 5,000 Pydantic models
    # took ten times as long as the query. A cached body is sent as the cache holds it.
    if end is None or end > timeframe.floor(now):
        # The window holds the bar still forming (or may, by the time it is read again):
        # never cached, or that bar would be served frozen.
        body = orjson.dumps(await compute())
    else:  # every bar of the window has closed: the answer can only change by a write
        key = ":".join(
            ("candles", ref.symbol, timeframe, window_start.isoformat(), end.isoformat())
        )
        body = await cached_json(
            cache,
            f"{key}:{limit}",
            compute,
            ttl=settings.market_cache_seconds,
            tags=[service.candles_tag(ref.symbol)],
        )
    return Response(body, media_type="application/json")


def _candles_json(series: service.CandleSeries) -> dict[str, Any]:
    """Bars produced or resampled in Python, written as the database writes stored ones."""
    return _candles_body(
        series.symbol, series.timeframe, series.source, (_bar_text(item) for item in series.bars)
    )


def _bar_text(item: ResampledBar) -> tuple[str, str, str, str, str, str, bool]:
    bar = item.bar
    return (
        _utc_text(bar.open_time),
        decimal_text(bar.open),
        decimal_text(bar.high),
        decimal_text(bar.low),
        decimal_text(bar.close),
        decimal_text(bar.volume),
        item.partial,
    )


def _stored_candles_json(
    symbol: str,
    timeframe: Timeframe,
    rows: list[tuple[str, str, str, str, str, str]],
    now: datetime,
) -> dict[str, Any]:
    # Oldest first, so only a tail of the rows can still be forming (at most one bar, as
    # stored bars open on boundaries): the rest are not parsed.
    forming = 0
    for row in reversed(rows):
        if not is_forming(datetime.fromisoformat(row[0]), timeframe, now):
            break
        forming += 1
    closed = len(rows) - forming
    return _candles_body(
        symbol,
        timeframe,
        "stored",
        ((*row, index >= closed) for index, row in enumerate(rows)),
    )


def _candles_body(
    symbol: str,
    timeframe: Timeframe,
    source: str,
    bars: Iterable[tuple[str, str, str, str, str, str, bool]],
) -> dict[str, Any]:
    """The CandlesOut shape, from bars already in the API's text."""
    return {
        "symbol": symbol,
        "timeframe": timeframe.value,
        "source": source,
        "candles": [
            {
                "time": time,
                "open": open_,
                "high": high,
                "low": low,
                "close": close,
                "volume": volume,
                "partial": partial,
            }
            for time, open_, high, low, close, volume, partial in bars
        ],
    }


def _utc_text(moment: datetime) -> str:
    """As Pydantic writes a UTC time: `2026-01-02T03:04:05Z`."""
    return moment.isoformat().replace("+00:00", "Z")


@market.get("/ticker/{symbol:path}")
async def get_ticker(
    symbol: Symbol, _reader: ReaderDep, session: SessionDep, market_data: MarketDep
) -> TickerOut:
    """The last price with bid and ask, and the last 24 hours' open, high, low, volume and
    change. `source` names the provider that gave the price (a fallback when the instrument's
    own provider failed); 503 when none could."""
    instrument = await service.get_instrument(session, symbol)
    stats = await service.ticker(session, market_data.provider, instrument)
    return TickerOut(
        symbol=instrument.symbol,
        time=stats.tick.time,
        last=stats.tick.last,
        bid=stats.tick.bid,
        ask=stats.tick.ask,
        open_24h=stats.open_24h,
        high_24h=stats.high_24h,
        low_24h=stats.low_24h,
        volume_24h=stats.volume_24h,
        change_24h=stats.change_24h,
        change_24h_percent=stats.change_24h_percent,
        source=stats.source or instrument.provider,
    )


@crypto.get("")
async def list_cryptocurrencies(
    request: Request,
    _reader: ReaderDep,
    session: SessionDep,
    cache: CacheDep,
    settings: SettingsDep,
    paging: PageQuery,
    symbol_filter: Annotated[
        str | None, Query(max_length=20, description="Part of the symbol."), NoNul
    ] = None,
    search: Annotated[
        str | None, Query(max_length=50, description="Part of the name or symbol."), NoNul
    ] = None,
    category: Annotated[str | None, Query(max_length=100), NoNul] = None,
    min_market_cap: Annotated[Decimal | None, Query(ge=0, max_digits=38)] = None,
    max_market_cap: Annotated[Decimal | None, Query(ge=0, max_digits=38)] = None,
    sort_by: ListingSort = ListingSort.MARKET_CAP,
    order: SortOrder = SortOrder.DESC,
) -> Page[CryptocurrencyOut]:
    if (
        min_market_cap is not None
        and max_market_cap is not None
        and (min_market_cap > max_market_cap)
    ):
        raise ValidationFailed(
            "min_market_cap is above max_market_cap: the range is empty.",
            errors=[field_error("query.min_market_cap", "must not be above max_market_cap")],
        )

    async def compute() -> dict[str, Any]:
        query = service.listings_query(
            symbol_filter=symbol_filter,
            search=search,
            categories=await service.category_spellings(session, category) if category else None,
            min_market_cap=min_market_cap,
            max_market_cap=max_market_cap,
        ).order_by(*service.listing_order(sort_by.value, order is SortOrder.DESC))
        page = await paginate(session, query, paging)
        return page.map(CryptocurrencyOut.model_validate).model_dump(mode="json")

    return Page[CryptocurrencyOut].model_validate(
        await _listings_cached(cache, settings, _request_key("cryptocurrencies", request), compute)
    )


def _request_key(name: str, request: Request) -> str:
    """A cache key of a read: its name and a digest of its path parameters and query in a
    stable order (a digest: any query, however long, makes a valid key)."""
    path = urlencode(sorted(request.path_params.items()))
    read = f"{path}?{urlencode(sorted(request.query_params.multi_items()))}"
    return f"{name}:{hashlib.sha256(read.encode()).hexdigest()}"


async def _listings_cached(
    cache: Cache, settings: Settings, key: str, compute: Callable[[], Awaitable[Any]]
) -> Any:
    """Listing reads are cached until a sync (or the retention clean-up) changes listings."""
    return await cached(
        cache, key, compute, ttl=settings.market_cache_seconds, tags=[service.LISTINGS_TAG]
    )


@crypto.get("/top/{category}")
async def top_cryptocurrencies(
    request: Request,
    category: TopCategory,
    _reader: ReaderDep,
    session: SessionDep,
    cache: CacheDep,
    settings: SettingsDep,
    limit: Annotated[int, Query(ge=1, le=100)] = 10,
) -> list[CryptocurrencyOut]:
    async def compute() -> list[dict[str, Any]]:
        rows = await service.top_listings(session, category.value, limit)
        return [CryptocurrencyOut.model_validate(row).model_dump(mode="json") for row in rows]

    found = await _listings_cached(cache, settings, _request_key("top", request), compute)
    return [CryptocurrencyOut.model_validate(item) for item in found]


@crypto.post("/sync", status_code=status.HTTP_202_ACCEPTED)
async def sync_cryptocurrencies(
    body: SyncRequest, _admin: AdminDep, session: SessionDep, jobs: JobsDep
) -> SyncAccepted:
    """Fetch the top `limit` listings from `provider` in the background: the answer carries
    the job's id, whose progress GET /admin/jobs/{id} shows."""
    run = await jobs.enqueue(
        session,
        market_jobs.sync_listings,
        {"limit": body.limit, "provider": body.provider},
        owner_id=_admin.user_id,
    )
    return SyncAccepted(job_id=run.id, status=str(run.status))


@crypto.get("/{symbol:coin}")
async def get_cryptocurrency(
    request: Request,
    symbol: Symbol,
    _reader: ReaderDep,
    session: SessionDep,
    cache: CacheDep,
    settings: SettingsDep,
) -> CryptocurrencyOut:
    async def compute() -> dict[str, Any]:
        listing = await service.get_listing(session, symbol)  # an unknown coin: 404, not cached
        return CryptocurrencyOut.model_validate(listing).model_dump(mode="json")

    key = _request_key("cryptocurrency", request)
    return CryptocurrencyOut.model_validate(await _listings_cached(cache, settings, key, compute))


@crypto.get("/{symbol:coin}/history")
async def get_price_history(
    request: Request,
    symbol: Symbol,
    _reader: ReaderDep,
    session: SessionDep,
    cache: CacheDep,
    settings: SettingsDep,
    start: Annotated[Moment | None, Query(description="From this moment on (inclusive).")] = None,
    end: Annotated[Moment | None, Query(description="Before this moment (exclusive).")] = None,
    limit: Annotated[int, Query(ge=1, le=5000)] = 500,
) -> PriceHistoryOut:
    _check_window(start, end)

    async def compute() -> dict[str, Any]:
        listing = await service.get_listing(session, symbol)
        rows = await service.price_history(session, listing.id, start, end, limit)
        history = [PriceSnapshotOut.model_validate(row) for row in rows]
        return PriceHistoryOut(symbol=listing.symbol, history=history).model_dump(mode="json")

    key = _request_key("price_history", request)
    return PriceHistoryOut.model_validate(await _listings_cached(cache, settings, key, compute))


routers = (market, crypto)
