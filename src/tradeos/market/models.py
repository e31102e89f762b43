"""Market tables: instruments, their candles, crypto listings and listing price history."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from sqlalchemy import JSON, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from tradeos.core.db import Base, BigIntPK, ExactDecimal, IdPK, Money, Quantity, UTCDateTime, utcnow


class Instrument(Base):
    __tablename__ = "instruments"
    id: Mapped[IdPK]
    symbol: Mapped[str] = mapped_column(String(41), unique=True)  # canonical: BTC-USD, AAPL
    name: Mapped[str] = mapped_column(String(100))
    asset_class: Mapped[str] = mapped_column(String(20))
    base: Mapped[str] = mapped_column(String(20))
    quote: Mapped[str] = mapped_column(String(20))
    # Orders are validated against these: prices in ticks, quantities in steps.
    tick_size: Mapped[Decimal] = mapped_column(Money)
    quantity_step: Mapped[Decimal] = mapped_column(Quantity)
    status: Mapped[str] = mapped_column(String(20), default="trading")  # trading | halted
    provider: Mapped[str] = mapped_column(String(30))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)

    __table_args__ = (Index("ix_instruments_asset_class", "asset_class"),)


class Candle(Base):
    """One OHLCV bar, keyed by instrument, timeframe and UTC open time."""

    __tablename__ = "candles"
    instrument_id: Mapped[int] = mapped_column(
        BigIntPK, ForeignKey("instruments.id", ondelete="CASCADE"), primary_key=True
    )
    timeframe: Mapped[str] = mapped_column(String(4), primary_key=True)
    open_time: Mapped[datetime] = mapped_column(UTCDateTime, primary_key=True)
    open: Mapped[Decimal] = mapped_column(Money)
    high: Mapped[Decimal] = mapped_column(Money)
    low: Mapped[Decimal] = mapped_column(Money)
    close: Mapped[Decimal] = mapped_column(Money)
    volume: Mapped[Decimal] = mapped_column(Quantity)
    source: Mapped[str] = mapped_column(String(30))


# A candle row's columns in the order the bulk writes (service, importer) give their values.
CANDLE_COLUMNS = (
    "instrument_id",
    "timeframe",
    "open_time",
    "open",
    "high",
    "low",
    "close",
    "volume",
    "source",
)
CANDLES = Candle.__table__


class CryptoListing(Base):
    __tablename__ = "crypto_listings"
    id: Mapped[IdPK]
    symbol: Mapped[str] = mapped_column(String(20), unique=True)  # the coin's ticker: BTC
    name: Mapped[str] = mapped_column(String(100))
    rank: Mapped[int | None] = mapped_column(Integer)
    price: Mapped[Decimal | None] = mapped_column(Money)  # USD
    market_cap: Mapped[Decimal | None] = mapped_column(Money)
    volume_24h: Mapped[Decimal | None] = mapped_column(Money)
    change_1h: Mapped[Decimal | None] = mapped_column(ExactDecimal)  # percent
    change_24h: Mapped[Decimal | None] = mapped_column(ExactDecimal)
    change_7d: Mapped[Decimal | None] = mapped_column(ExactDecimal)
    circulating_supply: Mapped[Decimal | None] = mapped_column(Quantity)
    total_supply: Mapped[Decimal | None] = mapped_column(Quantity)
    max_supply: Mapped[Decimal | None] = mapped_column(Quantity)
    ath: Mapped[Decimal | None] = mapped_column(Money)
    ath_date: Mapped[datetime | None] = mapped_column(UTCDateTime)
    atl: Mapped[Decimal | None] = mapped_column(Money)
    atl_date: Mapped[datetime | None] = mapped_column(UTCDateTime)
    categories: Mapped[list[str]] = mapped_column(JSON, default=list)
    description: Mapped[str | None] = mapped_column(Text)
    website: Mapped[str | None] = mapped_column(String(500))
    image_url: Mapped[str | None] = mapped_column(String(500))
    last_updated: Mapped[datetime | None] = mapped_column(UTCDateTime)
    source: Mapped[str] = mapped_column(String(30))  # sim | coingecko | coinmarketcap
    source_id: Mapped[str | None] = mapped_column(String(100))

    __table_args__ = (Index("ix_crypto_listings_rank", "rank"),)


class PriceSnapshot(Base):
    """A listing's price, market cap and volume at one moment: its price history."""

    __tablename__ = "price_snapshots"
    listing_id: Mapped[int] = mapped_column(
        BigIntPK, ForeignKey("crypto_listings.id", ondelete="CASCADE"), primary_key=True
    )
    time: Mapped[datetime] = mapped_column(UTCDateTime, primary_key=True)
    price: Mapped[Decimal] = mapped_column(Money)
    market_cap: Mapped[Decimal | None] = mapped_column(Money)
    volume: Mapped[Decimal | None] = mapped_column(Money)
