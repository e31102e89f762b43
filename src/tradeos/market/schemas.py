"""Requests and responses of the market data endpoints. Prices and volumes are exact decimals,
sent as JSON strings."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field

from tradeos.core.fields import PlainDecimal


class InstrumentOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    symbol: str = Field(description="Canonical symbol, e.g. BTC-USD, EUR-USD, AAPL.")
    name: str
    asset_class: str = Field(description="crypto, forex, equity, index or commodity.")
    base: str
    quote: str
    tick_size: PlainDecimal = Field(description="Prices are whole multiples of this.")
    quantity_step: PlainDecimal = Field(description="Quantities are whole multiples of this.")
    status: str = Field(description="trading or halted.")
    provider: str = Field(description="Where its candles and tickers come from.")


class CandleOut(BaseModel):
    time: datetime = Field(description="The bar's open time, UTC.")
    open: PlainDecimal
    high: PlainDecimal
    low: PlainDecimal
    close: PlainDecimal
    volume: PlainDecimal
    partial: bool = Field(description="The bar is still forming: its period has not ended.")


class CandlesOut(BaseModel):
    symbol: str
    timeframe: str
    source: str = Field(
        description="stored, resampled:<timeframe> (from finer stored bars), or the provider "
        "that produced them (sim: simulated data)."
    )
    candles: list[CandleOut]


class TickerOut(BaseModel):
    symbol: str
    time: datetime
    last: PlainDecimal
    bid: PlainDecimal
    ask: PlainDecimal
    open_24h: PlainDecimal | None
    high_24h: PlainDecimal | None
    low_24h: PlainDecimal | None
    volume_24h: PlainDecimal | None
    change_24h: PlainDecimal | None
    change_24h_percent: PlainDecimal | None
    source: str


class CryptocurrencyOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    symbol: str
    name: str
    rank: int | None
    price: PlainDecimal | None = Field(description="USD.")
    market_cap: PlainDecimal | None
    volume_24h: PlainDecimal | None
    change_1h: PlainDecimal | None = Field(description="Percent.")
    change_24h: PlainDecimal | None = Field(description="Percent.")
    change_7d: PlainDecimal | None = Field(description="Percent.")
    circulating_supply: PlainDecimal | None
    total_supply: PlainDecimal | None
    max_supply: PlainDecimal | None
    ath: PlainDecimal | None
    ath_date: datetime | None
    atl: PlainDecimal | None
    atl_date: datetime | None
    categories: list[str]
    description: str | None
    website: str | None
    image_url: str | None
    last_updated: datetime | None
    source: str = Field(description="sim (simulated), coingecko or coinmarketcap.")


class PriceSnapshotOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    time: datetime
    price: PlainDecimal
    market_cap: PlainDecimal | None
    volume: PlainDecimal | None


class PriceHistoryOut(BaseModel):
    symbol: str
    history: list[PriceSnapshotOut]


class TopCategory(StrEnum):
    GAINERS = "gainers"
    LOSERS = "losers"
    VOLUME = "volume"
    MARKET_CAP = "market_cap"
    TRENDING = "trending"


class ListingSort(StrEnum):
    MARKET_CAP = "market_cap"
    VOLUME = "volume"
    PRICE = "price"
    CHANGE_24H = "change_24h"
    RANK = "rank"


class SortOrder(StrEnum):
    ASC = "asc"
    DESC = "desc"


class SyncRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    provider: str | None = Field(
        default=None,
        description="sim, coingecko or coinmarketcap; default: LISTINGS_PROVIDER.",
        pattern="^(sim|coingecko|coinmarketcap)$",
    )
    limit: int = Field(default=50, ge=1, le=5000, description="How many of the top coins.")


class SyncAccepted(BaseModel):
    job_id: int = Field(description="GET /api/v1/admin/jobs/{job_id} shows its progress.")
    status: str
