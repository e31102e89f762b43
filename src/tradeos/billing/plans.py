"""Subscription tiers, their features and quotas: the one place they are defined.

Pure data. Payments (a later part of billing) change which tier a user is on; everything that
asks "may this user do X, how much of Y" reads it from here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType


class Tier(StrEnum):
    FREE = "free"
    PRO = "pro"
    ENTERPRISE = "enterprise"


class Feature(StrEnum):
    API_ACCESS = "api_access"  # programmatic access with API keys
    LIVE_TRADING = "live_trading"
    SIGNAL_AUTO_EXECUTION = "signal_auto_execution"
    STRATEGY_PUBLISHING = "strategy_publishing"  # publish formulas to the marketplace
    MULTI_ASSET_BACKTESTS = "multi_asset_backtests"
    PRIORITY_SUPPORT = "priority_support"


class Quota(StrEnum):
    BACKTESTS_PER_DAY = "backtests_per_day"
    MAX_API_KEYS = "max_api_keys"
    MAX_STRATEGIES = "max_strategies"
    MAX_DEVICES = "max_devices"
    MAX_PAPER_ACCOUNTS = "max_paper_accounts"


@dataclass(frozen=True)
class Plan:
    tier: Tier
    name: str
    features: frozenset[Feature]
    # None means unlimited.
    quotas: Mapping[Quota, int | None]

    def has(self, feature: Feature) -> bool:
        return feature in self.features

    def quota(self, quota: Quota) -> int | None:
        return self.quotas[quota]


PLANS: Mapping[Tier, Plan] = MappingProxyType(
    {
        Tier.FREE: Plan(
            tier=Tier.FREE,
            name="Free",
            features=frozenset(),
            quotas={
                Quota.BACKTESTS_PER_DAY: 10,
                Quota.MAX_API_KEYS: 0,
                Quota.MAX_STRATEGIES: 5,
                Quota.MAX_DEVICES: 1,
                Quota.MAX_PAPER_ACCOUNTS: 1,
            },
        ),
        Tier.PRO: Plan(
            tier=Tier.PRO,
            name="Pro",
            features=frozenset(
                {
                    Feature.API_ACCESS,
                    Feature.LIVE_TRADING,
                    Feature.STRATEGY_PUBLISHING,
                    Feature.MULTI_ASSET_BACKTESTS,
                }
            ),
            quotas={
                Quota.BACKTESTS_PER_DAY: 200,
                Quota.MAX_API_KEYS: 5,
                Quota.MAX_STRATEGIES: 100,
                Quota.MAX_DEVICES: 3,
                Quota.MAX_PAPER_ACCOUNTS: 5,
            },
        ),
        Tier.ENTERPRISE: Plan(
            tier=Tier.ENTERPRISE,
            name="Enterprise",
            features=frozenset(Feature),
            quotas={
                Quota.BACKTESTS_PER_DAY: None,
                Quota.MAX_API_KEYS: 50,
                Quota.MAX_STRATEGIES: None,
                Quota.MAX_DEVICES: 10,
                Quota.MAX_PAPER_ACCOUNTS: 20,
            },
        ),
    }
)


def plan_for(tier: str) -> Plan:
    """The plan of a tier; an unknown tier (a typo in the database) gets the free plan."""
    try:
        return PLANS[Tier(tier)]
    except ValueError:
        return PLANS[Tier.FREE]
