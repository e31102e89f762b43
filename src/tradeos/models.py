"""Every table of TradeOS, imported in one place for Alembic (migrations/env.py reads this)."""

from tradeos.accounts.models import (
    ApiKey,
    AuditEvent,
    AuthSession,
    Device,
    KycDocument,
    License,
    RefreshToken,
    User,
)
from tradeos.backtest.models import Backtest
from tradeos.core.db import Base
from tradeos.core.jobs.models import JobRun, JobWorker
from tradeos.market.models import Candle, CryptoListing, Instrument, PriceSnapshot
from tradeos.notifications.models import Notification, NotificationPreferences
from tradeos.risk.models import RiskProfileRow
from tradeos.strategies.models import Strategy, StrategyTag
from tradeos.trading.models import Fill, Order, Position, TradingAccount

__all__ = [
    "ApiKey",
    "AuditEvent",
    "AuthSession",
    "Backtest",
    "Base",
    "Candle",
    "CryptoListing",
    "Device",
    "Fill",
    "Instrument",
    "JobRun",
    "JobWorker",
    "KycDocument",
    "License",
    "Notification",
    "NotificationPreferences",
    "Order",
    "Position",
    "PriceSnapshot",
    "RefreshToken",
    "RiskProfileRow",
    "Strategy",
    "StrategyTag",
    "TradingAccount",
    "User",
]
