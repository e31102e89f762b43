"""CoinMarketCap: crypto listings and coin metadata from the Pro API (v1 listings, v2 info).

Every request carries the key in the `X-CMC_PRO_API_KEY` header (CoinMarketCap has no keyless
access to these endpoints). Prices are converted to USD. listings/latest has no all-time high or
low, so `ath`, `ath_date`, `atl` and `atl_date` are always None here; description, website and
logo come from /v2/cryptocurrency/info (`info`, or `listings(..., with_info=True)`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final

import httpx
import structlog
from pydantic import SecretStr

from tradeos.market.providers.base import Listing
from tradeos.market.providers.http import (
    Clock,
    ClosedOnExit,
    Jitter,
    JsonApiClient,
    MalformedResponse,
    ProviderHTTPError,
    QueryParams,
    Sleep,
    as_dict,
    equal_jitter,
    parse_time,
    text_or_none,
    to_decimal,
    to_int,
)

logger = structlog.get_logger("tradeos.market.providers")

BASE_URL: Final = "https://pro-api.coinmarketcap.com"
KEY_HEADER: Final = "X-CMC_PRO_API_KEY"
CONVERT: Final = "USD"
MAX_LISTINGS_PER_REQUEST: Final = 5000  # listings/latest accepts limit 1..5000
MAX_INFO_IDS_PER_REQUEST: Final = 100  # info costs one credit per 100 ids
# 429 with these codes will not clear by waiting a minute: daily / monthly credits are spent.
QUOTA_SPENT_CODES: Final = frozenset({1009, 1010})


@dataclass(frozen=True)
class CoinInfo:
    """What /v2/cryptocurrency/info tells about one coin (the static part of a listing)."""

    source_id: str  # CoinMarketCap's id, as text (like Listing.source_id): "1"
    symbol: str
    name: str
    description: str | None
    website: str | None
    image_url: str | None  # the logo
    categories: tuple[str, ...]  # CoinMarketCap's tags, by display name


def merge_info(listing: Listing, info: CoinInfo) -> Listing:
    """`listing` with the description, website, logo and categories of `info`."""
    return dataclasses.replace(
        listing,
        description=info.description or listing.description,
        website=info.website or listing.website,
        image_url=info.image_url or listing.image_url,
        categories=info.categories or listing.categories,
    )


class CoinMarketCapClient(ClosedOnExit):
    """A `ListingsProvider` over CoinMarketCap's Pro API (async, rate limited, retried)."""

    name = "coinmarketcap"

    def __init__(
        self,
        api_key: str | SecretStr,
        *,
        base_url: str = BASE_URL,
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
        key = (key or "").strip()
        if not key:
            raise ValueError("CoinMarketCap needs an API key")
        self._http = JsonApiClient(
            provider=self.name,
            base_url=base_url,
            headers={KEY_HEADER: key},
            secrets=(key,),
            client=client,
            requests_per_minute=requests_per_minute,
            max_retries=max_retries,
            backoff_base=backoff_base,
            backoff_max=backoff_max,
            max_retry_after=max_retry_after,
            sleep=sleep,
            clock=clock,
            jitter=jitter,
            should_retry=_should_retry,
        )

    def __repr__(self) -> str:
        return f"CoinMarketCapClient(base_url={self._http.base_url!r}, key=set)"

    async def aclose(self) -> None:
        """Close the HTTP client if this object created it (an injected one stays open)."""
        await self._http.aclose()

    async def listings(self, limit: int, *, with_info: bool = False) -> Sequence[Listing]:
        """The top `limit` coins by market cap, rank order (/v1/cryptocurrency/listings/latest).

        Categories are the tag slugs listings/latest carries ("mineable"); with
        `with_info=True` one more request per 100 coins (`info`) adds description, website,
        logo and the tags' display names.
        """
        if limit < 0:
            raise ValueError("limit must be >= 0")
        listings: list[Listing] = []
        seen: set[str] = set()
        start = 1
        while len(listings) < limit:
            size = min(limit - len(listings), MAX_LISTINGS_PER_REQUEST)
            data = await self._get_data(
                "/v1/cryptocurrency/listings/latest",
                {"start": start, "limit": size, "convert": CONVERT},
            )
            if not isinstance(data, list):
                raise MalformedResponse(
                    self.name, "coinmarketcap listings/latest data is not a list", status=200
                )
            for row in data:
                listing = _listing(row)
                if listing is None or listing.source_id in seen:
                    continue
                seen.add(listing.source_id or "")
                listings.append(listing)
            if len(data) < size:
                break
            start += size
        listings = listings[:limit]
        if with_info and listings:
            infos = await self.info(listing.source_id for listing in listings if listing.source_id)
            listings = [
                merge_info(listing, infos[listing.source_id])
                if listing.source_id in infos
                else listing
                for listing in listings
            ]
        return listings

    async def info(self, ids: Iterable[int | str]) -> dict[str, CoinInfo]:
        """Metadata of the coins with these CoinMarketCap ids (/v2/cryptocurrency/info),
        keyed by id as text (`Listing.source_id`). Ids CoinMarketCap does not know are left
        out (`skip_invalid`)."""
        wanted: list[str] = []
        for coin_id in ids:
            text = str(coin_id).strip()
            if isinstance(coin_id, bool) or not text.isdigit():
                raise ValueError(f"not a CoinMarketCap id: {coin_id!r}")
            if text not in wanted:
                wanted.append(text)
        infos: dict[str, CoinInfo] = {}
        for offset in range(0, len(wanted), MAX_INFO_IDS_PER_REQUEST):
            batch = wanted[offset : offset + MAX_INFO_IDS_PER_REQUEST]
            data = await self._get_data(
                "/v2/cryptocurrency/info", {"id": ",".join(batch), "skip_invalid": "true"}
            )
            if not isinstance(data, dict):
                raise MalformedResponse(
                    self.name, "coinmarketcap info data is not an object", status=200
                )
            for value in data.values():
                # Asked by id, each value is one object; asked by symbol it would be a list.
                entries = value if isinstance(value, list) else [value]
                for entry in entries:
                    info = _info(entry)
                    if info is not None:
                        infos[info.source_id] = info
        return infos

    async def _get_data(self, path: str, params: QueryParams) -> Any:
        body = await self._http.get_json(path, params)
        if not isinstance(body, dict) or "data" not in body:
            raise MalformedResponse(
                self.name, f"coinmarketcap GET {path} answered without data", status=200
            )
        status = as_dict(body.get("status"))
        code = to_int(status.get("error_code"))
        if code:  # a 200 with an error code carries no valid data
            message = text_or_none(status.get("error_message")) or "no message"
            raise ProviderHTTPError(
                self.name,
                self._http.redact(f"coinmarketcap GET {path} failed: error {code}: {message}"),
                status=200,
            )
        return body["data"]


def _should_retry(response: httpx.Response) -> bool:
    if response.status_code != 429:
        return True
    try:
        body = json.loads(response.content)
    except ValueError:
        return True
    code = to_int(as_dict(as_dict(body).get("status")).get("error_code"))
    return code not in QUOTA_SPENT_CODES


def _listing(row: object) -> Listing | None:
    """A listings/latest row as a Listing; None (and a warning) for a row without a symbol."""
    if not isinstance(row, dict):
        return None
    symbol = text_or_none(row.get("symbol"))
    coin_id = to_int(row.get("id"))
    if symbol is None or coin_id is None:
        logger.warning("coinmarketcap_row_skipped", coin_id=coin_id)
        return None
    usd = as_dict(as_dict(row.get("quote")).get(CONVERT))
    tags = row.get("tags")
    return Listing(
        symbol=symbol.upper(),
        name=text_or_none(row.get("name")) or symbol.upper(),
        rank=to_int(row.get("cmc_rank")),
        price=to_decimal(usd.get("price")),
        market_cap=to_decimal(usd.get("market_cap")),
        volume_24h=to_decimal(usd.get("volume_24h")),
        change_1h=to_decimal(usd.get("percent_change_1h")),
        change_24h=to_decimal(usd.get("percent_change_24h")),
        change_7d=to_decimal(usd.get("percent_change_7d")),
        circulating_supply=to_decimal(row.get("circulating_supply")),
        total_supply=to_decimal(row.get("total_supply")),
        max_supply=to_decimal(row.get("max_supply")),
        # Not in listings/latest nor in info (CoinMarketCap serves them from
        # /v2/cryptocurrency/price-performance-stats/latest, which this client does not call).
        ath=None,
        ath_date=None,
        atl=None,
        atl_date=None,
        categories=_strings(tags),
        last_updated=parse_time(usd.get("last_updated")) or parse_time(row.get("last_updated")),
        source_id=str(coin_id),
    )


def _info(entry: object) -> CoinInfo | None:
    if not isinstance(entry, dict):
        return None
    coin_id = to_int(entry.get("id"))
    symbol = text_or_none(entry.get("symbol"))
    if coin_id is None or symbol is None:
        return None
    websites = as_dict(entry.get("urls")).get("website")
    categories = _strings(entry.get("tag-names")) or _strings(entry.get("tags"))
    return CoinInfo(
        source_id=str(coin_id),
        symbol=symbol.upper(),
        name=text_or_none(entry.get("name")) or symbol.upper(),
        description=text_or_none(entry.get("description")),
        website=next(iter(_strings(websites)), None),
        image_url=text_or_none(entry.get("logo")),
        categories=categories,
    )


def _strings(values: object) -> tuple[str, ...]:
    if not isinstance(values, list):
        return ()
    return tuple(text for text in map(text_or_none, values) if text is not None)
