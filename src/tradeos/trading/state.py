"""An account's trading state over the UTC day: the day-start equity, the automatic halt at the
daily loss limit, its lifting at the next day, and the trader's own setting.

The rules are pure (`risk.rules`: `state_after_loss`, `state_at_day_start`, `set_state`,
`daily_loss_breaches`); this module reads the account, asks them, and writes back what they
decided, with an `account.trading_state` event on the user's `positions` channel and a
notification whenever the state changes.

- The day starts (`start_day`) the first time an account is touched on a new UTC day (an order
  placed, the 00:00 UTC job of `state_jobs.py`, a state set by the trader): its equity then
  becomes `day_start_equity`, and an automatic halt of an earlier day is lifted. A reset starts
  the day over too: the loss of the account before it is no loss of the new start.
- Today's loss is `day_start_equity − equity` (positive when losing), the equity at the marks.
- After each booked fill (`review_after_fill`) a loss past a daily loss limit halts the
  account (set by "risk"), remembering the state to return to at the next day.
- The trader sets `active`, `reducing` or `halted` (`set_trading_state`), except while an
  automatic halt holds (409, saying until when).

Reducing and halted accounts accept reducing orders only, closes included (`risk.rules`): a
halt stops new risk, it never traps a trader in a losing position.

Marks. Equity values positions at their last price from the market provider. `start_day`
remembers the provider it was given for the unit of work (an order's), so the review after that
order's fills values with it; a fill booked where no provider was given is valued at the stored
closes (or the cost, for a symbol without any).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal, localcontext
from typing import TYPE_CHECKING, Final

import structlog
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from tradeos.core.db import utcnow
from tradeos.core.errors import Conflict
from tradeos.core.events import EventBus, publish_after_commit
from tradeos.market.providers.base import MarketProvider
from tradeos.notifications import service as notifications
from tradeos.risk import rules
from tradeos.risk import service as risk_service
from tradeos.trading import service
from tradeos.trading.models import Position, TradingAccount
from tradeos.trading.orders import ARITHMETIC

if TYPE_CHECKING:
    from tradeos.core.db import Database

logger = structlog.get_logger("tradeos.trading")

BY_USER: Final = "user"
BY_RISK: Final = "risk"
# Where `start_day` leaves the unit of work's market provider for the review after its fills.
_PROVIDER_KEY: Final = "tradeos.trading.state.provider"
# Accounts read per query by the day-start job.
_BATCH: Final = 500


class TradingStateHeld(Conflict):
    """The trader asked for a state while the daily loss limit's halt holds."""

    slug = "trading-state-locked"
    title = "Trading state locked by the daily loss limit"


def day_start(now: datetime) -> datetime:
    """00:00 UTC of `now`'s day."""
    return now.replace(hour=0, minute=0, second=0, microsecond=0)


def next_day_start(now: datetime) -> datetime:
    return day_start(now) + timedelta(days=1)


def status_of(account: TradingAccount) -> rules.TradingStatus:
    """The account's state as the rules see it. Only a halt the risk rules set resumes by
    itself (a reset leaves the account active, whatever it halted from)."""
    state = rules.TradingState(account.trading_state)
    resumes = account.trading_state_resumes_to
    if state is rules.TradingState.HALTED and account.trading_state_set_by == BY_RISK and resumes:
        return rules.TradingStatus(state, rules.TradingState(resumes))
    return rules.TradingStatus(state)


async def equity_of(
    session: AsyncSession, provider: MarketProvider | None, account: TradingAccount
) -> Decimal:
    """Cash plus the positions at their last price (at the cost without one)."""
    rows = list(await session.scalars(select(Position).where(Position.account_id == account.id)))
    marks = await service.mark_prices(
        session, provider, (row.symbol for row in rows if row.quantity)
    )
    return service.valuation(account, rows, marks).equity


def _day_is_current(account: TradingAccount, now: datetime) -> bool:
    started = account.day_started_at
    if started is None or account.day_start_equity is None or started < day_start(now):
        return False
    return account.reset_at is None or account.reset_at <= started


async def start_day(
    session: AsyncSession,
    events: EventBus,
    provider: MarketProvider | None,
    account: TradingAccount,
    now: datetime | None = None,
) -> bool:
    """Start the account's UTC day if it has not started yet (the account row locked): the
    equity now is the day-start equity, and an automatic halt of an earlier day is lifted.
    Returns whether a new day started."""
    session.info[_PROVIDER_KEY] = provider
    now = now or utcnow()
    if _day_is_current(account, now):
        return False
    account.day_start_equity = await equity_of(session, provider, account)
    account.day_started_at = now
    status = status_of(account)
    if account.trading_state_resumes_to and not status.halted_automatically:
        account.trading_state_resumes_to = None  # a reset ended the automatic halt
    lifted = rules.state_at_day_start(status)
    if lifted != status:
        await _change(session, events, account, lifted, BY_RISK, "a new UTC day started", now)
    return True


async def review_after_fill(
    session: AsyncSession,
    events: EventBus,
    account: TradingAccount,
    now: datetime | None = None,
    *,
    profile: rules.RiskProfile | None = None,
) -> rules.TradingStatus:
    """After a booked fill: halt the account when today's loss is past a daily loss limit.
    `profile`: the account's risk profile, when the caller has it at hand."""
    now = now or utcnow()
    provider: MarketProvider | None = session.info.get(_PROVIDER_KEY)
    if not _day_is_current(account, now):
        # A fill booked outside an order request (a resting order) on a new day.
        await start_day(session, events, provider, account, now)
    status = status_of(account)
    if status.state is rules.TradingState.HALTED or account.day_start_equity is None:
        return status
    if profile is None:
        profile = await risk_service.profile_of(session, account.id)
    if profile.max_daily_loss is None and profile.max_daily_loss_pct is None:
        return status
    loss = await day_loss(session, provider, account)
    after = rules.state_after_loss(profile, status, loss, account.day_start_equity)
    if after != status:
        breach = rules.daily_loss_breaches(profile, loss, account.day_start_equity)[0]
        reason = f"daily loss limit: {breach.message}"
        await _change(session, events, account, after, BY_RISK, reason, now)
    return after


async def day_loss(
    session: AsyncSession, provider: MarketProvider | None, account: TradingAccount
) -> Decimal:
    """Today's loss, positive when losing: the day-start equity less the equity now."""
    equity = await equity_of(session, provider, account)
    start = account.day_start_equity if account.day_start_equity is not None else equity
    with localcontext(ARITHMETIC):
        return start - equity


async def set_trading_state(
    session: AsyncSession,
    events: EventBus,
    provider: MarketProvider | None,
    user_id: int,
    account_id: int,
    state: rules.TradingState,
    reason: str | None,
    now: datetime | None = None,
) -> TradingAccount:
    """The trader sets the account's state; 409 while the daily loss limit's halt holds."""
    now = now or utcnow()
    account = await service.get_account(session, user_id, account_id, lock=True)
    await start_day(session, events, provider, account, now)  # yesterday's halt is over
    status = status_of(account)
    try:
        wanted = rules.set_state(status, state)
    except rules.TradingStateLocked:
        until = next_day_start(now)
        raise TradingStateHeld(
            f"The daily loss limit halted this account: trading resumes at {until.isoformat()} "
            "(the next UTC day). Until then, orders that reduce a position are accepted.",
            extra={"resumes_at": until.isoformat(), "reason": account.trading_state_reason},
        ) from None
    if wanted != status or reason != account.trading_state_reason:
        await _change(session, events, account, wanted, BY_USER, reason, now)
    return account


async def _change(
    session: AsyncSession,
    events: EventBus,
    account: TradingAccount,
    status: rules.TradingStatus,
    set_by: str,
    reason: str | None,
    now: datetime,
) -> None:
    before = account.trading_state
    account.trading_state = status.state.value
    account.trading_state_resumes_to = None if status.resumes_to is None else status.resumes_to
    account.trading_state_set_by = set_by
    account.trading_state_reason = None if reason is None else reason[:200]
    account.trading_state_changed_at = now
    await session.flush()
    logger.info(
        "trading_state_changed",
        account_id=account.id,
        state=account.trading_state,
        before=before,
        set_by=set_by,
    )
    payload = state_fields(account)
    publish_after_commit(
        session,
        events,
        service.positions_channel(account.owner_id),
        {"event": "account.trading_state", "account_id": account.id, "before": before, **payload},
    )
    if before == account.trading_state:
        return
    title = f"{account.name}: trading {account.trading_state}"
    resumes = ""
    if status.resumes_to is not None:
        resumes = f" Trading resumes at {next_day_start(now).isoformat()}."
    await notifications.notify(
        session,
        events,
        account.owner_id,
        type="account.trading_state",
        title=title[:200],
        body=f"Account {account.name!r} went from {before} to {account.trading_state}"
        f" ({reason or 'no reason given'}).{resumes}",
        data={"account_id": account.id, "before": before, **payload},
    )


def state_fields(account: TradingAccount) -> dict[str, str | None]:
    """The state, why and by whom, as JSON values."""
    changed = account.trading_state_changed_at
    return {
        "trading_state": account.trading_state,
        "trading_state_reason": account.trading_state_reason,
        "trading_state_set_by": account.trading_state_set_by,
        "trading_state_resumes_to": account.trading_state_resumes_to,
        "trading_state_changed_at": None if changed is None else changed.isoformat(),
    }


async def start_day_everywhere(
    database: Database,
    events: EventBus,
    provider: MarketProvider | None,
    now: datetime | None = None,
) -> dict[str, int]:
    """Start the UTC day of every account that has not started it: one short unit of work per
    account, its row locked, so a concurrent order sees either day or waits."""
    now = now or utcnow()
    started = lifted = 0
    after = 0
    while True:
        async with database.session(write=False) as session:
            ids = list(
                await session.scalars(
                    select(TradingAccount.id)
                    .where(TradingAccount.id > after)
                    .order_by(TradingAccount.id)
                    .limit(_BATCH)
                )
            )
        for account_id in ids:
            async with database.session() as session:
                account = await session.scalar(
                    select(TradingAccount)
                    .where(TradingAccount.id == account_id)
                    .with_for_update()
                    .execution_options(populate_existing=True)
                )
                if account is None:  # deleted meanwhile
                    continue
                halted = status_of(account).halted_automatically
                if await start_day(session, events, provider, account, now):
                    started += 1
                    lifted += halted and not status_of(account).halted_automatically
        if len(ids) < _BATCH:
            return {"accounts": started, "halts_lifted": lifted}
        after = ids[-1]
