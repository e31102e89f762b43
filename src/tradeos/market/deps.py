"""FastAPI dependencies for the running market data, shared by every domain that prices things.

Async on purpose: FastAPI runs a plain `def` dependency in a worker thread, a hop that costs
more than what these return."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from tradeos.market.providers.base import MarketProvider
from tradeos.market.providers.registry import MarketData


async def get_market(request: Request) -> MarketData:
    market_data: MarketData = request.app.state.market
    return market_data


async def get_provider(request: Request) -> MarketProvider:
    """The market data's provider (prices, ticks, candles)."""
    provider: MarketProvider = request.app.state.market.provider
    return provider


MarketDep = Annotated[MarketData, Depends(get_market)]
ProviderDep = Annotated[MarketProvider, Depends(get_provider)]
