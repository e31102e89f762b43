"""Requests and responses of the market data endpoints. Prices and volumes are exact decimals,
sent as JSON strings."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field


class InstrumentOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    symbol: str = Field(description="Canonical symbol, e.g. BTC-USD, EUR-USD, AAPL.")
    name: str
    asset_class: str = Field(description="crypto, forex, equity, index or commodity.")
    base: str
    quote: str
    tick_size: Decimal = Field(description="Prices are whole multiples of this.")
    quantity_step: Decimal = Field(description="Quantities are whole multiples of this.")
    status: str = Field(description="trading or halted.")
    provider: str = Field(description="Where its candles and tickers come from.")


class CandleOut(BaseModel):
    time: datetime = Field(description="The bar's open time, UTC.")
    open: Decimal
    high: Decimal
    low: Decimal
    close: Decimal
    volume: Decimal
    partial: bool = Field(description="The bar's period is not complete (current bar, or a gap).")


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
    last: Decimal
    bid: Decimal
    ask: Decimal
    open_24h: Decimal | None
    high_24h: Decimal | None
    low_24h: Decimal | None
    volume_24h: Decimal | None
    change_24h: Decimal | None
    change_24h_percent: Decimal | None
    source: str


class CryptocurrencyOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    symbol: str
    name: str
    rank: int | None
    price: Decimal | None = Field(description="USD.")
    market_cap: Decimal | None
    volume_24h: Decimal | None
    change_1h: Decimal | None = Field(description="Percent.")
    change_24h: Decimal | None = Field(description="Percent.")
    change_7d: Decimal | None = Field(description="Percent.")
    circulating_supply: Decimal | None
    total_supply: Decimal | None
    max_supply: Decimal | None
    ath: Decimal | None
    ath_date: datetime | None
    atl: Decimal | None
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
    price: Decimal
    market_cap: Decimal | None
    volume: Decimal | None


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
