"""CoinGecko: crypto listings, coin details, price history and OHLC from the v3 REST API.

Demo (free) keys go to https://api.coingecko.com/api/v3 in the `x-cg-demo-api-key` header, Pro
keys to https://pro-api.coingecko.com/api/v3 in `x-cg-pro-api-key`; without a key the public
API answers too, with a lower IP-based rate limit. Every price is in USD.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from html.parser import HTMLParser
from typing import Any, Final, Literal
from urllib.parse import quote

import httpx
import structlog
from pydantic import SecretStr

from tradeos.market.providers.base import Bar, Listing, UnknownSymbol
from tradeos.market.providers.http import (
    Clock,
    ClosedOnExit,
    Jitter,
    JsonApiClient,
    MalformedResponse,
    RequestRejected,
    Sleep,
    as_dict,
    equal_jitter,
    from_millis,
    parse_time,
    text_or_none,
    to_decimal,
    to_int,
)

logger = structlog.get_logger("tradeos.market.providers")

PUBLIC_BASE_URL: Final = "https://api.coingecko.com/api/v3"
PRO_BASE_URL: Final = "https://pro-api.coingecko.com/api/v3"
DEMO_KEY_HEADER: Final = "x-cg-demo-api-key"
PRO_KEY_HEADER: Final = "x-cg-pro-api-key"
MAX_PER_PAGE: Final = 250  # /coins/markets accepts per_page 1..250
VS_CURRENCY: Final = "usd"

Days = int | Literal["max"]
Interval = Literal["daily", "hourly"]


@dataclass(frozen=True)
class PriceSnapshot:
    """One point of a coin's history (/coins/{id}/market_chart), in USD.

    `volume` is the trailing 24 h trading volume at `time`, as CoinGecko reports it.
    """

    time: datetime
    price: Decimal
    market_cap: Decimal | None
    volume: Decimal | None


class CoinGeckoClient(ClosedOnExit):
    """A `ListingsProvider` over CoinGecko's v3 API (async, rate limited, retried)."""

    name = "coingecko"

    def __init__(
        self,
        api_key: str | SecretStr | None = None,
        *,
        base_url: str | None = None,
        pro: bool = False,
        client: httpx.AsyncClient | None = None,
        requests_per_minute: int = 30,
        max_retries: int = 4,
        backoff_base: float = 1.0,
        backoff_max: float = 60.0,
        max_retry_after: float = 120.0,
        sleep: Sleep = asyncio.sleep,
        clock: Clock = time.monotonic,
        jitter: Jitter = equal_jitter,
    ) -> None:
        key = api_key.get_secret_value() if isinstance(api_key, SecretStr) else api_key
        key = key.strip() if key else None
        if pro and not key:
            raise ValueError("the CoinGecko Pro API needs an API key")
        self.pro = pro
        headers = {(PRO_KEY_HEADER if pro else DEMO_KEY_HEADER): key} if key else {}
        self._http = JsonApiClient(
            provider=self.name,
            base_url=base_url or (PRO_BASE_URL if pro else PUBLIC_BASE_URL),
            headers=headers,
            secrets=(key,) if key else (),
            client=client,
            requests_per_minute=requests_per_minute,
            max_retries=max_retries,
            backoff_base=backoff_base,
            backoff_max=backoff_max,
            max_retry_after=max_retry_after,
            sleep=sleep,
            clock=clock,
            jitter=jitter,
        )

    def __repr__(self) -> str:
        key = "set" if self._http.has_key else "none"
        return f"CoinGeckoClient(base_url={self._http.base_url!r}, pro={self.pro}, key={key})"

    async def aclose(self) -> None:
        """Close the HTTP client if this object created it (an injected one stays open)."""
        await self._http.aclose()

    async def listings(self, limit: int) -> Sequence[Listing]:
        """The top `limit` coins by market cap, rank order (/coins/markets, paginated).

        Pages are as large as needed and as even as possible (limit 300: two pages of 150),
        since each page costs one request of the rate limit. Categories, description and
        website are not in this endpoint: see `coin`.
        """
        if limit < 0:
            raise ValueError("limit must be >= 0")
        if limit == 0:
            return []
        pages = -(-limit // MAX_PER_PAGE)
        per_page = -(-limit // pages)
        listings: list[Listing] = []
        seen: set[str] = set()
        for page in range(1, pages + 1):
            rows = await self._http.get_json(
                "/coins/markets",
                {
                    "vs_currency": VS_CURRENCY,
                    "order": "market_cap_desc",
                    "per_page": per_page,
                    "page": page,
                    "price_change_percentage": "1h,24h,7d",
                },
            )
            if not isinstance(rows, list):
                raise MalformedResponse(
                    self.name, "coingecko /coins/markets did not answer a list", status=200
                )
            for row in rows:
                listing = _market_listing(row)
                # Ranks can shift between two page requests: a coin seen twice counts once.
                if listing is None or listing.source_id in seen:
                    continue
                seen.add(listing.source_id or "")
                listings.append(listing)
            if len(rows) < per_page:
                break  # the last page: fewer coins exist than asked for
        return listings[:limit]

    async def coin(self, coin_id: str) -> Listing:
        """One coin's listing with its details (/coins/{id}): market data as in `listings`,
        plus categories, the English description (HTML tags removed), the first homepage and
        the large image. An id CoinGecko does not know raises `UnknownSymbol`."""
        data = await self._coin_json(
            coin_id,
            "",
            {
                "localization": "false",
                "tickers": "false",
                "market_data": "true",
                "community_data": "false",
                "developer_data": "false",
                "sparkline": "false",
            },
        )
        if not isinstance(data, dict):
            raise MalformedResponse(self.name, "coingecko /coins/{id} did not answer an object")
        listing = _coin_listing(data)
        if listing is None:
            raise MalformedResponse(self.name, "coingecko /coins/{id} has no symbol")
        return listing

    async def price_history(
        self, coin_id: str, days: Days, *, interval: Interval | None = None
    ) -> list[PriceSnapshot]:
        """Price, market cap and 24 h volume over the last `days` (/coins/{id}/market_chart),
        oldest first. CoinGecko picks the spacing: 5-minutely for 1 day, hourly up to 90 days,
        daily (00:00 UTC) beyond, unless `interval` says otherwise (hourly: paid plans)."""
        params: dict[str, str | int] = {"vs_currency": VS_CURRENCY, "days": _days(days)}
        if interval is not None:
            params["interval"] = interval
        data = await self._coin_json(coin_id, "/market_chart", params)
        if not isinstance(data, dict) or not isinstance(data.get("prices"), list):
            raise MalformedResponse(self.name, "coingecko market_chart has no prices list")
        market_caps = _series(data.get("market_caps"))
        volumes = _series(data.get("total_volumes"))
        snapshots: dict[datetime, PriceSnapshot] = {}
        for point in data["prices"]:
            if not isinstance(point, list) or len(point) < 2:
                continue
            moment, price = from_millis(point[0]), to_decimal(point[1])
            if moment is None or price is None:
                continue
            snapshots[moment] = PriceSnapshot(
                time=moment,
                price=price,
                market_cap=market_caps.get(moment),
                volume=volumes.get(moment),
            )
        return [snapshots[moment] for moment in sorted(snapshots)]

    async def ohlc(
        self, coin_id: str, days: Days, *, interval: Interval | None = None
    ) -> list[Bar]:
        """Candles over the last `days` (/coins/{id}/ohlc), oldest first.

        CoinGecko's OHLC has no volume: every bar's volume is 0 (use `price_history` for
        volume). Its timestamps are candle *close* times; `Bar.open_time` is that minus the
        candle length, which CoinGecko derives from `days` (1-2: 30 min, 3-30: 4 h, more:
        4 days) unless `interval` is given (paid plans). CoinGecko accepts days 1, 7, 14, 30,
        90, 180, 365 and "max".
        """
        params: dict[str, str | int] = {"vs_currency": VS_CURRENCY, "days": _days(days)}
        if interval is not None:
            params["interval"] = interval
        data = await self._coin_json(coin_id, "/ohlc", params)
        if not isinstance(data, list):
            raise MalformedResponse(self.name, "coingecko /ohlc did not answer a list")
        length = _candle_length(days, interval)
        bars: dict[datetime, Bar] = {}
        for row in data:
            bar = _bar(row, length)
            if bar is None:
                logger.warning("coingecko_ohlc_row_skipped", coin_id=coin_id)
                continue
            bars[bar.open_time] = bar
        return [bars[moment] for moment in sorted(bars)]

    async def _coin_json(self, coin_id: str, suffix: str, params: dict[str, str | int]) -> Any:
        if not coin_id or not coin_id.strip():
            raise ValueError("coin_id must not be empty")
        path = f"/coins/{quote(coin_id.strip(), safe='')}{suffix}"
        try:
            return await self._http.get_json(path, params)
        except RequestRejected as exc:
            if exc.status == 404:
                raise UnknownSymbol(f"coingecko does not know the coin id {coin_id!r}") from exc
            raise


# --- mapping ------------------------------------------------------------------------------


def _days(days: Days) -> str | int:
    if days == "max":
        return "max"
    if isinstance(days, bool) or not isinstance(days, int) or days < 1:
        raise ValueError('days must be a positive integer or "max"')
    return days


def _candle_length(days: Days, interval: Interval | None) -> timedelta:
    if interval == "hourly":
        return timedelta(hours=1)
    if interval == "daily":
        return timedelta(days=1)
    if days != "max" and days <= 2:
        return timedelta(minutes=30)
    if days != "max" and days <= 30:
        return timedelta(hours=4)
    return timedelta(days=4)


def _series(points: object) -> dict[datetime, Decimal | None]:
    series: dict[datetime, Decimal | None] = {}
    if not isinstance(points, list):
        return series
    for point in points:
        if isinstance(point, list) and len(point) >= 2:
            moment = from_millis(point[0])
            if moment is not None:
                series[moment] = to_decimal(point[1])
    return series


def _bar(row: object, length: timedelta) -> Bar | None:
    if not isinstance(row, list) or len(row) < 5:
        return None
    close_time = from_millis(row[0])
    open_, high, low, close = (to_decimal(value) for value in row[1:5])
    if close_time is None or open_ is None or high is None or low is None or close is None:
        return None
    return Bar(
        open_time=close_time - length,
        open=open_,
        high=high,
        low=low,
        close=close,
        volume=Decimal(0),
    )


def _market_listing(row: object) -> Listing | None:
    """A /coins/markets row as a Listing; None (and a warning) for a row without a symbol."""
    if not isinstance(row, dict):
        return None
    symbol = text_or_none(row.get("symbol"))
    coin_id = text_or_none(row.get("id"))
    if symbol is None or coin_id is None:
        logger.warning("coingecko_row_skipped", coin_id=coin_id)
        return None
    return Listing(
        symbol=symbol.upper(),
        name=text_or_none(row.get("name")) or symbol.upper(),
        rank=to_int(row.get("market_cap_rank")),
        price=to_decimal(row.get("current_price")),
        market_cap=to_decimal(row.get("market_cap")),
        volume_24h=to_decimal(row.get("total_volume")),
        change_1h=to_decimal(row.get("price_change_percentage_1h_in_currency")),
        change_24h=_first_decimal(
            row.get("price_change_percentage_24h_in_currency"),
            row.get("price_change_percentage_24h"),
        ),
        change_7d=to_decimal(row.get("price_change_percentage_7d_in_currency")),
        circulating_supply=to_decimal(row.get("circulating_supply")),
        total_supply=to_decimal(row.get("total_supply")),
        max_supply=to_decimal(row.get("max_supply")),
        ath=to_decimal(row.get("ath")),
        ath_date=parse_time(row.get("ath_date")),
        atl=to_decimal(row.get("atl")),
        atl_date=parse_time(row.get("atl_date")),
        image_url=text_or_none(row.get("image")),
        last_updated=parse_time(row.get("last_updated")),
        source_id=coin_id,
    )


def _coin_listing(data: dict[str, Any]) -> Listing | None:
    """A /coins/{id} answer as a Listing (market data in USD plus the coin's details)."""
    symbol = text_or_none(data.get("symbol"))
    if symbol is None:
        return None
    market = as_dict(data.get("market_data"))

    def usd(field: str) -> object:
        return as_dict(market.get(field)).get(VS_CURRENCY)

    categories = tuple(
        category.strip()
        for category in data.get("categories") or ()
        if isinstance(category, str) and category.strip()
    )
    homepages = as_dict(data.get("links")).get("homepage")
    website = next(
        (url for url in map(text_or_none, homepages or ()) if url is not None),
        None,
    )
    image = as_dict(data.get("image"))
    return Listing(
        symbol=symbol.upper(),
        name=text_or_none(data.get("name")) or symbol.upper(),
        rank=_first_int(data.get("market_cap_rank"), market.get("market_cap_rank")),
        price=to_decimal(usd("current_price")),
        market_cap=to_decimal(usd("market_cap")),
        volume_24h=to_decimal(usd("total_volume")),
        change_1h=to_decimal(usd("price_change_percentage_1h_in_currency")),
        change_24h=_first_decimal(
            usd("price_change_percentage_24h_in_currency"),
            market.get("price_change_percentage_24h"),
        ),
        change_7d=_first_decimal(
            usd("price_change_percentage_7d_in_currency"),
            market.get("price_change_percentage_7d"),
        ),
        circulating_supply=to_decimal(market.get("circulating_supply")),
        total_supply=to_decimal(market.get("total_supply")),
        max_supply=to_decimal(market.get("max_supply")),
        ath=to_decimal(usd("ath")),
        ath_date=parse_time(usd("ath_date")),
        atl=to_decimal(usd("atl")),
        atl_date=parse_time(usd("atl_date")),
        categories=categories,
        description=_plain_text(as_dict(data.get("description")).get("en")),
        website=website,
        image_url=next(
            (url for url in map(text_or_none, (image.get(size) for size in _IMAGE_SIZES)) if url),
            None,
        ),
        last_updated=parse_time(market.get("last_updated")) or parse_time(data.get("last_updated")),
        source_id=text_or_none(data.get("id")),
    )


_IMAGE_SIZES: Final = ("large", "small", "thumb")


def _first_int(*values: object) -> int | None:
    return next((number for number in map(to_int, values) if number is not None), None)


def _first_decimal(*values: object) -> Decimal | None:
    for value in values:
        number = to_decimal(value)
        if number is not None:
            return number
    return None


class _TextExtractor(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []

    def handle_data(self, data: str) -> None:
        self.parts.append(data)


def _plain_text(value: object) -> str | None:
    """CoinGecko descriptions are HTML (links, line breaks): keep the text only."""
    text = text_or_none(value)
    if text is None:
        return None
    extractor = _TextExtractor()
    extractor.feed(text)
    extractor.close()
    plain = "".join(extractor.parts).replace("\r\n", "\n").replace("\r", "\n")
    return plain.strip() or None
