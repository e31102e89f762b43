"""The listings fallback: when the primary provider fails, the secondary serves, and the
failure is logged and counted in /metrics."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

import httpx
import pytest
from prometheus_client import CollectorRegistry, Counter

from tradeos.market.providers.base import Listing, ProviderError
from tradeos.market.providers.registry import Listings
from tradeos.market.providers.sim import SimProvider


class Broken:
    name = "coingecko"

    async def listings(self, limit: int) -> Sequence[Listing]:
        raise ProviderError("coingecko is unavailable (HTTP 503)")


def clock() -> datetime:
    return datetime(2026, 11, 21, 12, 0, tzinfo=UTC)


async def test_the_fallback_answers_and_the_failure_is_counted(captured_logs: object) -> None:
    registry = CollectorRegistry()
    failures = Counter("failures", "", ["provider", "operation"], registry=registry)
    listings = Listings(Broken(), SimProvider(clock=clock), failures)

    source, fetched = await listings.fetch(3)

    assert source == "sim"
    assert [listing.symbol for listing in fetched] == ["BTC", "ETH", "BNB"][: len(fetched)]
    sample = registry.get_sample_value(
        "failures_total", {"provider": "coingecko", "operation": "listings"}
    )
    assert sample == 1.0
    logged = captured_logs.events("listings_provider_failed")  # type: ignore[attr-defined]
    assert logged and logged[0]["fallback"] == "sim"


async def test_without_a_fallback_the_failure_is_raised() -> None:
    with pytest.raises(ProviderError, match="unavailable"):
        await Listings(Broken(), None).fetch(3)


async def test_the_failure_counter_is_on_metrics(client: httpx.AsyncClient) -> None:
    response = await client.get("/metrics")
    assert "tradeos_market_provider_failures_total" in response.text
