"""Risk profiles: an account's limits, stored per trading account (the defaults of
`rules.RiskProfile` until the owner sets them). Risk tools: position sizing and the portfolio's
risk assessment, the pure figures of `sizing.py` over the account's positions at the live
marks, daily closes from the market service, and the account's portfolio snapshots."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Final, TypeVar

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from tradeos.core.db import utcnow
from tradeos.core.errors import NotFound, ValidationFailed, field_error
from tradeos.market import service as market_service
from tradeos.market.providers.base import AssetClass, MarketProvider
from tradeos.market.timeframes import Timeframe
from tradeos.risk import sizing
from tradeos.risk.models import RiskProfileRow
from tradeos.risk.rules import RiskProfile
from tradeos.risk.schemas import (
    AssetClassExposureOut,
    DrawdownOut,
    ExposureOut,
    PositionSizeIn,
    PositionSizeOut,
    RiskAssessmentOut,
    RiskProfileIn,
    RiskProfileOut,
    SymbolExposureOut,
    ValueAtRiskOut,
)

# The portfolio snapshots are the trading domain's record of an account's equity over time.
from tradeos.trading.models import PortfolioSnapshot, Position, TradingAccount
from tradeos.trading.orders import ZERO, in_trading_context

VAR_CONFIDENCE: Final = Decimal("0.95")
DEFAULT_LOOKBACK_DAYS: Final = 250
PERCENT_QUANTUM: Final = Decimal("1e-8")

_Shape = TypeVar("_Shape", bound=ExposureOut)


async def _own_account(session: AsyncSession, user_id: int, account_id: int) -> None:
    # Imported here: the trading service reads risk profiles through this module.
    from tradeos.trading import service as trading_service

    await trading_service.get_account(session, user_id, account_id)


def _profile(row: RiskProfileRow | None) -> RiskProfile:
    if row is None:
        return RiskProfile()
    return RiskProfile(
        max_position_quantity=row.max_position_quantity,
        max_position_pct=row.max_position_pct,
        max_risk_per_trade_pct=row.max_risk_per_trade_pct,
        max_daily_loss=row.max_daily_loss,
        max_daily_loss_pct=row.max_daily_loss_pct,
        max_daily_trades=row.max_daily_trades,
        max_open_positions=row.max_open_positions,
        max_leverage=row.max_leverage,
        allowed_symbols=None if row.allowed_symbols is None else frozenset(row.allowed_symbols),
        allowed_asset_classes=(
            None
            if row.allowed_asset_classes is None
            else frozenset(AssetClass(value) for value in row.allowed_asset_classes)
        ),
        stop_loss_required=row.stop_loss_required,
    )


async def profile_of(session: AsyncSession, account_id: int) -> RiskProfile:
    """The risk profile of an account (the caller has checked who owns it)."""
    return _profile(await session.get(RiskProfileRow, account_id))


def as_out(account_id: int, profile: RiskProfile) -> RiskProfileOut:
    return RiskProfileOut(
        account_id=account_id,
        max_position_quantity=profile.max_position_quantity,
        max_position_pct=profile.max_position_pct,
        max_risk_per_trade_pct=profile.max_risk_per_trade_pct,
        max_daily_loss=profile.max_daily_loss,
        max_daily_loss_pct=profile.max_daily_loss_pct,
        max_daily_trades=profile.max_daily_trades,
        max_open_positions=profile.max_open_positions,
        max_leverage=profile.max_leverage,
        allowed_symbols=(
            None if profile.allowed_symbols is None else sorted(profile.allowed_symbols)
        ),
        allowed_asset_classes=(
            None
            if profile.allowed_asset_classes is None
            else sorted(value.value for value in profile.allowed_asset_classes)
        ),
        stop_loss_required=profile.stop_loss_required,
    )


async def get_profile(session: AsyncSession, user_id: int, account_id: int) -> RiskProfileOut:
    await _own_account(session, user_id, account_id)
    return as_out(account_id, await profile_of(session, account_id))


async def set_profile(
    session: AsyncSession, user_id: int, account_id: int, body: RiskProfileIn
) -> RiskProfileOut:
    """Replace the account's whole profile (PUT): a field left out takes its default."""
    await _own_account(session, user_id, account_id)
    row = await session.get(RiskProfileRow, account_id)
    if row is None:
        row = RiskProfileRow(account_id=account_id)
        session.add(row)
    row.max_position_quantity = body.max_position_quantity
    row.max_position_pct = body.max_position_pct
    row.max_risk_per_trade_pct = body.max_risk_per_trade_pct
    row.max_daily_loss = body.max_daily_loss
    row.max_daily_loss_pct = body.max_daily_loss_pct
    row.max_daily_trades = body.max_daily_trades
    row.max_open_positions = body.max_open_positions
    row.max_leverage = body.max_leverage
    row.allowed_symbols = (
        None if body.allowed_symbols is None else sorted({s.upper() for s in body.allowed_symbols})
    )
    row.allowed_asset_classes = (
        None
        if body.allowed_asset_classes is None
        else sorted({value.value for value in body.allowed_asset_classes})
    )
    row.stop_loss_required = body.stop_loss_required
    await session.flush()
    return as_out(account_id, _profile(row))


# -- position sizing --------------------------------------------------------------------------


def _invalid(field: str, message: str, detail: str) -> ValidationFailed:
    return ValidationFailed(detail, errors=[field_error(f"body.{field}", message)])


async def position_size(
    session: AsyncSession, provider: MarketProvider | None, user_id: int, body: PositionSizeIn
) -> PositionSizeOut:
    """The quantity risking `risk_percent` of the equity (given, or the account's at the live
    marks) between `entry` and `stop`, on the instrument's step and tick (`sizing`)."""
    from tradeos.trading import service as trading_service

    if (body.equity is None) == (body.account_id is None):
        raise _invalid("equity", "give either equity or account_id", "Give equity or account_id.")
    try:
        instrument = await market_service.get_instrument(session, body.symbol)
    except NotFound as exc:
        raise _invalid("symbol", "no such instrument", exc.detail) from None
    if body.entry == body.stop:
        raise _invalid(
            "stop", "must differ from the entry", "The stop equals the entry: nothing at risk."
        )
    equity = body.equity
    if equity is None:
        assert body.account_id is not None
        detail = await trading_service.account_detail(session, provider, user_id, body.account_id)
        equity = detail.equity
    try:
        result = sizing.position_size(
            equity,
            body.risk_percent,
            body.entry,
            body.stop,
            instrument.quantity_step,
            instrument.tick_size,
        )
    except sizing.SizingError as exc:
        raise ValidationFailed(f"No size: {exc}.") from None
    return PositionSizeOut(
        symbol=instrument.symbol,
        direction="long" if body.entry > body.stop else "short",
        equity=equity,
        risk_percent=body.risk_percent,
        risk_budget=_times(equity, body.risk_percent) / 100,
        entry=body.entry,
        stop=body.stop,
        risk_per_unit=result.risk_per_unit,
        quantity=result.quantity,
        quantity_step=instrument.quantity_step,
        money_at_risk=result.money_at_risk,
        notional=_times(result.quantity, body.entry),
    )


@in_trading_context
def _times(a: Decimal, b: Decimal) -> Decimal:
    return a * b


# -- portfolio risk ---------------------------------------------------------------------------


async def assessment(
    session: AsyncSession,
    provider: MarketProvider | None,
    user_id: int,
    account_id: int,
    lookback_days: int = DEFAULT_LOOKBACK_DAYS,
) -> RiskAssessmentOut:
    """The account's exposure, concentration, leverage, 1-day 95% historical VaR over the last
    `lookback_days` daily closes, and drawdown (see `sizing` for each figure)."""
    from tradeos.trading import service as trading_service

    account = await trading_service.get_account(session, user_id, account_id)
    rows = [
        row
        for row in await session.scalars(trading_service.positions_query(user_id, account.id))
        if row.quantity
    ]
    marks = await trading_service.mark_prices(session, provider, (row.symbol for row in rows))
    equity = trading_service.valuation(account, rows, marks).equity
    held = await _holdings(session, rows, marks)
    by_symbol = sizing.exposure_by_symbol(held)
    positive = equity > 0
    var = await _value_at_risk(session, provider, held, lookback_days)
    return RiskAssessmentOut(
        account_id=account.id,
        equity=equity,
        exposure=_exposure(ExposureOut, sizing.total_exposure(held), equity),
        by_symbol=[
            _exposure(
                SymbolExposureOut,
                by_symbol[holding.symbol],
                equity,
                symbol=holding.symbol,
                asset_class=holding.asset_class.value,
                quantity=holding.quantity,
                mark_price=holding.price,
            )
            for holding in held
        ],
        by_asset_class=[
            _exposure(AssetClassExposureOut, exposure, equity, asset_class=asset_class.value)
            for asset_class, exposure in sorted(sizing.exposure_by_asset_class(held).items())
        ],
        concentration=sizing.concentration(held),
        gross_leverage=sizing.gross_leverage(held, equity) if positive else None,
        net_leverage=sizing.net_leverage(held, equity) if positive else None,
        value_at_risk=var,
        drawdown=await _drawdown(session, account, equity),
    )


async def _holdings(
    session: AsyncSession, rows: Sequence[Position], marks: dict[str, Decimal | None]
) -> list[sizing.Holding]:
    """The open positions at their mark (at their average entry price without one)."""
    held = []
    for row in rows:
        instrument = await market_service.get_instrument(session, row.symbol)
        mark = marks.get(row.symbol)
        if mark is None:
            mark = _average(row.cost, row.quantity)
        held.append(
            sizing.Holding(row.symbol, AssetClass(instrument.asset_class), row.quantity, mark)
        )
    return held


@in_trading_context
def _average(cost: Decimal, quantity: Decimal) -> Decimal:
    return cost / quantity


@in_trading_context
def _exposure(
    shape: type[_Shape], exposure: sizing.Exposure, equity: Decimal, **fields: object
) -> _Shape:
    share = None
    if equity > 0:
        share = (exposure.gross * 100 / equity).quantize(PERCENT_QUANTUM)
    return shape.model_validate(
        {
            "long": exposure.long,
            "short": exposure.short,
            "gross": exposure.gross,
            "net": exposure.net,
            "gross_pct_of_equity": share,
            **fields,
        }
    )


async def _value_at_risk(
    session: AsyncSession,
    provider: MarketProvider | None,
    held: Sequence[sizing.Holding],
    lookback_days: int,
) -> ValueAtRiskOut:
    """Historical VaR over the days every held symbol has a closed daily bar for."""
    now = utcnow()
    end = Timeframe.D1.floor(now)  # today's bar is still forming: left out
    start = end - timedelta(days=lookback_days + 1)
    closes: dict[str, dict[datetime, Decimal]] = {}
    for holding in held:
        instrument = await market_service.get_instrument(session, holding.symbol)
        series = await market_service.candles(
            session, provider, instrument, Timeframe.D1, start, end, lookback_days + 1
        )
        closes[holding.symbol] = {
            item.bar.open_time: item.bar.close for item in series.bars if not item.partial
        }
    common = sorted(set.intersection(*(set(days) for days in closes.values()))) if held else []
    amount = None
    if not held:
        amount = ZERO
    elif len(common) >= 2:
        aligned = {symbol: [days[day] for day in common] for symbol, days in closes.items()}
        amount = sizing.historical_var(held, aligned, float(VAR_CONFIDENCE))
    return ValueAtRiskOut(
        confidence=VAR_CONFIDENCE,
        horizon_days=1,
        amount=amount,
        observations=max(len(common) - 1, 0),
        lookback_days=lookback_days,
    )


async def _drawdown(session: AsyncSession, account: TradingAccount, equity: Decimal) -> DrawdownOut:
    """Over the account's portfolio snapshots since its reset, and its equity now."""
    query = select(PortfolioSnapshot.equity).where(PortfolioSnapshot.account_id == account.id)
    if account.reset_at is not None:
        query = query.where(PortfolioSnapshot.time >= account.reset_at)
    series = [*await session.scalars(query.order_by(PortfolioSnapshot.time)), equity]
    figures = sizing.drawdown(series)
    return DrawdownOut(
        current=figures.current,
        current_pct=figures.current_pct,
        maximum=figures.maximum,
        maximum_pct=figures.maximum_pct,
        points=len(series),
    )
