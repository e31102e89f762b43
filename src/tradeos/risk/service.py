"""Risk profiles: an account's limits, stored per trading account (the defaults of
`rules.RiskProfile` until the owner sets them)."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from tradeos.market.providers.base import AssetClass
from tradeos.risk.models import RiskProfileRow
from tradeos.risk.rules import RiskProfile
from tradeos.risk.schemas import RiskProfileIn, RiskProfileOut


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
